"""Durable run-state primitives: atomic file replacement, a CRC-checked journal, a run lock.

A ``kill -9`` (or power loss) at any instant must leave a readable run:

- :func:`atomic_write_bytes` / :func:`atomic_write_json` (and :func:`atomic_writer`, for
  content streamed in) write a temporary file in the same directory, fsync it, ``os.replace`` it
  over the target and fsync the directory, so a reader sees either the old or the new content,
  never a mix. Any failure (a full disk included) removes the temporary file and leaves the
  previous content intact.
- :class:`Journal` is an append-only JSON-lines file. Each line is ``<crc32 as 8 hex digits>
  <json>`` where the JSON is ``{"rec": {...}, "seq": n}``; one ``write()`` per record on an
  ``O_APPEND`` descriptor. A crash can only tear the last line; that is ignored and reported, while
  damage anywhere else is corruption and raises.
- :class:`RunLock` is an advisory, non-blocking ``flock`` on ``<dir>/.lock`` so two processes never
  drive one run. The kernel releases it when the holder dies, however it dies.

Every failure raises :class:`~bcce.errors.StorageError` (or :class:`RunLocked`) with a hint.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import secrets
import socket
import stat
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from bcce.errors import StorageError

TEMP_SUFFIX = ".bcce-tmp"
_LOCK_NAME = ".lock"
_HEX = frozenset(b"0123456789abcdef")


class RunLocked(StorageError):
    """Another process holds the run directory's lock."""

    code = "BCCE710"


def _hint(err: OSError) -> str:
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full or over quota: free some space, then resume the run"
    if code == errno.EFBIG:
        return "the file size limit was reached (ulimit -f): raise it, then resume the run"
    if code in (errno.EACCES, errno.EPERM):
        return "check the permissions of the run directory"
    if code == errno.EROFS:
        return "the file system is read-only: put the run directory on a writable one"
    if code == errno.ENOENT:
        return "the directory does not exist: create it first"
    if code == errno.EIO:
        return "the disk reported an I/O error: check its health"
    return "check the run directory and the disk it is on"


def _error(action: str, path: Path, err: OSError) -> StorageError:
    name = errno.errorcode.get(err.errno or 0, "")
    reason = f"{err.strerror or err} ({name})" if name else str(err.strerror or err)
    return StorageError(f"cannot {action}: {reason}", hint=_hint(err), location=str(path))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a directory; the rename is then as durable as they allow.
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never a mix.

    With ``fsync`` (the default) the content and the rename are on disk when this returns; without
    it they survive a process crash but not a power loss. An existing file's permission bits are
    kept. If writing fails (a full disk included) the previous file is left intact, the temporary
    file is removed and :class:`~bcce.errors.StorageError` is raised; if only the final directory
    fsync fails, the new content is in place but may not survive a power loss.
    """
    try:
        fd, temp = _create_temp(path)
    except OSError as exc:
        raise _error("create a temporary file", path, exc) from exc
    try:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(fd, stat.S_IMODE(path.stat().st_mode))
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        temp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise _error("write the file", path, exc) from exc
        raise
    if fsync:
        try:
            _fsync_directory(path.parent)
        except OSError as exc:
            raise _error("make the rename durable", path, exc) from exc


@contextlib.contextmanager
def atomic_writer(path: Path, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file to stream content into that replaces ``path`` when the block ends cleanly.

    As :func:`atomic_write_bytes` for content too large to hold in memory: readers see the old
    file until the block ends, then the new one; an exception in the block (or a failed write)
    removes the temporary file and leaves ``path`` as it was.
    """
    try:
        fd, temp = _create_temp(path)
    except OSError as exc:
        raise _error("create a temporary file", path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(fd, stat.S_IMODE(path.stat().st_mode))
            yield handle
            handle.flush()
            if fsync:
                os.fsync(fd)
        temp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise _error("write the file", path, exc) from exc
        raise
    if fsync:
        try:
            _fsync_directory(path.parent)
        except OSError as exc:
            raise _error("make the rename durable", path, exc) from exc


def atomic_write_json(
    path: Path, value: object, *, fsync: bool = True, indent: int | None = None
) -> None:
    """Atomically write ``value`` as UTF-8 JSON with sorted keys and a trailing newline.

    ``indent`` pretty-prints, at about three times the cost: it disables json's C encoder.
    """
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StorageError(
            f"cannot serialise the value as JSON: {exc}",
            hint="store only str keys and str, int, finite float, bool, None, list and dict values",
            location=str(path),
        ) from exc
    atomic_write_bytes(path, (text + "\n").encode(), fsync=fsync)


def read_json(path: Path) -> object:
    """Read a JSON file; a missing, unreadable or corrupt file raises StorageError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise StorageError(
            "file not found",
            hint="the run state is missing: check the run id and the runs directory",
            location=str(path),
        ) from exc
    except OSError as exc:
        raise _error("read the file", path, exc) from exc
    try:
        return json.loads(raw.decode())
    except UnicodeDecodeError as exc:
        raise StorageError(
            f"corrupt JSON file: not UTF-8 at byte {exc.start}",
            hint="the file was damaged outside bcce; restore it from a backup",
            location=str(path),
        ) from exc
    except json.JSONDecodeError as exc:
        raise StorageError(
            f"corrupt JSON file: {exc.msg}",
            hint="the file was damaged outside bcce; restore it from a backup",
            location=f"{path}:{exc.lineno}:{exc.colno}",
        ) from exc


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete temporary files that crashed atomic writes left in ``directory``; return them.

    Call it only while holding the directory's :class:`RunLock`: another writer's temporary file
    is otherwise indistinguishable from a stale one.
    """
    removed = []
    try:
        for entry in directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
    except OSError as exc:
        raise _error("remove temporary files", directory, exc) from exc
    return sorted(removed)


@dataclass(frozen=True)
class TornTail:
    """An incomplete or damaged last journal line, as a crash mid-append leaves it."""

    line: int
    offset: int
    size: int
    reason: str


@dataclass(frozen=True)
class _Scan:
    records: list[dict[str, object]]
    torn_tail: TornTail | None
    end: int


class Journal:
    """An append-only journal of JSON records, each line protected by a CRC32.

    ``append`` returns the record's sequence number, which is its index in ``records()``.
    Appends are thread-safe; one process at a time may append (hold the :class:`RunLock`).
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self.torn_tail: TornTail | None = None
        self._fd: int | None = None
        self._next_seq = 0
        self._end = 0
        self._new_entry = False  # created, but its directory entry not yet fsynced
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, object]) -> int:
        """Append one record with a single ``write()``; return its sequence number.

        Refuses to append after a torn tail (call :meth:`repair` first): the new line would turn
        a recoverable tail into corruption. A failed write is rolled back.
        """
        with self._lock:
            fd = self._fd if self._fd is not None else self._open()
            seq = self._next_seq
            line = self._encode(seq, record)
            try:
                _write_all(fd, line)
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                self._roll_back(fd)
                raise _error("append to the journal", self.path, exc) from exc
            self._next_seq = seq + 1
            self._end += len(line)
            return seq

    def sync(self) -> None:
        """Flush every record appended so far to disk (for appends made with ``fsync=False``)."""
        with self._lock:
            if self._fd is None:
                return
            try:
                os.fsync(self._fd)
                if self._new_entry:
                    _fsync_directory(self.path.parent)
                    self._new_entry = False
            except OSError as exc:
                raise _error("sync the journal", self.path, exc) from exc

    def records(self) -> list[dict[str, object]]:
        """Every complete record, in order; sets :attr:`torn_tail` if the last line is damaged.

        Damage anywhere but the last line raises StorageError naming the line.
        """
        with self._lock:
            scan = self._scan()
            self.torn_tail = scan.torn_tail
            return scan.records

    def repair(self) -> None:
        """Cut a torn last line off so later appends start on a clean line."""
        with self._lock:
            scan = self._scan()
            if scan.torn_tail is not None:
                try:
                    with open(self.path, "r+b") as handle:
                        handle.truncate(scan.end)
                        if self.fsync:
                            os.fsync(handle.fileno())
                except OSError as exc:
                    raise _error("repair the journal", self.path, exc) from exc
            self.torn_tail = None
            self._next_seq = len(scan.records)
            self._end = scan.end

    def close(self) -> None:
        """Close the append descriptor; a later append reopens it."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> int:
        scan = self._scan()
        if scan.torn_tail is not None:
            self.torn_tail = scan.torn_tail
            raise StorageError(
                f"the journal's last line (line {scan.torn_tail.line}) is torn: "
                f"{scan.torn_tail.reason}",
                hint="call Journal.repair() before appending (a crash interrupted an append)",
                location=f"{self.path}:{scan.torn_tail.line}",
            )
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _error("open the journal", self.path, exc) from exc
        self._fd = fd
        self._new_entry = created
        if created and self.fsync:
            try:
                _fsync_directory(self.path.parent)
            except OSError as exc:
                raise _error("make the new journal durable", self.path, exc) from exc
            self._new_entry = False
        self._next_seq = len(scan.records)
        self._end = scan.end
        return fd

    def _roll_back(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self._end)
        except OSError:
            # The tail may now be torn: reopening rescans the file and asks for repair().
            os.close(fd)
            self._fd = None

    def _encode(self, seq: int, record: Mapping[str, object]) -> bytes:
        try:
            payload = json.dumps(
                {"rec": dict(record), "seq": seq},
                sort_keys=True,
                ensure_ascii=False,
                separators=(",", ":"),
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as exc:
            raise StorageError(
                f"cannot serialise the journal record as JSON: {exc}",
                hint="store only str keys and str, int, finite float, bool, None, list and dict "
                "values",
                location=str(self.path),
            ) from exc
        return b"%08x %s\n" % (zlib.crc32(payload), payload)

    def _scan(self) -> _Scan:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _Scan([], None, 0)
        except OSError as exc:
            raise _error("read the journal", self.path, exc) from exc
        lines = data.split(b"\n")
        # After the split the last element is b"" for a clean file, else an unterminated line.
        complete, fragment = lines[:-1], lines[-1]
        records: list[dict[str, object]] = []
        offset = 0
        for index, line in enumerate(complete):
            result = _check_line(line, len(records))
            if isinstance(result, str):
                number = index + 1
                if index == len(complete) - 1 and not fragment:
                    size = len(data) - offset
                    return _Scan(records, TornTail(number, offset, size, result), offset)
                raise StorageError(
                    f"corrupt journal: line {number}: {result}",
                    hint="the journal was damaged outside bcce; restore the run from a backup",
                    location=f"{self.path}:{number}",
                )
            records.append(result)
            offset += len(line) + 1
        if fragment:
            tail = TornTail(len(complete) + 1, offset, len(fragment), "no line ending")
            return _Scan(records, tail, offset)
        return _Scan(records, None, offset)


def _check_line(line: bytes, seq: int) -> dict[str, object] | str:
    """The line's record, or why it is invalid."""
    if len(line) < 10 or line[8:9] != b" " or not _HEX.issuperset(line[:8]):
        return "not a '<crc32> <json>' line"
    payload = line[9:]
    if int(line[:8], 16) != zlib.crc32(payload):
        return "CRC mismatch"
    try:
        envelope = json.loads(payload)
    except ValueError:
        return "invalid JSON"
    if not isinstance(envelope, dict) or not isinstance(envelope.get("rec"), dict):
        return "not a journal record"
    if envelope.get("seq") != seq:
        return f"sequence number {envelope.get('seq')!r}, expected {seq}"
    record: dict[str, object] = envelope["rec"]
    return record


class RunLock:
    """An exclusive, non-blocking advisory lock on a run directory (``flock`` on ``<dir>/.lock``).

    The kernel drops the lock when its holder exits or is killed, so a crashed run never stays
    locked. The descriptor is not inherited by child processes, which therefore cannot keep a run
    locked after the engine exits.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / _LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunLocked` naming the holder; a no-op if already held."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _error("open the run lock", self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise self._locked(holder) from None
        except OSError as exc:
            os.close(fd)
            raise _error("lock the run directory", self.path, exc) from exc
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        data = (json.dumps(info, sort_keys=True) + "\n").encode()
        # Holder info is advisory: the lock is held even if a full disk prevents recording it.
        with contextlib.suppress(OSError):
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        self._fd = fd

    def release(self) -> None:
        """Release the lock (clearing the holder info); a no-op if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def holder(self) -> dict[str, object] | None:
        """Who holds the lock (``pid``, ``host``, ``time``), or None if nobody does.

        The dict is empty if the holder has not recorded itself yet. Checking briefly takes a
        shared lock, so an ``acquire`` elsewhere at that instant may fail as if the run were held.
        """
        if self._fd is not None:
            return _read_holder(self._fd)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _error("open the run lock", self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        else:
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _locked(self, holder: dict[str, object]) -> RunLocked:
        pid = holder.get("pid", "unknown")
        where = f"pid {pid} on {holder.get('host', 'unknown host')}"
        since = f" since {holder['time']}" if "time" in holder else ""
        return RunLocked(
            f"the run is locked by another process ({where}{since})",
            hint=f"another bcce process (pid {pid}) is driving this run: wait for it to finish "
            f"or stop it, then retry",
            location=str(self.directory),
        )


def _read_holder(fd: int) -> dict[str, object]:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


__all__ = [
    "TEMP_SUFFIX",
    "Journal",
    "RunLock",
    "RunLocked",
    "TornTail",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_writer",
    "read_json",
    "remove_temp_files",
]
