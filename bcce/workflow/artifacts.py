"""Getting a run's files into the configured storage backend, and reading them back.

Steps write their artifacts into the local run directory (fast, streamable, durable next to
the run state). When the storage backend is somewhere else, each step's files are stored there as
the step finishes (in the background: :class:`StepUploads`), and the run is archived when it
completes: every file of the run directory, then the manifest that seals the archive
(:mod:`bcce.storage.archive`). A run whose directory is gone can be read back from its archive
into ``<state_dir>/.archived/<run_id>`` (:func:`locate_run`). Reading a copy back sets its
directory's modification time, by which ``bcce workflow prune`` tells copies in use from stale
ones, and holds the cache's lock shared (:func:`reading_cache`) so that a prune, which takes it
exclusively (:func:`claiming_cache`), never removes a copy while it is checked or fetched.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from bcce.core.log import get_logger
from bcce.errors import BcceError, StorageError, UsageError
from bcce.storage.archive import MANIFEST, ArchiveResult, RunManifest, read_manifest, run_files
from bcce.storage.backend import LocalStorageBackend, StorageBackend

if TYPE_CHECKING:
    from bcce.workflow.state import RunStateStore

log = get_logger("workflow")

RUN_FILES = ("run.json", "journal.jsonl", "events.jsonl", "junit.xml")
#: Where archived runs are read back to, under the state directory.
ARCHIVE_CACHE = ".archived"
#: The cache's lock file in ``ARCHIVE_CACHE``: shared while a copy is read back, exclusive
#: while ``bcce workflow prune`` takes stale copies away.
CACHE_LOCK = ".lock"
#: Step uploads in flight at once.
UPLOAD_WORKERS = 2


class ArtifactPublisher:
    def __init__(self, backend: StorageBackend, state_dir: Path) -> None:
        self.backend = backend
        self.state_dir = state_dir

    @property
    def in_place(self) -> bool:
        """The backend is the run directory itself: nothing to copy."""
        return in_place(self.backend, self.state_dir)

    def publish_step(self, run_id: str, step_id: str) -> list[str]:
        if self.in_place:
            return []
        directory = self.state_dir / run_id / step_id
        keys = []
        # Regular files only: a symbolic link a step left could point anywhere on the machine.
        for relative, path in run_files(directory) if directory.is_dir() else []:
            key = f"{run_id}/{step_id}/{relative}"
            self.backend.store_file(key, path)
            keys.append(key)
        return keys

    def publish_file(self, run_id: str, name: str) -> list[str]:
        """One file of the run directory written after the run (``bcce workflow report``)."""
        path = self.state_dir / run_id / name
        if self.in_place or not path.is_file():
            return []
        key = f"{run_id}/{name}"
        self.backend.store_file(key, path)
        return [key]

    def publish_run(self, run_id: str) -> list[str]:
        if self.in_place:
            return []
        keys = []
        for name in RUN_FILES:
            keys += self.publish_file(run_id, name)
        return keys

    def archive(self, run_id: str, *, status: str | None = None) -> ArchiveResult | None:
        """Archive the run in the backend; None when the backend is the run directory."""
        if self.in_place:
            return None
        return self.backend.archive(self.state_dir / run_id, run_id, status=status)


def in_place(backend: StorageBackend, state_dir: Path) -> bool:
    """Whether ``backend`` keeps its files in the run directories of ``state_dir`` themselves."""
    return (
        isinstance(backend, LocalStorageBackend) and backend.root.resolve() == state_dir.resolve()
    )


class StepUploads:
    """Each finished step's artifacts stored by worker threads, so the next step does not wait
    for the network (for backends that allow calls from other threads: ``concurrent_calls``;
    the others store them at once). :meth:`wait` before the run's own files go; a failure is
    handed to ``on_failure`` (the runner publishes ``artifacts.failed``) and never raised."""

    def __init__(
        self,
        publisher: ArtifactPublisher,
        run_id: str,
        on_failure: Callable[[str, str], None],
        *,
        workers: int = UPLOAD_WORKERS,
    ) -> None:
        self.publisher = publisher
        self.run_id = run_id
        self.on_failure = on_failure
        self.workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future[None]] = []
        self._closed = False

    def submit(self, step_id: str) -> None:
        if self.publisher.in_place or self._closed:
            return
        if not self.publisher.backend.concurrent_calls:
            self._publish(step_id)  # in the step's own thread, as it finishes
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.workers, thread_name_prefix=f"bcce-upload-{self.run_id}"
            )
        # The worker logs with the run's context (its run_id), as the step did.
        context = contextvars.copy_context()
        self._pending.append(self._pool.submit(context.run, self._publish, step_id))

    def _publish(self, step_id: str) -> None:
        try:
            self.publisher.publish_step(self.run_id, step_id)
        except BcceError as exc:
            message = exc.message
        except Exception as exc:  # noqa: BLE001 - an upload never fails the run
            log.opt(exception=True).error("storing the artifacts of step {} failed", step_id)
            message = f"internal error: {type(exc).__name__}: {exc}"
        else:
            return
        log.warning("artifacts of step {} not stored: {}", step_id, message)
        if not self._closed:
            self.on_failure(step_id, message)

    def wait(self) -> None:
        """Wait until every submitted upload has ended."""
        pending, self._pending = self._pending, []
        concurrent.futures.wait(pending)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def abandon(self) -> None:
        """The run was interrupted: drop queued uploads, report nothing more."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


# -- reading runs back ------------------------------------------------------------------------
@dataclass(frozen=True)
class ArchivedRun:
    """A run read back from its archive: the verified local copy and where it came from."""

    run_id: str
    directory: Path
    location: str
    manifest: RunManifest
    fetched: bool  # False: the cached copy matched the archive


@dataclass(frozen=True)
class RunLocation:
    """Where a run's state is read from: the state directory, or an archived copy."""

    store: RunStateStore
    archived: ArchivedRun | None = None


def cache_dir(state_dir: Path, run_id: str) -> Path:
    return state_dir / ARCHIVE_CACHE / run_id


def read_back(backend: StorageBackend, state_dir: Path, run_id: str) -> ArchivedRun | None:
    """The archive of ``run_id`` as a verified local copy under ``<state_dir>/.archived``.

    None when the backend is the run directory itself or holds no archive of the run. The
    copy is downloaded again unless the cached one holds the same manifest and file sizes.
    """
    if in_place(backend, state_dir):
        return None
    manifest = read_manifest(backend, run_id)
    if manifest is None:
        return None
    directory = cache_dir(state_dir, run_id)
    location = manifest.location or backend.location(run_id)
    with reading_cache(state_dir):
        if _cached(directory, manifest):
            _used(directory)
            return ArchivedRun(run_id, directory, location, manifest, fetched=False)
        manifest = backend.fetch_run(run_id, directory)
        _used(directory)  # a backend's fetch may keep the archive's times
    return ArchivedRun(run_id, directory, location, manifest, fetched=True)


@contextlib.contextmanager
def reading_cache(state_dir: Path) -> Iterator[None]:
    """Hold the read-back cache's lock shared, waiting out a prune's brief exclusive hold.

    Best effort: without a lock file (a read-only state directory) the copy is read anyway.
    """
    fd = _open_cache_lock(state_dir)
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def claiming_cache(state_dir: Path) -> Iterator[bool]:
    """Hold the read-back cache's lock exclusively if no process is reading a copy back;
    yields whether it is held (never waits)."""
    fd = _open_cache_lock(state_dir)
    if fd is None:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def _open_cache_lock(state_dir: Path) -> int | None:
    cache = state_dir / ARCHIVE_CACHE
    try:
        cache.mkdir(parents=True, exist_ok=True)
        return os.open(cache / CACHE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        return None


def _used(directory: Path) -> None:
    """Record that the copy was just used: its directory's modification time is now."""
    with contextlib.suppress(OSError):
        os.utime(directory)


def _cached(directory: Path, manifest: RunManifest) -> bool:
    try:
        cached = RunManifest.from_json((directory / MANIFEST).read_bytes(), where=str(directory))
    except (OSError, StorageError):
        return False
    if cached != manifest:
        return False
    try:
        return all(
            directory.joinpath(*PurePosixPath(f.path).parts).stat().st_size == f.size
            for f in manifest.files
        )
    except OSError:
        return False


def locate_run(
    store: RunStateStore, storage: Callable[[], StorageBackend], run_id: str
) -> RunLocation:
    """Where to read ``run_id`` from: the state directory if the run is there, else its
    archive in the storage backend (read back, verified). Neither: a UsageError (exit 2)."""
    if store.exists(run_id):  # also rejects a malformed run id
        return RunLocation(store)
    backend = storage()
    archived = read_back(backend, store.root, run_id)
    if archived is None:
        where = "" if in_place(backend, store.root) else f" nor in {backend.location()}"
        raise UsageError(
            f"no run {run_id} in {store.root}{where}",
            hint="`bcce workflow list` shows the local runs",
        )
    from bcce.workflow.state import JsonRunStateStore

    return RunLocation(JsonRunStateStore(archived.directory.parent, fsync=False), archived)


# -- artifacts of a run -----------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """One stored file of a run: its path in the run (``step/output.txt``) and size."""

    name: str
    size: int

    @property
    def step(self) -> str | None:
        head, sep, _ = self.name.partition("/")
        return head if sep else None


def list_artifacts(
    backend: StorageBackend, store: RunStateStore, run_id: str, *, step: str | None = None
) -> list[Artifact]:
    """The files the backend holds for ``run_id`` (only ``step``'s, if given), with sizes."""
    store.run_dir(run_id)  # rejects a malformed run id (UsageError)
    found = [
        Artifact(key[len(run_id) + 1 :], size)
        for key, size in sorted(backend.list_sizes(run_id).items())
        if key.startswith(run_id + "/")
    ]
    if not found:
        raise UsageError(
            f"no artifacts of run {run_id} in {backend.location()}",
            hint=_no_run_hint(backend, store, run_id),
        )
    if step is None:
        return found
    steps = sorted({a.step for a in found if a.step})
    if step not in steps:
        raise UsageError(
            f"run {run_id} has no artifacts of step {step!r}",
            hint=f"steps with artifacts: {', '.join(steps) or 'none'}",
        )
    return [a for a in found if a.step == step]


def get_artifact(
    backend: StorageBackend,
    store: RunStateStore,
    run_id: str,
    name: str,
    *,
    into: BinaryIO,
    step: str | None = None,
) -> Artifact:
    """Write the content of one artifact into ``into`` (streamed, never whole in memory):
    ``name`` within the run, or within ``step``'s folder. Returns the artifact written."""
    wanted = f"{step}/{name}" if step else name
    artifacts = list_artifacts(backend, store, run_id, step=step)
    names = [a.name for a in artifacts]
    if wanted not in names:
        base = PurePosixPath(name).name
        similar = [n for n in names if PurePosixPath(n).name == base]
        shown = similar or names
        more = f" (and {len(shown) - 20} more)" if len(shown) > 20 else ""
        raise UsageError(
            f"run {run_id} has no artifact {wanted!r}",
            hint=("did you mean: " if similar else "artifacts: ") + ", ".join(shown[:20]) + more,
        )
    backend.retrieve_into(f"{run_id}/{wanted}", into)
    return next(a for a in artifacts if a.name == wanted)


def _no_run_hint(backend: StorageBackend, store: RunStateStore, run_id: str) -> str:
    if store.exists(run_id) and not in_place(backend, store.root):
        return f"the run is local but nothing of it is stored yet: `bcce workflow archive {run_id}`"
    runs = [name for name in backend.folders() if not name.startswith(".")]
    if not runs:
        return "the storage backend holds no runs yet"
    shown = ", ".join(runs[-10:])
    return f"runs there: {shown}" + (f" (newest 10 of {len(runs)})" if len(runs) > 10 else "")


# -- archiving a run on request ---------------------------------------------------------------
@dataclass(frozen=True)
class ArchiveOutcome:
    """What ``bcce workflow archive`` did: ``result`` is None when the backend is the run
    directory itself (nothing to copy; ``location`` is the directory)."""

    run_id: str
    location: str
    result: ArchiveResult | None


def archive_now(
    store: RunStateStore,
    backend: StorageBackend,
    run_id: str,
    *,
    publish: Callable[[str, dict[str, Any]], None] | None = None,
) -> ArchiveOutcome:
    """Archive ``run_id`` now, holding its lock so that no process drives it meanwhile.

    A run being driven is refused (:class:`~bcce.core.durable.RunLocked`, exit 1).
    ``publish(event_type, payload)`` receives ``storage.archived`` or
    ``storage.archive_failed``.
    """
    from bcce.core.durable import RunLock, RunLocked

    state = store.load(run_id)  # an unknown run is a UsageError
    directory = store.run_dir(run_id)
    publisher = ArtifactPublisher(backend, store.root)
    if publisher.in_place:
        return ArchiveOutcome(run_id, str(directory), None)
    lock = RunLock(directory)
    try:
        lock.acquire()
    except RunLocked as exc:
        raise RunLocked(
            f"run {run_id} is being driven by a process: {exc.message}",
            location=exc.location,
            hint="wait until it finishes (it is archived when it completes, with "
            f"storage.archive_on_completion), or stop it: bcce workflow cancel {run_id}",
        ) from None
    try:
        state = store.load(run_id)  # as the last driver left it
        try:
            result = publisher.archive(run_id, status=state.status)
        except BcceError as exc:
            if publish is not None:
                publish("storage.archive_failed", {"error": exc.message})
            raise
    finally:
        lock.release()
    assert result is not None
    if publish is not None:
        publish("storage.archived", archived_payload(result))
    return ArchiveOutcome(run_id, result.location, result)


def archived_payload(result: ArchiveResult) -> dict[str, Any]:
    """The ``storage.archived`` event's payload."""
    return {
        "location": result.location,
        "files": result.files,
        "bytes": result.total_bytes,
        "uploaded": result.uploaded,
    }


__all__ = [
    "ARCHIVE_CACHE",
    "CACHE_LOCK",
    "RUN_FILES",
    "ArchiveOutcome",
    "ArchivedRun",
    "Artifact",
    "ArtifactPublisher",
    "RunLocation",
    "StepUploads",
    "archive_now",
    "archived_payload",
    "cache_dir",
    "claiming_cache",
    "get_artifact",
    "in_place",
    "list_artifacts",
    "locate_run",
    "read_back",
    "reading_cache",
]
