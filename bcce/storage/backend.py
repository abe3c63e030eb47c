"""Artifact storage: the :class:`StorageBackend` interface and the local-filesystem backend.

Keys are relative POSIX paths such as ``<run_id>/<step_id>/output.txt``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from bcce.errors import StorageError


class StorageBackend(ABC):
    """Where run artifacts and reports live."""

    name: str

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
    """Files under a root directory (``.bcce_runs/`` by default); writes are atomic."""

    name = "local"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).parts)

    def store(self, key: str, data: bytes) -> None:
        target = self.path_of(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
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
        except FileNotFoundError:
            raise StorageError(f"no artifact {key}", location=str(target)) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        target = self.path_of(key)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        base = self.path_of(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def exists(self, key: str) -> bool:
        return self.path_of(key).exists()

    def archive_run(self, run_id: str) -> str:
        # Local runs are already durable where they are.
        return str(self.path_of(run_id))
