"""Tests for bcce.core.durable: atomic writes, the CRC journal, the run lock, real crashes."""

from __future__ import annotations

import datetime
import errno
import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.core.durable import (
    TEMP_SUFFIX,
    Journal,
    RunLock,
    RunLocked,
    atomic_write_bytes,
    atomic_write_json,
    atomic_writer,
    read_json,
    remove_temp_files,
)
from bcce.errors import StorageError


def spawn(code: str, *args: object, close_fds: bool = True) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        close_fds=close_fds,
    )


def kill(child: subprocess.Popen[str]) -> str:
    """SIGKILL the child, reap it and return its stderr."""
    child.kill()
    _, err = child.communicate()
    return err


def enospc(*_: object) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def spy(real: Callable[..., Any], calls: list[int]) -> Callable[..., Any]:
    """Wrap an os function whose first argument is a descriptor, recording each call."""

    def wrapper(fd: int, *args: object) -> Any:
        calls.append(fd)
        return real(fd, *args)

    return wrapper


def half_then_enospc(real: Callable[[int, bytes], int]) -> Callable[[int, bytes], int]:
    """An os.write that writes half of the first buffer, then fails as a full disk does."""
    calls = []

    def write(fd: int, data: bytes) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real(fd, bytes(data[: max(1, len(data) // 2)]))
        return enospc()

    return write


# --- atomic_write_bytes / atomic_write_json / read_json ----------------------------------------


def test_atomic_write_bytes_creates_file_with_content(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"


def test_atomic_write_bytes_replaces_existing_content(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_bytes(b"a much longer previous content")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_atomic_write_bytes_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "run.json", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_atomic_write_bytes_keeps_permission_bits_of_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_atomic_write_bytes_fsyncs_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", spy(os.fsync, synced))
    atomic_write_bytes(tmp_path / "run.json", b"x")
    assert len(synced) == 2


def test_atomic_write_bytes_without_fsync_never_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    atomic_write_bytes(tmp_path / "run.json", b"x", fsync=False)
    assert synced == []


@pytest.mark.parametrize("failure", ["write", "partial-write", "fsync"])
def test_disk_full_leaves_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    target = tmp_path / "run.json"
    atomic_write_bytes(target, b"previous state")
    if failure == "write":
        monkeypatch.setattr(os, "write", enospc)
    elif failure == "partial-write":
        monkeypatch.setattr(os, "write", half_then_enospc(os.write))
    else:
        monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(StorageError):
        atomic_write_bytes(target, b"new state that does not fit")
    monkeypatch.undo()
    assert target.read_bytes() == b"previous state"


def test_disk_full_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run.json"
    atomic_write_bytes(target, b"previous state")
    monkeypatch.setattr(os, "write", half_then_enospc(os.write))
    with pytest.raises(StorageError):
        atomic_write_bytes(target, b"new state")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_disk_full_error_hints_at_freeing_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(tmp_path / "run.json", b"x")
    assert info.value.hint is not None
    assert "disk is full" in info.value.hint
    assert "ENOSPC" in info.value.message
    assert info.value.location == str(tmp_path / "run.json")


def test_atomic_write_over_a_directory_fails_and_removes_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(StorageError):
        atomic_write_bytes(target, b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
    assert (target / "keep").read_text() == "x"


def test_atomic_write_into_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(tmp_path / "missing" / "run.json", b"x")
    assert info.value.hint is not None
    assert "does not exist" in info.value.hint


def test_atomic_writer_replaces_the_file_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "artifact.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)

    with atomic_writer(target) as handle:
        handle.write(b"new ")
        assert target.read_bytes() == b"old"  # readers see the old file until the end
        handle.write(b"content")

    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["artifact.bin"]


def test_atomic_writer_leaves_the_old_file_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "artifact.bin"
    target.write_bytes(b"old")

    with pytest.raises(RuntimeError, match="download cut"), atomic_writer(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("download cut")

    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact.bin"]


def test_atomic_writer_fsyncs_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", spy(os.fsync, synced))
    with atomic_writer(tmp_path / "artifact.bin") as handle:
        handle.write(b"x")
    assert len(synced) == 2


def test_atomic_writer_into_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "artifact.bin"
    with pytest.raises(StorageError, match="cannot create a temporary file"), atomic_writer(target):
        pass


def test_atomic_write_json_writes_sorted_utf8_with_trailing_newline(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    atomic_write_json(target, {"b": 1, "a": {"z": "é", "y": [1, 2]}})
    assert target.read_bytes() == '{"a": {"y": [1, 2], "z": "é"}, "b": 1}\n'.encode()


def test_atomic_write_json_indents_on_request(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    atomic_write_json(target, {"a": 1}, indent=2)
    assert target.read_text() == '{\n  "a": 1\n}\n'


@pytest.mark.parametrize("value", [{"x": float("nan")}, {"x": object()}])
def test_atomic_write_json_rejects_non_json_and_keeps_previous(
    tmp_path: Path, value: object
) -> None:
    target = tmp_path / "run.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(StorageError):
        atomic_write_json(target, value)
    assert read_json(target) == {"ok": True}


def test_read_json_round_trips(tmp_path: Path) -> None:
    value = {"steps": [{"id": "a", "status": "done"}], "n": 1.5, "none": None}
    atomic_write_json(tmp_path / "run.json", value)
    assert read_json(tmp_path / "run.json") == value


def test_read_json_missing_file_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not found"):
        read_json(tmp_path / "run.json")


def test_read_json_corrupt_file_names_line_and_column(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text('{\n  "a": 1,\n  "b": \n')
    with pytest.raises(StorageError, match="corrupt JSON") as info:
        read_json(target)
    assert info.value.location is not None
    assert info.value.location.startswith(f"{target}:4:")


def test_read_json_non_utf8_file_is_corrupt(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(StorageError, match="not UTF-8"):
        read_json(target)


def test_remove_temp_files_removes_only_temporary_files(tmp_path: Path) -> None:
    stale = tmp_path / f".run.json.0123abcd{TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / ".lock").write_text("")
    assert remove_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "run.json"]


# --- Journal ------------------------------------------------------------------------------------


def journal_with(path: Path, count: int) -> Journal:
    journal = Journal(path, fsync=False)
    for i in range(count):
        journal.append({"step": f"s{i}", "value": i})
    journal.close()
    return journal


def test_journal_append_returns_consecutive_sequence_numbers(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.jsonl") as journal:
        assert [journal.append({"n": i}) for i in range(3)] == [0, 1, 2]


def test_journal_records_round_trip_in_order(tmp_path: Path) -> None:
    records: list[dict[str, object]] = [
        {"step": "a", "status": "running"},
        {"step": "b", "detail": {"ü": [1, None]}},
    ]
    with Journal(tmp_path / "journal.jsonl") as journal:
        for record in records:
            journal.append(record)
    assert Journal(tmp_path / "journal.jsonl").records() == records


def test_journal_lines_carry_crc_and_sequence(tmp_path: Path) -> None:
    journal_with(tmp_path / "journal.jsonl", 1)
    payload = b'{"rec":{"step":"s0","value":0},"seq":0}'
    expected = b"%08x %s\n" % (zlib.crc32(payload), payload)
    assert (tmp_path / "journal.jsonl").read_bytes() == expected


def test_missing_journal_has_no_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    assert journal.records() == []
    assert journal.torn_tail is None


def test_reopened_journal_continues_the_sequence(tmp_path: Path) -> None:
    journal_with(tmp_path / "journal.jsonl", 2)
    with Journal(tmp_path / "journal.jsonl") as journal:
        assert journal.append({"n": 2}) == 2


def test_journal_append_is_one_write_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "journal.jsonl", fsync=False)
    journal.append({"warm": "up"})  # opens the file
    writes: list[int] = []
    monkeypatch.setattr(os, "write", spy(os.write, writes))
    journal.append({"step": "a", "payload": "x" * 100_000})
    journal.close()
    assert len(writes) == 1


def test_journal_fsync_switch_controls_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", spy(os.fsync, synced))
    with Journal(tmp_path / "off.jsonl", fsync=False) as off:
        off.append({"n": 1})
    assert synced == []
    with Journal(tmp_path / "on.jsonl") as on:
        on.append({"n": 1})
        on.append({"n": 2})
    assert len(synced) == 3  # the new directory entry once, then every append


def test_journal_sync_fsyncs_unsynced_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", spy(os.fsync, synced))
    with Journal(tmp_path / "journal.jsonl", fsync=False) as journal:
        journal.append({"n": 1})
        journal.sync()
    assert len(synced) == 2  # the file and, as it is new, its directory


def test_journal_appends_from_threads_get_unique_sequence_numbers(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl", fsync=False)
    seqs: list[int] = []

    def work(thread: int) -> None:
        for i in range(50):
            seqs.append(journal.append({"thread": thread, "i": i}))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    assert sorted(seqs) == list(range(400))
    assert len(Journal(tmp_path / "journal.jsonl").records()) == 400


def test_journal_rejects_non_json_record_without_writing(tmp_path: Path) -> None:
    journal = journal_with(tmp_path / "journal.jsonl", 1)
    before = (tmp_path / "journal.jsonl").read_bytes()
    with pytest.raises(StorageError, match="serialise"):
        journal.append({"bad": object()})
    journal.close()
    assert (tmp_path / "journal.jsonl").read_bytes() == before


def test_torn_last_line_is_ignored_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 3)
    size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(b'1234abcd {"rec":{"step":"s3","val')
    journal = Journal(path)
    assert journal.records() == [{"step": f"s{i}", "value": i} for i in range(3)]
    assert journal.torn_tail is not None
    assert (journal.torn_tail.line, journal.torn_tail.offset) == (4, size)
    assert journal.torn_tail.reason == "no line ending"


def test_complete_last_line_with_bad_crc_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 3)
    path.write_bytes(path.read_bytes().replace(b'"value":2', b'"value":7'))
    journal = Journal(path)
    assert len(journal.records()) == 2
    assert journal.torn_tail is not None
    assert journal.torn_tail.reason == "CRC mismatch"


def test_zero_filled_tail_after_power_loss_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 2)
    with path.open("ab") as handle:
        handle.write(b"\0" * 4096)
    journal = Journal(path)
    assert len(journal.records()) == 2
    assert journal.torn_tail is not None


def test_append_after_torn_tail_is_refused_until_repaired(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 2)
    with path.open("ab") as handle:
        handle.write(b"deadbeef {")
    with pytest.raises(StorageError, match="torn") as info:
        Journal(path).append({"n": 2})
    assert info.value.hint is not None
    assert "repair()" in info.value.hint


def test_repair_truncates_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 2)
    clean = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b"deadbeef {")
    journal = Journal(path)
    journal.repair()
    assert path.read_bytes() == clean
    assert journal.torn_tail is None


def test_append_after_repair_starts_on_a_clean_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 2)
    with path.open("ab") as handle:
        handle.write(b"deadbeef {")
    with Journal(path) as journal:
        journal.repair()
        assert journal.append({"step": "s2", "value": 2}) == 2
    reread = Journal(path)
    assert reread.records() == [{"step": f"s{i}", "value": i} for i in range(3)]
    assert reread.torn_tail is None


def test_crc_mismatch_in_the_middle_raises_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 3)
    # Still valid JSON with the right sequence number: only the CRC can tell.
    path.write_bytes(path.read_bytes().replace(b'"value":1', b'"value":9'))
    with pytest.raises(StorageError, match="line 2: CRC mismatch") as info:
        Journal(path).records()
    assert info.value.location == f"{path}:2"


def test_garbage_line_in_the_middle_raises_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"not a record\n" + b"".join(lines[1:]))
    with pytest.raises(StorageError, match="corrupt journal: line 2"):
        Journal(path).records()


def test_duplicated_record_in_the_middle_raises(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1] + lines[1] + lines[2])
    with pytest.raises(StorageError, match="line 3: sequence number 1, expected 2"):
        Journal(path).records()


def test_repair_refuses_mid_file_corruption_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal_with(path, 3)
    damaged = path.read_bytes().replace(b'"value":1', b'"value":9')
    path.write_bytes(damaged)
    with pytest.raises(StorageError):
        Journal(path).repair()
    assert path.read_bytes() == damaged


def test_journal_append_failing_with_disk_full_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = journal_with(path, 2)
    before = path.read_bytes()
    monkeypatch.setattr(os, "write", half_then_enospc(os.write))
    with pytest.raises(StorageError, match="ENOSPC"):
        journal.append({"step": "s2", "value": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_journal_append_after_a_failed_append_reuses_the_sequence_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append({"step": "s0", "value": 0})
    journal.append({"step": "s1", "value": 1})
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(StorageError):
        journal.append({"lost": True})
    monkeypatch.undo()
    assert journal.append({"step": "s2", "value": 2}) == 2
    journal.close()
    assert Journal(path).records()[-1] == {"step": "s2", "value": 2}


# --- RunLock ------------------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from typing import Any
from bcce.core.durable import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_by_child(tmp_path: Path) -> subprocess.Popen[str]:
    child = spawn(HOLDER, tmp_path)
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != "locked\n":
        pytest.fail(f"holder did not start: {kill(child)}")
    return child


def test_second_process_cannot_acquire(
    tmp_path: Path, held_by_child: subprocess.Popen[str]
) -> None:
    try:
        with pytest.raises(RunLocked) as info:
            RunLock(tmp_path).acquire()
    finally:
        kill(held_by_child)
    assert info.value.code == "BCCE710"
    assert isinstance(info.value, StorageError)
    assert info.value.hint is not None
    assert f"pid {held_by_child.pid}" in info.value.hint


def test_lock_is_released_when_holder_is_killed(
    tmp_path: Path, held_by_child: subprocess.Popen[str]
) -> None:
    kill(held_by_child)
    assert held_by_child.returncode == -signal.SIGKILL
    with RunLock(tmp_path) as lock:
        holder = lock.holder()
    assert holder is not None
    assert holder["pid"] == os.getpid()


def test_holder_reports_pid_host_and_time_of_other_process(
    tmp_path: Path, held_by_child: subprocess.Popen[str]
) -> None:
    try:
        holder = RunLock(tmp_path).holder()
    finally:
        kill(held_by_child)
    assert holder is not None
    assert holder["pid"] == held_by_child.pid
    assert holder["host"] == socket.gethostname()
    assert isinstance(holder["time"], str)
    stamp = datetime.datetime.fromisoformat(holder["time"])
    assert abs(datetime.datetime.now(datetime.UTC) - stamp) < datetime.timedelta(minutes=5)


def test_holder_is_none_after_holder_is_killed(
    tmp_path: Path, held_by_child: subprocess.Popen[str]
) -> None:
    kill(held_by_child)
    assert RunLock(tmp_path).holder() is None


def test_holder_is_none_without_lock_file(tmp_path: Path) -> None:
    assert RunLock(tmp_path).holder() is None


def test_second_lock_in_same_process_cannot_acquire(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunLocked):
        RunLock(tmp_path).acquire()


def test_release_lets_another_acquire(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    first.release()
    with RunLock(tmp_path) as second:
        assert second.held


def test_context_manager_releases_on_exit(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        pass
    assert RunLock(tmp_path).holder() is None


def test_acquire_twice_on_same_lock_is_a_no_op(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        lock.acquire()
        assert lock.held


def test_release_clears_holder_info(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() != ""
    assert (tmp_path / ".lock").read_text() == ""


def test_lock_on_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        RunLock(tmp_path / "missing").acquire()
    assert not isinstance(info.value, RunLocked)


def test_child_processes_do_not_inherit_the_lock(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    lock.acquire()
    child = spawn("import sys; print('up', flush=True); sys.stdin.read()", close_fds=False)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"
        lock.release()
        with RunLock(tmp_path) as again:
            assert again.held
    finally:
        kill(child)


# --- real crashes and real full disks ------------------------------------------------------------

SHAPES = """
def state_version(i):
    steps = {f"s{k}": "done" for k in range(i % 40)}
    return {"version": i, "steps": steps, "pad": "s" * (i * 7919 % 20000)}

def journal_record(i):
    return {"i": i, "pad": "j" * (200_000 if i % 16 == 5 else i * 104729 % 2000)}
"""

WRITER = (
    SHAPES
    + """
import sys
from pathlib import Path
from typing import Any
from bcce.core.durable import Journal, atomic_write_json
state, journal_path, fsync = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
journal = Journal(journal_path, fsync=fsync)
i = len(journal.records())
print("ready", flush=True)
while True:
    atomic_write_json(state, state_version(i), fsync=fsync)
    journal.append(journal_record(i))
    i += 1
"""
)


@pytest.mark.slow
def test_state_and_journal_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    shapes: dict[str, Any] = {}
    exec(SHAPES, shapes)
    state_version, journal_record = shapes["state_version"], shapes["journal_record"]
    state, journal_path = tmp_path / "run.json", tmp_path / "journal.jsonl"
    atomic_write_json(state, state_version(-1))
    rng = random.Random(20240611)
    for trial in range(40):
        child = spawn(WRITER, state, journal_path, trial % 2)
        assert child.stdout is not None
        if child.stdout.readline() != "ready\n":
            pytest.fail(f"writer did not start: {kill(child)}")
        time.sleep(rng.uniform(0.0, 0.03))  # the random kill moment, not synchronisation
        err = kill(child)
        assert child.returncode == -signal.SIGKILL, err

        journal = Journal(journal_path, fsync=False)
        records = journal.records()
        assert records == [journal_record(i) for i in range(len(records))]
        # Each iteration writes state i before appending record i.
        current = read_json(state)
        assert isinstance(current, dict)
        assert current["version"] in (len(records) - 1, len(records))
        assert current == state_version(current["version"])
        journal.repair()
        assert Journal(journal_path).records() == records
    remove_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.jsonl", "run.json"]


DISK_FULL = """
import errno, json, os, sys
from pathlib import Path
from typing import Any
from bcce.core.durable import Journal, atomic_write_bytes
from bcce.errors import StorageError
directory, big = Path(sys.argv[1]), int(sys.argv[2])
target, journal = directory / "run.json", Journal(directory / "journal.jsonl")
atomic_write_bytes(target, b"previous state")
journal.append({"n": 0})
journal_before = journal.path.read_bytes()
exec(sys.argv[3])  # makes the file system refuse what comes next
report = {}
try:
    atomic_write_bytes(target, b"x" * big)
except StorageError as exc:
    report["write"] = [exc.code, exc.__cause__.errno]
try:
    journal.append({"big": "y" * big})
except StorageError as exc:
    report["append"] = [exc.code, exc.__cause__.errno]
report["state"] = target.read_text()
report["journal_intact"] = journal.path.read_bytes() == journal_before
report["files"] = sorted(p.name for p in directory.iterdir() if p.name != "filler")
print(json.dumps(report))
"""


def check_disk_full_report(stdout: str, expected_errno: int) -> None:
    report = json.loads(stdout)
    assert report["write"] == ["BCCE700", expected_errno]
    assert report["append"] == ["BCCE700", expected_errno]
    assert report["state"] == "previous state"
    assert report["journal_intact"] is True
    assert report["files"] == ["journal.jsonl", "run.json"]


def test_file_size_limit_leaves_previous_state_intact(tmp_path: Path) -> None:
    limit = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
"""
    done = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path), "10000", limit],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check_disk_full_report(done.stdout, errno.EFBIG)


def test_real_full_disk_leaves_previous_state_intact(tmp_path: Path) -> None:
    # A small tmpfs, mounted in a private user and mount namespace, really runs out of space.
    namespace = ["unshare", "--user", "--map-root-user", "--mount"]
    try:
        probe = subprocess.run([*namespace, "true"], capture_output=True, check=False)
    except FileNotFoundError:
        pytest.skip("unshare (util-linux) is not installed")
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available: {probe.stderr.decode().strip()}")
    fill = """
with open(directory / "filler", "wb", buffering=0) as handle:
    try:
        while True:
            handle.write(b"f" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
"""
    mount = 'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" -c "$3" "$1" 65536 "$4"'
    done = subprocess.run(
        [*namespace, "sh", "-c", mount, "sh", str(tmp_path), sys.executable, DISK_FULL, fill],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check_disk_full_report(done.stdout, errno.ENOSPC)
