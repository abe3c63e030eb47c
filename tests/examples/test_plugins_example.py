"""examples/plugins, run the way its README says: the bcce command line in a subprocess.

The example is copied to ``tmp_path`` as a fresh checkout would have it, its ``bcce.yaml`` is
generated from ``bcce.yaml.in`` with the README's own ``sed`` command, and ``bcce workflow run``
runs it with the first-party sqlite plugin in its sandbox. The outputs are read back with
``bcce workflow status RUN_ID --json``, as the README shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins"
BCCE = Path(sysconfig.get_path("scripts")) / "bcce"
#: The README's command that writes ./bcce.yaml for the directory the example is in.
MAKE_CONFIG = 'sed "s|@EXAMPLE_DIR@|$(pwd -P)|g" bcce.yaml.in > bcce.yaml'
#: What a previous run in the source checkout may have left (all ignored by git).
LEFT_BY_RUNS = shutil.ignore_patterns("bcce.yaml", ".bcce_runs", "*.db", "*.db-journal")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/plugins, as a fresh checkout has it."""
    copy = tmp_path / "plugins-example"
    shutil.copytree(EXAMPLE, copy, ignore=LEFT_BY_RUNS)
    return copy


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=dict(os.environ),  # BCCE_* and AWS_* were removed by the autouse fixture
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(["/bin/sh", "-c", command], cwd)


def bcce(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(BCCE), *args], cwd)


def run_example(example: Path, *args: str) -> dict[str, Any]:
    """``bcce workflow run workflow.yml [ARGS]``, then the run's state from ``workflow status``."""
    ran = bcce(example, "workflow", "run", "workflow.yml", *args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    found = re.match(r"run (\S+): plugins-sqlite", ran.stdout)
    assert found is not None, ran.stdout
    status = bcce(example, "workflow", "status", found.group(1), "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    state: dict[str, Any] = json.loads(status.stdout)
    return state


def outputs(state: dict[str, Any], step: str) -> dict[str, Any]:
    result: dict[str, Any] = state["steps"][step]["outputs"]
    return result


def test_the_example_migrates_writes_queries_and_backs_up(example: Path) -> None:
    made = shell(MAKE_CONFIG, example)
    assert made.returncode == 0, made.stderr

    state = run_example(example)

    assert state["status"] == "succeeded"
    assert outputs(state, "migrate") == {
        "applied": ["001_create_notes", "002_add_tags"],
        "current": 2,
    }
    assert outputs(state, "notes_by_tag")["rows"] == [
        {"tag": "docs", "notes": 1},
        {"tag": "misc", "notes": 1},
        {"tag": "ops", "notes": 1},
    ]
    assert outputs(state, "check_backup")["rows"] == [{"notes": 3}]
    assert outputs(state, "report")["stdout"].splitlines() == [
        "migrations applied by this run: 001_create_notes, 002_add_tags",
        "schema version: 2",
        "tags: 3",
        f"backup: {outputs(state, 'backup')['bytes']} bytes, 3 notes",
    ]
    with sqlite3.connect(example / "data" / "notes-backup.db") as backup:
        titles = [row[0] for row in backup.execute("SELECT title FROM notes ORDER BY title")]
    assert titles == ["Rotate the keys", "Try the sqlite plugin", "Welcome"]


def test_a_second_run_applies_no_migration_and_updates_its_note(example: Path) -> None:
    assert shell(MAKE_CONFIG, example).returncode == 0
    run_example(example)

    state = run_example(
        example, "--var", "NOTE_TITLE=Try the sqlite plugin", "--var", "NOTE_TAG=ops"
    )

    assert outputs(state, "migrate") == {"applied": [], "current": 2}
    assert outputs(state, "notes_by_tag")["rows"] == [
        {"tag": "misc", "notes": 1},
        {"tag": "ops", "notes": 2},
    ]
    assert outputs(state, "report")["stdout"].splitlines()[0] == (
        "migrations applied by this run: none"
    )


def test_without_the_grants_the_plugin_may_not_touch_the_database(example: Path) -> None:
    ran = bcce(example, "workflow", "run", "workflow.yml")

    assert ran.returncode == 1
    assert "permission denied" in ran.stdout
    assert "filesystem:write" in ran.stdout
    assert not (example / "data" / "notes.db").exists()
