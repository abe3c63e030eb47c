"""Plugin discovery over N plugin directories against a bare read-and-parse of the same manifests.

Creates N plugin directories (each a valid ``bcce.plugin.json``) in a temporary directory, then
times, round by round: the baseline (list the directories, read and ``json.loads`` every
manifest) and ``bcce.plugin.discovery.discover`` with that directory as ``./plugins``. Prints the
median, p90 and minimum of each and the ratio of discovery's median to the baseline's.

    .venv/bin/python benchmarks/plugin_discovery.py [--plugins 500] [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bcce.plugin.discovery import discover
from bcce.plugin.schema import MANIFEST_FILE
from bcce.settings.model import PluginsSettings


def make_plugins(root: Path, count: int) -> None:
    for index in range(count):
        directory = root / "plugins" / f"plugin-{index:04d}"
        directory.mkdir(parents=True)
        manifest = {
            "name": f"plugin-{index:04d}",
            "version": f"1.{index % 7}.0",
            "description": "A generated plugin for the discovery benchmark",
            "bcceVersion": ">=0.1",
            "apiVersion": "v1",
            "type": "step",
            "entryPoint": f"plugin_{index:04d}.plugin:Plugin",
            "permissions": ["env:read", {"permission": "filesystem:read", "scope": ["/data/**"]}],
            "provides": {"stepTypes": [f"bench{index}:run"]},
            "defaults": {"plugins": {"config": {f"plugin-{index:04d}": {"level": "info"}}}},
        }
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest), "utf-8")


def baseline(root: Path) -> int:
    found = 0
    for child in sorted((root / "plugins").iterdir()):
        json.loads((child / MANIFEST_FILE).read_text("utf-8"))
        found += 1
    return found


def discovery(root: Path) -> int:
    report = discover(PluginsSettings(), cwd=root, environ={}, first_party=root / "no-first-party")
    if report.problems:
        sys.exit(f"unexpected problems: {report.problems[:3]}")
    return len(report.plugins)


def summarise(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": p90 * 1000,
        "min_ms": ordered[0] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=500)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        make_plugins(root, args.plugins)
        subjects: dict[str, Callable[[Path], int]] = {
            "read + json.loads": baseline,
            "discover": discovery,
        }
        # one untimed round: imports (jsonschema) and the OS page cache
        first = {label: fn(root) for label, fn in subjects.items()}
        if set(first.values()) != {args.plugins}:
            sys.exit(f"expected {args.plugins} plugins, got {first}")
        samples: dict[str, list[float]] = {label: [] for label in subjects}
        for _ in range(args.runs):
            for label, fn in subjects.items():
                start = time.perf_counter()
                fn(root)
                samples[label].append(time.perf_counter() - start)
    results = {label: summarise(values) for label, values in samples.items()}
    base = results["read + json.loads"]["median_ms"]
    for result in results.values():
        result["ratio"] = result["median_ms"] / base
    if args.json:
        print(json.dumps({"plugins": args.plugins, "runs": args.runs, "results": results}))
        return
    print(f"{args.plugins} plugin directories, {args.runs} runs")
    for label, result in results.items():
        print(
            f"  {label:<20} median {result['median_ms']:8.1f} ms  p90 {result['p90_ms']:8.1f} ms"
            f"  min {result['min_ms']:8.1f} ms  ratio {result['ratio']:5.1f}x"
        )
    per_plugin = results["discover"]["median_ms"] / args.plugins
    print(f"  discover per plugin: {per_plugin:.3f} ms")


if __name__ == "__main__":
    main()
