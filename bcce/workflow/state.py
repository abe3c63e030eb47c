"""Durable run state.

The journal (``journal.jsonl``, CRC per record) is the source of truth: every transition is one
appended record. ``run.json`` is a snapshot (atomically replaced) written when the run starts, at
phase boundaries and when it ends; reading a run replays the journal over the snapshot, so a
``kill -9`` at any instant leaves a readable run that resumes from its last recorded transition.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from bcce.core.durable import Journal, RunLock, atomic_write_json, read_json, remove_temp_files
from bcce.core.ids import is_valid_run_id
from bcce.errors import StorageError, UsageError

RunStatus = Literal["pending", "running", "succeeded", "failed", "cancelled", "awaiting_approval"]
StepStatus = Literal[
    "pending", "running", "retrying", "succeeded", "failed", "skipped", "cancelled", "timed_out"
]
TERMINAL_RUN = frozenset({"succeeded", "failed", "cancelled"})
FINISHED_STEP = frozenset({"succeeded", "failed", "skipped", "cancelled", "timed_out"})

SNAPSHOT = "run.json"
JOURNAL = "journal.jsonl"
CANCEL_REQUEST = "cancel.request"


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class RunState:
    """Everything known about a run; JSON-serialisable through :meth:`to_dict`."""

    run_id: str
    workflow: dict[str, Any]
    status: RunStatus = "pending"
    phase: str = "validate"
    created_at: str = field(default_factory=utcnow)
    started_at: str | None = None
    finished_at: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    #: --var names whose values held a secret: stored redacted, asked for again on resume.
    secret_variables: list[str] = field(default_factory=list)
    workspace: str = ""
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    error: str | None = None
    resumes: int = 0
    journal_seq: int = 0  # how many journal records the snapshot includes
    #: Who started the run, as authenticated: ``{"user", "groups", "provider"}`` (four-eyes
    #: approval compares approvers with it). None in runs recorded before bcce kept it.
    started_by: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status,
            "phase": self.phase,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "variables": self.variables,
            "secret_variables": self.secret_variables,
            "workspace": self.workspace,
            "order": self.order,
            "steps": self.steps,
            "error": self.error,
            "resumes": self.resumes,
            "journal_seq": self.journal_seq,
            "started_by": self.started_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        return cls(
            run_id=data["run_id"],
            workflow=dict(data.get("workflow") or {}),
            status=data.get("status", "pending"),
            phase=data.get("phase", "validate"),
            created_at=data.get("created_at") or utcnow(),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            variables=dict(data.get("variables") or {}),
            secret_variables=list(data.get("secret_variables") or []),
            workspace=data.get("workspace", ""),
            steps={k: dict(v) for k, v in (data.get("steps") or {}).items()},
            order=list(data.get("order") or []),
            error=data.get("error"),
            resumes=int(data.get("resumes", 0)),
            journal_seq=int(data.get("journal_seq", 0)),
            started_by=dict(data["started_by"]) if data.get("started_by") else None,
        )

    def apply(self, record: Mapping[str, Any]) -> None:
        """Apply one journal record: ``{"scope": "run"|"step", "id": ..., "set": {...}}``."""
        changes = dict(record.get("set") or {})
        if record.get("scope") == "step":
            self.steps.setdefault(str(record["id"]), {"status": "pending"}).update(changes)
        else:
            for key, value in changes.items():
                if hasattr(self, key) and key not in ("steps", "run_id"):
                    setattr(self, key, value)


class RunStateStore(Protocol):
    root: Path

    def create(self, state: RunState) -> RunRecorder: ...
    def open(self, run_id: str) -> RunRecorder: ...
    def load(self, run_id: str) -> RunState: ...
    def exists(self, run_id: str) -> bool: ...
    def run_dir(self, run_id: str) -> Path: ...
    def list_runs(self) -> list[RunState]: ...
    def is_driven(self, run_id: str) -> bool: ...


class RunRecorder:
    """Records one run's transitions; holds the run lock while it drives the run."""

    def __init__(self, directory: Path, state: RunState, *, fsync: bool) -> None:
        self.directory = directory
        self.state = state
        self.fsync = fsync
        self.lock = RunLock(directory)
        # Appends are not fsynced one by one: `sync()` at each finished step and at run
        # boundaries keeps power-loss durability at a fraction of the cost (kill -9 needs none).
        self.journal = Journal(directory / JOURNAL, fsync=False)

    def acquire(self) -> None:
        self.lock.acquire()
        self.journal.repair()
        remove_temp_files(self.directory)

    def sync(self) -> None:
        if self.fsync:
            self.journal.sync()

    def release(self) -> None:
        self.journal.close()
        self.lock.release()

    def record(self, scope: Literal["run", "step"], ident: str | None, **changes: Any) -> None:
        record = {"scope": scope, "id": ident, "set": changes}
        seq = self.journal.append(record)
        self.state.apply(record)
        self.state.journal_seq = seq + 1  # records applied so far

    def snapshot(self) -> None:
        self.sync()
        atomic_write_json(self.directory / SNAPSHOT, self.state.to_dict(), fsync=self.fsync)

    def cancel_requested(self) -> bool:
        return (self.directory / CANCEL_REQUEST).exists()

    def cancel_requests(self) -> int:
        """How many times cancellation was asked for: the second one stops cleanup steps too."""
        try:
            return len((self.directory / CANCEL_REQUEST).read_text().splitlines())
        except FileNotFoundError:
            return 0

    def cancel_requested_by(self) -> dict[str, Any] | None:
        """Who asked first (an identity record, as ``started_by``), or None: no request named
        anyone (the process driving the run stopped it on a signal)."""
        try:
            lines = (self.directory / CANCEL_REQUEST).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        for line in lines:
            # A line is the time and, after a space, the JSON identity record of who asked.
            _, _, by = line.partition(" ")
            with contextlib.suppress(ValueError):
                record = json.loads(by)
                if isinstance(record, dict):
                    return record
        return None


def append_cancel_request(directory: Path, by: Mapping[str, Any] | None = None) -> None:
    """Ask the process driving the run in ``directory`` to stop; ``by``: who asks, an identity
    record (None: the driving process itself)."""
    line = utcnow() if by is None else f"{utcnow()} {json.dumps(dict(by), sort_keys=True)}"
    with (directory / CANCEL_REQUEST).open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


class JsonRunStateStore:
    """Run state as ``run.json`` + ``journal.jsonl`` in ``<root>/<run_id>/``."""

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        # Absolute: steps get paths into the run directory (BCCE_OUTPUT) and run elsewhere.
        self.root = Path(root).absolute()
        self.fsync = fsync

    def run_dir(self, run_id: str) -> Path:
        if not is_valid_run_id(run_id):
            raise UsageError(
                f"invalid run id {run_id!r}",
                hint="run ids use letters, digits, '.', '_' and '-' (see `bcce workflow list`)",
            )
        return self.root / run_id

    def exists(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / SNAPSHOT).is_file()

    def create(self, state: RunState) -> RunRecorder:
        directory = self.run_dir(state.run_id)
        if (directory / SNAPSHOT).exists():
            raise UsageError(
                f"run {state.run_id} already exists",
                hint="choose another --run-id, or `bcce workflow resume` it",
            )
        directory.mkdir(parents=True, exist_ok=True)
        recorder = RunRecorder(directory, state, fsync=self.fsync)
        recorder.acquire()
        # A directory without run.json is what a crash before the first snapshot leaves:
        # nothing in it was recorded, so it is cleared and the id reused.
        for leftover in directory.iterdir():
            if leftover.name != ".lock":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        try:
            recorder.snapshot()
        except BaseException:
            recorder.release()
            raise
        return recorder

    def load(self, run_id: str) -> RunState:
        directory = self.run_dir(run_id)
        if not (directory / SNAPSHOT).is_file():
            raise UsageError(
                f"no run {run_id} in {self.root}",
                hint="`bcce workflow list` shows the runs there",
            )
        data = read_json(directory / SNAPSHOT)
        if not isinstance(data, dict):
            raise StorageError(f"run state {directory / SNAPSHOT} is not an object")
        state = RunState.from_dict(data)
        records = Journal(directory / JOURNAL, fsync=False).records()
        for record in records[state.journal_seq :]:
            state.apply(record)
        state.journal_seq = max(state.journal_seq, len(records))
        return state

    def open(self, run_id: str) -> RunRecorder:
        state = self.load(run_id)
        recorder = RunRecorder(self.run_dir(run_id), state, fsync=self.fsync)
        recorder.acquire()
        # Re-read under the lock: the previous driver may have written more before it stopped.
        recorder.state = self.load(run_id)
        return recorder

    def list_runs(self) -> list[RunState]:
        runs = []
        for directory in self._run_dirs():
            try:
                runs.append(self.load(directory.name))
            except (StorageError, UsageError):
                continue
        runs.sort(key=lambda s: (s.created_at, s.run_id), reverse=True)
        return runs

    def _run_dirs(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for entry in os.scandir(self.root):
            if entry.is_dir() and (Path(entry.path) / SNAPSHOT).is_file():
                yield Path(entry.path)

    def is_driven(self, run_id: str) -> bool:
        """Whether a live process holds the run's lock."""
        return RunLock(self.run_dir(run_id)).holder() is not None

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
