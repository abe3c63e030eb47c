"""The audit trail: every kind of tampering detected and named, run scoping, search, concurrent
writers, the recorded identity, a real run's events, and a key taken from SSM."""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from bcce.auth.provider import Identity
from bcce.containers.application import Application
from bcce.core.when import parse_when
from bcce.errors import UsageError
from bcce.events.audit import (
    GENESIS,
    AuditError,
    AuditTrail,
    VerifyReport,
    anchor_path,
    canonical,
    search,
    trail_key,
    verify,
)
from bcce.events.bus import Event
from bcce.settings.layers import LayerOptions, load_settings
from bcce.workflow.runner import RunOptions

KEY = b"audit-test-key-0123456789abcdef"
ANA = Identity(user="ana", groups=("dev", "ops"), provider="fake-sso")
#: Runs of the six records most tests write: two runs, interleaved.
RUNS = ["r-a", "r-a", "r-b", "r-a", "r-b", "r-b"]
SSM_PATH = "/bcce/audit-test"


class FakeProvider:
    name = "fake-sso"

    def __init__(self, identity: Identity = ANA) -> None:
        self.identity = identity
        self.calls = 0

    def authenticate(self) -> Identity:
        self.calls += 1
        return self.identity


def write_trail(
    path: Path, runs: list[str | None] = RUNS, *, key: bytes | None = KEY, start: int = 0
) -> AuditTrail:
    trail = AuditTrail(path, key=key, identity=lambda: ANA)
    for index, run in enumerate(runs, start=start):
        trail.record("step.completed", {"step": f"s{index}", "n": index}, run_id=run)
    trail.close()
    return trail


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(content))


def edit_line(path: Path, index: int, change: Callable[[dict[str, Any]], None]) -> None:
    content = lines(path)
    record = json.loads(content[index])
    change(record)
    content[index] = json.dumps(record).encode() + b"\n"
    rewrite(path, content)


def kinds(report: VerifyReport) -> list[str]:
    return [p.kind for p in report.problems]


@pytest.fixture
def trail_file(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


# -- an intact trail ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "sha256"])
def test_an_intact_trail_verifies(trail_file: Path, key: bytes | None) -> None:
    write_trail(trail_file, key=key)

    report = verify(trail_file, key=key)

    assert report.intact, report.problems
    assert (report.records, report.first_seq, report.last_seq) == (6, 1, 6)
    assert report.anchor is not None and report.anchor.seq == 6


def test_each_record_is_chained_to_the_previous_one_by_its_hmac(trail_file: Path) -> None:
    write_trail(trail_file)
    first, second = (json.loads(line) for line in lines(trail_file)[:2])

    assert first["prev"] == GENESIS
    assert second["prev"] == first["hash"]
    assert first["alg"] == "hmac-sha256"
    expected = hashlib.sha256  # the MAC is keyed: a plain SHA-256 of the content differs
    assert first["hash"] != expected(canonical(first)).hexdigest()
    assert (first["seq"], first["run_id"], first["step"], first["type"]) == (
        1,
        "r-a",
        "s0",
        "step.completed",
    )
    assert first["actor"] == {
        "user": "ana",
        "groups": ["dev", "ops"],
        "provider": "fake-sso",
        "via": "auth provider",
    }


# -- tampering: each kind detected and named ------------------------------------------------
@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "sha256"])
def test_an_edited_payload_field_is_reported_as_an_edited_record(
    trail_file: Path, key: bytes | None
) -> None:
    write_trail(trail_file, key=key)
    edit_line(trail_file, 2, lambda r: r["payload"].update(n=99))

    report = verify(trail_file, key=key)

    assert kinds(report) == ["edited"]
    problem = report.problems[0]
    assert (problem.line, problem.seqs, problem.run_id) == (3, (3, 3), "r-b")


def test_an_edited_actor_is_reported_as_an_edited_record(trail_file: Path) -> None:
    write_trail(trail_file)
    edit_line(trail_file, 1, lambda r: r["actor"].update(user="mallory"))

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["edited"]
    assert report.problems[0].seqs == (2, 2)


def test_a_record_deleted_in_the_middle_is_named_by_its_seq(trail_file: Path) -> None:
    write_trail(trail_file)
    content = lines(trail_file)
    rewrite(trail_file, content[:3] + content[4:])

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["deleted"]
    assert report.problems[0].seqs == (4, 4)
    assert "seq 4 is missing" in report.problems[0].message


def test_a_deleted_first_record_is_reported(trail_file: Path) -> None:
    write_trail(trail_file)
    rewrite(trail_file, lines(trail_file)[1:])

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["deleted"]
    assert report.problems[0].seqs == (1, 1)
    assert "at the start of the trail" in report.problems[0].message


def test_two_swapped_records_are_reported_as_reordered_not_deleted(trail_file: Path) -> None:
    write_trail(trail_file)
    content = lines(trail_file)
    content[2], content[3] = content[3], content[2]
    rewrite(trail_file, content)

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["reordered"]
    assert report.problems[0].seqs == (4, 4)
    assert "belongs after seq 3" in report.problems[0].message


def test_records_cut_off_the_end_are_reported_as_truncated_per_the_anchor(
    trail_file: Path,
) -> None:
    write_trail(trail_file)
    rewrite(trail_file, lines(trail_file)[:4])

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["truncated"]
    assert report.problems[0].seqs == (5, 6)


def test_a_last_line_cut_in_half_is_reported_as_torn(trail_file: Path) -> None:
    write_trail(trail_file)
    data = trail_file.read_bytes()
    trail_file.write_bytes(data[: len(data) - len(lines(trail_file)[-1]) // 2])

    report = verify(trail_file, key=KEY)

    torn = [p for p in report.problems if p.kind == "torn"]
    assert [p.line for p in torn] == [6]
    # The anchor still counts the cut record: it is missing at the end as well.
    assert "truncated" in kinds(report)


@pytest.mark.parametrize("alg", ["hmac-sha256", "sha256"])
def test_a_hash_recomputed_without_the_key_is_reported_as_unkeyed(
    trail_file: Path, alg: str
) -> None:
    write_trail(trail_file)

    def forge(record: dict[str, Any]) -> None:
        record["payload"]["n"] = 99
        record["alg"] = alg
        record["hash"] = hashlib.sha256(canonical(record)).hexdigest()

    edit_line(trail_file, 2, forge)

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["unkeyed"]
    assert report.problems[0].seqs == (3, 3)


def test_verifying_with_another_key_reports_the_wrong_key_not_edits(trail_file: Path) -> None:
    write_trail(trail_file)

    report = verify(trail_file, key=b"another key")

    assert "wrong_key" in kinds(report)
    assert "edited" not in kinds(report)
    assert report.problems[0].seqs == (1, 6)


def test_a_keyed_trail_verified_without_the_key_cannot_be_called_intact(
    trail_file: Path,
) -> None:
    write_trail(trail_file)

    report = verify(trail_file, key=None)

    assert kinds(report) == ["key_required"]


def test_a_line_that_is_not_json_is_reported(trail_file: Path) -> None:
    write_trail(trail_file)
    content = lines(trail_file)
    content.insert(2, b"this is not a record\n")
    rewrite(trail_file, content)

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["not_json"]
    assert report.problems[0].line == 3


def test_a_copied_record_is_reported_as_a_duplicate(trail_file: Path) -> None:
    write_trail(trail_file)
    content = lines(trail_file)
    rewrite(trail_file, [*content[:4], content[1], *content[4:]])

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["duplicate"]
    assert report.problems[0].seqs == (2, 2)


def test_a_deleted_anchor_is_reported(trail_file: Path) -> None:
    write_trail(trail_file)
    anchor_path(trail_file).unlink()

    assert kinds(verify(trail_file, key=KEY)) == ["anchor_missing"]


def test_a_forged_anchor_is_reported(trail_file: Path) -> None:
    write_trail(trail_file)
    rewrite(trail_file, lines(trail_file)[:4])
    last = json.loads(lines(trail_file)[-1])
    _forge_anchor(trail_file, last["seq"], last["hash"])  # SHA-256: no key needed to forge

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["anchor_invalid"]


def test_a_missing_trail_whose_anchor_remains_is_reported_as_truncated(
    trail_file: Path,
) -> None:
    write_trail(trail_file)
    trail_file.unlink()

    report = verify(trail_file, key=KEY)

    assert kinds(report) == ["truncated"]
    assert report.problems[0].seqs == (1, 6)


def test_verifying_where_there_is_no_trail_is_an_error(trail_file: Path) -> None:
    with pytest.raises(AuditError) as caught:
        verify(trail_file)

    assert caught.value.code == "BCCE901"


# -- what the chain can and cannot prove ------------------------------------------------------
def _forge_anchor(path: Path, seq: int, digest: str) -> None:
    """Write an anchor as docs/observability.md describes it, unkeyed."""
    text = f"bcce-audit-anchor/1 {seq} {digest} sha256"
    slot = f"{text} {hashlib.sha256(text.encode()).hexdigest()}".encode().ljust(255) + b"\n"
    anchor_path(path).write_bytes(slot + slot)


def _rechain_from(path: Path, index: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit one record and recompute every hash from it on, as someone without a key can."""
    records = [json.loads(line) for line in lines(path)]
    change(records[index])
    for position in range(index, len(records)):
        record = records[position]
        if position > 0:
            record["prev"] = records[position - 1]["hash"]
        record["alg"], record["key_id"] = "sha256", None
        record["hash"] = hashlib.sha256(canonical(record)).hexdigest()
    rewrite(path, [json.dumps(r).encode() + b"\n" for r in records])
    _forge_anchor(path, records[-1]["seq"], records[-1]["hash"])


def test_a_sha256_chain_rewritten_from_an_edit_on_with_its_anchor_still_verifies(
    trail_file: Path,
) -> None:
    # The documented limit of a chain without a key: whoever can rewrite the file can
    # recompute it. This test fails if that ever changes, and the docs must follow.
    write_trail(trail_file, key=None)
    _rechain_from(trail_file, 2, lambda r: r["payload"].update(n=99))

    assert verify(trail_file, key=None).intact


def test_an_hmac_chain_rewritten_without_the_key_is_detected(trail_file: Path) -> None:
    write_trail(trail_file)
    _rechain_from(trail_file, 2, lambda r: r["payload"].update(n=99))

    report = verify(trail_file, key=KEY)

    assert "unkeyed" in kinds(report)
    assert report.problems[0].seqs == (3, 6)


def test_a_sha256_record_whose_hash_was_recomputed_breaks_the_chain(trail_file: Path) -> None:
    write_trail(trail_file, key=None)

    def forge(record: dict[str, Any]) -> None:
        record["payload"]["n"] = 99
        record["hash"] = hashlib.sha256(canonical(record)).hexdigest()

    edit_line(trail_file, 2, forge)

    report = verify(trail_file, key=None)

    assert kinds(report) == ["chain_break"]
    assert report.problems[0].seqs == (3, 4)


# -- writers after damage ----------------------------------------------------------------------
def test_records_appended_after_a_truncation_leave_the_gap_visible(trail_file: Path) -> None:
    write_trail(trail_file)
    rewrite(trail_file, lines(trail_file)[:4])

    write_trail(trail_file, ["r-c"])  # a new process: chains onto the anchor, not the cut end

    report = verify(trail_file, key=KEY)
    assert kinds(report) == ["deleted"]
    assert report.problems[0].seqs == (5, 6)
    assert report.last_seq == 7


def test_a_writer_after_a_crash_ends_the_torn_line_and_continues_the_chain(
    trail_file: Path,
) -> None:
    write_trail(trail_file)
    with trail_file.open("ab") as handle:
        handle.write(b'{"actor":{"user":"an')  # a crash in the middle of an append

    write_trail(trail_file, ["r-c"])

    report = verify(trail_file, key=KEY)
    assert kinds(report) == ["not_json"]
    assert report.problems[0].line == 7
    assert report.last_seq == 7
    assert json.loads(lines(trail_file)[-1])["run_id"] == "r-c"


# -- scoping to a run --------------------------------------------------------------------------
def test_verify_for_a_run_reports_that_runs_edited_record(trail_file: Path) -> None:
    write_trail(trail_file)
    edit_line(trail_file, 3, lambda r: r["payload"].update(n=99))  # seq 4, run r-a

    report = verify(trail_file, key=KEY, run_id="r-a")

    assert kinds(report) == ["edited"]
    assert report.run_records == 3
    assert not report.intact


def test_verify_for_a_run_leaves_out_other_runs_authenticated_problems(
    trail_file: Path,
) -> None:
    write_trail(trail_file)
    content = lines(trail_file)
    content[4], content[5] = content[5], content[4]  # two records of r-b swapped
    rewrite(trail_file, content)

    report = verify(trail_file, key=KEY, run_id="r-a")

    assert report.intact
    assert report.other_runs == 1
    assert kinds(verify(trail_file, key=KEY, run_id="r-b")) == ["reordered"]


def test_a_deletion_is_attributed_to_the_run_around_it_and_unattributed_otherwise(
    trail_file: Path,
) -> None:
    write_trail(trail_file, ["r-a", "r-a", "r-a", "r-b"])
    content = lines(trail_file)
    rewrite(trail_file, content[:1] + content[2:])  # seq 2, between two records of r-a

    of_a = verify(trail_file, key=KEY, run_id="r-a")
    of_b = verify(trail_file, key=KEY, run_id="r-b")

    assert kinds(of_a) == ["deleted"] and of_a.problems[0].runs == ("r-a",)
    assert of_b.problems == []
    assert [p.kind for p in of_b.unattributed] == ["deleted"]
    assert not of_b.intact  # the deleted record's run cannot be known: it may have been r-b's


def test_an_edited_record_naming_another_run_cannot_be_ruled_out(trail_file: Path) -> None:
    write_trail(trail_file)
    edit_line(trail_file, 2, lambda r: r.update(run_id="r-z"))  # was r-b's

    report = verify(trail_file, key=KEY, run_id="r-b")

    assert [p.kind for p in report.unattributed] == ["edited"]
    assert not report.intact


def test_verify_for_a_run_without_records_says_so(trail_file: Path) -> None:
    write_trail(trail_file)

    report = verify(trail_file, key=KEY, run_id="r-nope")

    assert kinds(report) == ["no_records"]


# -- search ------------------------------------------------------------------------------------
def test_search_filters_by_run(trail_file: Path) -> None:
    write_trail(trail_file)

    found = search(trail_file, run_id="r-b")

    assert [r["seq"] for r in found] == [3, 5, 6]


def test_search_by_run_finds_records_about_the_run_too(trail_file: Path) -> None:
    trail = AuditTrail(trail_file, key=KEY, identity=lambda: Identity("ana"))
    trail.record("auth.decision", {"action": "workflow.run", "allowed": True, "run_id": "r-1"})
    trail.record("auth.decision", {"action": "workflow.run", "allowed": True, "run_id": "r-2"})
    trail.record("step.completed", {"step": "a"}, run_id="r-1")

    found = search(trail_file, run_id="r-1")

    assert [(r["type"], r["run_id"]) for r in found] == [
        ("auth.decision", None),
        ("step.completed", "r-1"),
    ]


def test_search_filters_by_user(trail_file: Path) -> None:
    write_trail(trail_file, ["r-a"])
    other = AuditTrail(trail_file, key=KEY, identity=lambda: Identity("bob"))
    other.record("step.started", {"step": "x"}, run_id="r-b")
    other.close()

    assert [r["run_id"] for r in search(trail_file, user="bob")] == ["r-b"]
    assert [r["run_id"] for r in search(trail_file, user="ana")] == ["r-a"]


def test_search_filters_by_type_patterns(trail_file: Path) -> None:
    trail = AuditTrail(trail_file, identity=lambda: ANA)
    for kind in ("policy.decision", "policy.denied", "step.started", "approval.approved"):
        trail.record(kind, {}, run_id="r")
    trail.close()

    found = search(trail_file, types=["policy.*", "approval.approved"])

    assert [r["type"] for r in found] == ["policy.decision", "policy.denied", "approval.approved"]


def test_search_filters_by_time_range(trail_file: Path) -> None:
    trail = AuditTrail(trail_file, identity=lambda: ANA)
    for day in (1, 2, 3, 4):
        moment = datetime.datetime(2026, 12, day, 12, tzinfo=datetime.UTC)
        trail.record("step.completed", {"day": day}, run_id="r", timestamp=moment.timestamp())
    trail.close()

    found = search(
        trail_file,
        since=parse_when("2026-12-02"),
        until=parse_when("2026-12-03", end=True),
    )

    assert [r["payload"]["day"] for r in found] == [2, 3]


def test_search_limit_keeps_the_last_matches(trail_file: Path) -> None:
    write_trail(trail_file)

    assert [r["seq"] for r in search(trail_file, limit=2)] == [5, 6]


def test_time_bounds_read_ages_dates_and_iso_times() -> None:
    now = datetime.datetime(2026, 12, 10, 12, tzinfo=datetime.UTC)

    assert parse_when("7d", now=now) == now - datetime.timedelta(days=7)
    assert parse_when("2h", now=now) == now - datetime.timedelta(hours=2)
    assert parse_when("2026-12-01") == datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    assert parse_when("2026-12-01T09:30") == datetime.datetime(
        2026, 12, 1, 9, 30, tzinfo=datetime.UTC
    )
    with pytest.raises(UsageError):
        parse_when("last tuesday")


# -- concurrency -------------------------------------------------------------------------------
def _append_from_process(path: str, writer: str, other: str, count: int, barrier: Any) -> None:
    trail = AuditTrail(Path(path), key=KEY, identity=lambda: Identity(writer))
    barrier.wait(timeout=60)
    for index in range(count):
        trail.record("test.append", {"i": index}, run_id=writer)
        if index == count // 2:
            # Wait (bounded) until the other writer has appended too, so that the two really
            # interleave whatever the scheduler does.
            deadline = time.monotonic() + 60
            needle = json.dumps(other).encode()
            while needle not in Path(path).read_bytes():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{other} never appended")
                time.sleep(0.001)
    trail.close()


def test_two_processes_appending_at_once_keep_one_valid_chain(trail_file: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    count = 400
    workers = [
        context.Process(
            target=_append_from_process, args=(str(trail_file), me, other, count, barrier)
        )
        for me, other in (("w-1", "w-2"), ("w-2", "w-1"))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    report = verify(trail_file, key=KEY)

    assert report.intact, report.problems
    assert (report.records, report.last_seq) == (2 * count, 2 * count)
    for writer in ("w-1", "w-2"):
        assert [r["payload"]["i"] for r in search(trail_file, run_id=writer)] == list(range(count))
    order = [r["run_id"] for r in search(trail_file)]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches >= 2  # w-1 ... w-2 ... w-1 at least: the writers did interleave


def test_threads_appending_to_one_trail_keep_one_valid_chain(trail_file: Path) -> None:
    trail = AuditTrail(trail_file, key=KEY, identity=lambda: ANA)
    start = threading.Barrier(4)

    def append(name: str) -> None:
        start.wait(timeout=30)
        for index in range(200):
            trail.record("test.append", {"i": index}, run_id=name)

    threads = [threading.Thread(target=append, args=(f"t-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    trail.close()

    report = verify(trail_file, key=KEY)
    assert report.intact, report.problems
    assert report.records == 800


def _append_after_fork(trail: AuditTrail, writer: str, count: int, barrier: Any) -> None:
    barrier.wait(timeout=60)
    for index in range(count):
        trail.record("test.append", {"i": index}, run_id=writer)
    trail.close()


def test_a_forked_child_appending_with_its_parents_trail_keeps_one_chain(
    trail_file: Path,
) -> None:
    # The parent's descriptor is open when it forks: flock cannot tell the parent's and the
    # child's shared descriptor apart, so the child must open its own.
    trail = AuditTrail(trail_file, key=KEY, identity=lambda: ANA)
    trail.record("test.append", {"i": -1}, run_id="parent")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    count = 400
    child = context.Process(target=_append_after_fork, args=(trail, "child", count, barrier))
    child.start()
    _append_after_fork(trail, "parent", count, barrier)
    child.join(timeout=120)
    assert child.exitcode == 0

    report = verify(trail_file, key=KEY)

    assert report.intact, report.problems
    assert report.records == 2 * count + 1


def test_a_trail_deleted_while_open_is_started_again_and_the_loss_shows(
    trail_file: Path,
) -> None:
    trail = AuditTrail(trail_file, key=KEY, identity=lambda: ANA)
    for index in range(3):
        trail.record("step.completed", {"n": index}, run_id="r")
    trail_file.unlink()

    trail.record("step.completed", {"n": 3}, run_id="r")
    trail.close()

    report = verify(trail_file, key=KEY)
    assert kinds(report) == ["deleted"]
    assert report.problems[0].seqs == (1, 3)
    assert report.last_seq == 4


def test_the_default_trail_is_in_the_state_directory(bcce_settings: Any, tmp_path: Path) -> None:
    trail = AuditTrail.from_settings(bcce_settings)

    assert trail.path == (bcce_settings.workflow.state_dir / "audit.jsonl").absolute()
    assert trail.anchor_path == trail.path.with_name("audit.jsonl.anchor")
    assert not trail.keyed


# -- who is recorded ---------------------------------------------------------------------------
def _audit_app(make_app: Callable[..., Application], trail: Path, **sections: Any) -> Application:
    events = {"subscribers": ["audit"], "audit": {"file": str(trail), "key": KEY.decode()}}
    return make_app(events=events, **sections)


#: First-party plugins register (and so publish) while the application is built.
NO_PLUGINS = {"disabled": ["http", "slack", "sqlite"]}


def test_the_actor_recorded_is_the_auth_providers_identity(
    bcce_make_app: Callable[..., Application], trail_file: Path
) -> None:
    app = _audit_app(bcce_make_app, trail_file, plugins=NO_PLUGINS)
    fake = FakeProvider()
    app.auth.authenticator.override(providers.Object(fake))

    for index in range(3):
        app.events.bus().publish(Event("step.started", {"step": f"s{index}"}, run_id="r"))

    actors = [r["actor"] for r in search(trail_file)]
    assert (
        actors
        == [
            {
                "user": "ana",
                "groups": ["dev", "ops"],
                "provider": "fake-sso",
                "via": "auth provider",
            }
        ]
        * 3
    )
    assert fake.calls == 1  # resolved once, on the first record


class PublishingProvider(FakeProvider):
    """An auth provider (a plugin, say) whose start-up publishes an event."""

    def __init__(self, app: Application) -> None:
        super().__init__()
        self.app = app

    def authenticate(self) -> Identity:
        self.app.events.bus().publish(Event("plugin.started", {"name": "sso"}))
        return super().authenticate()


def test_an_event_published_while_the_identity_resolves_records_the_os_user(
    bcce_make_app: Callable[..., Application], trail_file: Path
) -> None:
    app = _audit_app(bcce_make_app, trail_file, plugins=NO_PLUGINS)
    app.auth.authenticator.override(providers.Object(PublishingProvider(app)))

    app.events.bus().publish(Event("step.started", {"step": "s"}, run_id="r"))

    inner, outer = search(trail_file)
    assert inner["type"] == "plugin.started"
    assert inner["actor"]["provider"] == "os"
    assert "being resolved" in inner["actor"]["via"]
    assert (outer["type"], outer["actor"]["user"]) == ("step.started", "ana")
    assert verify(trail_file, key=KEY).intact


class FailingProvider:
    name = "broken"

    def authenticate(self) -> Identity:
        raise RuntimeError("identity service unreachable")


def test_a_failing_auth_provider_records_the_os_user_and_why(
    bcce_make_app: Callable[..., Application], trail_file: Path
) -> None:
    app = _audit_app(bcce_make_app, trail_file, plugins=NO_PLUGINS)
    app.auth.authenticator.override(providers.Object(FailingProvider()))

    app.events.bus().publish(Event("step.started", {"step": "s"}, run_id="r"))

    (record,) = search(trail_file)
    assert record["actor"]["provider"] == "os"
    assert "identity service unreachable" in record["actor"]["via"]


# -- a real run --------------------------------------------------------------------------------
DENIED_WORKFLOW = {
    "version": 1,
    "workflow": "audited",
    "steps": [
        {"id": "greet", "type": "cmd", "command": "echo hi", "policy": {"cmd_allowlist": ["echo"]}},
        {
            "id": "wipe",
            "type": "cmd",
            "command": "rm -rf data",
            "policy": {"cmd_allowlist": ["echo"]},
        },
    ],
}


def _run(app: Application, tmp_path: Path, document: dict[str, Any], run_id: str) -> Any:
    path = tmp_path / f"{run_id}.yaml"
    path.write_text(json.dumps(document))
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    return app.workflow.runner().run(path, RunOptions(run_id=run_id, workspace=workspace))


def test_a_run_records_its_events_and_policy_decisions(
    bcce_make_app: Callable[..., Application], trail_file: Path, tmp_path: Path
) -> None:
    app = _audit_app(bcce_make_app, trail_file, plugins=NO_PLUGINS)

    result = _run(app, tmp_path, DENIED_WORKFLOW, "r-denied")

    assert not result.ok
    assert verify(trail_file, key=KEY, run_id="r-denied").intact
    records = search(trail_file, run_id="r-denied")
    types = [r["type"] for r in records]
    # Authorised first (records about the run, before it exists), then the run's own events.
    start = types.index("workflow.started")
    assert start > 0 and set(types[:start]) == {"auth.decision"}
    assert "auth.decision" not in types[start:]
    assert {"step.started", "step.completed", "step.failed"} <= set(types)
    decisions = {
        r["step"]: (r["payload"]["allowed"], r["payload"]["rule"])
        for r in records
        if r["type"] == "policy.decision"
    }
    assert decisions["greet"][0] is True
    assert decisions["wipe"][0] is False
    assert all(r["actor"]["provider"] == "local" for r in records)


def test_a_plugin_step_records_the_plugin_start_and_its_isolation_tier(
    bcce_make_app: Callable[..., Application], trail_file: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    scope = [f"{data}/**"]
    grants = [
        {"permission": "filesystem:read", "scope": scope},
        {"permission": "filesystem:write", "scope": scope},
    ]
    app = _audit_app(bcce_make_app, trail_file, plugins={"grants": {"sqlite": grants}})
    step = {"id": "q", "type": "db:query", "database": str(data / "a.db"), "sql": "SELECT 1"}

    result = _run(app, tmp_path, {"version": 1, "workflow": "db", "steps": [step]}, "r-db")

    assert result.ok, result.state.steps
    # Registration (manifests read on every command) is not audited by default; starting
    # plugin code is.
    assert search(trail_file, types=["plugin.registered"]) == []
    (started,) = search(trail_file, types=["plugin.started"])
    assert started["payload"]["name"] == "sqlite"
    tier = started["payload"]["isolation"]["tier"]
    (call,) = search(trail_file, run_id="r-db", types=["plugin.call"])
    assert (call["step"], call["payload"]["plugin"], call["payload"]["tier"]) == (
        "q",
        "sqlite",
        tier,
    )
    assert verify(trail_file, key=KEY).intact


def test_approvals_and_isolation_tiers_published_by_steps_are_recorded(
    bcce_make_app: Callable[..., Application], trail_file: Path
) -> None:
    # The agent and apply_diff steps publish these; running them needs Claude Code, so the
    # same events go through the bus here, as the steps publish them.
    app = _audit_app(bcce_make_app, trail_file, plugins=NO_PLUGINS)
    bus = app.events.bus()
    isolation = {"step": "fix", "strict": False, "sandboxed": True, "tier": "bubblewrap"}
    approval = {"step": "apply", "by": "ana", "via": "cli", "files": ["src/app.py"]}

    bus.publish(Event("policy.isolation", isolation, run_id="r-fix"))
    bus.publish(Event("approval.approved", approval, run_id="r-fix"))

    records = search(trail_file, run_id="r-fix")
    assert [(r["type"], r["step"]) for r in records] == [
        ("policy.isolation", "fix"),
        ("approval.approved", "apply"),
    ]
    assert records[1]["payload"] == approval


def test_the_trail_records_only_the_configured_event_types(
    bcce_make_app: Callable[..., Application], trail_file: Path
) -> None:
    events = {
        "subscribers": ["audit"],
        "audit": {"file": str(trail_file), "events": ["policy.*"]},
    }
    app = bcce_make_app(events=events, plugins=NO_PLUGINS)

    app.events.bus().publish(Event("step.started", {"step": "s"}, run_id="r"))
    app.events.bus().publish(Event("policy.denied", {"step": "s"}, run_id="r"))

    assert [r["type"] for r in search(trail_file)] == ["policy.denied"]


def test_non_event_records_join_the_chain(trail_file: Path) -> None:
    trail = AuditTrail(trail_file, key=KEY, identity=lambda: ANA)
    trail.record("step.completed", {"step": "a"}, run_id="r")

    receipt = trail.record("auth.decision", {"allowed": False, "workflow": "deploy"}, run_id="r")
    trail.close()

    assert receipt.seq == 2
    (record,) = search(trail_file, types=["auth.decision"])
    assert record["hash"] == receipt.hash
    assert verify(trail_file, key=KEY).intact


# -- the key, from SSM -------------------------------------------------------------------------
def test_a_key_from_ssm_verifies_the_trail_and_another_key_does_not(
    bcce_layer_options: LayerOptions, ssm: Any, tmp_path: Path
) -> None:
    ssm.put_parameter(
        Name=f"{SSM_PATH}/events/audit/key", Value="from-ssm-secret", Type="SecureString"
    )
    trail = tmp_path / "ssm-audit.jsonl"
    options = replace(
        bcce_layer_options,
        environ={
            "BCCE_SSM__PATH": SSM_PATH,
            "BCCE_SSM__ENDPOINT_URL": ssm.meta.endpoint_url,
            "BCCE_EVENTS__AUDIT__FILE": str(trail),
        },
    )
    settings = load_settings(options)
    writer = AuditTrail.from_settings(settings, authenticator=FakeProvider)
    writer.record("step.completed", {"step": "a"}, run_id="r")
    writer.close()

    assert trail_key(settings) == b"from-ssm-secret"
    assert verify(trail, key=trail_key(settings)).intact
    assert "wrong_key" in kinds(verify(trail, key=b"not-the-ssm-key"))
