"""Workflow schema validation: milliseconds per document of 10, 200 and 1000 steps.

Run: ``.venv/bin/python benchmarks/schema.py [--repeat N]``. For each size it prints the median
time of ``schema_errors`` on a valid document (the compiled fast path), of jsonschema's full
validator on the same document (the baseline, measured in the same process: what
``schema_errors`` cost before the fast path), and of ``schema_errors`` on a document with one
unknown key in its last step (the fast path says no, then jsonschema explains), and the
one-off costs of compiling the predicate and of importing jsonschema. Two shapes:
``cmd`` steps as in benchmarks/workflow_200.py, and a mix of every step type with nesting.
Not a test: the numbers depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

from bcce.workflow.schema import is_valid, schema_errors, validator


def cmd_steps(count: int) -> dict[str, Any]:
    steps = [{"id": f"s{i}", "type": "cmd", "command": "/bin/true"} for i in range(1, count + 1)]
    return {"version": 1, "workflow": "bench", "steps": steps}


def mixed_steps(count: int) -> dict[str, Any]:
    """Every step type in turn; each control step holds one cmd child (counted as a step)."""

    def child(i: int) -> list[dict[str, Any]]:
        return [{"id": f"c{i}", "type": "cmd", "command": "make test"}]

    kinds: list[Callable[[int], dict[str, Any]]] = [
        lambda i: {"id": f"s{i}", "type": "cmd", "command": "make", "timeout_seconds": 60},
        lambda i: {"id": f"s{i}", "type": "prompt", "prompt": "Summarise", "model": "m"},
        lambda i: {
            "id": f"s{i}",
            "type": "agent",
            "prompt": "Fix it",
            "policy": {"max_files": 10, "allowed_paths": ["src/**"], "cmd_allowlist": ["pytest"]},
            "available_tools": ["ReadFile", "Search", "Diff"],
        },
        lambda i: {"id": f"s{i}", "type": "apply_diff", "approve": True, "needs": [f"s{i - 1}"]},
        lambda i: {"id": f"s{i}", "type": "custom", "handler": "pkg.mod:run", "config": {}},
        lambda i: {"id": f"s{i}", "type": "composite", "steps": child(i)},
        lambda i: {"id": f"s{i}", "type": "parallel", "steps": child(i), "max_parallel": 2},
        lambda i: {"id": f"s{i}", "type": "conditional", "condition": "true", "then": child(i)},
        lambda i: {"id": f"s{i}", "type": "acme:lint", "rules": ["x"], "retry": {"jitter": True}},
    ]
    steps: list[dict[str, Any]] = []
    total = 0
    while total < count:
        step = kinds[len(steps) % len(kinds)](len(steps) + 1)
        steps.append(step)
        total += 1 + sum(len(step.get(k, ())) for k in ("steps", "then", "else"))
    return {"version": 1, "workflow": "bench", "steps": steps}


def with_unknown_key(document: dict[str, Any]) -> dict[str, Any]:
    broken = copy.deepcopy(document)
    broken["steps"][-1]["comand"] = "oops"
    return broken


def median_ms(function: Callable[[Any], object], document: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function(document)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    repeat = parser.parse_args().repeat

    start = time.perf_counter()
    is_valid({})  # reads the schema and compiles the predicate, once per process
    compiled = time.perf_counter()
    full = validator()  # imports jsonschema and checks the schema: only the error path needs it
    print(
        f"once per process: predicate compiled in {(compiled - start) * 1000:.1f} ms;"
        f" jsonschema imported and validator built in {(time.perf_counter() - compiled) * 1000:.0f}"
        " ms (error path only)"
    )

    header = (
        f"{'shape':<6} {'steps':>5}  {'schema_errors':>13}  {'jsonschema':>10}  {'speed-up':>8}"
    )
    print(f"\n{header}  {'invalid doc':>11}")
    for shape, build in (("cmd", cmd_steps), ("mixed", mixed_steps)):
        for count in (10, 200, 1000):
            document = build(count)
            broken = with_unknown_key(document)
            assert schema_errors(document) == [] and schema_errors(broken)
            fast = median_ms(schema_errors, document, repeat)
            slow = median_ms(lambda d: list(full.iter_errors(d)), document, max(3, repeat // 3))
            error_path = median_ms(schema_errors, broken, max(3, repeat // 3))
            print(
                f"{shape:<6} {count:>5}  {fast:>10.2f} ms  {slow:>7.1f} ms  {slow / fast:>7.0f}x"
                f"  {error_path:>8.1f} ms"
            )


if __name__ == "__main__":
    main()
