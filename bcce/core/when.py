"""Reading a point in time as people type it on the command line (``--since``, ``--until``).

Accepted: an age (``30s``, ``30m``, ``12h``, ``7d``, ``2w``: that long before now), ``now``,
``today`` (midnight UTC; the next midnight for an end), a date (``2026-12-01``: its midnight
UTC, or the next midnight for an end, so ``--until 2026-12-01`` includes the 1st) and an ISO 8601
time (``2026-12-01T09:30``, UTC unless it names a zone; ``Z`` is accepted). Every result is an
aware UTC datetime.
"""

from __future__ import annotations

import datetime
import re

from bcce.errors import UsageError

_AGE = re.compile(r"(\d+)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_when(
    text: str,
    *,
    option: str = "time",
    end: bool = False,
    now: datetime.datetime | None = None,
) -> datetime.datetime:
    """The moment ``text`` names (see the module docstring); ``end`` reads a day as its end.

    Raises :class:`~bcce.errors.UsageError` naming ``option`` with a hint otherwise.
    """
    value = text.strip().lower()
    moment = now or datetime.datetime.now(datetime.UTC)
    age = _AGE.fullmatch(value)
    if age is not None:
        return moment - datetime.timedelta(seconds=int(age.group(1)) * _SECONDS[age.group(2)])
    if value == "now":
        return moment
    try:
        if value == "today" or _DATE.fullmatch(value):
            day = moment.date() if value == "today" else datetime.date.fromisoformat(value)
            start = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
            return start + datetime.timedelta(days=1) if end else start
        return parse_iso(text.strip())
    except ValueError:
        raise UsageError(
            f"{option}: cannot read {text!r} as a time",
            hint=f"an age ({option} 7d; also 30s, 30m, 12h, 2w), {option} today, "
            f"a date ({option} 2026-12-01) or a time ({option} 2026-12-01T09:00:00Z)",
        ) from None


def parse_iso(text: str) -> datetime.datetime:
    """An ISO 8601 time as an aware UTC datetime (UTC when it names no zone); ValueError else."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


__all__ = ["parse_iso", "parse_when"]
