"""Retention of local runs: ``bcce workflow prune --older-than 30d``.

A run directory is removed only when the run has finished (succeeded, failed or cancelled)
before the cutoff and no process holds its lock; with a storage backend elsewhere than the run
directories, only when the backend holds the run's archive (its manifest), unless told
otherwise. Everything is decided before anything is deleted, and each removal happens under
the run's lock: the directory is first renamed to a hidden name (the run disappears at once),
then deleted.

The read-back cache goes the same way: a copy of an archived run in ``<state_dir>/.archived``
(:func:`~bcce.workflow.artifacts.read_back`) is removed when it was last used (its directory's
modification time, which each read-back sets) before the cutoff. A copy is only a cache (the
archive stays in the backend and is read back again on demand), so no archive is checked, but
copies are renamed away only while no process reads one back (the cache's lock, held
exclusively) and only if still unused. What an interrupted fetch or prune left there goes too.
Only run directories and cached copies go: the audit trail, cost ledger and archives stay.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcce.core.durable import RunLock, RunLocked
from bcce.core.ids import is_valid_run_id
from bcce.core.when import parse_iso
from bcce.errors import BcceError, StorageError
from bcce.storage.archive import manifest_key
from bcce.storage.backend import StorageBackend
from bcce.workflow.artifacts import ARCHIVE_CACHE, claiming_cache, in_place
from bcce.workflow.state import SNAPSHOT, TERMINAL_RUN, RunState, RunStateStore

#: Suffix of a run directory being deleted (hidden; a later prune finishes the job).
PRUNING_SUFFIX = ".pruning"
#: Suffixes of the hidden directories a read-back leaves in the cache when it is cut off.
FETCH_LEFTOVERS = (".fetching", ".old")


@dataclass(frozen=True)
class PruneDecision:
    """One run's fate: removed (or, in a dry run, would be) or kept, and why."""

    run_id: str
    status: str
    finished_at: str | None
    removed: bool
    reason: str
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "finished_at": self.finished_at,
            "reason": self.reason,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class CachedCopy:
    """A read-back copy of an archived run unused since the cutoff: removed (or, in a dry run,
    would be)."""

    run_id: str
    last_used: datetime.datetime
    bytes: int

    @property
    def reason(self) -> str:
        return f"last used {self.last_used:%Y-%m-%d %H:%M} UTC, before the cutoff"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "last_used": self.last_used.isoformat(timespec="seconds"),
            "reason": self.reason,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class PruneReport:
    cutoff: datetime.datetime
    dry_run: bool
    decisions: tuple[PruneDecision, ...]
    cached: tuple[CachedCopy, ...] = ()

    @property
    def removed(self) -> list[PruneDecision]:
        return [d for d in self.decisions if d.removed]

    @property
    def kept(self) -> list[PruneDecision]:
        return [d for d in self.decisions if not d.removed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "removed": [d.to_dict() for d in self.removed],
            "kept": [d.to_dict() for d in self.kept],
            "cached_copies": [c.to_dict() for c in self.cached],
        }


def prune_runs(
    store: RunStateStore,
    *,
    cutoff: datetime.datetime,
    backend: StorageBackend | None = None,
    include_unarchived: bool = False,
    dry_run: bool = False,
) -> PruneReport:
    """Remove the run directories of ``store`` and the cached copies of archived runs that
    :mod:`the rules <bcce.workflow.retention>` allow; ``dry_run`` decides without removing. A
    StorageError checking the backend for archives stops everything before any removal."""
    remote = backend is not None and not in_place(backend, store.root)
    plan: list[PruneDecision] = []
    for run_id in _run_ids(store.root):
        plan.append(_decide(store, run_id, cutoff, backend if remote else None, include_unarchived))
    stale = _stale_copies(store.root / ARCHIVE_CACHE, cutoff)
    if dry_run:
        return PruneReport(cutoff, True, tuple(plan), stale)
    _finish_earlier_prunes(store.root)
    done = tuple(_remove(store, d, cutoff) if d.removed else d for d in plan)
    return PruneReport(cutoff, False, done, _remove_copies(store.root, stale, cutoff))


def _run_ids(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir(follow_symlinks=False)
        and is_valid_run_id(entry.name)
        and (Path(entry.path) / SNAPSHOT).is_file()
    )


def _decide(
    store: RunStateStore,
    run_id: str,
    cutoff: datetime.datetime,
    backend: StorageBackend | None,
    include_unarchived: bool,
) -> PruneDecision:
    try:
        state = store.load(run_id)
    except BcceError as exc:
        return PruneDecision(run_id, "unknown", None, False, f"unreadable run state: {exc.message}")

    def keep(reason: str) -> PruneDecision:
        return PruneDecision(run_id, state.status, state.finished_at, False, reason)

    holder = RunLock(store.run_dir(run_id)).holder()
    if holder is not None:
        return keep(f"driven by a process (pid {holder.get('pid', 'unknown')})")
    if state.status not in TERMINAL_RUN:
        return keep(_unfinished(state))
    finished = _finished(state)
    if finished is None:
        return keep("no time of finishing recorded")
    if finished >= cutoff:
        return keep(f"finished after the cutoff ({cutoff:%Y-%m-%d %H:%M} UTC)")
    archived = backend is not None and backend.exists(manifest_key(run_id))
    if backend is not None and not archived and not include_unarchived:
        return keep(
            f"not archived in {backend.location()} "
            f"(bcce workflow archive {run_id}, or --include-unarchived)"
        )
    reason = f"finished {finished:%Y-%m-%d %H:%M} UTC, before the cutoff"
    if archived:
        reason += "; archived"
    elif backend is not None:
        reason += "; not archived (--include-unarchived)"
    return PruneDecision(
        run_id,
        state.status,
        state.finished_at,
        True,
        reason,
        _size(store.run_dir(run_id)),
    )


def _unfinished(state: RunState) -> str:
    if state.status == "awaiting_approval":
        return "awaiting approval (bcce workflow resume --approve or --reject)"
    if state.status == "running":
        return "interrupted: no process drives it (resume or cancel it first)"
    return f"not finished ({state.status})"


def _finished(state: RunState) -> datetime.datetime | None:
    for value in (state.finished_at, state.created_at):
        if value:
            try:
                return parse_iso(value)
            except ValueError:
                continue
    return None


def _size(directory: Path) -> int:
    total = 0
    for top, _dirs, names in os.walk(directory):
        for name in names:
            try:
                total += (Path(top) / name).lstat().st_size
            except OSError:
                continue
    return total


def _remove(
    store: RunStateStore, decision: PruneDecision, cutoff: datetime.datetime
) -> PruneDecision:
    """Remove one run directory under its lock, checking again that it may go."""
    directory = store.run_dir(decision.run_id)

    def kept(reason: str) -> PruneDecision:
        return PruneDecision(decision.run_id, decision.status, decision.finished_at, False, reason)

    lock = RunLock(directory)
    try:
        lock.acquire()
    except RunLocked as exc:
        return kept(f"driven by a process: {exc.message}")
    try:
        state = store.load(decision.run_id)  # resumed since we looked?
        finished = _finished(state)
        if state.status not in TERMINAL_RUN or finished is None or finished >= cutoff:
            return kept(f"changed while pruning (now {state.status})")
        hidden = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}{PRUNING_SUFFIX}")
        try:
            directory.rename(hidden)
        except OSError as exc:
            raise StorageError(
                f"cannot remove {directory}: {exc.strerror or exc}",
                location=str(directory),
                hint="check the permissions of workflow.state_dir",
            ) from exc
    finally:
        lock.release()
    shutil.rmtree(hidden, ignore_errors=True)
    return decision


# -- the read-back cache ----------------------------------------------------------------------
def _stale_copies(cache: Path, cutoff: datetime.datetime) -> tuple[CachedCopy, ...]:
    if not cache.is_dir():
        return ()
    stale = []
    for entry in os.scandir(cache):
        if not entry.is_dir(follow_symlinks=False) or not is_valid_run_id(entry.name):
            continue
        used = _last_used(Path(entry.path))
        if used is not None and used < cutoff:
            stale.append(CachedCopy(entry.name, used, _size(Path(entry.path))))
    return tuple(sorted(stale, key=lambda c: c.run_id))


def _last_used(path: Path) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromtimestamp(path.lstat().st_mtime, datetime.UTC)
    except OSError:
        return None


def _remove_copies(
    state_dir: Path, stale: tuple[CachedCopy, ...], cutoff: datetime.datetime
) -> tuple[CachedCopy, ...]:
    """Remove the stale copies that are still unused, with what cut-off fetches left.

    A process reading a copy back holds the cache's lock shared: then nothing is removed but
    what earlier prunes left, and the next prune tries again.
    """
    cache = state_dir / ARCHIVE_CACHE
    if not cache.is_dir():
        return ()
    _finish_earlier_prunes(cache)
    removed: list[CachedCopy] = []
    doomed: list[Path] = []
    with claiming_cache(state_dir) as claimed:
        if claimed:
            for copy in stale:
                hidden = _hide_copy(cache / copy.run_id, cutoff)
                if hidden is not None:
                    removed.append(copy)
                    doomed.append(hidden)
            doomed += _fetch_leftovers(cache, cutoff)
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return tuple(removed)


def _hide_copy(directory: Path, cutoff: datetime.datetime) -> Path | None:
    """Rename a copy still unused since the cutoff to a hidden name; None when it was used
    (read back) since it was found stale, or is gone."""
    used = _last_used(directory)
    if used is None or used >= cutoff:
        return None
    hidden = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}{PRUNING_SUFFIX}")
    try:
        directory.rename(hidden)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(
            f"cannot remove {directory}: {exc.strerror or exc}",
            location=str(directory),
            hint="check the permissions of workflow.state_dir",
        ) from exc
    return hidden


def _fetch_leftovers(cache: Path, cutoff: datetime.datetime) -> list[Path]:
    """The hidden staging and replaced directories of read-backs cut off before the cutoff."""
    found = []
    for entry in os.scandir(cache):
        path = Path(entry.path)
        if (
            entry.name.startswith(".")
            and entry.name.endswith(FETCH_LEFTOVERS)
            and entry.is_dir(follow_symlinks=False)
            and (used := _last_used(path)) is not None
            and used < cutoff
        ):
            found.append(path)
    return found


def _finish_earlier_prunes(root: Path) -> None:
    """Delete what an interrupted prune left: hidden ``.<run>.<token>.pruning`` folders."""
    if not root.is_dir():
        return
    for entry in os.scandir(root):
        if entry.name.startswith(".") and entry.name.endswith(PRUNING_SUFFIX):
            shutil.rmtree(entry.path, ignore_errors=True)


__all__ = [
    "FETCH_LEFTOVERS",
    "PRUNING_SUFFIX",
    "CachedCopy",
    "PruneDecision",
    "PruneReport",
    "prune_runs",
]
