"""examples/observability, run the way its README says: the bcce command line in a subprocess.

A scratch directory gets the example's ``bcce.yaml`` and a copy of the quickstart's project with
the README's own commands; the quickstart then runs on the real Claude Code against the scripted
model, with the audit key in the environment. The README's follow-up commands are checked
against what the run left: the report, the audit trail (intact, searchable, a tampered copy and
a missing key both caught), the cost report and the Prometheus file. A second test makes the
run budget stop a run and resumes it, as the README's last section does.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
README = (EXAMPLES / "observability" / "README.md").read_text(encoding="utf-8")
BIN = Path(sysconfig.get_path("scripts"))
#: The README's set-up, after `cd "$(mktemp -d)"`, and its commands, each quoted from it.
SETUP = (
    'cp "$EXAMPLES/observability/bcce.yaml" .',
    'cp -r "$EXAMPLES/quickstart/project" project',
)
RUN = (
    'bcce workflow run "$EXAMPLES/quickstart/workflow.yml" --workspace project --approve '
    "--run-id demo-1"
)
TAMPER = (
    "cp .bcce_runs/audit.jsonl copy.jsonl && cp .bcce_runs/audit.jsonl.anchor copy.jsonl.anchor",
    """sed -i '0,/"allowed":false/s//"allowed":true/' copy.jsonl""",
)
BUDGET_RUN = (
    'cp -r "$EXAMPLES/quickstart/project" project2',
    "BCCE_POLICY__BUDGETS__RUN_USD=0.001 bcce workflow run "
    '"$EXAMPLES/quickstart/workflow.yml" --workspace project2 --approve --run-id demo-2',
)


@dataclass
class Scratch:
    """The README's scratch directory and the environment its shell has after the set-up."""

    path: Path
    env: dict[str, str]

    def sh(self, command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.path,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def ok(self, command: str) -> str:
        done = self.sh(command)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        return done.stdout


def scratch_dir(path: Path) -> Scratch:
    """The README's step 1 up to the run: the set-up commands and the two exports."""
    path.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BCCE_", "AWS_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `. .venv/bin/activate`
        XDG_CONFIG_HOME=str(path.parent / "xdg-config"),  # no user file of the developer's
        AWS_CONFIG_FILE=str(path.parent / "no-aws" / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(path.parent / "no-aws" / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        EXAMPLES=str(EXAMPLES),
        BCCE_AGENT__SCRIPT=str(EXAMPLES / "quickstart" / "scripts"),
        BCCE_EVENTS__AUDIT__KEY=secrets.token_urlsafe(32),  # the README uses openssl rand
    )
    scratch = Scratch(path, env)
    for command in SETUP:
        scratch.ok(command)
    return scratch


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scratch, str]:
    """The example's first run (module-scoped: the tests below only read what it left)."""
    scratch = scratch_dir(tmp_path_factory.mktemp("observability-example") / "scratch")
    return scratch, scratch.ok(RUN)


def test_the_readme_shows_the_commands_this_test_runs() -> None:
    for command in (*SETUP, RUN, *TAMPER, *BUDGET_RUN):
        assert command in README, command


def test_the_quickstart_succeeds_with_observability_on(ran: tuple[Scratch, str]) -> None:
    scratch, output = ran

    assert "run demo-1 succeeded" in output
    assert "denied Bash [hook: cmd.not_allowlisted]" in output
    state = scratch.path / ".bcce_runs"
    for name in ("audit.jsonl", "audit.jsonl.anchor", "costs.jsonl", "metrics.prom"):
        assert (state / name).is_file(), name


def test_the_report_is_written_beside_the_run(ran: tuple[Scratch, str]) -> None:
    scratch, _ = ran

    printed = scratch.ok("bcce workflow report demo-1").strip()

    report = scratch.path / ".bcce_runs" / "demo-1" / "report.html"
    assert Path(printed) == report
    page = report.read_text(encoding="utf-8")
    assert "<svg" in page
    assert "calculator.py" in page  # the applied diff
    markdown = scratch.ok("bcce workflow report demo-1 --format md")
    assert markdown.startswith("# Run demo-1 — quickstart (succeeded)")
    assert "| Policy denials | 2 |" in markdown


def test_the_audit_trail_is_keyed_and_intact(ran: tuple[Scratch, str]) -> None:
    scratch, _ = ran

    output = scratch.ok("bcce audit verify")

    assert "HMAC-SHA256 chain" in output
    assert "✓ intact" in output


def test_audit_search_finds_the_runs_two_denials(ran: tuple[Scratch, str]) -> None:
    scratch, _ = ran
    assert "bcce audit search --run demo-1 --type policy.denied" in README

    found = json.loads(scratch.ok("bcce audit search --run demo-1 --type policy.denied --json"))

    rules = [record["payload"]["rule"] for record in found["records"]]
    assert rules == ["path.outside_workspace", "cmd.not_allowlisted"]
    assert {record["alg"] for record in found["records"]} == {"hmac-sha256"}


def test_a_tampered_copy_of_the_trail_is_reported_as_edited(ran: tuple[Scratch, str]) -> None:
    scratch, _ = ran
    for command in TAMPER:
        scratch.ok(command)

    verified = scratch.sh("bcce audit verify --file copy.jsonl")

    assert verified.returncode == 1
    assert "✗ edited" in verified.stdout
    assert "(run demo-1): record seq" in verified.stdout
    assert "[BCCE900]" in verified.stderr


def test_without_the_key_the_trail_cannot_be_checked(ran: tuple[Scratch, str]) -> None:
    scratch, _ = ran
    assert "env -u BCCE_EVENTS__AUDIT__KEY bcce audit verify" in README

    verified = scratch.sh("env -u BCCE_EVENTS__AUDIT__KEY bcce audit verify")

    assert verified.returncode == 1
    assert "key_required" in verified.stdout


def test_the_cost_report_has_the_workflow_row(ran: tuple[Scratch, str]) -> None:
    scratch, _ = ran

    table = scratch.ok("bcce cost report --by workflow")
    report = json.loads(scratch.ok("bcce cost report --by workflow --json"))

    assert any(line.split()[:3] == ["quickstart", "1", "1"] for line in table.splitlines())
    (row,) = report["rows"]
    ledger = [
        json.loads(line)
        for line in (scratch.path / ".bcce_runs" / "costs.jsonl").read_text().splitlines()
    ]
    assert row["workflow"] == "quickstart"
    assert row["cost_usd"] == pytest.approx(sum(r["total_cost_usd"] for r in ledger))
    assert row["cost_usd"] > 0
    assert {(r["team"], r["project"]) for r in ledger} == {("platform", "quickstart")}


def test_the_metrics_file_parses_and_counts_the_run(ran: tuple[Scratch, str]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    scratch, _ = ran
    text = (scratch.path / ".bcce_runs" / "metrics.prom").read_text(encoding="utf-8")

    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    (completed,) = samples["bcce_workflow_execution_completed_total"]
    assert completed.labels == {"status": "succeeded", "workflow": "quickstart"}
    assert completed.value == 1.0
    denials = {s.labels["rule"]: s.value for s in samples["bcce_policy_denials_total"]}
    assert denials == {"path.outside_workspace": 1.0, "cmd.not_allowlisted": 1.0}
    (cost,) = samples["bcce_agent_cost_usd_total"]
    assert cost.labels["team"] == "platform"
    assert cost.value > 0
    assert "bcce_step_execution_duration_seconds_bucket" in samples


@pytest.mark.slow  # two more sessions of Claude Code
def test_a_run_budget_stops_the_run_and_the_resume_counts_what_it_spent(
    tmp_path: Path,
) -> None:
    scratch = scratch_dir(tmp_path / "scratch")
    scratch.ok(BUDGET_RUN[0])

    stopped = scratch.sh(BUDGET_RUN[1])

    assert stopped.returncode == 5, stopped.stdout + stopped.stderr
    assert "budget exceeded" in stopped.stdout
    assert "the run budget (policy.budgets.run_usd) is $0.001" in stopped.stdout
    found = json.loads(scratch.ok("bcce audit search --run demo-2 --type 'budget.*' --json"))
    assert [r["payload"]["scope"] for r in found["records"]] == ["run"]

    resumed = scratch.ok("bcce workflow resume demo-2 --approve")

    assert "run demo-2 succeeded" in resumed
    report = json.loads(scratch.ok("bcce cost report --by team --json"))
    (row,) = report["rows"]
    assert (row["team"], row["runs"], row["attempts"]) == ("platform", 1, 2)
    assert "✓ intact" in scratch.ok("bcce audit verify")
