"""Per-call overhead of a sandboxed plugin worker against a direct in-process call.

One small step-like plugin (``run(text) -> {"upper": ..., "length": ...}``) is called:

- ``in process``: the plugin object imported here and called directly. The baseline;
- ``worker, tier A``: through :class:`bcce.plugin.worker.PluginWorker` in bubblewrap (skipped when
  bubblewrap cannot run here);
- ``worker, tier C``: the same worker with rlimits only (``strict=False``).

Each contender is warmed up, then called ``--calls`` times per round for ``--rounds`` rounds,
interleaved; the report gives the median per-call time of the rounds and its ratio to the
baseline, and the median time to start a worker (spawn, import, first health answer).

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

from bcce.plugin.permissions import PermissionSet
from bcce.plugin.worker import PluginWorker
from bcce.policy.sandbox import SandboxTier, probe_sandbox

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
        tiers = {"worker, tier C": SandboxTier("none", "benchmark")}
        probed = probe_sandbox()
        if probed.name == "bubblewrap":
            tiers = {"worker, tier A": probed, **tiers}

        starts: dict[str, list[float]] = {name: [] for name in tiers}
        workers: dict[str, PluginWorker] = {}
        for name, sandbox in tiers.items():
            for _ in range(args.rounds):
                worker = PluginWorker(
                    plugin_dir, "bench_step:Step", PermissionSet(), sandbox=sandbox, strict=False
                )
                began = time.perf_counter()
                worker.start()
                starts[name].append(time.perf_counter() - began)
                worker.close()
            workers[name] = PluginWorker(
                plugin_dir, "bench_step:Step", PermissionSet(), sandbox=sandbox, strict=False
            )
            workers[name].start()

        contenders: dict[str, Callable[[], Any]] = {"in process": lambda: direct.run(text="hello")}
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

    base = statistics.median(timings["in process"])
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
        print(f"{name:<16} {row['per_call_us']:>9.2f} us {row['ratio']:>9.0f}x {start:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
