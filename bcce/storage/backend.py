"""Artifact storage: the :class:`StorageBackend` interface and the local-filesystem backend.

Keys are relative POSIX paths such as ``<run_id>/<step_id>/output.txt``.

A backend implements six methods (store, retrieve, delete, list, exists, archive_run); the
others have working defaults built on those six, which a backend overrides when it has a
faster or streaming way (:class:`~bcce.storage.s3.S3StorageBackend` does). Plugin backends
(:class:`~bcce.plugin.host.PluginStorageBackend`) implement the six and inherit the rest.
"""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from bcce.errors import StorageError
from bcce.storage.archive import (
    ArchiveResult,
    RunManifest,
    archive_with,
    fetch_with,
    sha256_file,
)

#: Bytes read at a time when a file is copied in or out of a backend.
COPY_CHUNK = 1024 * 1024


class StorageBackend(ABC):
    """Where run artifacts and reports live."""

    name: str
    #: Whether the backend may be called from other threads than the one that made it: then
    #: the runner stores each step's artifacts in the background. Plugin backends may not (a
    #: sandboxed worker dies with the thread that started it).
    concurrent_calls: bool = False

    @abstractmethod
    def store(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def retrieve(self, key: str) -> bytes: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def archive_run(self, run_id: str) -> str:
        """Make a run's artifacts durable in the backend's archive; return where they went."""

    # -- with defaults --------------------------------------------------------------------
    def store_file(self, key: str, path: Path) -> None:
        """Store the content of the file ``path`` under ``key``."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(
                f"cannot read {path}: {exc.strerror or exc}", location=str(path)
            ) from exc
        self.store(key, data)

    def retrieve_into(self, key: str, handle: BinaryIO) -> None:
        """Write what ``key`` holds into the binary file or pipe ``handle``, from its position.
        Backends that can stream override this, so an artifact of any size reaches a file
        without being held in memory."""
        handle.write(self.retrieve(key))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """The keys under ``prefix`` (as :meth:`list`) with their sizes in bytes."""
        return {key: len(self.retrieve(key)) for key in self.list(prefix)}

    def folders(self, prefix: str = "") -> builtins.list[str]:
        """The names of the folders directly under ``prefix`` (run ids at the top), sorted."""
        base = f"{prefix}/" if prefix else ""
        return sorted(
            {
                key[len(base) :].split("/", 1)[0]
                for key in self.list(prefix)
                if key.startswith(base) and "/" in key[len(base) :]
            }
        )

    def location(self, key: str = "") -> str:
        """Where ``key`` is, for people: a path, a URL (``s3://bucket/prefix/key``)."""
        return f"{self.name}:{key}"

    def digest(self, key: str) -> str | None:
        """The SHA-256 (hex) of what ``key`` holds when the backend can tell cheaply; None
        when it cannot or ``key`` does not exist. Archives skip files it vouches for."""
        return None

    def archive(self, run_dir: Path, run_id: str, *, status: str | None = None) -> ArchiveResult:
        """Copy the files of ``run_dir`` that the backend lacks (or that changed), call
        :meth:`archive_run` (where the archive is), then seal the archive with its manifest
        (:mod:`bcce.storage.archive`)."""
        return archive_with(
            self, run_dir, run_id, status=status, locate=lambda: self.archive_run(run_id)
        )

    def fetch_run(self, run_id: str, into: Path) -> RunManifest:
        """Download the archive of ``run_id`` into the directory ``into``, every file verified
        against the manifest; ``into`` is replaced only when all of them match."""
        return fetch_with(self, run_id, into)


def validate_key(key: str) -> PurePosixPath:
    """Reject keys that could leave the storage root."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\x00" in key or "\\" in key:
        raise StorageError(
            f"invalid storage key {key!r}",
            hint="keys are relative paths without '..', like <run_id>/<step>/output.txt",
        )
    return path


class LocalStorageBackend(StorageBackend):
    """Files under a root directory (``.bcce_runs/`` by default); writes are atomic.

    Hidden files and folders (the run lock, temporary files, the ``.archived`` cache) are
    bookkeeping, not artifacts: :meth:`list` leaves them out.
    """

    name = "local"
    concurrent_calls = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).parts)

    def location(self, key: str = "") -> str:
        return str(self.path_of(key).absolute()) if key else str(self.root.absolute())

    def store(self, key: str, data: bytes) -> None:
        self._write(key, lambda handle: handle.write(data))

    def store_file(self, key: str, path: Path) -> None:
        def copy(handle: BinaryIO) -> None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, handle)

        self._write(key, copy)

    def _write(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        target = self.path_of(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    write(handle)
                Path(temp).replace(target)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(
                f"cannot store {key}: {exc.strerror or exc}",
                location=str(target),
                hint="check free disk space and permissions of the storage root",
            ) from exc

    def retrieve(self, key: str) -> bytes:
        target = self.path_of(key)
        try:
            return target.read_bytes()
        except OSError as exc:
            raise self._read_error(key, target, exc) from exc

    def retrieve_into(self, key: str, handle: BinaryIO) -> None:
        target = self.path_of(key)
        try:
            source = target.open("rb")
        except OSError as exc:
            raise self._read_error(key, target, exc) from exc
        with source:
            shutil.copyfileobj(source, handle, COPY_CHUNK)

    @staticmethod
    def _read_error(key: str, target: Path, exc: OSError) -> StorageError:
        if isinstance(exc, FileNotFoundError):
            return StorageError(f"no artifact {key}", location=str(target))
        if isinstance(exc, IsADirectoryError):
            return StorageError(
                f"{key} is a folder, not an artifact",
                location=str(target),
                hint="name a file in it",
            )
        return StorageError(f"cannot read {key}: {exc.strerror or exc}", location=str(target))

    def delete(self, key: str) -> None:
        target = self.path_of(key)
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot delete {key}: {exc.strerror or exc}",
                location=str(target),
                hint="check the permissions of the storage root",
            ) from exc

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.list_sizes(prefix))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        base = self.path_of(prefix) if prefix else self.root
        if base.is_file():
            return {prefix: base.stat().st_size}
        if not base.is_dir():
            return {}
        found = {}
        for top, dirs, names in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                path = Path(top) / name
                if name.startswith(".") or not path.is_file():
                    continue
                found[path.relative_to(self.root).as_posix()] = path.stat().st_size
        return found

    def folders(self, prefix: str = "") -> builtins.list[str]:
        base = self.path_of(prefix) if prefix else self.root
        try:
            return sorted(
                e.name for e in os.scandir(base) if not e.name.startswith(".") and e.is_dir()
            )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self, key: str) -> bool:
        return self.path_of(key).exists()

    def digest(self, key: str) -> str | None:
        path = self.path_of(key)
        return sha256_file(path) if path.is_file() else None

    def archive_run(self, run_id: str) -> str:
        # Local runs are already durable where they are.
        return str(self.path_of(run_id).absolute())

    def archive(self, run_dir: Path, run_id: str, *, status: str | None = None) -> ArchiveResult:
        if run_dir.absolute() == self.path_of(run_id).absolute():
            raise StorageError(
                f"run {run_id} is kept in the storage root itself ({self.root})",
                hint="with storage.root equal to workflow.state_dir there is nothing to archive",
            )
        return super().archive(run_dir, run_id, status=status)


__all__ = ["LocalStorageBackend", "StorageBackend", "validate_key"]
