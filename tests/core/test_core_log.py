"""Logging: silent as a library, one sink when switched on, run_id and component on every record."""

from __future__ import annotations

import io
import json

from loguru import logger

from bcce.core.log import configure_logging, get_logger
from bcce.events.metrics import LogMetricsCollector


def _lines(sink: io.StringIO) -> list[str]:
    return sink.getvalue().splitlines()


def _log_from_inside_bcce() -> None:
    LogMetricsCollector().record("steps", 1.0)  # a debug record from bcce.events.metrics


def test_the_library_is_silent_until_logging_is_configured() -> None:
    sink = io.StringIO()
    handler = logger.add(sink, level="TRACE")
    try:
        _log_from_inside_bcce()
    finally:
        logger.remove(handler)

    assert sink.getvalue() == ""


def test_configured_logging_shows_the_librarys_records() -> None:
    sink = io.StringIO()
    resource = configure_logging("DEBUG", "json", sink=sink)
    next(resource)
    try:
        _log_from_inside_bcce()
    finally:
        resource.close()

    (record,) = (json.loads(line)["record"] for line in _lines(sink))
    assert record["name"] == "bcce.events.metrics"
    assert record["extra"]["component"] == "metrics"


def test_json_records_carry_run_id_and_component() -> None:
    sink = io.StringIO()
    resource = configure_logging("DEBUG", "json", sink=sink)
    next(resource)
    try:
        with logger.contextualize(run_id="20260101-000000-abcdef"):
            get_logger("runner").info("step {} done", "build")
        get_logger("doctor").debug("outside a run")
    finally:
        resource.close()

    first, second = (json.loads(line)["record"] for line in _lines(sink))
    assert first["message"] == "step build done"
    assert first["extra"]["run_id"] == "20260101-000000-abcdef"
    assert first["extra"]["component"] == "runner"
    assert second["extra"]["run_id"] is None
    assert second["extra"]["component"] == "doctor"


def test_text_records_show_component_and_run_id() -> None:
    sink = io.StringIO()
    resource = configure_logging("INFO", "text", sink=sink)
    next(resource)
    try:
        with logger.contextualize(run_id="r-1"):
            get_logger("runner").info("started")
    finally:
        resource.close()

    (line,) = _lines(sink)
    assert line.endswith(" INFO    runner [r-1] started")


def test_records_below_the_level_are_dropped() -> None:
    sink = io.StringIO()
    resource = configure_logging("WARNING", "text", sink=sink)
    next(resource)
    try:
        get_logger("x").info("dropped")
        get_logger("x").warning("kept")
    finally:
        resource.close()

    assert [line.rsplit(" ", 1)[-1] for line in _lines(sink)] == ["kept"]


def test_closing_the_resource_silences_the_library_again() -> None:
    sink = io.StringIO()
    resource = configure_logging("DEBUG", "text", sink=sink)
    next(resource)
    resource.close()
    handler = logger.add(sink, level="TRACE")
    try:
        _log_from_inside_bcce()
    finally:
        logger.remove(handler)

    assert sink.getvalue() == ""


def test_redaction_applies_to_every_message() -> None:
    sink = io.StringIO()
    resource = configure_logging(
        "INFO", "json", sink=sink, redact=lambda text: text.replace("hunter2", "***")
    )
    next(resource)
    try:
        get_logger("x").info("password is {}", "hunter2")
    finally:
        resource.close()

    assert "hunter2" not in sink.getvalue()
    assert json.loads(_lines(sink)[0])["record"]["message"] == "password is ***"
