"""How the report writes numbers, times and links (the HTML and Markdown renderers share it)."""

from __future__ import annotations

import datetime
import math
import posixpath
from urllib.parse import quote


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def offset(seconds: float | None) -> str:
    """A moment on the run's time axis: ``+1.25 s``."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"+{seconds:.2f} s"
    return "+" + duration(seconds)


def axis_label(seconds: float, step: float) -> str:
    """A tick label on the time axis, as precise as the tick interval ``step``."""
    if step < 1:
        decimals = max(0, -math.floor(math.log10(step)))
        return f"{seconds:.{decimals}f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if step < 60:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes}m{rest:02d}s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}"


def nice_step(span: float, ticks: int = 8) -> float:
    """A tick interval of 1, 2 or 5 times a power of ten (or minutes) giving about ``ticks``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    if raw >= 60:
        for candidate in (60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
            if candidate >= raw:
                return float(candidate)
        return 86400.0 * math.ceil(raw / 86400)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def cost(usd: float | None) -> str:
    if usd is None:
        return ""
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def tokens(input_tokens: int | None, output_tokens: int | None) -> str:
    if input_tokens is None and output_tokens is None:
        return ""
    return f"{count(input_tokens or 0)} in / {count(output_tokens or 0)} out"


def size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "kB", "MB"):
        if value < 1000 or unit == "MB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


def clock(iso: str | None) -> str:
    """``16:53:10.829`` (UTC) from an ISO time; the date is in the report's header."""
    if not iso:
        return ""
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def timestamp(iso: str | None) -> str:
    """``2026-12-07 16:53:10 UTC`` from an ISO time."""
    if not iso:
        return ""
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def href(base: str, path: str) -> str:
    """A link to ``path`` (relative to the run directory) from where the report is: ``base`` is
    the run directory relative to the report's directory."""
    joined = posixpath.normpath(posixpath.join(base, path)) if base else path
    return quote(joined, safe="/")


def attempts(total: int, retried: int) -> str:
    if not total:
        return ""
    return f"{total} ({retried} retried)" if retried else str(total)
