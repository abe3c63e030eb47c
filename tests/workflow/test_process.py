"""Process trees that can always be stopped: exit codes, output files, timeouts, stop requests,
escaped children and cookies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bcce.workflow.process import (
    COOKIE_VARIABLE,
    ProcessResult,
    descendants,
    kill_cookie,
    new_cookie,
    processes_with_cookie,
    run_process,
)

#: Ignores SIGTERM; leaves a child, a child in a new session and an orphaned daemon; every pid
#: goes to ``pids`` and ``ready`` appears once all four are written.
STUBBORN = """
trap '' TERM
echo $$ >> pids
sleep 300 & echo $! >> pids
setsid sh -c 'trap "" TERM; echo $$ >> pids; exec sleep 300' &
( setsid sh -c 'trap "" TERM; echo $$ >> pids; exec sleep 300' & )
while [ $(wc -l < pids) -lt 4 ]; do sleep 0.01; done
touch ready
wait
"""


def run(tmp_path: Path, script: str, **kwargs: object) -> ProcessResult:
    return run_process(
        ["/bin/bash", "-c", script],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        stdout_path=tmp_path / "out.txt",
        stderr_path=tmp_path / "err.txt",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def pids_of(
    read_pids: Callable[[Path], list[int]], kill_leftovers: Callable[[list[int]], None]
) -> Callable[[Path], list[int]]:
    def read(path: Path) -> list[int]:
        pids = read_pids(path)
        kill_leftovers(pids)
        return pids

    return read


def test_the_exit_code_and_output_sizes_are_returned(tmp_path: Path) -> None:
    result = run(tmp_path, "printf hello; printf oops >&2; exit 4")

    assert result.exit_code == 4
    assert (result.stdout_bytes, result.stderr_bytes) == (5, 4)
    assert (result.timed_out, result.cancelled) == (False, False)
    assert (tmp_path / "out.txt").read_text() == "hello"
    assert (tmp_path / "err.txt").read_text() == "oops"


def test_the_process_runs_in_cwd_with_exactly_the_given_environment(tmp_path: Path) -> None:
    run(tmp_path, "pwd; env", cookie="test:cookie")

    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert lines[0] == str(tmp_path)
    names = {line.split("=", 1)[0] for line in lines[1:]}
    assert names - {"PWD", "SHLVL", "_"} == {"PATH", COOKIE_VARIABLE}
    assert f"{COOKIE_VARIABLE}=test:cookie" in lines


def test_a_tee_sees_every_chunk_and_its_result_is_written(tmp_path: Path) -> None:
    seen: list[tuple[str, bytes]] = []

    def tee(stream: str, data: bytes) -> bytes:
        seen.append((stream, data))
        return data.upper()

    result = run(tmp_path, "echo quiet; echo loud >&2", tee=tee)

    assert result.exit_code == 0
    assert (tmp_path / "out.txt").read_text() == "QUIET\n"
    assert (tmp_path / "err.txt").read_text() == "LOUD\n"
    assert b"".join(d for s, d in seen if s == "stdout") == b"quiet\n"


@pytest.mark.timeout(30)
def test_a_deadline_kills_a_tree_that_ignores_sigterm(
    tmp_path: Path,
    wait_until: Callable[..., None],
    pid_gone: Callable[[int], bool],
    pids_of: Callable[[Path], list[int]],
) -> None:
    result = run(tmp_path, STUBBORN, deadline=time.monotonic() + 1, grace_seconds=0.2)

    pids = pids_of(tmp_path / "pids")
    assert result.timed_out
    assert len(pids) == 4
    wait_until(lambda: all(pid_gone(p) for p in pids), timeout=5, what="every process")


@pytest.mark.timeout(30)
def test_a_stop_request_cancels_the_whole_tree(
    tmp_path: Path,
    wait_until: Callable[..., None],
    pid_gone: Callable[[int], bool],
    pids_of: Callable[[Path], list[int]],
) -> None:
    result = run(
        tmp_path, STUBBORN, should_stop=lambda: (tmp_path / "ready").exists(), grace_seconds=0.2
    )

    pids = pids_of(tmp_path / "pids")
    assert result.cancelled and not result.timed_out
    wait_until(lambda: all(pid_gone(p) for p in pids), timeout=5, what="every process")


@pytest.mark.timeout(30)
def test_a_deadline_also_stops_a_teed_process(
    tmp_path: Path,
    wait_until: Callable[..., None],
    pid_gone: Callable[[int], bool],
    pids_of: Callable[[Path], list[int]],
) -> None:
    result = run(
        tmp_path,
        STUBBORN,
        deadline=time.monotonic() + 1,
        grace_seconds=0.2,
        tee=lambda _stream, data: data,
    )

    pids = pids_of(tmp_path / "pids")
    assert result.timed_out
    wait_until(lambda: all(pid_gone(p) for p in pids), timeout=5, what="every process")


def test_a_process_that_exits_on_sigterm_is_not_sigkilled(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "trap 'echo terminated; exit 0' TERM; touch ready; sleep 30 & wait",
        should_stop=lambda: (tmp_path / "ready").exists(),
        grace_seconds=2,
    )

    assert result.cancelled
    assert (tmp_path / "out.txt").read_text() == "terminated\n"


def test_stopping_sends_sigterm_once_to_each_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[tuple[int, int]] = []
    singles: list[tuple[int, int]] = []
    real_killpg, real_kill = os.killpg, os.kill

    def killpg(pgid: int, sig: int) -> None:
        groups.append((pgid, sig))
        real_killpg(pgid, sig)

    def kill(pid: int, sig: int) -> None:
        singles.append((pid, sig))
        real_kill(pid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    monkeypatch.setattr(os, "kill", kill)
    script = (
        "trap 'exit 0' TERM; sleep 30 & "
        "setsid sh -c 'trap \"exit 0\" TERM; echo $$ > escaped; exec sleep 30' & "
        "while [ ! -s escaped ]; do sleep 0.01; done; touch ready; wait"
    )

    result = run(tmp_path, script, should_stop=lambda: (tmp_path / "ready").exists())

    assert result.cancelled
    leader = next(pgid for pgid, sig in groups if sig == signal.SIGTERM)
    escaped = int((tmp_path / "escaped").read_text())
    terms = [pid for pid, sig in singles if sig == signal.SIGTERM]
    assert leader not in terms  # the group's SIGTERM reached it: not a second one
    assert terms == [escaped]  # only the process outside the group is signalled on its own


def test_background_children_end_with_their_leader(
    tmp_path: Path,
    wait_until: Callable[..., None],
    pid_gone: Callable[[int], bool],
    pids_of: Callable[[Path], list[int]],
) -> None:
    result = run(tmp_path, "sleep 300 >/dev/null 2>&1 & echo $! > pids; exit 0")

    pids = pids_of(tmp_path / "pids")
    assert result.exit_code == 0
    wait_until(lambda: pid_gone(pids[0]), timeout=5, what="the background child")


def test_descendants_include_grandchildren(tmp_path: Path, wait_until: Callable[..., None]) -> None:
    path = tmp_path / "grandchild"
    proc = subprocess.Popen(
        ["/bin/bash", "-c", f"sleep 30 & echo $! > {path}.tmp; mv {path}.tmp {path}; wait"]
    )
    try:
        wait_until(path.exists, timeout=10, what="the grandchild's pid")
        grandchild = int(path.read_text())

        assert grandchild in descendants(proc.pid)
        assert grandchild in descendants(os.getpid())
    finally:
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_kill_cookie_kills_every_process_carrying_the_run_prefix(
    tmp_path: Path, wait_until: Callable[..., None], pid_gone: Callable[[int], bool]
) -> None:
    cookie = new_cookie("run-xyz") + ":step:1"
    env = {"PATH": os.environ["PATH"], COOKIE_VARIABLE: cookie}
    detached = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    other = subprocess.Popen(
        ["sleep", "300"], env={**env, COOKIE_VARIABLE: "other-run:step:1"}, start_new_session=True
    )
    try:
        assert processes_with_cookie(cookie) == {detached.pid}

        killed = kill_cookie("run-xyz:")

        assert killed == 1
        assert detached.wait(timeout=5) == -9
        assert other.poll() is None
    finally:
        for proc in (detached, other):
            proc.kill()
            proc.wait()


def test_new_cookies_are_unique_and_keep_their_prefix() -> None:
    cookies = {new_cookie("run-1") for _ in range(100)}

    assert len(cookies) == 100
    assert all(c.startswith("run-1:") for c in cookies)
