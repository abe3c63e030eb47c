"""The JUnit XML report written when a run completes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.workflow.loader import LoadOptions, load_workflow
from bcce.workflow.model import Workflow
from bcce.workflow.reports import write_junit
from bcce.workflow.state import RunState

REPORTED = """
version: 1
workflow: report
steps:
  - {id: ok, type: cmd, command: echo}
  - {id: broke, type: cmd, command: echo}
  - {id: slow, type: cmd, command: echo}
  - id: grp
    type: composite
    steps:
      - {id: skipped_one, type: cmd, command: echo}
      - {id: stopped, type: cmd, command: echo}
  - {id: untouched, type: prompt, prompt: hi}
"""

STEPS: dict[str, dict[str, Any]] = {
    "ok": {"status": "succeeded", "duration_seconds": 1.25},
    "broke": {"status": "failed", "duration_seconds": 0.5, "error": "command exited with code 2"},
    "slow": {"status": "timed_out", "duration_seconds": 2.0},
    "grp": {"status": "failed", "duration_seconds": 9.0},
    "skipped_one": {"status": "skipped", "reason": "skipped: condition success() is false"},
    "stopped": {"status": "cancelled"},
}


@pytest.fixture
def workflow(write_workflow: Callable[..., Path]) -> Workflow:
    return load_workflow(write_workflow(REPORTED), LoadOptions(environ={}))


@pytest.fixture
def suite(workflow: Workflow, tmp_path: Path) -> ET.Element:
    state = RunState(run_id="r", workflow={"name": "report"}, steps=STEPS)
    state.started_at = "2026-01-01T00:00:00.000+00:00"
    write_junit(tmp_path / "junit.xml", workflow, state)
    return ET.parse(tmp_path / "junit.xml").getroot()


def cases(suite: ET.Element) -> dict[str, ET.Element]:
    return {case.get("name") or "": case for case in suite.iter("testcase")}


def test_the_report_is_one_testsuite_named_for_the_workflow(suite: ET.Element) -> None:
    assert suite.tag == "testsuite"
    assert suite.get("name") == "report"
    assert suite.get("timestamp") == "2026-01-01T00:00:00.000+00:00"


def test_there_is_a_case_per_working_step_in_file_order(suite: ET.Element) -> None:
    assert list(cases(suite)) == ["ok", "broke", "slow", "skipped_one", "stopped", "untouched"]
    assert suite.get("tests") == "6"


def test_control_steps_are_not_cases(suite: ET.Element) -> None:
    assert "grp" not in cases(suite)


def test_failed_and_timed_out_steps_are_failures(suite: ET.Element) -> None:
    found = cases(suite)
    broke = found["broke"].find("failure")
    slow = found["slow"].find("failure")

    assert broke is not None and broke.get("message") == "command exited with code 2"
    assert broke.text == "command exited with code 2"
    assert slow is not None and slow.get("message") == "timed_out"
    assert suite.get("failures") == "2"
    assert suite.get("errors") == "0"


def test_skipped_cancelled_and_pending_steps_are_skipped(suite: ET.Element) -> None:
    found = cases(suite)
    skipped = found["skipped_one"].find("skipped")

    assert skipped is not None and skipped.get("message") == "skipped: condition success() is false"
    assert found["stopped"].find("skipped") is not None
    assert found["untouched"].find("skipped") is not None
    assert suite.get("skipped") == "3"


def test_succeeded_steps_have_neither_failure_nor_skipped(suite: ET.Element) -> None:
    ok = cases(suite)["ok"]

    assert ok.find("failure") is None and ok.find("skipped") is None


def test_times_are_the_step_durations_and_their_sum(suite: ET.Element) -> None:
    found = cases(suite)

    assert found["ok"].get("time") == "1.250"
    assert found["untouched"].get("time") == "0.000"
    assert suite.get("time") == "3.750"


def test_cases_are_classified_by_workflow_and_step_type(suite: ET.Element) -> None:
    found = cases(suite)

    assert found["ok"].get("classname") == "report.cmd"
    assert found["untouched"].get("classname") == "report.prompt"


def test_xml_special_characters_in_errors_are_escaped(workflow: Workflow, tmp_path: Path) -> None:
    steps = {"broke": {"status": "failed", "error": 'bad <tag> & "quote" ]]>'}}
    write_junit(tmp_path / "junit.xml", workflow, RunState(run_id="r", workflow={}, steps=steps))

    failure = cases(ET.parse(tmp_path / "junit.xml").getroot())["broke"].find("failure")

    assert failure is not None and failure.text == 'bad <tag> & "quote" ]]>'


def test_the_report_stays_valid_xml_when_an_error_holds_control_characters(
    workflow: Workflow, tmp_path: Path
) -> None:
    # A step executor (a plugin's, say) may pass a tool's coloured output on as its error.
    steps = {"broke": {"status": "failed", "error": "\x1b[31mred\x1b[0m and a NUL \x00"}}
    write_junit(tmp_path / "junit.xml", workflow, RunState(run_id="r", workflow={}, steps=steps))

    failure = cases(ET.parse(tmp_path / "junit.xml").getroot())["broke"].find("failure")

    assert failure is not None and "red" in (failure.text or "")
