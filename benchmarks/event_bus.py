"""Event bus throughput: events per second through ``InProcessEventBus.publish``.

Every contender builds each event as a publisher does (a payload dict and an ``Event``) and
hands it over; the subscribers count what they get, and each round checks the counts:

- ``baseline: Event + direct call``: the event built and passed straight to one handler, no bus;
- ``1 inline subscriber``: ``publish`` to one in-process subscriber (the goal: at least
  200,000 events/s);
- ``10 inline subscribers``: ``publish`` to ten;
- ``1 queued subscriber``: ``publish`` to one subscriber on its own thread, then ``flush``
  (the time until the subscriber has handled every event).

The contenders run interleaved, ``--rounds`` times, the order rotated every round; the report
gives each one's median events/s, its range and its cost per event against the baseline.

Usage: python benchmarks/event_bus.py [--events 200000] [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable

GOAL = 200_000  # events/s with one inline subscriber


class Counter:
    """A subscriber that counts the events it receives."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: object) -> None:
        self.count += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.events

    from bcce.events.bus import Event, InProcessEventBus

    def baseline() -> None:
        handler = Counter()
        for i in range(n):
            handler(Event("step.completed", {"step": "s", "attempts": i}, run_id="bench"))
        assert handler.count == n

    def inline(subscribers: int) -> Callable[[], None]:
        bus = InProcessEventBus()
        handlers = [Counter() for _ in range(subscribers)]
        for handler in handlers:
            bus.subscribe("step.*", handler, name="counter")
        bus.subscribe("workflow.*", Counter(), name="elsewhere")  # subscribed, never matching

        def run() -> None:
            before = [h.count for h in handlers]
            publish = bus.publish
            for i in range(n):
                publish(Event("step.completed", {"step": "s", "attempts": i}, run_id="bench"))
            assert [h.count - b for h, b in zip(handlers, before, strict=True)] == [n] * subscribers

        return run

    def queued() -> Callable[[], None]:
        bus = InProcessEventBus(timeout=60.0, queue_size=n + 1)
        handler = Counter()
        bus.subscribe("step.*", handler, mode="queued", name="counter")

        def run() -> None:
            before = handler.count
            publish = bus.publish
            for i in range(n):
                publish(Event("step.completed", {"step": "s", "attempts": i}, run_id="bench"))
            assert bus.flush(60.0)
            assert handler.count - before == n, "events were dropped"

        return run

    contenders: dict[str, Callable[[], None]] = {
        "baseline: Event + direct call": baseline,
        "1 inline subscriber": inline(1),
        "10 inline subscribers": inline(10),
        "1 queued subscriber": queued(),
    }
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for call in contenders.values():  # warm-up
        call()
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            started = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - started)

    base = statistics.median(times[names[0]]) / n
    report = {
        name: {
            "median_events_per_s": round(n / statistics.median(values)),
            "min_events_per_s": round(n / max(values)),
            "max_events_per_s": round(n / min(values)),
            "us_per_event": round(statistics.median(values) / n * 1e6, 3),
            "ratio_to_baseline": round(statistics.median(values) / n / base, 2),
        }
        for name, values in times.items()
    }
    one = report["1 inline subscriber"]["median_events_per_s"]
    meta = {"events": n, "rounds": args.rounds, "goal_events_per_s": GOAL, "goal_met": one >= GOAL}
    if args.json:
        print(json.dumps({**meta, "results": report}, indent=2))
    else:
        print(f"{n} events per round, {args.rounds} rounds (medians; range in brackets)")
        for name, row in report.items():
            print(
                f"  {name:<31} {row['median_events_per_s']:>9,} events/s "
                f"[{row['min_events_per_s']:,}-{row['max_events_per_s']:,}]  "
                f"{row['us_per_event']:6.2f} us/event  x{row['ratio_to_baseline']:.2f}"
            )
        verdict = "met" if meta["goal_met"] else "NOT met"
        print(f"goal: >= {GOAL:,} events/s with 1 inline subscriber: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
