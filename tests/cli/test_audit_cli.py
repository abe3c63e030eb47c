"""``bcce audit verify|search``: output, exit codes and errors without a traceback."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from bcce.auth.provider import Identity
from bcce.containers.application import Application
from bcce.events.audit import AuditTrail

Cli = Callable[..., Result]
KEY = "cli-audit-key"


@pytest.fixture
def trail_file(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def audit_app(bcce_make_app: Callable[..., Application], trail_file: Path) -> Application:
    """An application whose settings point at the trail and its key (no subscriber attached)."""
    return bcce_make_app(events={"audit": {"file": str(trail_file), "key": KEY}})


def write(path: Path, records: list[tuple[str, str | None, str]], *, key: str = KEY) -> None:
    """``records``: (type, run_id, user) each, one day apart from 2026-12-01 noon."""
    for index, (kind, run, user) in enumerate(records):
        trail = AuditTrail(path, key=key, identity=lambda user=user: Identity(user))
        moment = datetime.datetime(2026, 12, 1 + index, 12, tzinfo=datetime.UTC)
        trail.record(
            kind, {"step": f"s{index}", "n": index}, run_id=run, timestamp=moment.timestamp()
        )
        trail.close()


RECORDS: list[tuple[str, str | None, str]] = [
    ("workflow.started", "r-a", "ana"),
    ("policy.decision", "r-a", "ana"),
    ("policy.denied", "r-a", "ana"),
    ("workflow.started", "r-b", "bob"),
    ("approval.approved", "r-b", "bob"),
]


def drop_line(path: Path, index: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[index]
    path.write_bytes(b"".join(lines))


# -- verify ------------------------------------------------------------------------------------
def test_verify_an_intact_trail_exits_0(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    write(trail_file, RECORDS)

    result = bcce_cli(["audit", "verify"], app=audit_app)

    assert result.exit_code == 0, result.output
    assert "5 records, seq 1-5, HMAC-SHA256 chain, anchor at seq 5" in result.stdout
    assert "intact" in result.stdout


def test_verify_a_tampered_trail_lists_each_problem_and_exits_1_without_a_traceback(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    write(trail_file, RECORDS)
    drop_line(trail_file, 1)
    drop_line(trail_file, 3)  # the last record: cut off the end

    result = bcce_cli(["audit", "verify"], app=audit_app)

    assert result.exit_code == 1
    assert "deleted" in result.stdout and "seq 2" in result.stdout
    assert "truncated" in result.stdout and "seq 5" in result.stdout
    assert "[BCCE900]" in result.stderr
    assert "2 problems (deleted, truncated)" in result.stderr
    assert "Traceback" not in result.output


def test_verify_json_reports_the_problems_and_exits_1(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    write(trail_file, RECORDS)
    lines = trail_file.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    trail_file.write_bytes(b"".join(lines))

    result = bcce_cli(["audit", "verify", "--json"], app=audit_app)

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["intact"] is False
    assert [(p["kind"], p["seqs"]) for p in data["problems"]] == [("reordered", [3, 3])]


def test_verify_run_scopes_the_problems_to_that_run(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    write(trail_file, RECORDS)
    lines = trail_file.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]  # two records of r-a swapped
    trail_file.write_bytes(b"".join(lines))

    of_b = bcce_cli(["audit", "verify", "--run", "r-b"], app=audit_app)
    of_a = bcce_cli(["audit", "verify", "--run", "r-a", "--json"], app=audit_app)

    assert of_b.exit_code == 0, of_b.output
    assert "run r-b: 2 records" in of_b.stdout
    assert "1 problem concerns other runs' records" in of_b.stdout
    assert of_a.exit_code == 1
    assert json.loads(of_a.stdout)["run_records"] == 3


def test_verify_run_lists_unattributable_deletions_apart(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    write(trail_file, RECORDS)
    drop_line(trail_file, 1)  # between two records of r-a

    result = bcce_cli(["audit", "verify", "--run", "r-b"], app=audit_app)

    assert result.exit_code == 1
    assert "cannot be attributed to a run; they may concern r-b (1)" in result.stdout


def test_verify_uses_the_key_from_the_settings(
    bcce_cli: Cli,
    bcce_make_app: Callable[..., Application],
    audit_app: Application,
    trail_file: Path,
) -> None:
    write(trail_file, RECORDS)
    other = bcce_make_app(events={"audit": {"file": str(trail_file), "key": "another-key"}})

    assert bcce_cli(["audit", "verify"], app=audit_app).exit_code == 0
    result = bcce_cli(["audit", "verify"], app=other)
    assert result.exit_code == 1
    assert "wrong_key" in result.stdout


def test_verify_file_reads_another_trail(
    bcce_cli: Cli, audit_app: Application, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "archive" / "old.jsonl"
    write(elsewhere, RECORDS[:2])

    result = bcce_cli(["audit", "verify", "--file", str(elsewhere)], app=audit_app)

    assert result.exit_code == 0, result.output
    assert str(elsewhere) in result.stdout


def test_verify_without_a_trail_says_how_to_turn_it_on(
    bcce_cli: Cli, audit_app: Application
) -> None:
    result = bcce_cli(["audit", "verify"], app=audit_app)

    assert result.exit_code == 1
    assert "[BCCE901]" in result.stderr
    assert "events.subscribers: [audit]" in result.stderr
    assert "Traceback" not in result.output


# -- search ------------------------------------------------------------------------------------
def test_search_prints_a_table(bcce_cli: Cli, audit_app: Application, trail_file: Path) -> None:
    write(trail_file, RECORDS)

    result = bcce_cli(["audit", "search"], app=audit_app)

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["TIME", "SEQ", "USER", "TYPE", "RUN", "STEP", "DETAIL"]
    assert len(rows) == 5
    assert rows[0].split()[:6] == [
        "2026-12-01T12:00:00.000+00:00",
        "1",
        "ana",
        "workflow.started",
        "r-a",
        "s0",
    ]


@pytest.mark.parametrize(
    ("args", "seqs"),
    [
        (["--run", "r-b"], [4, 5]),
        (["--user", "ana"], [1, 2, 3]),
        (["--type", "policy.*"], [2, 3]),
        (["--type", "workflow.started", "--type", "approval.*"], [1, 4, 5]),
        (["--since", "2026-12-02", "--until", "2026-12-03"], [2, 3]),
        (["--run", "r-a", "--limit", "1"], [3]),
    ],
    ids=["run", "user", "type-pattern", "types", "time-range", "limit"],
)
def test_search_filters(
    bcce_cli: Cli, audit_app: Application, trail_file: Path, args: list[str], seqs: list[int]
) -> None:
    write(trail_file, RECORDS)

    result = bcce_cli(["audit", "search", "--json", *args], app=audit_app)

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["seq"] for r in data["records"]] == seqs
    assert data["count"] == len(seqs)


def test_search_with_no_match_says_so(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    write(trail_file, RECORDS)

    result = bcce_cli(["audit", "search", "--run", "r-none"], app=audit_app)

    assert result.exit_code == 0
    assert result.stdout.strip() == "no matching records"


def test_search_with_an_unreadable_time_is_a_usage_error(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    write(trail_file, RECORDS)

    result = bcce_cli(["audit", "search", "--since", "last tuesday"], app=audit_app)

    assert result.exit_code == 2
    assert "cannot read 'last tuesday' as a time" in result.stderr


def test_search_ages_are_relative_to_now(
    bcce_cli: Cli, audit_app: Application, trail_file: Path
) -> None:
    trail = AuditTrail(trail_file, key=KEY, identity=lambda: Identity("ana"))
    trail.record(
        "old",
        {},
        timestamp=(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)).timestamp(),
    )
    trail.record("new", {})
    trail.close()

    result = bcce_cli(["audit", "search", "--since", "2h", "--json"], app=audit_app)

    assert [r["type"] for r in json.loads(result.stdout)["records"]] == ["new"]
