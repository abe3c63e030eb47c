"""200 ``cmd: /bin/true`` steps: bcce (durable state included) against a bash script.

The bash script runs the same commands and writes the same per-step files (output, errors,
exit code and duration). Both run side by side, interleaved, in one invocation; the report gives
the median wall time of each and the ratio to bash:

- ``bcce (in process)``: ``WorkflowRunner.run`` in an already started Python process;
- ``bcce (CLI)``: ``bcce workflow run`` as a user types it, interpreter start-up included.

Usage: python benchmarks/workflow_200.py [--steps 200] [--repeat 7] [--no-fsync] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASH_SCRIPT = r"""
set -u
runs="$1"; n="$2"
dir="$runs/bash-$$"; mkdir -p "$dir"
for i in $(seq 1 "$n"); do
  step="$dir/s$i"; mkdir -p "$step"
  start=$EPOCHREALTIME
  /bin/bash -c /bin/true >"$step/output.txt" 2>"$step/error.txt"
  rc=$?
  printf '{"exit_code": %d, "started": %s, "finished": %s}\n' \
    "$rc" "$start" "$EPOCHREALTIME" >"$step/metrics.json"
done
"""


def workflow_text(steps: int) -> str:
    lines = ["version: 1", "workflow: bench", "steps:"]
    lines += [f"  - {{id: s{i}, type: cmd, command: /bin/true}}" for i in range(1, steps + 1)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-fsync", action="store_true", help="workflow.fsync=false")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bcce.application import create_application
    from bcce.settings.layers import LayerOptions
    from bcce.workflow.runner import RunOptions

    work = Path(tempfile.mkdtemp(prefix="bcce-bench-"))
    try:
        wf = work / "bench.yml"
        wf.write_text(workflow_text(args.steps))
        script = work / "bench.sh"
        script.write_text(BASH_SCRIPT)
        runs = work / "runs"
        env = {
            "BCCE_WORKFLOW__STATE_DIR": str(runs),
            "BCCE_STORAGE__ROOT": str(runs),
            "BCCE_WORKFLOW__FSYNC": "false" if args.no_fsync else "true",
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(work),
        }
        app = create_application(options=LayerOptions(environ=env, cwd=work))
        runner = app.workflow.runner()
        bcce = Path(sys.executable).with_name("bcce")

        def bash() -> None:
            subprocess.run(["bash", str(script), str(runs), str(args.steps)], check=True)

        def in_process() -> None:
            result = runner.run(wf, RunOptions(workspace=work))
            assert result.exit_code == 0, result.state.error

        def cli() -> None:
            subprocess.run(
                [str(bcce), "workflow", "run", str(wf), "--json", "--workspace", str(work)],
                check=True,
                env=env,
                cwd=work,
                stdout=subprocess.DEVNULL,
            )

        contenders = {"bash script": bash, "bcce (in process)": in_process, "bcce (CLI)": cli}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for call in contenders.values():  # warm-up
            call()
        for _ in range(args.repeat):
            for name, call in contenders.items():
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
        base = statistics.median(times["bash script"])
        report = {
            name: {
                "median_s": round(statistics.median(values), 4),
                "min_s": round(min(values), 4),
                "ratio_to_bash": round(statistics.median(values) / base, 3),
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
                    f"  {name:<18} median {row['median_s'] * 1000:8.1f} ms   "
                    f"min {row['min_s'] * 1000:8.1f} ms   x{row['ratio_to_bash']:.2f}"
                )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
