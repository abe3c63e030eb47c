"""Per-call overhead of a sandboxed plugin worker against in-process calls.

One small step-like plugin (``run(text) -> {"upper": ..., "length": ...}``) is called:

- ``direct``: the plugin object imported here and called as a Python method. The baseline;
- ``in process``: through :class:`bcce.plugin.host.InProcessRuntime`, the path a first-party
  plugin trusted by ``plugins.in_process`` takes (JSON round trip included);
- ``worker, tier A``: through :class:`bcce.plugin.worker.PluginWorker` in bubblewrap;
- ``worker, tier B``: the same worker confined by Landlock and seccomp;
- ``worker, tier C``: the same worker with rlimits only (``strict=False``).

Tiers this machine cannot provide are left out and named. Each contender is warmed up, then
called ``--calls`` times per round for ``--rounds`` rounds, interleaved; the report gives the
median per-call time of the rounds and its ratio to the baseline, and the median time to start
a worker (spawn, confine, import, first answer).

Usage: python benchmarks/plugin_call.py [--calls 2000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bcce.errors import PluginError
from bcce.plugin.host import InProcessRuntime
from bcce.plugin.permissions import PermissionSet
from bcce.plugin.worker import IsolationTier, PluginWorker

PLUGIN = """
class Step:
    def run(self, text):
        return {"upper": text.upper(), "length": len(text)}
"""


def _per_call(call: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        plugin_dir = Path(tmp)
        (plugin_dir / "bench_step.py").write_text(PLUGIN)
        sys.path.insert(0, str(plugin_dir))
        direct = importlib.import_module("bench_step").Step()
        trusted = InProcessRuntime(plugin_dir, "bench_step:Step", name="bench")
        trusted.start()

        starts: dict[str, list[float]] = {}
        workers: dict[str, PluginWorker] = {}
        for tier in ("A", "B", "C"):
            name = f"worker, tier {tier}"

            def make(tier: IsolationTier = tier) -> PluginWorker:
                return PluginWorker(
                    plugin_dir, "bench_step:Step", PermissionSet(), tier=tier, strict=tier != "C"
                )

            try:
                make()
            except PluginError as exc:
                print(f"({name} unavailable here: {exc.message})", file=sys.stderr)
                continue
            starts[name] = []
            for _ in range(args.rounds):
                worker = make()
                began = time.perf_counter()
                worker.start()
                starts[name].append(time.perf_counter() - began)
                worker.close()
            workers[name] = make()
            workers[name].start()

        contenders: dict[str, Callable[[], Any]] = {
            "direct": lambda: direct.run(text="hello"),
            "in process": functools.partial(trusted.call, "run", {"text": "hello"}),
        }
        for name, worker in workers.items():
            contenders[name] = functools.partial(worker.call, "run", {"text": "hello"})
        timings: dict[str, list[float]] = {name: [] for name in contenders}
        try:
            for call in contenders.values():
                _per_call(call, max(1, args.calls // 10))
            for _ in range(args.rounds):
                for name, call in contenders.items():
                    timings[name].append(_per_call(call, args.calls))
        finally:
            for worker in workers.values():
                worker.close()
            trusted.close()

    base = statistics.median(timings["direct"])
    report = {
        name: {
            "per_call_us": statistics.median(values) * 1e6,
            "ratio": statistics.median(values) / base,
            "start_ms": statistics.median(starts[name]) * 1e3 if name in starts else None,
        }
        for name, values in timings.items()
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'contender':<16} {'per call':>12} {'ratio':>10} {'start':>10}")
    for name, row in report.items():
        start = f"{row['start_ms']:.1f} ms" if row["start_ms"] is not None else "-"
        print(f"{name:<16} {row['per_call_us']:>9.2f} us {row['ratio']:>9.1f}x {start:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
