"""Logging with loguru: silent in the library, switched on by the CLI (or an embedding app).

Every record carries ``run_id`` and ``component`` in its ``extra``; modules get a bound logger
with :func:`get_logger`, runs add the id with ``logger.contextualize(run_id=...)``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Logger, Record

logger.disable("bcce")

TEXT_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan>{extra[run_suffix]} {message}"
)


def get_logger(component: str) -> Logger:
    """A logger whose records say which part of bcce wrote them."""
    return logger.bind(component=component)


def _patch(redact: Callable[[str], str] | None) -> Callable[[Record], None]:
    def patch(record: Record) -> None:
        extra = record["extra"]
        extra.setdefault("component", record["name"] or "bcce")
        extra.setdefault("run_id", None)
        extra["run_suffix"] = f" [{extra['run_id']}]" if extra["run_id"] else ""
        if redact is not None:
            record["message"] = redact(record["message"])

    return patch


def configure_logging(
    level: str = "INFO",
    fmt: str = "text",
    *,
    sink: TextIO | None = None,
    redact: Callable[[str], str] | None = None,
) -> Iterator[int]:
    """Add one sink (stderr by default) and enable bcce's records; undone when the generator closes.

    Written as a generator so the application container can hold it as a ``Resource``.
    """
    logger.configure(patcher=_patch(redact))
    # loguru's own default stderr sink (id 0) would print every record a second time, as text.
    with contextlib.suppress(ValueError):
        logger.remove(0)
    stream: Any = sink or sys.stderr
    handler = (
        logger.add(stream, level=level, serialize=True, backtrace=False, diagnose=False)
        if fmt == "json"
        else logger.add(
            stream,
            level=level,
            format=TEXT_FORMAT,
            colorize=stream.isatty() if hasattr(stream, "isatty") else False,
            backtrace=False,
            diagnose=False,
        )
    )
    logger.enable("bcce")
    try:
        yield handler
    finally:
        logger.remove(handler)
        logger.disable("bcce")
