"""Step artifacts go to a storage backend elsewhere than the run directory in the background:
the next step does not wait for them, the run does not end before them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dependency_injector import providers

from bcce.storage.backend import LocalStorageBackend

if TYPE_CHECKING:
    from bcce.containers.application import Application
    from bcce.events.bus import Event

    from .conftest import Ran

TWO_STEPS = """
version: 1
workflow: pair
steps:
  - {id: first, type: cmd, command: 'echo one'}
  - {id: second, type: cmd, command: 'echo two'}
"""


class GatedBackend(LocalStorageBackend):
    """Stores the files of the step ``gated`` only once the gate opens (or ``patience``
    seconds have passed: ``waited_out``)."""

    def __init__(self, root: Path, gated: str = "first", patience: float = 10) -> None:
        super().__init__(root)
        self.gated = f"run-1/{gated}/"
        self.patience = patience
        self.gate = threading.Event()
        self.waited_out = False
        self.stored: list[str] = []

    def store_file(self, key: str, path: Path) -> None:
        if key.startswith(self.gated) and not self.gate.wait(self.patience):
            self.waited_out = True
        super().store_file(key, path)
        self.stored.append(key)

    def store(self, key: str, data: bytes) -> None:
        super().store(key, data)
        self.stored.append(key)


def test_the_next_step_starts_while_the_previous_steps_artifacts_upload(
    workflow_app: Application, run_workflow: Callable[..., Ran], tmp_path: Path
) -> None:
    backend = GatedBackend(tmp_path / "elsewhere")
    bus = workflow_app.events.bus()
    bus.subscribe(
        "step.started",
        lambda event: backend.gate.set() if event.payload["step"] == "second" else None,
    )
    with workflow_app.storage.backend.override(providers.Object(backend)):
        ran = run_workflow(TWO_STEPS)

    assert ran.exit_code == 0
    assert not backend.waited_out  # synchronous uploads would have held "second" back
    assert "run-1/first/output.txt" in backend.stored


def test_the_run_ends_after_every_step_upload_and_archives_last(
    workflow_app: Application, run_workflow: Callable[..., Ran], tmp_path: Path
) -> None:
    # The last step's upload is held until the run ends or a second passes: a run that did
    # not wait for it would end with it still held.
    backend = GatedBackend(tmp_path / "elsewhere", gated="second", patience=1)
    at_end: list[list[str]] = []

    def ended(event: Event) -> None:
        at_end.append(list(backend.stored))
        backend.gate.set()

    workflow_app.events.bus().subscribe("workflow.completed", ended)
    with workflow_app.storage.backend.override(providers.Object(backend)):
        ran = run_workflow(TWO_STEPS)

    assert ran.exit_code == 0
    assert "run-1/second/output.txt" in at_end[0]
    assert backend.stored[-1] == "run-1/archive.json"
    assert backend.stored.count("run-1/archive.json") == 1


def test_with_the_defaults_nothing_is_copied_or_archived(
    workflow_app: Application, run_workflow: Callable[..., Ran], runs_dir: Path
) -> None:
    ran = run_workflow(TWO_STEPS)

    assert ran.exit_code == 0
    assert [e for e in ran.events(("storage.", "artifacts.")) if e] == []
    assert not (runs_dir / "run-1" / "archive.json").exists()
