"""Getting a run's files into the configured storage backend.

Steps write their artifacts into the local run directory (fast, streamable, durable next to
the run state). When the storage backend is somewhere else, each step's files are stored there as
the step finishes, and the run's own files (state, events, reports) when the run completes.
"""

from __future__ import annotations

from pathlib import Path

from bcce.storage.backend import LocalStorageBackend, StorageBackend

RUN_FILES = ("run.json", "journal.jsonl", "events.jsonl", "junit.xml")


class ArtifactPublisher:
    def __init__(self, backend: StorageBackend, state_dir: Path) -> None:
        self.backend = backend
        self.state_dir = state_dir

    @property
    def in_place(self) -> bool:
        """The backend is the run directory itself: nothing to copy."""
        return (
            isinstance(self.backend, LocalStorageBackend)
            and self.backend.root.resolve() == self.state_dir.resolve()
        )

    def publish_step(self, run_id: str, step_id: str) -> list[str]:
        if self.in_place:
            return []
        directory = self.state_dir / run_id / step_id
        keys = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{run_id}/{path.relative_to(self.state_dir / run_id).as_posix()}"
            self.backend.store(key, path.read_bytes())
            keys.append(key)
        return keys

    def publish_file(self, run_id: str, name: str) -> list[str]:
        """One file of the run directory written after the run (``bcce workflow report``)."""
        path = self.state_dir / run_id / name
        if self.in_place or not path.is_file():
            return []
        key = f"{run_id}/{name}"
        self.backend.store(key, path.read_bytes())
        return [key]

    def publish_run(self, run_id: str) -> list[str]:
        if self.in_place:
            return []
        keys = []
        for name in RUN_FILES:
            path = self.state_dir / run_id / name
            if path.is_file():
                self.backend.store(f"{run_id}/{name}", path.read_bytes())
                keys.append(f"{run_id}/{name}")
        return keys
