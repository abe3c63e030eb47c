"""Cost of durable run state: atomic JSON writes and journal appends, fsync on and off.

Prints operations per second against naive baselines run in the same process (a plain
``write_text`` and a plain buffered append), then the cost of journaling a 200-step run
(two transitions per step, each one journal append plus one state snapshot) against a bash
script that runs the same 200 trivial commands.

    .venv/bin/python benchmarks/durable.py [--dir DIR] [--ops N] [--steps N]

Put ``--dir`` on the file system that will hold ``.bcce_runs``: fsync cost depends on the disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bcce.core.durable import Journal, atomic_write_json


def run_state(steps: int, done: int) -> dict[str, object]:
    """A run.json of plausible shape and size: one entry per step."""
    return {
        "run_id": "20250101-120000-abcdef",
        "workflow": "examples/quickstart.yml",
        "status": "running",
        "steps": {
            f"step-{i:03d}": {
                "status": "succeeded" if i < done else "pending",
                "attempt": 1,
                "exit_code": 0 if i < done else None,
                "started_at": "2025-01-01T12:00:00+00:00" if i < done else None,
                "finished_at": "2025-01-01T12:00:01+00:00" if i < done else None,
            }
            for i in range(steps)
        },
    }


def rate(label: str, ops: int, action: Callable[[int], None], baseline: float | None) -> float:
    start = time.perf_counter()
    for i in range(ops):
        action(i)
    elapsed = time.perf_counter() - start
    per_second = ops / elapsed
    ratio = f"  {baseline / per_second:6.1f}x baseline time" if baseline else ""
    print(f"{label:<46} {per_second:>10.0f} ops/s  {elapsed / ops * 1e6:>9.1f} us/op{ratio}")
    return per_second


def bench_ops(root: Path, ops: int, steps: int) -> None:
    state = run_state(steps, steps // 2)
    size = len(json.dumps(state, sort_keys=True))
    print(f"state snapshot: {steps} steps, {size} bytes; journal record: one transition")

    naive = root / "naive.json"

    def naive_write(_: int) -> None:
        naive.write_text(json.dumps(state, sort_keys=True, ensure_ascii=False) + "\n")

    base = rate("baseline: write_text(json)", ops, naive_write, None)
    target = root / "run.json"
    rate(
        "atomic_write_json fsync=False",
        ops,
        lambda _: atomic_write_json(target, state, fsync=False),
        base,
    )
    rate("atomic_write_json fsync=True", ops, lambda _: atomic_write_json(target, state), base)

    record = {"event": "step.finished", "step": "step-042", "status": "succeeded", "exit_code": 0}
    with open(root / "plain.jsonl", "a", encoding="utf-8") as plain:

        def plain_append(_: int) -> None:
            plain.write(json.dumps(record) + "\n")
            plain.flush()

        base = rate("baseline: buffered append + flush", ops, plain_append, None)
    for fsync in (False, True):
        with Journal(root / f"journal-{fsync}.jsonl", fsync=fsync) as journal:

            def append(_: int) -> None:
                journal.append(record)

            rate(f"Journal.append fsync={fsync}", ops, append, base)


def bench_run(root: Path, steps: int) -> None:
    print(f"\n{steps}-step run, each step runs /bin/true; 2 transitions per step")
    start = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {steps}); do /bin/true; done"], check=True)
    bash = time.perf_counter() - start
    print(f"{'bash loop':<46} {bash * 1000:>9.1f} ms")
    # The engine keeps its state in memory; build the snapshots outside the timed loop.
    states = [run_state(steps, done) for done in range(steps + 1)]

    def python_run(journal_sync: str, snapshot: str, snapshot_fsync: bool) -> float:
        """journal_sync: none (no journal), off, each (fsync every append), step (sync per step)."""
        directory = Path(tempfile.mkdtemp(dir=root))
        start = time.perf_counter()
        with Journal(directory / "journal.jsonl", fsync=journal_sync == "each") as journal:
            for i in range(steps):
                for status in ("running", "succeeded"):
                    done = i + (status == "succeeded")
                    if journal_sync != "none":
                        journal.append({"step": i, "status": status})
                    if journal_sync == "step" and status == "succeeded":
                        journal.sync()
                    if snapshot == "every":
                        atomic_write_json(
                            directory / "run.json", states[done], fsync=snapshot_fsync
                        )
                    if status == "running":
                        subprocess.run(["/bin/true"], check=True)
            if snapshot == "end":
                atomic_write_json(directory / "run.json", states[steps], fsync=snapshot_fsync)
        return time.perf_counter() - start

    plain = python_run("none", "none", False)
    print(f"{'python loop, no state':<46} {plain * 1000:>9.1f} ms  {plain / bash:5.2f}x bash")
    variants = [
        ("journal + snapshot per transition, no fsync", "off", "every", False),
        ("journal + snapshot per transition, fsync", "each", "every", True),
        ("journal, no fsync; snapshot at end", "off", "end", False),
        ("journal, fsync per transition; snapshot at end", "each", "end", True),
        ("journal, sync() per finished step; snapshot end", "step", "end", True),
    ]
    for label, journal_sync, snapshot, snapshot_fsync in variants:
        total = python_run(journal_sync, snapshot, snapshot_fsync)
        extra = (total - plain) * 1000
        print(f"{label:<46} {total * 1000:>9.1f} ms  {total / bash:5.2f}x bash  (+{extra:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, default=Path.cwd(), help="where to write (default: cwd)"
    )
    parser.add_argument("--ops", type=int, default=500, help="operations per measurement")
    parser.add_argument("--steps", type=int, default=200, help="steps in the simulated run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bcce-bench-") as tmp:
        bench_ops(Path(tmp), args.ops, args.steps)
        bench_run(Path(tmp), args.steps)


if __name__ == "__main__":
    main()
