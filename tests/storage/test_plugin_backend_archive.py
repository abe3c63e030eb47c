"""A storage plugin implementing only the six calls of the interface gets step uploads, run
archives and read-back through the defaults of ``StorageBackend``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bcce.plugin.scaffold import scaffold_plugin
from bcce.storage.archive import MANIFEST, RunManifest
from bcce.testing.plugins import PluginHarness

WORKFLOW = """
version: 1
workflow: build
steps:
  - {id: build, type: cmd, command: 'echo built'}
"""


@pytest.fixture
def harness(bcce_plugin_harness: Callable[..., PluginHarness], tmp_path: Path) -> PluginHarness:
    plugin = scaffold_plugin("acme-store", "storage", tmp_path / "plugins")
    root = tmp_path / "artifacts"
    root.mkdir()
    grant = {"permission": "filesystem:write", "scope": [f"{root}/**"]}
    return bcce_plugin_harness(plugin, config={"root": str(root)}, grants=[grant])


def test_a_run_is_archived_through_a_storage_plugin_and_read_back(
    harness: PluginHarness, tmp_path: Path
) -> None:
    run = harness.run_workflow(WORKFLOW, run_id="p1")
    assert run.ok, run.error

    root = tmp_path / "artifacts"
    assert (root / "p1" / "build" / "output.txt").read_text() == "built\n"
    manifest = RunManifest.from_json((root / "p1" / MANIFEST).read_bytes(), where="test")
    assert manifest.status == "succeeded" and manifest.location == str(root / "p1")
    assert {"run.json", "events.jsonl", "build/output.txt"} <= {f.path for f in manifest.files}
    archived = [e for e in run.events if e.type == "storage.archived"]
    assert archived and archived[0].payload["location"] == str(root / "p1")

    copy = harness.storage().fetch_run("p1", tmp_path / "copy" / "p1")

    assert copy == manifest
    assert (tmp_path / "copy" / "p1" / "build" / "output.txt").read_text() == "built\n"
