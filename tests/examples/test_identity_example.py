"""examples/identity, run the way its README says: the bcce command line in a subprocess.

A scratch directory gets the example's ``bcce.yaml`` (with the README's ``sed``, naming the user
who runs the test) and its workflows; the README's commands then run in order, once for the
module: a workflow no rule allows, an approval four-eyes forbids, an allowed run, a run without
the preset rule, and the audit trail's searches. The tests check what each command did.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
README = (EXAMPLES / "identity" / "README.md").read_text(encoding="utf-8")
BIN = Path(sysconfig.get_path("scripts"))
#: The README's set-up, after `cd "$(mktemp -d)"`, each quoted from it.
SETUP = (
    'sed "s|@USER@|$(id -un)|g" "$EXAMPLES/identity/bcce.yaml" > bcce.yaml',
    'cp -r "$EXAMPLES/identity/workflows" "$EXAMPLES/identity/ops" "$EXAMPLES/identity/tests" .',
)
REFUSED = "bcce workflow run ops/deploy.yml --run-id deploy-1"
OWN_APPROVAL = "bcce workflow run workflows/checks.yml --run-id checks-0 --approve"
ALLOWED = "bcce workflow run workflows/checks.yml --run-id checks-1"
STATUS = "bcce workflow status checks-1 --json"
NO_PRESET_RULE = (
    "BCCE_AUTH__AUTHORIZATION__POLICIES='[]' bcce workflow run workflows/checks.yml "
    "--run-id checks-2"
)
SEARCH = "bcce audit search --type auth.decision"
SEARCH_RUN = (
    "bcce audit search --run checks-0 --type auth.decision --json | python3 -c "
    '\'import json, sys\nfor r in json.load(sys.stdin)["records"]: '
    'print(r["payload"]["action"], r["payload"]["allowed"], r["payload"]["rule"])\''
)
SEARCH_REFUSED = "bcce audit search --run deploy-1 --json"
#: The README's commands after the set-up, in its order.
COMMANDS = (REFUSED, OWN_APPROVAL, ALLOWED, STATUS, NO_PRESET_RULE, SEARCH, SEARCH_RUN)
COMMANDS += (SEARCH_REFUSED,)

Done = subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Done]:
    """Every command of the README, run in order in one scratch directory; by command."""
    root = tmp_path_factory.mktemp("identity-example")
    scratch = root / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BCCE_", "AWS_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `. .venv/bin/activate`
        XDG_CONFIG_HOME=str(root / "xdg-config"),  # no user file of the developer's
        EXAMPLES=str(EXAMPLES),
    )
    done: dict[str, Done] = {}
    for command in (*SETUP, *COMMANDS):
        done[command] = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    for command in SETUP:
        assert done[command].returncode == 0, done[command].stderr
    done["scratch"] = subprocess.CompletedProcess([], 0, str(scratch), "")
    return done


def test_the_readme_shows_the_commands_this_test_runs() -> None:
    for command in (*SETUP, *COMMANDS):
        assert command in README, command


def test_a_workflow_no_rule_allows_is_refused_with_exit_6(walkthrough: dict[str, Done]) -> None:
    done = walkthrough[REFUSED]
    user = getpass.getuser()

    assert done.returncode == 6
    assert done.stderr.startswith("error: [BCCE600] auth.authorization.workflows: ")
    assert f"{user} (local; groups: " in done.stderr
    assert "may not run workflow ops/deploy.yml: refused by rule 'no rule allows it'" in done.stderr


def test_a_refused_run_leaves_no_run_behind(walkthrough: dict[str, Done]) -> None:
    runs = Path(walkthrough["scratch"].stdout) / ".bcce_runs"

    assert not (runs / "deploy-1").exists()
    assert not (runs / "checks-0").exists()
    assert not (runs / "checks-2").exists()


def test_four_eyes_refuses_approving_your_own_run(walkthrough: dict[str, Done]) -> None:
    done = walkthrough[OWN_APPROVAL]

    assert done.returncode == 6
    assert "[BCCE600] auth.authorization.approvals.four_eyes: " in done.stderr
    assert "may not approve step apply of run checks-0" in done.stderr
    assert "started the run; four-eyes approval needs someone else" in done.stderr


def test_the_allowed_run_succeeds(walkthrough: dict[str, Done]) -> None:
    done = walkthrough[ALLOWED]

    assert done.returncode == 0, done.stderr
    assert "run checks-1 succeeded" in done.stdout
    assert "(3 succeeded)" in done.stdout


def test_the_run_records_who_started_it(walkthrough: dict[str, Done]) -> None:
    state = json.loads(walkthrough[STATUS].stdout)

    assert state["started_by"]["user"] == getpass.getuser()
    assert state["started_by"]["provider"] == "local"


def test_without_the_preset_rule_the_run_is_refused(walkthrough: dict[str, Done]) -> None:
    done = walkthrough[NO_PRESET_RULE]

    assert done.returncode == 6
    assert "[BCCE600] auth.authorization.policies: " in done.stderr
    assert "may not use preset test-fixer (step unit)" in done.stderr


def test_the_trail_holds_every_decision_allowed_or_refused(walkthrough: dict[str, Done]) -> None:
    lines = walkthrough[SEARCH].stdout.splitlines()[1:]  # after the header
    user = getpass.getuser()

    # deploy-1: 1; checks-0: 3 (workflow, policy, approval); checks-1: 2; checks-2: 2.
    assert len(lines) == 8
    assert all(f" {user} " in line and " auth.decision " in line for line in lines)


def test_search_by_run_finds_the_decisions_about_a_refused_run(
    walkthrough: dict[str, Done],
) -> None:
    done = walkthrough[SEARCH_RUN]

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "workflow.run True auth.authorization.workflows[0]",
        "policy.use True auth.authorization.policies[0]",
        "approval.give False auth.authorization.approvals.four_eyes",
    ]


def test_a_refusals_record_names_the_run_in_its_payload(walkthrough: dict[str, Done]) -> None:
    (record,) = json.loads(walkthrough[SEARCH_REFUSED].stdout)["records"]

    assert record["run_id"] is None
    assert record["actor"]["user"] == getpass.getuser()
    assert record["payload"]["run_id"] == "deploy-1"
    assert record["payload"]["allowed"] is False
    assert record["payload"]["rule"] == "no rule allows it"
