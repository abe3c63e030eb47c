"""The cost of audit + metrics on the 200-step ``cmd`` workflow of ``workflow_200.py``.

The same workflow runs in process (``WorkflowRunner.run``, durable state included) under
applications that differ only in ``events.subscribers`` (and ``events.metrics``):

- ``none``: no subscriber (only the run's own ``events.jsonl``): the baseline;
- ``audit + metrics (log)``: the default set, the hash-chained audit trail and the log collector;
- ``audit + metrics (prometheus)``: the same with the Prometheus collector (textfile written at
  the end of each run).

Rounds are interleaved (one run of each contender per round, the order rotated), so load drift
affects all alike. For each contender the report gives the median wall time and the median CPU
time of the bcce process itself (all its threads, queued subscribers included; the steps' child
processes are not counted), each with its overhead over the baseline. Wall time is what the
issue's goal is about (at most 10% for the default set), but on a shared machine it varies by
more than that from run to run; the CPU time is what the subscribers actually cost, and varies
far less.

Usage: python benchmarks/observability_overhead.py [--steps 200] [--repeat 9] [--no-fsync] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from workflow_200 import workflow_text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--no-fsync", action="store_true", help="workflow.fsync=false")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bcce.application import create_application
    from bcce.settings.layers import LayerOptions
    from bcce.workflow.runner import RunOptions

    work = Path(tempfile.mkdtemp(prefix="bcce-bench-obs-"))
    contenders: dict[str, dict[str, object]] = {
        "none": {"subscribers": []},
        "audit + metrics (log)": {"subscribers": ["audit", "metrics"], "metrics": "log"},
        "audit + metrics (prometheus)": {
            "subscribers": ["audit", "metrics"],
            "metrics": "prometheus",
        },
    }
    apps = []
    try:
        wf = work / "bench.yml"
        wf.write_text(workflow_text(args.steps))
        calls: dict[str, Callable[[], None]] = {}
        for name, events in contenders.items():
            runs = work / name.replace(" ", "_").replace("(", "").replace(")", "")
            env = {
                "BCCE_WORKFLOW__STATE_DIR": str(runs),
                "BCCE_STORAGE__ROOT": str(runs),
                "BCCE_WORKFLOW__FSYNC": "false" if args.no_fsync else "true",
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(work),
            }
            app = create_application(options=LayerOptions(environ=env, cwd=work), events=events)
            apps.append(app)
            runner = app.workflow.runner()

            def call(runner: object = runner) -> None:
                result = runner.run(wf, RunOptions(workspace=work))  # type: ignore[attr-defined]
                assert result.exit_code == 0, result.state.error

            calls[name] = call

        times: dict[str, list[float]] = {name: [] for name in calls}
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():  # warm-up
            call()
        names = list(calls)
        for round_ in range(args.repeat):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                started, started_cpu = time.perf_counter(), time.process_time()
                calls[name]()
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
        base = statistics.median(times["none"])
        base_cpu = statistics.median(cpu["none"])
        report = {
            name: {
                "median_s": round(statistics.median(values), 4),
                "min_s": round(min(values), 4),
                "overhead": round(statistics.median(values) / base - 1, 4),
                "cpu_median_s": round(statistics.median(cpu[name]), 4),
                "cpu_overhead": round(statistics.median(cpu[name]) / base_cpu - 1, 4),
            }
            for name, values in times.items()
        }
        meta = {"steps": args.steps, "repeat": args.repeat, "fsync": not args.no_fsync}
        if args.json:
            print(json.dumps({**meta, "results": report}, indent=2))
        else:
            fsync = "off" if args.no_fsync else "on"
            print(f"{args.steps} steps, {args.repeat} runs each, fsync={fsync}")
            for name, row in report.items():
                print(
                    f"  {name:<30} wall median {row['median_s'] * 1000:7.1f} ms "
                    f"({row['overhead']:+.1%})   cpu median {row['cpu_median_s'] * 1000:7.1f} ms "
                    f"({row['cpu_overhead']:+.1%})"
                )
        return 0
    finally:
        for app in apps:
            app.shutdown_resources()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
