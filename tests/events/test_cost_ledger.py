"""The cost ledger (costs.jsonl), the records in it, and the report built from them."""

from __future__ import annotations

import datetime
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bcce.agent.session import AgentResult
from bcce.core.when import parse_when
from bcce.errors import UsageError
from bcce.events.cost import (
    TOTAL_KEY,
    CostLedger,
    CostRecord,
    build_report,
)

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
UTC = datetime.UTC


def at(day: int, hour: int = 12) -> str:
    return datetime.datetime(2026, 5, day, hour, tzinfo=UTC).isoformat()


def record(
    cost: float,
    *,
    time: str | None = None,
    run_id: str = "run-1",
    step: str = "fix",
    attempt: int = 1,
    workflow: str = "edit",
    team: str | None = "platform",
    project: str | None = "billing",
    model: str = SONNET,
    input_tokens: int = 100,
    output_tokens: int = 10,
    model_usage: dict[str, Any] | None = None,
) -> CostRecord:
    return CostRecord(
        time=time or at(1),
        run_id=run_id,
        step=step,
        attempt=attempt,
        workflow=workflow,
        team=team,
        project=project,
        model=model,
        total_cost_usd=cost,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model_usage=model_usage or {},
    )


@pytest.fixture
def ledger(tmp_path: Path) -> CostLedger:
    return CostLedger(tmp_path / "runs" / "costs.jsonl", fsync=False)


# -- records ---------------------------------------------------------------------------------


def test_an_appended_record_reads_back_unchanged(ledger: CostLedger) -> None:
    written = record(
        0.25,
        model_usage={SONNET: {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.25}},
    )

    ledger.append(written)

    [read] = ledger.records()
    assert read.to_dict() == written.to_dict()


def test_a_record_from_a_result_message_takes_the_per_model_breakdown() -> None:
    result = AgentResult(
        total_cost_usd=0.5,
        subtype="success",
        usage={"input_tokens": 300, "output_tokens": 60},
        model_usage={
            SONNET: {
                "inputTokens": 200,
                "outputTokens": 50,
                "cacheReadInputTokens": 7,
                "cacheCreationInputTokens": 3,
                "costUSD": 0.4,
            },
            HAIKU: {"inputTokens": 100, "outputTokens": 10, "costUSD": 0.1},
        },
    )

    made = CostRecord.from_result(
        result,
        run_id="r",
        step="s",
        attempt=2,
        workflow="w",
        team="t",
        project="p",
        model=SONNET,
    )

    assert made.model_usage[SONNET] == {
        "input_tokens": 200,
        "output_tokens": 50,
        "cache_read_input_tokens": 7,
        "cache_creation_input_tokens": 3,
        "cost_usd": 0.4,
    }
    assert made.tokens() == {
        "input_tokens": 300,
        "output_tokens": 60,
        "cache_read_input_tokens": 7,
        "cache_creation_input_tokens": 3,
    }
    assert (made.attempt, made.total_cost_usd, made.subtype) == (2, 0.5, "success")


def test_tokens_come_from_the_breakdown_when_a_budget_stop_reports_zero_usage() -> None:
    # What Claude Code reports when it stops a session at max_budget_usd.
    result = AgentResult(
        total_cost_usd=3.0003,
        subtype="error_max_budget_usd",
        usage={"input_tokens": 0, "output_tokens": 0},
        model_usage={SONNET: {"inputTokens": 1_000_000, "outputTokens": 20, "costUSD": 3.0003}},
    )

    made = CostRecord.from_result(
        result, run_id="r", step="s", attempt=1, workflow="w", team=None, project=None, model="m"
    )

    assert (made.input_tokens, made.output_tokens) == (1_000_000, 20)


def test_tokens_come_from_usage_when_there_is_no_breakdown() -> None:
    result = AgentResult(total_cost_usd=0.1, usage={"input_tokens": 40, "output_tokens": 4})

    made = CostRecord.from_result(
        result, run_id="r", step="s", attempt=1, workflow="w", team=None, project=None, model="m"
    )

    assert (made.input_tokens, made.output_tokens) == (40, 4)
    assert made.by_model() == {
        "m": {
            "input_tokens": 40,
            "output_tokens": 4,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cost_usd": 0.1,
        }
    }


def test_a_session_that_ended_without_a_result_has_an_unknown_cost_counted_as_zero() -> None:
    made = CostRecord.from_result(
        AgentResult(),
        run_id="r",
        step="s",
        attempt=1,
        workflow="w",
        team=None,
        project=None,
        model="m",
    )

    assert made.total_cost_usd is None
    assert made.cost == 0.0


# -- the ledger file -------------------------------------------------------------------------

APPENDER = """
import pathlib, sys, time
from bcce.events.cost import CostLedger, CostRecord
path, name, count = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ledger = CostLedger(path, fsync=False)
breakdown = {f"model-{i}": {"input_tokens": i, "cost_usd": 0.001} for i in range(30)}
(path.parent / f"{name}.ready").touch()
end = time.monotonic() + 60
while not (path.parent / "go").exists() and time.monotonic() < end:
    time.sleep(0.001)
for i in range(count):
    ledger.append(CostRecord("2026-05-01T12:00:00+00:00", name, f"s{i}", 1, "w", "t", None,
                             "m", 0.001, model_usage=breakdown))
"""


def test_two_processes_appending_at_once_lose_and_tear_no_record(ledger: CostLedger) -> None:
    count = 1000
    ledger.path.parent.mkdir(parents=True)
    # Lines of several KB: larger than a pipe's atomic write, as a big model breakdown is.
    processes = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(ledger.path), name, str(count)])
        for name in ("one", "two")
    ]
    ready = [ledger.path.parent / f"{name}.ready" for name in ("one", "two")]
    end = time.monotonic() + 60
    while not all(path.exists() for path in ready) and time.monotonic() < end:
        time.sleep(0.005)
    (ledger.path.parent / "go").touch()  # both start appending together
    for process in processes:
        assert process.wait(timeout=120) == 0

    records = ledger.records()

    assert ledger.skipped == 0
    assert sorted((r.run_id, r.step) for r in records) == sorted(
        (name, f"s{i}") for name in ("one", "two") for i in range(count)
    )
    # The writers really overlapped: their records interleave in the file.
    owners = [r.run_id for r in records]
    assert sum(1 for a, b in itertools.pairwise(owners) if a != b) > 1


def test_a_line_torn_by_a_killed_writer_is_skipped_and_the_next_record_is_whole(
    ledger: CostLedger,
) -> None:
    ledger.append(record(0.1, run_id="before"))
    with ledger.path.open("a") as handle:
        handle.write('{"time":"2026-05-01T12:00:00+00:00","run_id":"torn","st')

    ledger.append(record(0.2, run_id="after"))

    assert [r.run_id for r in ledger.records()] == ["before", "after"]
    assert ledger.skipped == 1


def test_a_missing_ledger_has_no_records(ledger: CostLedger) -> None:
    assert ledger.records() == []


def test_records_are_filtered_by_since_inclusive_and_until_exclusive(ledger: CostLedger) -> None:
    for day in (1, 2, 3):
        ledger.append(record(0.1, time=at(day, 0), run_id=f"day-{day}"))

    found = ledger.records(
        since=datetime.datetime(2026, 5, 2, tzinfo=UTC),
        until=datetime.datetime(2026, 5, 3, tzinfo=UTC),
    )

    assert [r.run_id for r in found] == ["day-2"]


def test_spent_sums_one_utc_day_of_one_team(ledger: CostLedger) -> None:
    ledger.append(record(0.25, time=at(1, 23)))
    ledger.append(record(0.5, time=at(2, 1)))
    ledger.append(record(0.125, time=at(2, 2)))
    ledger.append(record(4.0, time=at(2, 3), team="data"))

    assert ledger.spent(day="2026-05-02", team="platform") == 0.625
    assert ledger.spent(day="2026-05-02") == 4.625


# -- the report ------------------------------------------------------------------------------

RECORDS = [
    record(0.5, run_id="r1", team="platform", project="billing", workflow="edit", time=at(1)),
    record(0.25, run_id="r1", step="test", workflow="edit", time=at(1)),
    record(1.0, run_id="r2", team="data", project="etl", workflow="load", time=at(2)),
    record(0.125, run_id="r3", team=None, project=None, workflow="edit", time=at(2)),
]


def test_report_total_equals_the_sum_of_the_records() -> None:
    report = build_report(RECORDS, "team")

    assert report.total.cost_usd == sum(r.cost for r in RECORDS)
    assert report.total.input_tokens == sum(r.input_tokens for r in RECORDS)
    assert (report.total.runs, report.total.steps, report.total.attempts) == (3, 4, 4)


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("team", {"platform": 0.75, "data": 1.0, "(none)": 0.125}),
        ("project", {"billing": 0.75, "etl": 1.0, "(none)": 0.125}),
        ("workflow", {"edit": 0.875, "load": 1.0}),
        ("day", {"2026-05-01": 0.75, "2026-05-02": 1.125}),
        ("model", {SONNET: 1.875}),
    ],
)
def test_report_groups_spend(by: Any, expected: dict[str, float]) -> None:
    report = build_report(RECORDS, by)

    assert {row.key: row.cost_usd for row in report.rows} == expected
    assert sum(row.cost_usd for row in report.rows) == report.total.cost_usd


def test_report_by_day_is_in_date_order_and_others_by_cost() -> None:
    assert [r.key for r in build_report(RECORDS, "day").rows] == ["2026-05-01", "2026-05-02"]
    assert [r.key for r in build_report(RECORDS, "team").rows] == ["data", "platform", "(none)"]


def test_report_by_model_splits_each_record_by_its_breakdown() -> None:
    split = record(
        0.5,
        input_tokens=300,
        model_usage={
            SONNET: {"input_tokens": 200, "cost_usd": 0.4},
            HAIKU: {"input_tokens": 100, "cost_usd": 0.1},
        },
    )

    report = build_report([split], "model")

    rows = {row.key: (row.input_tokens, row.cost_usd, row.steps) for row in report.rows}
    assert rows == {SONNET: (200, 0.4, 1), HAIKU: (100, 0.1, 1)}
    assert report.total.input_tokens == 300


def test_attempts_of_one_step_count_as_one_step() -> None:
    attempts = [record(0.1, attempt=1), record(0.1, attempt=2)]

    total = build_report(attempts, "team").total

    assert (total.runs, total.steps, total.attempts) == (1, 1, 2)


def test_report_json_and_csv_carry_the_rows_and_the_total() -> None:
    report = build_report(RECORDS, "workflow")

    data = report.to_dict()
    lines = report.to_csv().splitlines()

    assert [row["workflow"] for row in data["rows"]] == ["load", "edit"]
    assert data["total"]["cost_usd"] == 1.875
    assert lines[0].split(",")[:3] == ["workflow", "runs", "steps"]
    assert lines[-1].startswith(f"{TOTAL_KEY},3,4,4,")
    assert json.dumps(data)  # JSON-serialisable


def test_grouping_by_an_unknown_key_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot group by 'host'"):
        build_report(RECORDS, "host")  # type: ignore[arg-type]


# -- reading times ---------------------------------------------------------------------------

NOW = datetime.datetime(2026, 5, 10, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("7d", False, NOW - datetime.timedelta(days=7)),
        ("12h", False, NOW - datetime.timedelta(hours=12)),
        ("2w", False, NOW - datetime.timedelta(weeks=2)),
        ("30m", False, NOW - datetime.timedelta(minutes=30)),
        ("2026-12-01", False, datetime.datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01", True, datetime.datetime(2026, 12, 2, tzinfo=UTC)),
        ("2026-12-01T09:00:00Z", False, datetime.datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T09:00:00", False, datetime.datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T11:00:00+02:00", False, datetime.datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("today", False, datetime.datetime(2026, 5, 10, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_relative_dates_or_iso(
    text: str, end: bool, expected: datetime.datetime
) -> None:
    assert parse_when(text, option="--since", end=end, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7 days", "2026-13-01", "-3d", ""])
def test_unreadable_times_are_usage_errors_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_when(text, option="--since", now=NOW)

    assert caught.value.hint is not None
    assert "--since 7d" in caught.value.hint
