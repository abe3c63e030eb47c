"""Run reports written when a run completes: JUnit XML for CI systems."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from bcce.core.durable import atomic_write_bytes
from bcce.workflow.model import CONTROL_TYPES, Workflow
from bcce.workflow.state import RunState

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: object) -> str:
    """XML 1.0 cannot hold most control characters (ANSI colours, NUL): drop them."""
    return _NOT_XML.sub("", str(value))


def write_junit(path: Path, workflow: Workflow, state: RunState) -> None:
    """One test case per step that does work (control steps are containers, not cases)."""
    cases = [s for s in workflow.all_steps() if s.type not in CONTROL_TYPES]
    suite = ET.Element(
        "testsuite",
        name=workflow.name,
        tests=str(len(cases)),
        timestamp=state.started_at or state.created_at,
    )
    failures = skipped = 0
    total = 0.0
    for step in cases:
        info = state.steps.get(step.id, {})
        duration = float(info.get("duration_seconds") or 0.0)
        total += duration
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{workflow.name}.{step.type}",
            name=step.id,
            time=f"{duration:.3f}",
        )
        status = info.get("status", "pending")
        if status in ("failed", "timed_out"):
            failures += 1
            failure = ET.SubElement(case, "failure", message=_xml_text(info.get("error") or status))
            failure.text = _xml_text(info.get("error") or "")
        elif status in ("skipped", "cancelled", "pending", "awaiting_approval"):
            skipped += 1
            ET.SubElement(case, "skipped", message=_xml_text(info.get("reason") or status))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    suite.set("time", f"{total:.3f}")
    ET.indent(suite)
    atomic_write_bytes(
        path, ET.tostring(suite, encoding="utf-8", xml_declaration=True), fsync=False
    )
