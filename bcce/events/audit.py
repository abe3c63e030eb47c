"""The tamper-evident audit trail: who did what, when, chained record to record by hash.

The trail is a JSON-lines file (``events.audit.file``, default
``<workflow.state_dir>/audit.jsonl``). Each line is one record::

    {"actor": {"user": "ana", "groups": ["dev"], "provider": "local", "via": "auth provider"},
     "alg": "hmac-sha256", "key_id": "5f1c...", "payload": {...}, "prev": "<hash of the record
     before>", "run_id": "r-1", "seq": 42, "step": "build", "time": "2026-12-01T09:30:00.123+00:00",
     "type": "policy.decision", "hash": "<this record's hash>"}

``hash`` is HMAC-SHA256 (``alg: hmac-sha256``, with ``events.audit.key``) or SHA-256
(``alg: sha256``, no key) over the record's canonical serialisation: every field but ``hash``,
as ``json.dumps(record, sort_keys=True, separators=(",", ":"))`` (ASCII, UTF-8 encoded). ``prev``
chains each record to the one before it (64 zeros for ``seq`` 1); ``key_id`` names the key
(an HMAC of a fixed text: it does not reveal the key) so that a wrong key is told apart from an
edit.

Beside the trail, ``<file>.anchor`` holds the last ``seq`` and ``hash``, MAC'd like the records,
in two fixed-size slots written alternately (a torn slot leaves the other intact). It is what
makes records missing at the end (truncation) detectable: a chain that simply stops is
otherwise intact.

Several bcce processes may append to one trail: each append holds an exclusive ``flock`` on the
trail while it reads where the chain ends, writes the record with one ``write()`` on an
``O_APPEND`` descriptor and updates the anchor. A crash can leave only a torn last line, which
the next writer terminates (so it shows as one line that is not JSON) and :func:`verify`
reports. Records are not fsynced one by one (that would cost milliseconds per event); they
survive a process crash, and :meth:`AuditTrail.flush` / :meth:`AuditTrail.close` sync them.

:func:`verify` checks a trail and names each problem (:data:`PROBLEM_KINDS`); :func:`search`
filters its records. ``bcce audit verify|search`` (``bcce.cli.audit``) drive both.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import fcntl
import fnmatch
import hashlib
import hmac
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bcce.core.log import get_logger
from bcce.errors import BcceError

if TYPE_CHECKING:
    from bcce.auth.provider import AuthenticationProvider, Identity
    from bcce.events.bus import Event, Mode
    from bcce.settings.model import BcceSettings

log = get_logger("audit")

GENESIS = "0" * 64
HMAC_SHA256 = "hmac-sha256"
SHA256 = "sha256"
ANCHOR_SUFFIX = ".anchor"
_ANCHOR_MAGIC = "bcce-audit-anchor/1"
_SLOT = 256
_TAIL_CHUNK = 64 * 1024
#: How long a thread waits for another one resolving the identity before recording the OS user.
_RESOLVE_WAIT = 5.0
_HEX64 = re.compile(r"[0-9a-f]{64}")

ProblemKind = Literal[
    "edited",
    "unkeyed",
    "wrong_key",
    "key_required",
    "chain_break",
    "deleted",
    "reordered",
    "duplicate",
    "truncated",
    "torn",
    "not_json",
    "malformed",
    "anchor_missing",
    "anchor_invalid",
    "anchor_mismatch",
    "no_records",
]
#: Every kind of problem :func:`verify` reports, with what it means.
PROBLEM_KINDS: dict[str, str] = {
    "edited": "the record's content no longer matches its hash",
    "unkeyed": "the record's hash is a plain SHA-256 where the key was expected: written or "
    "recomputed without the key",
    "wrong_key": "the records were signed with another key than the one given",
    "key_required": "the trail is HMAC-keyed and no key was given: content cannot be checked",
    "chain_break": "a record does not link to the one before it: one of them was rewritten "
    "with a recomputed hash",
    "deleted": "sequence numbers are missing: records were deleted",
    "reordered": "a record is out of sequence order: records were moved",
    "duplicate": "a sequence number appears twice: a record was copied",
    "truncated": "records are missing at the end (per the anchor), or the trail file is gone",
    "torn": "the last line is incomplete (a crash while writing it, or a cut)",
    "not_json": "a line is not JSON",
    "malformed": "a line is JSON but not an audit record",
    "anchor_missing": "the anchor file beside the trail is missing: truncation is undetectable",
    "anchor_invalid": "the anchor cannot be read, or its MAC does not verify",
    "anchor_mismatch": "the record the anchor points at has another hash: it was rewritten",
    "no_records": "the trail has no record of the run",
}


class AuditError(BcceError):
    """The audit trail is not intact (``BCCE900``), or cannot be found (``BCCE901``)."""

    code = "BCCE900"


# -- settings ----------------------------------------------------------------------------------
def trail_path(settings: BcceSettings) -> Path:
    """The trail file: ``events.audit.file`` or ``<workflow.state_dir>/audit.jsonl``."""
    configured = settings.events.audit.file
    return configured if configured is not None else settings.workflow.state_dir / "audit.jsonl"


def trail_key(settings: BcceSettings) -> bytes | None:
    """``events.audit.key`` as bytes (None when unset or empty)."""
    secret = settings.events.audit.key
    value = secret.get_secret_value() if secret is not None else ""
    return value.encode() if value else None


def anchor_path(path: Path) -> Path:
    """The anchor file beside the trail ``path``."""
    return path.with_name(path.name + ANCHOR_SUFFIX)


def key_id(key: bytes) -> str:
    """A short public name for ``key``: an HMAC of a fixed text under it, not the key."""
    return hmac.new(key, b"bcce-audit-key-id", hashlib.sha256).hexdigest()[:16]


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: every field but ``hash``, sorted, compact, ASCII."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class AuditReceipt:
    """Where a record went in the chain."""

    seq: int
    hash: str


# -- writing -----------------------------------------------------------------------------------
class AuditTrail:
    """The audit subscriber: appends every event it is given to the hash-chained trail.

    ``identity`` returns who is running (called once, on the first record); ``key`` turns the
    SHA-256 chain into an HMAC-SHA256 one. Thread-safe, and safe with other processes appending
    to the same file. :meth:`record` appends a record that is not an event.
    """

    name = "audit"
    mode: Mode = "inline"

    def __init__(
        self,
        path: Path,
        *,
        key: bytes | str | None = None,
        patterns: Sequence[str] = ("*",),
        identity: Callable[[], Identity] | None = None,
    ) -> None:
        self.path = Path(path).absolute()
        self.anchor_path = anchor_path(self.path)
        self.patterns = tuple(patterns)
        raw_key = key.encode() if isinstance(key, str) else key
        self._key = raw_key or None
        self.alg = HMAC_SHA256 if self._key else SHA256
        self.key_id = key_id(self._key) if self._key else None
        self._fixed = f'"alg":"{self.alg}","key_id":{json.dumps(self.key_id)},"payload":'
        self._identity = identity
        self._actor_json: str | None = None
        self._resolving = threading.local()
        self._identity_lock = threading.Lock()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._anchor_fd: int | None = None
        self._pid = 0
        self._end = -1  # the file size after our last append: anything else means resync
        self._seq = 0
        self._hash = GENESIS
        self._torn = False
        self._second: tuple[int, str] = (-1, "")

    @classmethod
    def from_settings(
        cls,
        settings: BcceSettings,
        *,
        authenticator: Callable[[], AuthenticationProvider] | None = None,
    ) -> AuditTrail:
        """The trail ``events.audit`` configures; the actor comes from ``authenticator()``."""

        def identity() -> Identity:
            assert authenticator is not None
            return authenticator().authenticate()

        return cls(
            trail_path(settings),
            key=trail_key(settings),
            patterns=settings.events.audit.events,
            identity=identity if authenticator is not None else None,
        )

    @property
    def keyed(self) -> bool:
        return self._key is not None

    # -- the Subscriber protocol ----------------------------------------------------------
    def handle(self, event: Event) -> None:
        payload = event.payload
        step = payload.get("step")
        self._append(
            event.type,
            payload,
            event.run_id,
            step if isinstance(step, str) else None,
            event.timestamp,
        )

    def flush(self) -> None:
        """Sync the records written so far to disk."""
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.fsync(self._fd)
                if self._anchor_fd is not None:
                    os.fsync(self._anchor_fd)

    def close(self) -> None:
        """Sync and close the trail; a later record reopens it."""
        with self._lock:
            if self._fd is None:
                return
            try:
                if self._pid == os.getpid():
                    os.fsync(self._fd)
                    if self._anchor_fd is not None:
                        os.fsync(self._anchor_fd)
            finally:
                self._forget()

    # -- records that are not events ------------------------------------------------------
    def record(
        self,
        record_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        step: str | None = None,
        timestamp: float | None = None,
    ) -> AuditReceipt:
        """Append a record that is not an event (an authorisation decision, say).

        ``payload`` must already be redacted: the trail stores it as given. ``step`` defaults to
        the payload's ``step``.
        """
        body = dict(payload or {})
        if step is None and isinstance(body.get("step"), str):
            step = body["step"]
        return self._append(
            record_type, body, run_id, step, time.time() if timestamp is None else timestamp
        )

    # -- the chain ------------------------------------------------------------------------
    def _append(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        run_id: str | None,
        step: str | None,
        timestamp: float,
    ) -> AuditReceipt:
        actor = self._actor()
        # Everything up to "prev" is known before the lock; seq and prev only under it.
        head = f'{{"actor":{actor},{self._fixed}{_dumps(payload)},"prev":"'
        tail = f',"step":{_text(step)},"time":"{self._iso(timestamp)}","type":{_text(event_type)}}}'
        run = _text(run_id)
        with self._lock:
            fd, size = self._locked_fd()
            try:
                if size != self._end:
                    self._resync(fd, size)
                seq = self._seq + 1
                data = f'{head}{self._hash}","run_id":{run},"seq":{seq}{tail}'.encode()
                digest = self._digest(data)
                line = b'%s,"hash":"%s"}\n' % (data[:-1], digest.encode())
                if self._torn:  # end a crashed writer's torn line: it stays one bad line
                    line = b"\n" + line
                try:
                    _write_all(fd, line)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)  # never leave a partial record behind
                    raise _io_error("append to the audit trail", self.path, exc) from exc
                self._end = size + len(line)
                self._seq, self._hash, self._torn = seq, digest, False
                self._write_anchor(seq, digest)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return AuditReceipt(seq, digest)

    def _locked_fd(self) -> tuple[int, int]:
        """The trail's descriptor, exclusively flocked, and the file's size.

        Reopened after a fork, or when the file was deleted or replaced.
        """
        while True:
            if self._fd is None or self._pid != os.getpid():
                self._open()
            assert self._fd is not None
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            status = os.fstat(fd)
            if status.st_nlink > 0:
                return fd, status.st_size
            # The file was deleted or replaced under us: append to the one at the path.
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._forget()

    def _open(self) -> None:
        if self._fd is not None and self._pid != os.getpid():
            # A forked child shares its parent's open file description, and flock cannot tell
            # the two apart: the child needs descriptors of its own.
            self._forget()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags | os.O_APPEND, 0o640)
            self._anchor_fd = os.open(self.anchor_path, flags, 0o640)
        except OSError as exc:
            self._forget()
            raise _io_error("open the audit trail", self.path, exc) from exc
        self._pid = os.getpid()
        self._end = -1

    def _forget(self) -> None:
        for fd in (self._fd, self._anchor_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._anchor_fd = None
        self._end = -1

    def _resync(self, fd: int, size: int) -> None:
        """Find where the chain ends: another process appended, or this is the first record."""
        found, self._torn = _last_record(fd, size)
        anchored = self._read_anchor()
        if found is not None and (anchored is None or found[0] >= anchored[0]):
            self._seq, self._hash = found
        elif anchored is not None:
            # Records the anchor vouches for are gone: chain onto the anchor so that the gap
            # stays visible to verify instead of being papered over by new records.
            last = found[0] if found is not None else 0
            log.warning(
                "the audit trail {} ends at seq {} but its anchor at seq {}: records are missing",
                self.path,
                last,
                anchored[0],
            )
            self._seq, self._hash = anchored
        else:
            self._seq, self._hash = 0, GENESIS

    def _read_anchor(self) -> tuple[int, str] | None:
        assert self._anchor_fd is not None
        raw = os.pread(self._anchor_fd, 2 * _SLOT, 0)
        slots = [s for s in _parse_slots(raw) if s.check(self._key) == "valid"]
        best = max(slots, key=lambda s: s.seq, default=None)
        return (best.seq, best.hash) if best is not None else None

    def _write_anchor(self, seq: int, digest: str) -> None:
        assert self._anchor_fd is not None
        text = f"{_ANCHOR_MAGIC} {seq} {digest} {self.alg}"
        slot = f"{text} {self._digest(text.encode())}".encode().ljust(_SLOT - 1) + b"\n"
        try:
            os.pwrite(self._anchor_fd, slot, (seq % 2) * _SLOT)
        except OSError as exc:
            raise _io_error("update the audit trail's anchor", self.anchor_path, exc) from exc

    def _digest(self, data: bytes) -> str:
        if self._key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.digest(self._key, data, "sha256").hex()

    def _iso(self, timestamp: float) -> str:
        # datetime.isoformat costs ~4 us; the second's text changes once a second.
        second = int(timestamp)
        cached, text = self._second  # one tuple: threads never see a second with another's text
        if second != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        millis = min(999, int((timestamp - second) * 1000))
        return f"{text}.{millis:03d}+00:00"

    # -- who --------------------------------------------------------------------------------
    def _actor(self) -> str:
        cached = self._actor_json
        if cached is not None:
            return cached
        if getattr(self._resolving, "active", False):
            # The auth provider (a plugin, say) published this while being resolved.
            return _os_actor("the auth provider was being resolved when this was recorded")
        if not self._identity_lock.acquire(timeout=_RESOLVE_WAIT):
            return _os_actor("another thread was still resolving the auth provider")
        try:
            if self._actor_json is None:
                self._resolving.active = True
                try:
                    self._actor_json = self._resolve()
                finally:
                    self._resolving.active = False
            return self._actor_json
        finally:
            self._identity_lock.release()

    def _resolve(self) -> str:
        if self._identity is None:
            return _os_actor("no auth provider was given to the audit trail")
        try:
            identity = self._identity()
        except Exception as exc:  # noqa: BLE001 - the trail records who it can, never fails
            # A refused login is the user's to fix (the command reports it too): no traceback.
            log.opt(exception=None if isinstance(exc, BcceError) else exc).warning(
                "the audit trail cannot resolve the auth provider's identity: {}", exc
            )
            return _os_actor(f"the auth provider failed: {type(exc).__name__}: {exc}")
        return json.dumps(
            {
                "groups": list(identity.groups),
                "provider": identity.provider,
                "user": identity.user,
                "via": "auth provider",
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def _os_actor(reason: str) -> str:
    try:
        from bcce.auth.provider import LocalAuthProvider

        identity = LocalAuthProvider().authenticate()
        user, groups = identity.user, list(identity.groups)
    except Exception:  # noqa: BLE001 - no passwd entry, no USER: the uid is all there is
        user, groups = str(os.getuid()), []
    actor = {"groups": groups, "provider": "os", "user": user, "via": f"os user: {reason}"}
    return json.dumps(actor, sort_keys=True, separators=(",", ":"))


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


#: Built once: json.dumps with options builds an encoder per call (a third of the cost).
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), allow_nan=False, default=_default
)
_PLAIN_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_encode_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _dumps(value: Mapping[str, Any]) -> str:
    try:
        return _ENCODER.encode(value if isinstance(value, dict) else dict(value))
    except (TypeError, ValueError):  # keys of mixed types, NaN: store a plain copy
        return _PLAIN_ENCODER.encode(_plain(value))


def _text(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare: a signal or a full disk mid-write
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def _io_error(action: str, path: Path, exc: OSError) -> AuditError:
    return AuditError(
        f"cannot {action}: {exc.strerror or exc}",
        location=str(path),
        hint="check that the directory exists, is writable and its disk is not full",
        code="BCCE901",
    )


def _record_fields(line: bytes) -> tuple[int, str] | None:
    """``(seq, hash)`` of a record line, or None if it is not one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    seq, digest = record.get("seq"), record.get("hash")
    if type(seq) is int and isinstance(digest, str) and _HEX64.fullmatch(digest):
        return seq, digest
    return None


def _last_record(fd: int, size: int) -> tuple[tuple[int, str] | None, bool]:
    """The last complete record's ``(seq, hash)`` and whether the file ends in a torn line."""
    if size == 0:
        return None, False
    torn = os.pread(fd, 1, size - 1) != b"\n"
    start, buffer, chunk = size, b"", _TAIL_CHUNK
    while start > 0:
        begin = max(0, start - chunk)
        buffer = os.pread(fd, start - begin, begin) + buffer
        start, chunk = begin, chunk * 2
        lines = buffer.split(b"\n")
        # The first piece may be the end of a line that starts before the buffer.
        complete = lines[1 if start > 0 else 0 : -1]
        for line in reversed(complete):
            found = _record_fields(line)
            if found is not None:
                return found, torn
    return None, torn


# -- the anchor ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Slot:
    seq: int
    hash: str
    alg: str
    mac: str
    text: str

    def check(self, key: bytes | None) -> Literal["valid", "invalid", "unkeyed", "unverifiable"]:
        if self.alg == SHA256:
            expected = hashlib.sha256(self.text.encode()).hexdigest()
            if not hmac.compare_digest(expected, self.mac):
                return "invalid"
            return "unkeyed" if key is not None else "valid"
        if self.alg == HMAC_SHA256:
            if key is None:
                return "unverifiable"
            expected = hmac.new(key, self.text.encode(), hashlib.sha256).hexdigest()
            return "valid" if hmac.compare_digest(expected, self.mac) else "invalid"
        return "invalid"


def _parse_slots(raw: bytes) -> list[_Slot]:
    slots = []
    for index in (0, 1):
        parts = raw[index * _SLOT : (index + 1) * _SLOT].decode("ascii", "replace").split()
        if (
            len(parts) != 5
            or parts[0] != _ANCHOR_MAGIC
            or not parts[1].isdigit()
            or not _HEX64.fullmatch(parts[4])
        ):
            continue
        text = " ".join(parts[:4])
        slots.append(_Slot(int(parts[1]), parts[2], parts[3], parts[4], text))
    return slots


@dataclass(frozen=True)
class Anchor:
    """The last ``seq`` and ``hash`` the anchor vouches for."""

    seq: int
    hash: str
    alg: str
    verified: bool


# -- verifying ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a trail: its ``kind`` (:data:`PROBLEM_KINDS`) and where.

    ``line`` is the line in the file; ``seqs`` the first and last sequence numbers concerned;
    ``run_id`` the run of the record concerned and ``authenticated`` whether that run id comes
    from a record whose content verified (an edited record's run id may itself be the edit);
    ``runs`` the runs of the records around missing ones (whose own runs cannot be known).
    """

    kind: ProblemKind
    message: str
    line: int | None = None
    seqs: tuple[int, int] | None = None
    run_id: str | None = None
    authenticated: bool = False
    runs: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.seqs is not None:
            first, last = self.seqs
            parts.append(f"seq {first}" if first == last else f"seq {first}-{last}")
        return ", ".join(parts) or "trail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "where": self.where,
            "line": self.line,
            "seqs": list(self.seqs) if self.seqs is not None else None,
            "run_id": self.run_id,
            "authenticated": self.authenticated,
            "runs": list(self.runs),
        }


@dataclass
class VerifyReport:
    """What :func:`verify` found.

    Without ``run_id``, ``problems`` lists every problem. With it, ``problems`` lists those that
    concern the run's records (or the records around deleted ones of the run), ``unattributed``
    those that cannot be attributed to any run (deleted records between other runs' records,
    lines that are not records, truncation, key and anchor problems, edited records naming
    another run) and may concern it, and ``other_runs`` counts the problems that are certainly
    other runs'. ``intact`` is true only when both lists are empty.
    """

    path: Path
    keyed: bool
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    algorithms: tuple[str, ...] = ()
    anchor: Anchor | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    run_records: int = 0
    unattributed: list[Problem] = field(default_factory=list)
    other_runs: int = 0

    @property
    def intact(self) -> bool:
        return not self.problems and not self.unattributed

    def error(self) -> AuditError:
        """The error the CLI exits with when the trail is not intact."""
        count = len(self.problems) + len(self.unattributed)
        scope = f" for run {self.run_id}" if self.run_id else ""
        return AuditError(
            f"the audit trail is not intact{scope}: {count} problem{'s' if count != 1 else ''} "
            f"({', '.join(sorted({p.kind for p in (*self.problems, *self.unattributed)}))})",
            location=str(self.path),
            hint="keep the trail as evidence and compare it with a copy you trust; "
            "see docs/observability.md#audit-trail for what each problem means",
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "file": str(self.path),
            "intact": self.intact,
            "keyed": self.keyed,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "algorithms": list(self.algorithms),
            "anchor": (
                {"seq": self.anchor.seq, "hash": self.anchor.hash, "alg": self.anchor.alg}
                if self.anchor is not None
                else None
            ),
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
        }
        if self.run_id is not None:
            data["run_id"] = self.run_id
            data["run_records"] = self.run_records
            data["unattributed"] = [p.to_dict() for p in self.unattributed]
            data["other_runs"] = self.other_runs
        return data


Status = Literal["ok", "edited", "unkeyed", "wrong_key", "unverifiable"]


@dataclass(frozen=True)
class _Entry:
    line: int
    seq: int
    prev: str
    hash: str
    run_id: str | None
    status: Status
    key_id: str | None


def verify(path: Path, key: bytes | str | None = None, run_id: str | None = None) -> VerifyReport:
    """Check the trail at ``path`` (with ``key`` if it is HMAC-keyed) and name every problem.

    Detects edited records, deleted ones (naming the missing sequence numbers), reordered and
    duplicated ones, records missing at the end (per the anchor), a torn last line, lines that
    are not JSON or not records, records signed without the key or with another key, and a
    missing or forged anchor. With ``run_id`` the whole chain is still checked; the report
    sorts the problems into those of the run, those that cannot be attributed to a run and
    those of other runs (see :class:`VerifyReport`). Raises :class:`AuditError` (``BCCE901``)
    when neither the trail nor its anchor exists.
    """
    path = Path(path)
    secret = (key.encode() if isinstance(key, str) else key) or None
    anchor_raw, size = _snapshot(path)
    report = VerifyReport(path=path, keyed=secret is not None)
    problems: list[Problem] = []
    entries: list[_Entry] = []
    algorithms: set[str] = set()
    name = key_id(secret) if secret is not None else None
    for number, raw, complete in _lines(path, size):
        parsed = _parse_line(number, raw, complete, secret, name, algorithms)
        if isinstance(parsed, Problem):
            problems.append(parsed)
        else:
            entries.append(parsed)
    report.algorithms = tuple(sorted(algorithms))
    problems += _content_problems(entries, secret)
    unique, duplicates = _unique(entries)
    problems += duplicates
    problems += _order_problems(unique)
    by_seq = sorted(unique, key=lambda e: e.seq)
    problems += _chain_problems(by_seq)
    report.anchor, anchor_problems = _anchor_problems(anchor_raw, secret, by_seq, path, report)
    problems += anchor_problems
    problems.sort(key=lambda p: (p.line is None, p.line or 0, p.seqs or (0, 0)))
    report.records = len(entries)
    if by_seq:
        report.first_seq, report.last_seq = by_seq[0].seq, by_seq[-1].seq
    if run_id is None:
        report.problems = problems
    else:
        _scope(report, problems, entries, run_id)
    return report


def _snapshot(path: Path) -> tuple[bytes | None, int]:
    """The anchor and the trail's size, read together under a shared lock.

    Writers only append, so the first ``size`` bytes can then be read without the lock and
    every record the anchor counts is among them.
    """
    anchor = anchor_path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - held open across the lock below
    except FileNotFoundError:
        try:
            return anchor.read_bytes(), 0
        except FileNotFoundError:
            raise AuditError(
                "no audit trail here",
                location=str(path),
                hint="turn the trail on with events.subscribers: [audit], or point to it with "
                "events.audit.file (or --file)",
                code="BCCE901",
            ) from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        try:
            try:
                raw: bytes | None = anchor.read_bytes()
            except FileNotFoundError:
                raw = None
            return raw, os.fstat(handle.fileno()).st_size
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _lines(path: Path, size: int) -> Iterator[tuple[int, bytes, bool]]:
    """``(line number, bytes without the newline, complete)`` for the first ``size`` bytes."""
    if size == 0:
        return
    left = size
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) >= left:
                raw = raw[:left]
                complete = raw.endswith(b"\n")
                yield number, raw.rstrip(b"\n") if complete else raw, complete
                return
            left -= len(raw)
            yield number, raw[:-1], True


def _parse_line(
    number: int,
    raw: bytes,
    complete: bool,
    key: bytes | None,
    name: str | None,
    algorithms: set[str],
) -> _Entry | Problem:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        if not complete:
            return Problem(
                "torn",
                "the last line is incomplete: a crash cut it, or it was cut "
                f"short ({len(raw)} bytes, no line end)",
                line=number,
            )
        reason = "an empty line" if not raw.strip() else "not JSON"
        return Problem(
            "not_json",
            f"{reason}: a write cut short by a crash and then appended to, or an edit",
            line=number,
        )
    if not isinstance(record, dict):
        return Problem("malformed", "JSON but not an audit record (not an object)", line=number)
    seq, prev, digest, alg = (record.get(k) for k in ("seq", "prev", "hash", "alg"))
    if not (
        type(seq) is int
        and seq > 0
        and isinstance(prev, str)
        and _HEX64.fullmatch(prev)
        and isinstance(digest, str)
        and _HEX64.fullmatch(digest)
        and alg in (HMAC_SHA256, SHA256)
    ):
        return Problem(
            "malformed",
            "JSON but not an audit record (seq, prev, hash or alg missing or invalid)",
            line=number,
        )
    assert isinstance(seq, int) and isinstance(prev, str) and isinstance(digest, str)
    algorithms.add(str(alg))
    run = record.get("run_id")
    record_key = record.get("key_id")
    try:
        body = canonical(record)
    except (ValueError, RecursionError):  # nested too deep to serialise again
        return Problem("malformed", "JSON but not an audit record (too deep)", line=number)
    status: Status
    if alg == SHA256:
        sound = hmac.compare_digest(hashlib.sha256(body).hexdigest(), digest)
        status = "edited" if not sound else ("unkeyed" if key is not None else "ok")
    elif key is None:
        status = "unverifiable"
    elif record_key is not None and record_key != name:
        status = "wrong_key"
    elif hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), digest):
        status = "ok"
    elif hmac.compare_digest(hashlib.sha256(body).hexdigest(), digest):
        status = "unkeyed"
    else:
        status = "edited"
    return _Entry(
        number,
        seq,
        prev,
        digest,
        run if isinstance(run, str) else None,
        status,
        record_key if isinstance(record_key, str) else None,
    )


def _content_problems(entries: list[_Entry], key: bytes | None) -> list[Problem]:
    problems: list[Problem] = []
    for entry in entries:
        if entry.status == "edited":
            problems.append(
                Problem(
                    "edited",
                    f"record seq {entry.seq} was changed: its content no longer matches its hash",
                    line=entry.line,
                    seqs=(entry.seq, entry.seq),
                    run_id=entry.run_id,
                )
            )
    for group in _groups(entries, "unkeyed"):
        count = len(group)
        problems.append(
            Problem(
                "unkeyed",
                f"{_records(count)} carr{'y' if count != 1 else 'ies'} a plain SHA-256 hash, "
                "not an HMAC with the key: written before the key was set, or recomputed by "
                "someone without it",
                line=group[0].line,
                seqs=(group[0].seq, group[-1].seq),
                run_id=_one_run(group),
            )
        )
    for group in _groups(entries, "wrong_key"):
        assert key is not None
        ids = ", ".join(sorted({e.key_id or "?" for e in group}))
        problems.append(
            Problem(
                "wrong_key",
                f"{_records(len(group))} signed with another key (key id {ids}); the key given "
                f"has id {key_id(key)}",
                line=group[0].line,
                seqs=(group[0].seq, group[-1].seq),
                run_id=_one_run(group),
            )
        )
    unverifiable = [e for e in entries if e.status == "unverifiable"]
    if unverifiable:
        problems.append(
            Problem(
                "key_required",
                f"{_records(len(unverifiable))} HMAC-keyed and no key was given: their content "
                "cannot be checked (set events.audit.key)",
                line=unverifiable[0].line,
                seqs=(unverifiable[0].seq, unverifiable[-1].seq),
            )
        )
    return problems


def _records(count: int) -> str:
    return "1 record is" if count == 1 else f"{count} records are"


def _groups(entries: list[_Entry], status: Status) -> list[list[_Entry]]:
    """Runs of consecutive lines with ``status``."""
    groups: list[list[_Entry]] = []
    for entry in entries:
        if entry.status != status:
            continue
        if groups and groups[-1][-1].line + 1 == entry.line:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return groups


def _one_run(group: list[_Entry]) -> str | None:
    runs = {e.run_id for e in group}
    return runs.pop() if len(runs) == 1 else None


def _unique(entries: list[_Entry]) -> tuple[list[_Entry], list[Problem]]:
    first: dict[int, _Entry] = {}
    problems = []
    for entry in entries:
        seen = first.get(entry.seq)
        if seen is None:
            first[entry.seq] = entry
            continue
        same = "a copy of" if seen.hash == entry.hash else "another record with the seq of"
        problems.append(
            Problem(
                "duplicate",
                f"seq {entry.seq} appears again: {same} line {seen.line}",
                line=entry.line,
                seqs=(entry.seq, entry.seq),
                run_id=entry.run_id,
                authenticated=entry.status == "ok",
            )
        )
    return list(first.values()), problems


def _order_problems(unique: list[_Entry]) -> list[Problem]:
    """Records outside the longest run of increasing sequence numbers were moved."""
    kept = _increasing(unique)
    present = sorted(e.seq for e in unique)
    problems = []
    for index, entry in enumerate(unique):
        if index in kept:
            continue
        at = bisect.bisect_left(present, entry.seq)
        after = f"after seq {present[at - 1]}" if at > 0 else "first"
        problems.append(
            Problem(
                "reordered",
                f"record seq {entry.seq} is out of order: it belongs {after}",
                line=entry.line,
                seqs=(entry.seq, entry.seq),
                run_id=entry.run_id,
                authenticated=entry.status == "ok",
            )
        )
    return problems


def _increasing(entries: list[_Entry]) -> set[int]:
    """Indexes of a longest strictly increasing subsequence of the entries' seqs."""
    tails: list[int] = []  # seq ending the best subsequence of each length
    tail_index: list[int] = []
    parent = [-1] * len(entries)
    for index, entry in enumerate(entries):
        at = bisect.bisect_left(tails, entry.seq)
        if at == len(tails):
            tails.append(entry.seq)
            tail_index.append(index)
        else:
            tails[at] = entry.seq
            tail_index[at] = index
        parent[index] = tail_index[at - 1] if at > 0 else -1
    kept: set[int] = set()
    index = tail_index[-1] if tail_index else -1
    while index >= 0:
        kept.add(index)
        index = parent[index]
    return kept


def _chain_problems(by_seq: list[_Entry]) -> list[Problem]:
    problems: list[Problem] = []
    before: _Entry | None = None
    for entry in by_seq:
        expected = 1 if before is None else before.seq + 1
        if entry.seq > expected:
            missing = entry.seq - expected
            runs = tuple(sorted({r for r in (before and before.run_id, entry.run_id) if r}))
            which = f"seq {expected} is" if missing == 1 else f"seq {expected}-{entry.seq - 1} are"
            first = " at the start of the trail" if before is None else ""
            problems.append(
                Problem(
                    "deleted",
                    f"{missing} record{'s' if missing != 1 else ''} deleted{first}: {which} "
                    f"missing before line {entry.line}. {_attribution(runs)}",
                    line=entry.line,
                    seqs=(expected, entry.seq - 1),
                    runs=runs,
                )
            )
        elif (entry.prev != (GENESIS if before is None else before.hash)) and (
            entry.status != "edited"
            and (before is None or before.status not in ("edited", "unkeyed"))
        ):
            # A record already reported as edited explains its own link; this one is sound
            # but its neighbour's hash changed: rewritten with a recomputed hash.
            if before is None:
                message = f"record seq {entry.seq} does not start the chain (its prev is not "
                message += "the genesis value): records before it were removed and it rewritten"
            else:
                message = (
                    f"record seq {entry.seq} does not link to record seq {before.seq} "
                    f"(line {before.line}): record {before.seq} was changed and its hash "
                    f"recomputed, or this record's link was"
                )
            runs = tuple(sorted({r for r in (before and before.run_id, entry.run_id) if r}))
            problems.append(
                Problem(
                    "chain_break",
                    message,
                    line=entry.line,
                    seqs=(before.seq if before else entry.seq, entry.seq),
                    run_id=entry.run_id if before is None else before.run_id,
                    runs=runs,
                )
            )
        before = entry
    return problems


def _attribution(runs: tuple[str, ...]) -> str:
    text = "A deleted record's run cannot be known"
    if not runs:
        return text
    if len(runs) == 1:
        return f"{text}; the records on either side belong to run {runs[0]}"
    return f"{text}; the records on either side belong to runs {' and '.join(runs)}"


def _anchor_problems(
    raw: bytes | None,
    key: bytes | None,
    by_seq: list[_Entry],
    path: Path,
    report: VerifyReport,
) -> tuple[Anchor | None, list[Problem]]:
    last = by_seq[-1] if by_seq else None
    if raw is None:
        if last is None:
            return None, []
        return None, [
            Problem(
                "anchor_missing",
                f"the anchor {anchor_path(path).name} is missing: records cut off the end "
                "could not be detected",
            )
        ]
    checked = [(slot, slot.check(key)) for slot in _parse_slots(raw)]
    usable = [(s, c) for s, c in checked if c in ("valid", "unverifiable")]
    if not usable:
        why = (
            "it was written without the key"
            if any(c == "unkeyed" for _, c in checked)
            else "its MAC does not verify (forged, or another key)"
            if checked
            else "it holds no anchor record"
        )
        return None, [Problem("anchor_invalid", f"the anchor cannot be trusted: {why}")]
    slot, state = max(usable, key=lambda sc: sc[0].seq)
    anchor = Anchor(slot.seq, slot.hash, slot.alg, state == "valid")
    if state == "unverifiable":
        report.notes.append("the anchor is HMAC-keyed: without the key it is not authenticated")
    problems = []
    last_seq = last.seq if last is not None else 0
    if anchor.seq > last_seq:
        first = last_seq + 1
        gone = " (the trail file is missing)" if not path.exists() else ""
        runs = (last.run_id,) if last is not None and last.run_id else ()
        problems.append(
            Problem(
                "truncated",
                f"{anchor.seq - last_seq} record{'s' if anchor.seq - first else ''} missing at "
                f"the end{gone}: the anchor says the trail reached seq {anchor.seq}, it ends at "
                f"seq {last_seq}",
                seqs=(first, anchor.seq),
                runs=runs,
            )
        )
    else:
        target = next((e for e in by_seq if e.seq == anchor.seq), None)
        if target is not None and target.hash != anchor.hash:
            problems.append(
                Problem(
                    "anchor_mismatch",
                    f"record seq {anchor.seq} is not the one the anchor recorded: it was "
                    "rewritten with a recomputed hash",
                    line=target.line,
                    seqs=(anchor.seq, anchor.seq),
                    run_id=target.run_id,
                    authenticated=target.status == "ok",
                )
            )
        if anchor.seq + 1 < last_seq:
            report.notes.append(
                f"the anchor is at seq {anchor.seq}, {last_seq - anchor.seq} records behind the "
                "trail (its updates failed, or it was replaced by an older copy)"
            )
    return anchor, problems


def _scope(
    report: VerifyReport, problems: list[Problem], entries: list[_Entry], run_id: str
) -> None:
    report.run_id = run_id
    report.run_records = sum(1 for e in entries if e.run_id == run_id)
    for problem in problems:
        if problem.run_id == run_id or run_id in problem.runs:
            report.problems.append(problem)
        elif problem.run_id is None:
            report.unattributed.append(problem)
        elif not problem.authenticated:
            # The content check failed, so the run id it names may itself be the edit.
            note = f"; it names run {problem.run_id}, but that may be what was changed"
            report.unattributed.append(replace(problem, message=problem.message + note))
        else:
            report.other_runs += 1
    if report.run_records == 0:
        report.problems.insert(
            0,
            Problem(
                "no_records",
                f"the trail has no record of run {run_id} (a wrong run id, or its records "
                "were deleted)",
                run_id=run_id,
            ),
        )


# -- searching ---------------------------------------------------------------------------------
def search(
    path: Path,
    *,
    run_id: str | None = None,
    user: str | None = None,
    types: Sequence[str] = (),
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The records matching every filter given, in trail order (the last ``limit`` of them).

    ``run_id`` matches the run's own records and those about it (a payload's ``run_id``, as in
    ``auth.decision``). ``types`` are event type patterns (``policy.*``); a record matches any
    of them. ``since`` is
    inclusive, ``until`` exclusive. Lines that are not records are skipped: searching does not
    verify (see :func:`verify`).
    """
    path = Path(path)
    if not path.exists():
        raise AuditError(
            "no audit trail here",
            location=str(path),
            hint="turn the trail on with events.subscribers: [audit], or point to it with "
            "events.audit.file (or --file)",
            code="BCCE901",
        )
    needle = json.dumps(run_id).encode() if run_id is not None else None
    found: list[dict[str, Any]] = []
    with open(path, "rb") as handle:
        for raw in handle:
            if needle is not None and needle not in raw:
                continue  # skip parsing lines that cannot match
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and _matches(record, run_id, user, types, since, until):
                found.append(record)
    return found[-limit:] if limit is not None else found


def _runs_of(record: dict[str, Any]) -> tuple[object, ...]:
    """The runs a record concerns: its own, and the payload's ``run_id`` for records that are
    about a run without being one of its events (``auth.decision``: a refused run never exists;
    ``events.subscriber_failed``: the event that failed)."""
    payload = record.get("payload")
    about = payload.get("run_id") if isinstance(payload, dict) else None
    return (record.get("run_id"), about)


def _matches(
    record: dict[str, Any],
    run_id: str | None,
    user: str | None,
    types: Sequence[str],
    since: datetime.datetime | None,
    until: datetime.datetime | None,
) -> bool:
    if run_id is not None and run_id not in _runs_of(record):
        return False
    if user is not None:
        actor = record.get("actor")
        if not isinstance(actor, dict) or actor.get("user") != user:
            return False
    if types:
        kind = record.get("type")
        if not isinstance(kind, str) or not any(fnmatch.fnmatchcase(kind, t) for t in types):
            return False
    if since is not None or until is not None:
        moment = _parse_time(record.get("time"))
        if moment is None:
            return False
        if since is not None and moment < since:
            return False
        if until is not None and moment >= until:
            return False
    return True


def _parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


__all__ = [
    "ANCHOR_SUFFIX",
    "GENESIS",
    "HMAC_SHA256",
    "PROBLEM_KINDS",
    "SHA256",
    "Anchor",
    "AuditError",
    "AuditReceipt",
    "AuditTrail",
    "Problem",
    "ProblemKind",
    "VerifyReport",
    "anchor_path",
    "canonical",
    "key_id",
    "search",
    "trail_key",
    "trail_path",
    "verify",
]
