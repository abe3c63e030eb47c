"""Durable run state: snapshot plus journal, the run lock, listing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bcce.core.durable import TEMP_SUFFIX, RunLocked
from bcce.errors import UsageError
from bcce.workflow.state import (
    CANCEL_REQUEST,
    JOURNAL,
    SNAPSHOT,
    JsonRunStateStore,
    RunRecorder,
    RunState,
    append_cancel_request,
)


@pytest.fixture
def store(tmp_path: Path) -> JsonRunStateStore:
    return JsonRunStateStore(tmp_path / "runs", fsync=False)


def new_state(run_id: str = "run-1", created_at: str | None = None) -> RunState:
    state = RunState(
        run_id=run_id,
        workflow={"name": "wf", "path": "/wf.yml", "digest": "abc"},
        order=["a", "b"],
        steps={"a": {"status": "pending"}, "b": {"status": "pending"}},
    )
    if created_at is not None:
        state.created_at = created_at
    return state


def created(store: JsonRunStateStore, run_id: str = "run-1", **kwargs: str) -> RunRecorder:
    return store.create(new_state(run_id, **kwargs))


def test_create_writes_a_snapshot_that_load_reads(store: JsonRunStateStore) -> None:
    recorder = created(store)
    recorder.release()

    loaded = store.load("run-1")

    assert loaded.to_dict() == new_state().to_dict() | {"created_at": loaded.created_at}
    assert json.loads((store.root / "run-1" / SNAPSHOT).read_text())["run_id"] == "run-1"


def test_load_replays_journal_records_written_after_the_snapshot(
    store: JsonRunStateStore,
) -> None:
    recorder = created(store)
    recorder.record("run", None, status="running")
    recorder.record("step", "a", status="succeeded", outputs={"x": "1"})
    recorder.release()  # no snapshot after the records: as if killed here

    loaded = store.load("run-1")

    assert loaded.status == "running"
    assert loaded.steps["a"] == {"status": "succeeded", "outputs": {"x": "1"}}
    assert loaded.journal_seq == 2


def test_records_already_in_the_snapshot_are_not_applied_twice(
    store: JsonRunStateStore,
) -> None:
    recorder = created(store)
    recorder.record("step", "a", status="running", attempts=1)
    recorder.snapshot()
    recorder.record("step", "b", status="running")
    recorder.release()

    loaded = store.load("run-1")

    assert loaded.journal_seq == 2
    assert loaded.steps["a"]["attempts"] == 1
    assert loaded.steps["b"]["status"] == "running"


def test_a_torn_last_journal_line_is_ignored(store: JsonRunStateStore) -> None:
    recorder = created(store)
    recorder.record("step", "a", status="succeeded")
    recorder.release()
    with (store.root / "run-1" / JOURNAL).open("ab") as journal:
        journal.write(b'0badc0de {"rec": {"scope": "step", "id": "b", "se')

    loaded = store.load("run-1")

    assert loaded.steps["a"]["status"] == "succeeded"
    assert loaded.steps["b"]["status"] == "pending"


def test_opening_a_run_repairs_a_torn_journal_so_it_can_be_appended_to(
    store: JsonRunStateStore,
) -> None:
    created(store).release()
    with (store.root / "run-1" / JOURNAL).open("ab") as journal:
        journal.write(b"deadbeef {")

    recorder = store.open("run-1")
    recorder.record("step", "b", status="succeeded")
    recorder.release()

    assert store.load("run-1").steps["b"]["status"] == "succeeded"


def test_opening_a_run_removes_temporary_files_of_a_crashed_write(
    store: JsonRunStateStore,
) -> None:
    created(store).release()
    stale = store.root / "run-1" / f".{SNAPSHOT}.0123abcd{TEMP_SUFFIX}"
    stale.write_text('{"half": ')

    store.open("run-1").release()

    assert not stale.exists()


def test_creating_an_existing_run_is_refused(store: JsonRunStateStore) -> None:
    created(store).release()

    with pytest.raises(UsageError) as caught:
        created(store)

    assert "run run-1 already exists" in caught.value.message


def test_a_crash_before_the_first_snapshot_does_not_block_the_run_id(
    store: JsonRunStateStore,
) -> None:
    # What a kill -9 between creating the run directory (and its lock) and the first
    # snapshot leaves behind: there is no run to resume, so the id must be usable again.
    directory = store.root / "run-1"
    directory.mkdir(parents=True)
    (directory / ".lock").write_text("")

    created(store).release()

    assert store.load("run-1").run_id == "run-1"


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_an_invalid_run_id_is_refused(store: JsonRunStateStore, run_id: str) -> None:
    with pytest.raises(UsageError) as caught:
        store.run_dir(run_id)

    assert "invalid run id" in caught.value.message


def test_loading_an_unknown_run_says_where_it_looked(store: JsonRunStateStore) -> None:
    with pytest.raises(UsageError) as caught:
        store.load("nope")

    assert caught.value.message == f"no run nope in {store.root}"
    assert caught.value.hint and "bcce workflow list" in caught.value.hint


def test_list_runs_is_newest_first(store: JsonRunStateStore) -> None:
    for run_id, when in [
        ("b-middle", "2026-01-02T00:00:00.000+00:00"),
        ("a-newest", "2026-01-03T00:00:00.000+00:00"),
        ("c-oldest", "2026-01-01T00:00:00.000+00:00"),
    ]:
        created(store, run_id, created_at=when).release()

    assert [s.run_id for s in store.list_runs()] == ["a-newest", "b-middle", "c-oldest"]


def test_list_runs_skips_directories_that_are_not_readable_runs(
    store: JsonRunStateStore,
) -> None:
    created(store, "good").release()
    (store.root / "corrupt").mkdir()
    (store.root / "corrupt" / SNAPSHOT).write_text("{not json")
    (store.root / "empty").mkdir()

    assert [s.run_id for s in store.list_runs()] == ["good"]


def test_list_runs_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert JsonRunStateStore(tmp_path / "absent").list_runs() == []


def test_a_run_is_driven_while_its_recorder_holds_the_lock(store: JsonRunStateStore) -> None:
    recorder = created(store)

    assert store.is_driven("run-1")
    recorder.release()
    assert not store.is_driven("run-1")


def test_a_second_recorder_cannot_open_a_driven_run(store: JsonRunStateStore) -> None:
    recorder = created(store)
    try:
        with pytest.raises(RunLocked) as caught:
            store.open("run-1")
    finally:
        recorder.release()

    assert "locked by another process" in caught.value.message
    assert store.open("run-1").state.run_id == "run-1"


def test_a_cancel_request_is_seen_by_the_recorder(store: JsonRunStateStore) -> None:
    recorder = created(store)
    try:
        assert not recorder.cancel_requested()
        (recorder.directory / CANCEL_REQUEST).write_text("now")
        assert recorder.cancel_requested()
    finally:
        recorder.release()


def test_a_cancel_request_names_who_asked_first(store: JsonRunStateStore) -> None:
    recorder = created(store)
    ana = {"user": "ana", "groups": ["dev"], "provider": "local"}
    try:
        append_cancel_request(recorder.directory)  # the driving process: nobody named
        assert recorder.cancel_requested_by() is None
        append_cancel_request(recorder.directory, by=ana)
        append_cancel_request(recorder.directory, by={**ana, "user": "bob"})
        assert recorder.cancel_requested_by() == ana
        assert recorder.cancel_requests() == 3
    finally:
        recorder.release()


def test_run_records_set_fields_but_never_the_run_id_or_steps() -> None:
    state = new_state()

    state.apply(
        {"scope": "run", "id": None, "set": {"status": "failed", "run_id": "x", "steps": {}}}
    )

    assert state.status == "failed"
    assert state.run_id == "run-1"
    assert set(state.steps) == {"a", "b"}


def test_a_step_record_for_a_new_step_creates_it() -> None:
    state = new_state()

    state.apply({"scope": "step", "id": "c", "set": {"status": "running"}})

    assert state.steps["c"] == {"status": "running"}


def test_run_state_survives_a_round_trip_through_a_dict() -> None:
    state = new_state()
    state.apply({"scope": "step", "id": "a", "set": {"status": "succeeded"}})

    assert RunState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
