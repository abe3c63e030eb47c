"""Start-up cost of the ``bcce`` command line against a bare ``python -c pass``.

Runs each command N times (after warm-ups), interleaved round by round so that drift in machine
load hits every command alike, and prints the median and p90 wall time and the ratio of each
median to the baseline's. Then runs ``python -X importtime`` on ``bcce --help`` and lists the
modules that cost most.

    .venv/bin/python benchmarks/startup.py [--runs N] [--warmup N] [--top N] [--json]

The commands are the console script installed beside ``sys.executable`` (run this with the
virtualenv's Python) and ``python -m bcce``. The goal is ``bcce --help`` under 2x the baseline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GOAL_RATIO = 2.0


@dataclass(frozen=True)
class Command:
    label: str
    argv: list[str]


@dataclass(frozen=True)
class Timing:
    label: str
    argv: list[str]
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    ratio: float


@dataclass(frozen=True)
class ImportCost:
    module: str
    self_ms: float
    cumulative_ms: float
    depth: int


def console_script() -> Path:
    """The ``bcce`` script of the virtualenv this interpreter belongs to."""
    script = Path(sys.executable).parent / "bcce"
    if not script.is_file():
        sys.exit(f"no bcce console script beside {sys.executable}; run `make install` first")
    return script


def commands(script: Path) -> list[Command]:
    python = sys.executable
    return [
        Command("python -c pass", [python, "-c", "pass"]),
        Command("bcce --version", [str(script), "--version"]),
        Command("bcce --help", [str(script), "--help"]),
        Command("python -m bcce --help", [python, "-m", "bcce", "--help"]),
    ]


def run_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one run in milliseconds; a failing command aborts the benchmark."""
    start = time.perf_counter_ns()
    completed = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False
    )
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if completed.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {completed.returncode}: {completed.stderr.decode()}")
    return elapsed


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with ``fraction`` of the values at or below."""
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * fraction))
    return ordered[rank - 1]


def measure(cmds: list[Command], runs: int, warmup: int, env: dict[str, str]) -> list[Timing]:
    samples: dict[str, list[float]] = {c.label: [] for c in cmds}
    for round_ in range(warmup + runs):
        # Rotate the order each round so no command always runs right after the same one.
        shift = round_ % len(cmds)
        for command in cmds[shift:] + cmds[:shift]:
            elapsed = run_once(command.argv, env)
            if round_ >= warmup:
                samples[command.label].append(elapsed)
    baseline = statistics.median(samples[cmds[0].label])
    return [
        Timing(
            label=c.label,
            argv=c.argv,
            runs=runs,
            median_ms=statistics.median(samples[c.label]),
            p90_ms=percentile(samples[c.label], 0.9),
            min_ms=min(samples[c.label]),
            ratio=statistics.median(samples[c.label]) / baseline,
        )
        for c in cmds
    ]


def parse_importtime(stderr: str) -> list[ImportCost]:
    """Rows of ``-X importtime`` output: ``import time: self | cumulative | name``."""
    costs = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|", 2)
        stripped = name.lstrip(" ")
        costs.append(
            ImportCost(
                module=stripped,
                self_ms=int(self_us) / 1000,
                cumulative_ms=int(cumulative_us) / 1000,
                depth=(len(name) - len(stripped) - 1) // 2,
            )
        )
    return costs


def import_costs(script: Path, repeats: int, env: dict[str, str]) -> list[ImportCost]:
    """Per-module import cost of ``bcce --help``, the median over ``repeats`` runs."""
    by_module: dict[str, list[ImportCost]] = {}
    for _ in range(repeats):
        completed = subprocess.run(
            [sys.executable, "-X", "importtime", str(script), "--help"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            check=True,
        )
        for cost in parse_importtime(completed.stderr):
            by_module.setdefault(cost.module, []).append(cost)
    return [
        ImportCost(
            module=module,
            self_ms=statistics.median(c.self_ms for c in costs),
            cumulative_ms=statistics.median(c.cumulative_ms for c in costs),
            depth=costs[0].depth,
        )
        for module, costs in by_module.items()
    ]


def by_package(costs: list[ImportCost]) -> list[tuple[str, float, int]]:
    """Own import time summed per top-level package: ``(package, ms, modules)``, largest first."""
    totals: dict[str, list[float]] = {}
    for cost in costs:
        totals.setdefault(cost.module.split(".")[0], []).append(cost.self_ms)
    rows = [(name, sum(times), len(times)) for name, times in totals.items()]
    return sorted(rows, key=lambda row: -row[1])


def report_text(timings: list[Timing], costs: list[ImportCost], top: int) -> None:
    print(f"{'command':<24} {'median ms':>10} {'p90 ms':>9} {'min ms':>9} {'ratio':>7}")
    for t in timings:
        print(
            f"{t.label:<24} {t.median_ms:>10.1f} {t.p90_ms:>9.1f} {t.min_ms:>9.1f} {t.ratio:>6.2f}x"
        )
    print(f"({timings[0].runs} runs each, interleaved; goal: bcce --help under {GOAL_RATIO}x)")
    total = sum(c.self_ms for c in costs)
    print(f"\npython -X importtime bcce --help: {len(costs)} modules, {total:.1f} ms in imports")
    print(f"top {top} modules by own (self) time:")
    for cost in sorted(costs, key=lambda c: -c.self_ms)[:top]:
        print(f"  {cost.self_ms:>7.1f} ms  {cost.module}  (cumulative {cost.cumulative_ms:.1f} ms)")
    print(f"top {top} packages by own time of their modules:")
    for name, total_ms, modules in by_package(costs)[:top]:
        print(f"  {total_ms:>7.1f} ms  {name} ({modules} module{'s' if modules != 1 else ''})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command (30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per command (3)")
    parser.add_argument("--top", type=int, default=10, help="modules to list (10)")
    parser.add_argument(
        "--importtime-runs", type=int, default=5, help="importtime runs to take the median of (5)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.importtime_runs < 1:
        parser.error("--runs and --importtime-runs must be >= 1, --warmup >= 0")

    script = console_script()
    # BCCE_ variables do not change what --help does, but keep every run alike regardless.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCE_")}
    timings = measure(commands(script), args.runs, args.warmup, env)
    costs = import_costs(script, args.importtime_runs, env)
    if args.json:
        by_self = sorted(costs, key=lambda c: -c.self_ms)
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "executable": sys.executable,
                    "goal_ratio": GOAL_RATIO,
                    "timings": [asdict(t) for t in timings],
                    "importtime": {
                        "command": "bcce --help",
                        "modules": len(costs),
                        "total_self_ms": round(sum(c.self_ms for c in costs), 3),
                        "by_self": [asdict(c) for c in by_self[: args.top]],
                        "by_package": [
                            {"package": name, "self_ms": round(total, 3), "modules": count}
                            for name, total, count in by_package(costs)[: args.top]
                        ],
                    },
                },
                indent=2,
            )
        )
    else:
        report_text(timings, costs, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
