"""Run archives: a run directory's files in a storage backend, and the manifest that seals them.

An archive of run ``R`` is the objects ``R/<path>`` for every file of the run directory plus
``R/archive.json``, the manifest, written last: it lists each file with its size and SHA-256,
the run's status and the time. The archive is complete exactly when the manifest exists, so a
reader that finds one can download the files it lists and verify every byte.

The functions here work on any :class:`~bcce.storage.backend.StorageBackend` through its plain
interface (store, retrieve, exists); backends with a faster way (S3) override
``StorageBackend.archive`` and ``StorageBackend.fetch_run``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bcce.errors import StorageError

if TYPE_CHECKING:
    from bcce.storage.backend import StorageBackend

#: The manifest's name, in the run's folder of the backend.
MANIFEST = "archive.json"
FORMAT = "bcce.run-archive/1"
#: Top-level entries of a run directory that are never archived: agent steps' throwaway copies
#: of the workspace, and the manifest's own name.
NOT_ARCHIVED = frozenset({"workspaces", MANIFEST})
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchivedFile:
    """One file of an archive: its path in the run directory, size and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RunManifest:
    """What an archive holds (``<run_id>/archive.json``)."""

    run_id: str
    status: str
    archived_at: str
    files: tuple[ArchivedFile, ...]
    location: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "run_id": self.run_id,
            "status": self.status,
            "archived_at": self.archived_at,
            "location": self.location,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "bytes": self.total_bytes,
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> RunManifest:
        """Read a manifest; anything malformed (or a path leaving the run) is a StorageError."""
        try:
            raw = json.loads(data.decode())
            if not isinstance(raw, Mapping) or raw.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} manifest")
            files = tuple(
                ArchivedFile(str(item["path"]), int(item["size"]), str(item["sha256"]))
                for item in raw["files"]
            )
            for item in files:
                check_path(item.path)
            return cls(
                run_id=str(raw["run_id"]),
                status=str(raw.get("status") or "unknown"),
                archived_at=str(raw.get("archived_at") or ""),
                files=files,
                location=str(raw.get("location") or ""),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise StorageError(
                f"the archive manifest is unreadable: {exc}",
                location=where,
                hint="the archive was changed outside bcce: archive the run again from a "
                "machine that has its run directory (bcce workflow archive RUN_ID)",
            ) from exc


@dataclass(frozen=True)
class ArchiveResult:
    """An archive just written: where, what it holds, and how many files went up this time."""

    location: str
    manifest: RunManifest
    uploaded: int

    @property
    def files(self) -> int:
        return len(self.manifest.files)

    @property
    def total_bytes(self) -> int:
        return self.manifest.total_bytes


def manifest_key(run_id: str) -> str:
    return f"{run_id}/{MANIFEST}"


def check_path(path: str) -> PurePosixPath:
    """A path inside a run directory: relative, no ``..``, no hidden part."""
    pure = PurePosixPath(path)
    if (
        not path
        or pure.is_absolute()
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") or part.startswith(".") for part in pure.parts)
    ):
        raise StorageError(
            f"invalid path {path!r} in a run archive",
            hint="archived paths are relative to the run directory, without '..'",
        )
    return pure


def run_files(run_dir: Path) -> list[tuple[str, Path]]:
    """The files of a run directory an archive holds, as (relative POSIX path, path), sorted.

    Left out: hidden entries (the run lock, temporary files of atomic writes), symbolic links
    (a step could point one anywhere on the machine), anything but regular files, and
    :data:`NOT_ARCHIVED`.
    """
    found: list[tuple[str, Path]] = []
    for top, dirs, names in os.walk(run_dir, followlinks=False):
        base = Path(top)
        relative_top = base.relative_to(run_dir)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and not (relative_top == Path() and d in NOT_ARCHIVED)
            and not (base / d).is_symlink()
        )
        for name in names:
            if name.startswith(".") or (relative_top == Path() and name in NOT_ARCHIVED):
                continue
            path = base / name
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(run_dir).as_posix(), path))
    return sorted(found)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(run_dir: Path) -> Iterator[tuple[ArchivedFile, Path]]:
    """Each archivable file of ``run_dir`` with its size and digest."""
    for relative, path in run_files(run_dir):
        try:
            size = path.stat().st_size
            digest = sha256_file(path)
        except OSError as exc:
            raise StorageError(
                f"cannot read {path}: {exc.strerror or exc}",
                hint="check the permissions of the run directory",
                location=str(path),
            ) from exc
        yield ArchivedFile(relative, size, digest), path


def run_status(run_dir: Path) -> str:
    """The status recorded in ``run.json`` (``unknown`` when it cannot be read)."""
    try:
        data = json.loads((run_dir / "run.json").read_bytes())
    except (OSError, ValueError):
        return "unknown"
    status = data.get("status") if isinstance(data, dict) else None
    return str(status) if status else "unknown"


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def check_run_dir(run_dir: Path, run_id: str) -> None:
    if not (run_dir / "run.json").is_file():
        raise StorageError(
            f"no run {run_id} to archive in {run_dir.parent}",
            hint="`bcce workflow list` shows the runs there",
            location=str(run_dir),
        )


def archive_with(
    backend: StorageBackend,
    run_dir: Path,
    run_id: str,
    *,
    status: str | None = None,
    locate: Callable[[], str] | None = None,
) -> ArchiveResult:
    """Archive ``run_dir`` into ``backend`` through its plain interface.

    A file is stored unless the backend holds it already: the previous manifest lists it with
    the same digest and the key exists, or the backend's :meth:`digest` of the key matches. The
    previous manifest is removed before anything changes and the new one written last.
    ``locate()``, called once the files are stored, says where the archive is (default:
    ``backend.location(run_id)``).
    """
    check_run_dir(run_dir, run_id)
    previous = read_manifest(backend, run_id)
    known = {f.path: f.sha256 for f in previous.files} if previous else {}
    entries: list[ArchivedFile] = []
    changed: list[tuple[ArchivedFile, Path]] = []
    for entry, path in describe_files(run_dir):
        entries.append(entry)
        key = f"{run_id}/{entry.path}"
        if known.get(entry.path) == entry.sha256 and backend.exists(key):
            continue
        if backend.digest(key) != entry.sha256:
            changed.append((entry, path))
    if previous is not None and changed:
        backend.delete(manifest_key(run_id))
    for entry, path in changed:
        backend.store_file(f"{run_id}/{entry.path}", path)
    location = locate() if locate is not None else backend.location(run_id)
    manifest = RunManifest(
        run_id=run_id,
        status=status or run_status(run_dir),
        archived_at=utcnow(),
        files=tuple(entries),
        location=location,
    )
    backend.store(manifest_key(run_id), manifest.to_json())
    return ArchiveResult(location, manifest, len(changed))


def read_manifest(backend: StorageBackend, run_id: str) -> RunManifest | None:
    """The run's archive manifest in ``backend``, or None when there is no archive."""
    key = manifest_key(run_id)
    if not backend.exists(key):
        return None
    return RunManifest.from_json(backend.retrieve(key), where=backend.location(key))


def mismatch(run_id: str, entry: ArchivedFile, size: int, digest: str, where: str) -> StorageError:
    return StorageError(
        f"archived file {entry.path} of run {run_id} does not match its manifest "
        f"(size {size}, sha256 {digest[:12]}…; expected {entry.size}, {entry.sha256[:12]}…)",
        location=where,
        hint="the archive was changed or damaged after it was written: archive the run again "
        "from a machine that has its run directory (bcce workflow archive RUN_ID)",
    )


def missing_archive(backend: StorageBackend, run_id: str) -> StorageError:
    return StorageError(
        f"no archive of run {run_id} in {backend.location(run_id)}",
        hint="a run is archived when it completes (storage.archive_on_completion) or by "
        "`bcce workflow archive RUN_ID`",
    )


def staging_dir(into: Path) -> Path:
    """A fresh hidden directory beside ``into`` to download into before the swap."""
    into.parent.mkdir(parents=True, exist_ok=True)
    temp = into.parent / f".{into.name}.{secrets.token_hex(4)}.fetching"
    temp.mkdir()
    return temp


def install(staged: Path, into: Path, manifest: RunManifest) -> None:
    """Write the manifest into ``staged`` and swap it in as ``into`` (the old copy goes)."""
    (staged / MANIFEST).write_bytes(manifest.to_json())
    old = None
    if into.exists():
        old = into.parent / f".{into.name}.{secrets.token_hex(4)}.old"
        into.rename(old)
    staged.rename(into)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def local_error(exc: OSError, path: Path) -> StorageError:
    """A local file system failure while reading an archive back."""
    return StorageError(
        f"cannot write {path}: {exc.strerror or exc}",
        location=str(path),
        hint="check free disk space and the permissions of workflow.state_dir",
    )


def fetch_with(backend: StorageBackend, run_id: str, into: Path) -> RunManifest:
    """Download the archive of ``run_id`` from ``backend`` into ``into``, verified.

    Files go into a hidden staging directory first; ``into`` is replaced only once every file
    matches the manifest, so a failed fetch leaves the previous copy (or nothing).
    """
    manifest = read_manifest(backend, run_id)
    if manifest is None:
        raise missing_archive(backend, run_id)
    try:
        staged = staging_dir(into)
    except OSError as exc:
        raise local_error(exc, into) from exc
    try:
        for entry in manifest.files:
            key = f"{run_id}/{entry.path}"
            data = backend.retrieve(key)
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != entry.size or digest != entry.sha256:
                raise mismatch(run_id, entry, len(data), digest, backend.location(key))
            target = staged.joinpath(*check_path(entry.path).parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            except OSError as exc:
                raise local_error(exc, target) from exc
        try:
            install(staged, into, manifest)
        except OSError as exc:
            raise local_error(exc, into) from exc
    finally:
        with contextlib.suppress(OSError):
            if staged.exists():
                shutil.rmtree(staged)
    return manifest


__all__ = [
    "FORMAT",
    "MANIFEST",
    "NOT_ARCHIVED",
    "ArchiveResult",
    "ArchivedFile",
    "RunManifest",
    "archive_with",
    "check_path",
    "describe_files",
    "fetch_with",
    "manifest_key",
    "read_manifest",
    "run_files",
    "run_status",
    "sha256_file",
]
