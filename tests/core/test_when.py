"""Times typed on the command line (--since, --until): ages, today, dates and ISO times."""

from __future__ import annotations

import datetime

import pytest

from bcce.core.when import parse_when
from bcce.errors import UsageError

UTC = datetime.UTC
NOW = datetime.datetime(2026, 5, 10, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("45s", False, NOW - datetime.timedelta(seconds=45)),
        ("30m", False, NOW - datetime.timedelta(minutes=30)),
        ("12h", False, NOW - datetime.timedelta(hours=12)),
        ("7d", False, NOW - datetime.timedelta(days=7)),
        ("2w", False, NOW - datetime.timedelta(weeks=2)),
        ("now", False, NOW),
        ("today", False, datetime.datetime(2026, 5, 10, tzinfo=UTC)),
        ("today", True, datetime.datetime(2026, 5, 11, tzinfo=UTC)),
        ("2026-12-01", False, datetime.datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01", True, datetime.datetime(2026, 12, 2, tzinfo=UTC)),
        ("2026-12-01T09:00:00Z", False, datetime.datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T09:00", False, datetime.datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T11:00:00+02:00", False, datetime.datetime(2026, 12, 1, 9, tzinfo=UTC)),
    ],
)
def test_ages_days_dates_and_iso_times_are_read_in_utc(
    text: str, end: bool, expected: datetime.datetime
) -> None:
    assert parse_when(text, end=end, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7 days ago", "2026-13-01", "-3d", ""])
def test_unreadable_times_name_the_option_and_give_a_hint(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_when(text, option="--until", now=NOW)

    assert caught.value.message.startswith("--until: cannot read")
    assert caught.value.hint is not None and "--until 7d" in caught.value.hint
