"""The event bus: patterns, unsubscribe, async handlers, failure isolation, the slow-subscriber
bound, per-run ordering with many publishing threads, bounded queues, flush and close."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from bcce.containers.application import Application
from bcce.events.bus import Event, InProcessEventBus
from bcce.workflow.runner import RunOptions

WAIT = 10.0  # bound on every wait for another thread: generous, never reached when all is well


@pytest.fixture
def bus() -> Iterator[InProcessEventBus]:
    bus = InProcessEventBus(timeout=5.0)
    yield bus
    bus.close(timeout=1.0)


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """The bus's warning messages (bcce logs nothing until enabled)."""
    messages: list[str] = []
    logger.enable("bcce")
    handler = logger.add(
        lambda m: messages.append(m.record["message"]),
        level="WARNING",
        filter=lambda r: r["extra"].get("component") == "events",
    )
    yield messages
    logger.remove(handler)
    logger.disable("bcce")


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def bus_events(bus: InProcessEventBus) -> list[Event]:
    seen: list[Event] = []
    bus.subscribe("events.*", seen.append, name="watcher")
    return seen


class Gate:
    """A handler that blocks on each event until the test opens the gate.

    ``done`` is set once it has handled ``expect`` events.
    """

    def __init__(self, expect: int = 0) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        self.done = threading.Event()
        self.expect = expect
        self.seen: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.entered.set()
        assert self.open.wait(WAIT)
        self.seen.append(event)
        if len(self.seen) == self.expect:
            self.done.set()


# --- patterns -----------------------------------------------------------------------------------


def test_an_exact_pattern_receives_only_its_own_type(bus: InProcessEventBus) -> None:
    seen: list[Event] = []
    bus.subscribe("step.completed", seen.append)

    for kind in ("step.started", "step.completed", "step.completed.extra", "workflow.completed"):
        bus.publish(Event(kind))

    assert types(seen) == ["step.completed"]


def test_a_wildcard_matches_every_type_it_covers(bus: InProcessEventBus) -> None:
    steps: list[Event] = []
    everything: list[Event] = []
    bus.subscribe("step.*", steps.append)
    bus.subscribe("*", everything.append)

    for kind in ("step.started", "workflow.started", "step.timed_out", "plugin.call"):
        bus.publish(Event(kind))

    assert types(steps) == ["step.started", "step.timed_out"]
    assert types(everything) == [
        "step.started",
        "workflow.started",
        "step.timed_out",
        "plugin.call",
    ]


def test_a_tuple_of_patterns_delivers_each_matching_event_once(bus: InProcessEventBus) -> None:
    seen: list[Event] = []
    bus.subscribe(("workflow.*", "step.failed", "step.*"), seen.append)

    for kind in ("workflow.started", "step.failed", "policy.denied", "step.completed"):
        bus.publish(Event(kind))

    assert types(seen) == ["workflow.started", "step.failed", "step.completed"]
    [stats] = bus.stats()
    assert stats["pattern"] == ["workflow.*", "step.failed", "step.*"]


def test_a_subscription_made_after_a_publish_sees_the_next_events(bus: InProcessEventBus) -> None:
    bus.publish(Event("step.started"))  # the route for step.started is now cached
    seen: list[Event] = []
    bus.subscribe("step.*", seen.append)

    bus.publish(Event("step.started"))

    assert types(seen) == ["step.started"]


@pytest.mark.parametrize("pattern", ["", (), ("step.*", "")])
def test_an_empty_pattern_is_refused(bus: InProcessEventBus, pattern: Any) -> None:
    with pytest.raises(ValueError, match="pattern"):
        bus.subscribe(pattern, print)


def test_an_unknown_mode_is_refused(bus: InProcessEventBus) -> None:
    with pytest.raises(ValueError, match="inline, queued"):
        bus.subscribe("*", print, mode="later")  # type: ignore[arg-type]


# --- unsubscribe --------------------------------------------------------------------------------


def test_unsubscribe_by_pattern_and_handler_stops_delivery(bus: InProcessEventBus) -> None:
    seen: list[Event] = []
    bus.subscribe("step.*", seen.append)
    bus.publish(Event("step.started"))

    bus.unsubscribe("step.*", seen.append)
    bus.publish(Event("step.completed"))

    assert types(seen) == ["step.started"]
    assert bus.stats() == []


def test_unsubscribe_by_subscription_removes_only_that_one(bus: InProcessEventBus) -> None:
    seen: list[Event] = []
    first = bus.subscribe("*", seen.append, name="first")
    bus.subscribe("*", seen.append, name="second")

    bus.unsubscribe(first)
    bus.publish(Event("step.started"))

    assert types(seen) == ["step.started"]
    assert [s["subscriber"] for s in bus.stats()] == ["second"]


def test_unsubscribing_what_was_never_subscribed_raises(bus: InProcessEventBus) -> None:
    seen: list[Event] = []
    bus.subscribe("step.*", seen.append)

    with pytest.raises(ValueError, match="no subscription"):
        bus.unsubscribe("workflow.*", seen.append)


def test_unsubscribing_a_queued_subscriber_delivers_its_queue_and_stops_its_thread(
    bus: InProcessEventBus,
) -> None:
    seen: list[Event] = []
    subscription = bus.subscribe("*", seen.append, mode="queued", name="q-unsub")
    for n in range(50):
        bus.publish(Event("step.started", {"n": n}))

    bus.unsubscribe(subscription)

    assert [e.payload["n"] for e in seen] == list(range(50))
    assert not _thread_alive("bcce-events-q-unsub")


# --- async handlers ----------------------------------------------------------------------------


def test_an_async_handler_is_awaited_on_its_own_thread_in_order(bus: InProcessEventBus) -> None:
    seen: list[tuple[int, str]] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(0)  # a real suspension point: the handler runs on an event loop
        seen.append((event.payload["n"], threading.current_thread().name))

    subscription = bus.subscribe("*", handler, name="async-one")
    for n in range(20):
        bus.publish(Event("step.started", {"n": n}))

    assert subscription.mode == "queued"
    assert bus.flush(WAIT)
    assert [n for n, _ in seen] == list(range(20))
    assert {thread for _, thread in seen} == {"bcce-events-async-one"}


def test_an_async_handler_past_the_bound_is_cancelled_and_reported() -> None:
    bus = InProcessEventBus(timeout=0.2)
    reported = bus_events(bus)
    cancelled = threading.Event()

    async def handler(event: Event) -> None:
        try:
            await asyncio.Event().wait()  # never set: only the bound ends it
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bus.subscribe("step.*", handler, name="stuck-async")
    bus.publish(Event("step.started", {"step": "a"}, run_id="r1"))

    assert cancelled.wait(WAIT)
    assert bus.flush(WAIT)
    failed = [e for e in reported if e.type == "events.subscriber_failed"]
    assert [e.payload["subscriber"] for e in failed] == ["stuck-async"]
    assert failed[0].payload["error"].startswith("TimeoutError: not done within 0.2s")
    bus.close(1.0)


# --- failures ----------------------------------------------------------------------------------


def _broken(event: Event) -> None:
    raise RuntimeError(f"cannot handle {event.type}")


def test_a_failing_subscriber_never_reaches_the_publisher_and_others_still_receive(
    bus: InProcessEventBus, warnings_logged: list[str]
) -> None:
    before: list[Event] = []
    after: list[Event] = []
    bus.subscribe("step.*", before.append, name="before")
    bus.subscribe("step.*", _broken, name="broken")
    bus.subscribe("step.*", after.append, name="after")
    reported = bus_events(bus)

    bus.publish(Event("step.started", {"step": "build"}, run_id="run-7"))  # does not raise
    bus.publish(Event("step.completed", {"step": "build"}, run_id="run-7"))

    assert types(before) == types(after) == ["step.started", "step.completed"]
    assert [e.payload for e in reported] == [
        {
            "subscriber": "broken",
            "event": kind,
            "run_id": "run-7",
            "step": "build",
            "error": f"RuntimeError: cannot handle {kind}",
        }
        for kind in ("step.started", "step.completed")
    ]
    assert all(e.type == "events.subscriber_failed" and e.run_id is None for e in reported)
    stats = {s["subscriber"]: s for s in bus.stats()}
    assert stats["broken"]["failures"] == 2 and stats["broken"]["delivered"] == 0
    assert stats["after"]["delivered"] == 2
    assert bus.failures == 2
    assert sum("broken failed on step." in m for m in warnings_logged) == 2


def test_a_failing_queued_subscriber_is_counted_and_reported(bus: InProcessEventBus) -> None:
    reported = bus_events(bus)
    bus.subscribe("step.*", _broken, mode="queued", name="broken-queued")

    bus.publish(Event("step.failed", {"step": "x"}, run_id="r"))

    assert bus.flush(WAIT)
    assert [(e.type, e.payload["subscriber"]) for e in reported] == [
        ("events.subscriber_failed", "broken-queued")
    ]
    assert bus.failures == 1


def test_a_subscriber_failing_on_its_own_failure_reports_is_not_reported_again(
    bus: InProcessEventBus,
) -> None:
    bus.subscribe("*", _broken, name="fails-on-everything")
    reported = bus_events(bus)

    bus.publish(Event("step.started"))

    # One report for step.started; the failure on that report itself is counted, not reported.
    assert types(reported) == ["events.subscriber_failed"]
    assert bus.failures == 2


# --- the slow-subscriber bound ----------------------------------------------------------------


def test_a_slow_inline_subscriber_is_moved_to_a_queue_after_one_slow_call(
    warnings_logged: list[str],
) -> None:
    bus = InProcessEventBus(timeout=0.05)
    reported = bus_events(bus)
    never = threading.Event()
    release = threading.Event()
    entered = threading.Event()
    seen: list[int] = []

    def handler(event: Event) -> None:
        n = event.payload["n"]
        if n == 0:
            never.wait(0.3)  # the slow call: six times the bound
        elif n == 1:
            entered.set()
            assert release.wait(WAIT)
        seen.append(n)

    subscription = bus.subscribe("step.*", handler, name="slowpoke")
    bus.publish(Event("step.started", {"n": 0, "step": "a"}, run_id="r"))  # held up 0.3 s once

    assert subscription.mode == "queued" and subscription.demoted
    started = time.monotonic()
    for n in range(1, 5):
        bus.publish(Event("step.started", {"n": n}, run_id="r"))
    assert entered.wait(WAIT)
    published_in = time.monotonic() - started
    assert seen == [0]  # event 1 is held on the subscriber's thread, not the publisher's
    release.set()

    assert bus.flush(WAIT)
    assert seen == [0, 1, 2, 3, 4]  # still in publication order
    [slow] = reported
    assert slow.type == "events.subscriber_slow"
    assert slow.payload["subscriber"] == "slowpoke" and slow.payload["action"] == "queued"
    assert slow.payload["mode"] == "queued" and slow.payload["seconds"] >= 0.3
    assert slow.payload["bound_seconds"] == 0.05 and slow.payload["step"] == "a"
    assert published_in < 0.3
    assert any("slowpoke took" in m and "queued from now on" in m for m in warnings_logged)
    bus.close(1.0)


def test_a_hanging_queued_subscriber_never_delays_publish_and_flush_gives_up_at_the_bound() -> None:
    bound = 0.3
    bus = InProcessEventBus(timeout=bound)
    reported = bus_events(bus)
    gate = Gate(expect=200)
    bus.subscribe("step.*", gate, mode="queued", name="hangs")
    fast: list[Event] = []
    bus.subscribe("step.*", fast.append, name="fast")

    started = time.monotonic()
    for n in range(200):
        bus.publish(Event("step.started", {"n": n}, run_id="r"))
    published_in = time.monotonic() - started
    assert gate.entered.wait(WAIT)

    started = time.monotonic()
    first = bus.flush()
    first_took = time.monotonic() - started
    started = time.monotonic()
    second = bus.flush()  # still stuck on the call the first flush gave up on: no waiting
    second_took = time.monotonic() - started

    assert len(fast) == 200 and published_in < bound
    assert first is False and first_took < bound + 0.25
    assert second is False and second_took < bound / 2
    slow = [e for e in reported if e.type == "events.subscriber_slow"]
    assert [(e.payload["subscriber"], e.payload["action"]) for e in slow] == [
        ("hangs", "not waited for")
    ]
    [stats] = [s for s in bus.stats() if s["subscriber"] == "hangs"]
    assert stats["slow"] == 1 and stats["queued"] == 200

    gate.open.set()
    assert gate.done.wait(WAIT)  # unstuck: flushes wait for it again
    assert bus.flush(WAIT)
    assert [e.payload["n"] for e in gate.seen] == list(range(200))
    bus.close(1.0)


def test_close_with_a_hanging_subscriber_returns_within_the_bound_and_drops_the_rest() -> None:
    bus = InProcessEventBus(timeout=0.3)
    gate = Gate()
    bus.subscribe("step.*", gate, mode="queued", name="hangs-at-close")
    for n in range(5):
        bus.publish(Event("step.started", {"n": n}))
    assert gate.entered.wait(WAIT)

    started = time.monotonic()
    drained = bus.close()
    took = time.monotonic() - started

    assert drained is False and took < 0.3 + 0.25
    [thread] = [t for t in threading.enumerate() if t.name == "bcce-events-hangs-at-close"]
    gate.open.set()
    thread.join(WAIT)  # it finishes the call it was stuck in, then stops
    assert not thread.is_alive()
    [stats] = bus.stats()
    assert stats["dropped"] == 4  # the one being handled finished; the four others are dropped
    assert [e.payload["n"] for e in gate.seen] == [0]


# --- ordering ----------------------------------------------------------------------------------


def test_every_subscriber_sees_each_runs_events_in_publication_order(
    bus: InProcessEventBus,
) -> None:
    runs, threads_per_run, per_thread = 4, 3, 150
    inline: list[Event] = []
    queued: list[Event] = []
    steps_only: list[Event] = []
    inline_lock = threading.Lock()

    def keep(event: Event) -> None:
        with inline_lock:  # inline handlers are called from every publishing thread
            inline.append(event)

    bus.subscribe("*", keep, name="inline")
    bus.subscribe("*", queued.append, mode="queued", name="queued")
    bus.subscribe(("step.started", "step.completed"), steps_only.append, mode="queued")

    # As the runner does it: each run numbers its events and publishes them under its lock.
    locks = [threading.Lock() for _ in range(runs)]
    counters = [0] * runs
    published: list[list[int]] = [[] for _ in range(runs)]
    barrier = threading.Barrier(runs * threads_per_run, timeout=WAIT)

    def publisher(run: int, worker: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            kind = ("step.started", "step.completed", "policy.decision")[(n + worker) % 3]
            with locks[run]:
                counters[run] += 1
                published[run].append(counters[run])
                bus.publish(Event(kind, {"worker": worker}, run_id=f"run-{run}", seq=counters[run]))

    threads = [
        threading.Thread(target=publisher, args=(run, worker))
        for run in range(runs)
        for worker in range(threads_per_run)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert bus.flush(WAIT)

    def order(seen: list[Event], run: int) -> list[int]:
        return [e.seq for e in seen if e.run_id == f"run-{run}"]

    for run in range(runs):
        assert len(published[run]) == threads_per_run * per_thread
        assert order(inline, run) == published[run]
        assert order(queued, run) == published[run]
        steps = order(steps_only, run)
        assert steps == sorted(steps) and len(steps) == threads_per_run * per_thread * 2 // 3


# --- bounded queues, flush and close -------------------------------------------------------------


def test_a_full_queue_drops_new_events_and_counts_them(warnings_logged: list[str]) -> None:
    bus = InProcessEventBus(queue_size=3)
    gate = Gate()
    bus.subscribe("*", gate, mode="queued", name="behind")
    bus.publish(Event("step.started", {"n": 0}))
    assert gate.entered.wait(WAIT)  # event 0 is being handled; the queue is empty

    for n in range(1, 10):
        bus.publish(Event("step.started", {"n": n}))

    # Three events behind at most, the one being handled included: 1 and 2 wait, 3-9 dropped.
    [stats] = bus.stats()
    assert stats["dropped"] == 7 and stats["queued"] == 3
    gate.open.set()
    assert bus.flush(WAIT)
    assert [e.payload["n"] for e in gate.seen] == [0, 1, 2]
    assert any("behind is 3 events behind" in m for m in warnings_logged)
    bus.close(1.0)


def test_flush_waits_for_queued_subscribers_to_catch_up(bus: InProcessEventBus) -> None:
    gate = Gate()
    bus.subscribe("*", gate, mode="queued", name="catching-up")
    for n in range(10):
        bus.publish(Event("step.started", {"n": n}))
    assert gate.entered.wait(WAIT)
    threading.Timer(0.05, gate.open.set).start()

    assert bus.flush(WAIT) is True
    assert len(gate.seen) == 10
    assert bus.stats()[0]["queued"] == 0


def test_close_stops_every_queued_thread_and_later_events_are_dropped() -> None:
    bus = InProcessEventBus()
    seen: list[Event] = []
    bus.subscribe("*", seen.append, mode="queued", name="closing-a")
    bus.subscribe("*", seen.append, mode="queued", name="closing-b")
    bus.publish(Event("step.started"))
    assert _thread_alive("bcce-events-closing-a") and _thread_alive("bcce-events-closing-b")

    assert bus.close(WAIT) is True
    bus.publish(Event("step.completed"))

    assert not _thread_alive("bcce-events-closing-a")
    assert not _thread_alive("bcce-events-closing-b")
    assert types(seen) == ["step.started", "step.started"]
    assert [s["dropped"] for s in bus.stats()] == [1, 1]


def test_stats_describe_each_subscriber(bus: InProcessEventBus) -> None:
    seen: list[Event] = []
    bus.subscribe("step.*", seen.append, name="counter")
    bus.subscribe(("workflow.*",), seen.append, mode="queued", name="queue")
    bus.publish(Event("step.started"))
    bus.publish(Event("workflow.started"))
    assert bus.flush(WAIT)

    assert bus.stats() == [
        {
            "subscriber": "counter",
            "pattern": "step.*",
            "mode": "inline",
            "demoted": False,
            "delivered": 1,
            "failures": 0,
            "slow": 0,
            "dropped": 0,
            "queued": 0,
        },
        {
            "subscriber": "queue",
            "pattern": ["workflow.*"],
            "mode": "queued",
            "demoted": False,
            "delivered": 1,
            "failures": 0,
            "slow": 0,
            "dropped": 0,
            "queued": 0,
        },
    ]


def test_an_event_renders_its_time_as_iso_8601_utc() -> None:
    event = Event("step.started", timestamp=1_700_000_000.1234)

    assert event.time == "2023-11-14T22:13:20.123+00:00"
    assert event.to_dict()["time"] == event.time
    with pytest.raises(AttributeError):
        event.type = "changed"  # type: ignore[misc]


# --- a real run ---------------------------------------------------------------------------------


def test_failing_subscribers_never_fail_a_workflow_run(
    bcce_make_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = bcce_make_app(workflow={"state_dir": str(tmp_path / "runs")})
    bus = app.events.bus()
    bus.subscribe("*", _broken, name="broken-inline")
    bus.subscribe("step.*", _broken, mode="queued", name="broken-queued")
    reported = bus_events(bus)
    workflow = tmp_path / "wf.yml"
    workflow.write_text(
        "version: 1\nworkflow: isolated\nsteps:\n"
        "  - {id: a, type: cmd, command: 'echo a'}\n"
        "  - {id: b, type: cmd, command: 'echo b', needs: [a]}\n"
    )
    workspace = tmp_path / "ws"
    workspace.mkdir()

    result = app.workflow.runner().run(workflow, RunOptions(run_id="r1", workspace=workspace))

    assert result.exit_code == 0 and result.state.status == "succeeded"
    assert {s["status"] for s in result.state.steps.values()} == {"succeeded"}
    lines = (tmp_path / "runs" / "r1" / "events.jsonl").read_text().splitlines()
    assert len(lines) >= 8
    written = [json.loads(line) for line in lines]
    seqs = [e["seq"] for e in written]
    assert seqs == list(range(1, len(written) + 1))  # the bus's own reports are not run events
    failed_on = [(e.payload["subscriber"], e.payload["event"]) for e in reported]
    assert ("broken-inline", "workflow.completed") in failed_on
    assert ("broken-queued", "step.completed") in failed_on  # flushed before run() returned
    # The run's events are reported with their run; auth.decision is about the run, not in it.
    assert {e.payload["run_id"] for e in reported if e.payload["event"] != "auth.decision"} == {
        "r1"
    }
    stats = {s["subscriber"]: s for s in bus.stats()}
    assert stats["broken-inline"]["failures"] >= len(written)
    assert stats["broken-queued"]["failures"] == sum(e["type"].startswith("step.") for e in written)


def _thread_alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())
