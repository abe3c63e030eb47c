"""``bcce cost report``: spend from the cost ledger of the configured state directory."""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bcce.events.cost import CostLedger, CostRecord

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def at(day: int) -> str:
    return datetime.datetime(2026, 5, day, 12, tzinfo=datetime.UTC).isoformat()


def usage(cost: float, tokens: int) -> dict[str, Any]:
    return {"input_tokens": tokens, "output_tokens": tokens // 10, "cost_usd": cost}


#: Three runs of two teams over three days; the last one used two models.
RECORDS = [
    CostRecord(at(1), "r1", "fix", 1, "edit", "platform", "billing", SONNET, 0.5, 1000, 100),
    CostRecord(at(1), "r1", "fix", 2, "edit", "platform", "billing", SONNET, 0.25, 500, 50),
    CostRecord(at(2), "r2", "load", 1, "etl", "data", "warehouse", SONNET, 1.0, 2000, 200),
    CostRecord(
        at(3),
        "r3",
        "ask",
        1,
        "edit",
        "platform",
        "billing",
        SONNET,
        0.375,
        900,
        90,
        model_usage={SONNET: usage(0.25, 600), HAIKU: usage(0.125, 300)},
    ),
]


@pytest.fixture
def app(bcce_make_app: Callable[..., Application], tmp_path: Path) -> Application:
    return bcce_make_app(workflow={"state_dir": str(tmp_path / "state")})


@pytest.fixture
def report(
    app: Application, bcce_cli: Callable[..., Result], tmp_path: Path
) -> Callable[..., Result]:
    """``report(*args)``: ``bcce cost report ARGS`` over a ledger holding ``RECORDS``."""
    ledger = CostLedger(tmp_path / "state" / "costs.jsonl")
    for record in RECORDS:
        ledger.append(record)

    def invoke(*args: str) -> Result:
        return bcce_cli(["cost", "report", *args], app=app)

    return invoke


def as_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_the_table_shows_each_group_and_the_total(report: Callable[..., Result]) -> None:
    result = report("--by", "team")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "spend by team"
    assert lines[1].split() == [
        "team",
        "runs",
        "steps",
        "input",
        "tokens",
        "output",
        "tokens",
        "cost",
        "(USD)",
    ]
    # Highest spend first.
    assert lines[2].split() == ["platform", "2", "2", "2,400", "240", "1.1250"]
    assert lines[3].split() == ["data", "1", "1", "2,000", "200", "1.0000"]
    assert lines[-1].split() == ["total", "3", "3", "4,400", "440", "2.1250"]


def test_json_has_rows_and_a_total_equal_to_the_sum_of_the_records(
    report: Callable[..., Result],
) -> None:
    data = as_json(report("--json"))

    assert set(data) == {"by", "since", "until", "rows", "total"}
    assert data["total"]["cost_usd"] == pytest.approx(sum(r.cost for r in RECORDS))
    assert data["total"]["input_tokens"] == sum(r.input_tokens for r in RECORDS)
    assert (data["total"]["runs"], data["total"]["steps"], data["total"]["attempts"]) == (3, 3, 4)
    assert set(data["rows"][0]) == {
        "team",
        "runs",
        "steps",
        "attempts",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cost_usd",
    }


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("team", {"platform": 1.125, "data": 1.0}),
        ("project", {"billing": 1.125, "warehouse": 1.0}),
        ("workflow", {"edit": 1.125, "etl": 1.0}),
        ("day", {"2026-05-01": 0.75, "2026-05-02": 1.0, "2026-05-03": 0.375}),
        ("model", {SONNET: 2.0, HAIKU: 0.125}),
    ],
)
def test_spend_is_grouped_by_the_chosen_key(
    report: Callable[..., Result], by: str, expected: dict[str, float]
) -> None:
    data = as_json(report("--by", by, "--json"))

    assert {row[by]: row["cost_usd"] for row in data["rows"]} == expected
    assert data["total"]["cost_usd"] == pytest.approx(sum(expected.values()))


def test_csv_has_a_header_a_line_per_group_and_a_total_line(
    report: Callable[..., Result],
) -> None:
    result = report("--by", "day", "--csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["day"] for row in rows] == ["2026-05-01", "2026-05-02", "2026-05-03", "(total)"]
    assert float(rows[-1]["cost_usd"]) == pytest.approx(2.125)
    assert rows[0]["attempts"] == "2"


def test_since_and_until_bound_the_period(report: Callable[..., Result]) -> None:
    data = as_json(report("--since", "2026-05-02", "--until", "2026-05-02", "--json"))

    assert [row["team"] for row in data["rows"]] == ["data"]
    assert data["total"]["cost_usd"] == 1.0
    assert (data["since"], data["until"]) == (
        "2026-05-02T00:00:00+00:00",
        "2026-05-03T00:00:00+00:00",
    )


def test_a_relative_since_leaves_older_spend_out(
    report: Callable[..., Result], tmp_path: Path
) -> None:
    recent = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    CostLedger(tmp_path / "state" / "costs.jsonl").append(
        CostRecord(recent.isoformat(), "r9", "fix", 1, "edit", "ops", None, SONNET, 0.0625)
    )

    data = as_json(report("--since", "1d", "--json"))

    assert [(row["team"], row["cost_usd"]) for row in data["rows"]] == [("ops", 0.0625)]


def test_an_unreadable_since_is_a_usage_error_with_a_hint(report: Callable[..., Result]) -> None:
    result = report("--since", "last tuesday")

    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "--since: cannot read 'last tuesday' as a time" in result.stderr
    assert "hint: an age (--since 7d" in result.stderr
    assert "Traceback" not in result.output


def test_since_after_until_is_a_usage_error(report: Callable[..., Result]) -> None:
    result = report("--since", "2026-05-03", "--until", "2026-05-01")

    assert result.exit_code == 2
    assert "is not before --until" in result.stderr


def test_json_and_csv_together_are_a_usage_error(report: Callable[..., Result]) -> None:
    result = report("--json", "--csv")

    assert result.exit_code == 2
    assert "--json and --csv cannot be used together" in result.stderr


def test_an_unknown_grouping_is_refused(report: Callable[..., Result]) -> None:
    result = report("--by", "host")

    assert result.exit_code == 2
    assert "'host' is not one of" in result.output


def test_no_recorded_spend_is_said_plainly(
    app: Application, bcce_cli: Callable[..., Result]
) -> None:
    result = bcce_cli(["cost", "report"], app=app)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["spend by team", "no recorded spend"]


def test_an_empty_json_report_has_no_rows_and_a_zero_total(
    app: Application, bcce_cli: Callable[..., Result]
) -> None:
    data = as_json(bcce_cli(["cost", "report", "--json"], app=app))

    assert data["rows"] == []
    assert data["total"]["cost_usd"] == 0


def test_unreadable_ledger_lines_are_skipped_with_a_warning(
    report: Callable[..., Result], tmp_path: Path
) -> None:
    with (tmp_path / "state" / "costs.jsonl").open("a") as handle:
        handle.write("not json\n")

    result = report("--json")

    assert json.loads(result.stdout)["total"]["attempts"] == 4
    assert "1 unreadable line(s)" in result.stderr
