"""Running a command as a process tree that can always be stopped.

A timed-out or cancelled step must not leave anything running. Each step's processes get their
own session (process group) and an environment cookie; stopping sends SIGTERM to the group, waits
a grace period, then SIGKILLs the group, every descendant found through ``/proc`` (which catches
children that moved to a new session) and every process still carrying the cookie (which catches
orphans re-parented away from us).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

COOKIE_VARIABLE = "BCCE_PROCESS_COOKIE"


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int | None
    duration: float
    timed_out: bool = False
    cancelled: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0


def new_cookie(prefix: str) -> str:
    return f"{prefix}:{secrets.token_hex(8)}"


def run_process(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdout_path: Path,
    stderr_path: Path,
    deadline: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    grace_seconds: float = 2.0,
    tee: Callable[[str, bytes], bytes] | None = None,
    cookie: str | None = None,
) -> ProcessResult:
    """Run ``argv`` until it exits, ``deadline`` (monotonic) passes, or ``should_stop()``.

    Output goes straight to the two files; with ``tee`` it is read through pipes instead and each
    chunk is passed to ``tee(stream, data)``, whose return value is written to the file.
    """
    cookie = cookie or new_cookie("bcce")
    env = {**env, COOKIE_VARIABLE: cookie}
    started = time.monotonic()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        pipes = tee is not None
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
            stderr=subprocess.PIPE if pipes else err,
            start_new_session=True,
            close_fds=True,
        )
        timed_out = cancelled = False
        try:
            if pipes:
                assert tee is not None
                timed_out, cancelled = _pump(proc, out, err, tee, deadline, should_stop)
            else:
                timed_out, cancelled = _wait(proc, deadline, should_stop)
        except BaseException:
            kill_tree(proc, cookie, grace_seconds=0)
            raise
        if timed_out or cancelled:
            kill_tree(proc, cookie, grace_seconds=grace_seconds)
        elif _group_alive(proc.pid):
            # The leader exited but left background children in its group: they end with the
            # step. (Escapees to other sessions are swept by cookie when the run ends.)
            _signal_group(proc.pid, signal.SIGKILL)
    return ProcessResult(
        exit_code=proc.returncode,
        duration=time.monotonic() - started,
        timed_out=timed_out,
        cancelled=cancelled,
        stdout_bytes=stdout_path.stat().st_size,
        stderr_bytes=stderr_path.stat().st_size,
    )


def _wait(
    proc: subprocess.Popen[bytes], deadline: float | None, should_stop: Callable[[], bool]
) -> tuple[bool, bool]:
    """Wait for exit, the deadline or a stop request; ``(timed_out, cancelled)``."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll instead
        return _poll(proc, deadline, should_stop)
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return True, False
            # The pidfd becomes readable the moment the process exits: no polling latency.
            ready, _, _ = select.select([pidfd], [], [], min(0.1, remaining or 0.1))
            if ready:
                proc.wait()
                return False, False
            if should_stop():
                return False, True
    finally:
        os.close(pidfd)


def _poll(
    proc: subprocess.Popen[bytes], deadline: float | None, should_stop: Callable[[], bool]
) -> tuple[bool, bool]:
    interval = 0.001
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return True, False
        try:
            proc.wait(timeout=min(interval, remaining) if remaining is not None else interval)
            return False, False
        except subprocess.TimeoutExpired:
            pass
        if should_stop():
            return False, True
        interval = min(interval * 2, 0.1)


def _pump(
    proc: subprocess.Popen[bytes],
    out: IO[bytes],
    err: IO[bytes],
    tee: Callable[[str, bytes], bytes],
    deadline: float | None,
    should_stop: Callable[[], bool],
) -> tuple[bool, bool]:
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, ("stdout", out))
    selector.register(proc.stderr, selectors.EVENT_READ, ("stderr", err))
    open_streams = 2
    try:
        while open_streams:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return True, False
            if should_stop():
                return False, True
            timeout = 0.1 if remaining is None else min(0.1, remaining)
            for key, _ in selector.select(timeout):
                name, sink = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                sink.write(tee(name, chunk))
        for name, sink in (("stdout", out), ("stderr", err)):
            tail = tee(name, b"")  # flush what the tee held back
            if tail:
                sink.write(tail)
        return _wait(proc, deadline, should_stop)
    finally:
        selector.close()


def kill_tree(proc: subprocess.Popen[bytes], cookie: str | None, *, grace_seconds: float) -> None:
    """Stop ``proc``, its process group, its descendants and anything carrying ``cookie``."""
    pgid = proc.pid  # start_new_session made the leader its group's id
    targets = descendants(proc.pid) | (processes_with_cookie(cookie) if cookie else set())
    if grace_seconds > 0:
        # Once each: a second SIGTERM could run a handler again (a shell trap did, twice).
        outside = {pid for pid in targets if _group_of(pid) not in (pgid, None)}
        _signal_group(pgid, signal.SIGTERM)
        for pid in outside:
            _signal(pid, signal.SIGTERM)
        end = time.monotonic() + grace_seconds
        while time.monotonic() < end:
            if proc.poll() is not None and not _group_alive(pgid):
                break
            time.sleep(0.02)
    targets |= descendants(proc.pid) | (processes_with_cookie(cookie) if cookie else set())
    _signal_group(pgid, signal.SIGKILL)
    for pid in targets:
        _signal(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def kill_cookie(cookie_prefix: str) -> int:
    """SIGKILL every process whose cookie starts with ``cookie_prefix`` (a dead run's leftovers)."""
    pids = processes_with_cookie(cookie_prefix, prefix=True)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return len(pids)


def descendants(pid: int) -> set[int]:
    """All processes below ``pid`` in the process tree, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in _proc_pids():
        parent = _ppid(entry)
        if parent is not None:
            children.setdefault(parent, []).append(entry)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def processes_with_cookie(cookie: str, *, prefix: bool = False) -> set[int]:
    needle = f"{COOKIE_VARIABLE}={cookie}".encode()
    found = set()
    own = os.getpid()
    for pid in _proc_pids():
        if pid == own:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item == needle or (prefix and item.startswith(needle)):
                found.add(pid)
                break
    return found


def _proc_pids() -> list[int]:
    try:
        return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:  # pragma: no cover - no procfs
        return []


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: parse after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
