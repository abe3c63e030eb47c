"""One agent step: bcce against a plain ``claude -p`` run of the same script, same scripted server.

The project is the quickstart's (``examples/quickstart/project``). The scripted model reads
``calculator.py``, fixes it with one Edit, runs ``python3 -m unittest`` and answers; every call
is allowed by the quickstart's policy, so with and without bcce the agent does the same work.
All contenders run the Claude Code CLI bundled with claude-agent-sdk against
:class:`~bcce.testing.model_server.ScriptedModelServer` (Anthropic wire format), interleaved, in
one invocation:

- ``plain claude -p``: the CLI as a user runs it by hand (``--output-format stream-json --verbose
  --setting-sources "" --allowedTools "Read,Edit,Bash(python3 -m unittest)"``, ``--tools`` the
  tools the bcce step is offered) in a fresh copy of the project with a fresh HOME. The baseline;
  its server runs throughout and its copy is made before the clock starts;
- ``plain + sandbox``: the same, plus ``--settings`` with the Bash sandbox bcce gives the step
  (bubblewrap, no network, only ``calculator.py`` writable at the top): what the sandbox costs;
- ``bcce (in process)``: ``WorkflowRunner.run`` of a one-step workflow holding the quickstart's
  agent step and policy, in an already started Python process: sandbox probe, isolated copy,
  scripted server, SDK session with the PreToolUse hook and the Bash sandbox, transcript, audit,
  artifacts and durable run state;
- ``bcce (CLI)``: ``bcce workflow run`` of that workflow, interpreter start-up included;
- with ``--sandbox-off``, ``bcce, sandbox off``: in process, the sandbox layer switched off as the
  test suite does it (not reachable from configuration). Diagnostic only.

The report gives the median and minimum wall time of each, and the ratio of medians to plain (the
goal: bcce at most 1.2x) and to plain + sandbox. Then, for the in-process runs, the median time
of each phase (bcce's functions timed from this script by wrappers that add microseconds; nothing
in ``bcce/`` changes); a timeline of the Claude Code session (start to the CLI's ``init``
message, ``init`` to its ``result``, ``result`` to exit) beside the plain runs'; the CLI's own
``duration_ms``; and what the CLI adds, segment by segment in fresh interpreters: start-up, bcce's
imports and application, importing claude-agent-sdk.

Usage: python benchmarks/agent_step.py [--repeat 7] [--sandbox-off] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "examples" / "quickstart" / "project"
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
PROMPT = (
    "The test suite of this project fails. Find the bug in the code and fix it. "
    "Do not change the tests."
)
# What the step's `available_tools: [ReadFile, Search, Diff, Apply, WriteFile, Bash]` offers.
OFFERED_TOOLS = "Read,Grep,Glob,Edit,MultiEdit,Write,Bash"
ALLOWED_TOOLS = "Read,Edit,Bash(python3 -m unittest)"
ALLOWED_PATHS = ("calculator.py",)
FIXED_LINE = "return sum(values) / len(values)"

SCRIPT = """\
turns:
  - text: "Let me read calculator.py."
    tool_use:
      - name: Read
        input: {file_path: "{workspace}/calculator.py"}
  - text: "mean() uses floor division; fixing it."
    tool_use:
      - name: Edit
        input:
          file_path: "{workspace}/calculator.py"
          old_string: "return sum(values) // len(values)"
          new_string: "return sum(values) / len(values)"
  - text: "Running the tests."
    tool_use:
      - name: Bash
        input: {command: "python3 -m unittest", description: "Run the test suite"}
  - text: "Fixed: mean() used floor division; it now divides. All tests pass."
"""

WORKFLOW = f"""\
version: 1
workflow: agent-bench
steps:
  - id: fix
    type: agent
    prompt: "{PROMPT}"
    available_tools: [ReadFile, Search, Diff, Apply, WriteFile, Bash]
    policy:
      timeout_seconds: 180
      max_files: 10
      max_edits: 5
      allowed_paths: {json.dumps(list(ALLOWED_PATHS))}
      cmd_allowlist: ["python3 -m unittest"]
"""

PLAIN = "plain claude -p"
PLAIN_SANDBOX = "plain + sandbox"
IN_PROCESS = "bcce (in process)"
CLI = "bcce (CLI)"
SANDBOX_OFF = "bcce, sandbox off"

# (label, module, attribute) of the bcce functions timed in the in-process runs. bcce imports
# them at call time, so replacing the attribute on its module catches every call.
PHASES = (
    ("run", "bcce.workflow.runner", "WorkflowRunner.run"),
    ("step", "bcce.steps.agent", "AgentExecutor.execute"),
    ("sandbox probe (bwrap true)", "bcce.policy.sandbox", "probe_sandbox"),
    ("isolate (copy + baseline commit)", "bcce.policy.isolation", "Workspace.isolate"),
    ("outside-write watch start", "bcce.policy.audit", "OutsideWatch.start"),
    ("scripted server start", "bcce.agent.endpoint", "open_endpoint"),
    ("session (SDK + Claude Code)", "bcce.agent.session", "run_session"),
    ("  of which hook decisions (Python side)", "bcce.policy.hook", "ToolPolicy.decide"),
    ("  of which process-tree sweep", "bcce.agent.session", "kill_cookie"),
    ("scripted server stop", "bcce.testing.model_server", "ScriptedModelServer.stop"),
    ("transcript.md", "bcce.steps.agent", "_write_transcript_markdown"),
    ("usage.json + cost event", "bcce.steps.agent", "_write_usage"),
    ("audit of the change set", "bcce.policy.audit", "audit_changes"),
    ("cleanup of the copy", "bcce.policy.isolation", "IsolatedWorkspace.cleanup"),
)
SESSION = "session (SDK + Claude Code)"
RUNNER_REST = "runner (load, plan, state, events, reports)"
STEP_REST = "step, other (policy, prompt, policy.json)"
NOT_SUMMED = frozenset({"run", "step", *(label for label, _, _ in PHASES if label[0] == " ")})
TIMELINE = ("start -> init message", "init -> result message", "result -> exit")


class PhaseTimer:
    """Sums the wall time spent in each of :data:`PHASES`, and the session's timeline, per run."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        self.runs: list[dict[str, float]] = []
        self.timelines: list[tuple[float, float, float]] = []

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved: list[tuple[Any, str, Any]] = []
        try:
            for label, module_name, dotted in PHASES:
                owner: Any = importlib.import_module(module_name)
                *parents, name = dotted.split(".")
                for parent in parents:
                    owner = getattr(owner, parent)
                original = owner.__dict__[name]
                saved.append((owner, name, original))
                setattr(owner, name, self._timed(label, original))
            session: Any = importlib.import_module("bcce.agent.session")
            saved.append((session, "message_record", session.message_record))
            session.message_record = self._stamped(session.message_record)
            yield
        finally:
            for owner, name, original in reversed(saved):
                setattr(owner, name, original)

    def _timed(self, label: str, original: Any) -> Any:
        is_classmethod = isinstance(original, classmethod)
        function = original.__func__ if is_classmethod else original

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            self.marks.setdefault(f"{label} start", started)
            try:
                return function(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                self.marks[f"{label} end"] = ended
                self.current[label] = self.current.get(label, 0.0) + ended - started

        return classmethod(timed) if is_classmethod else timed

    def _stamped(self, original: Callable[[Any], dict[str, Any]]) -> Any:
        @functools.wraps(original)
        def stamped(message: Any) -> dict[str, Any]:
            kind = type(message).__name__
            if kind == "SystemMessage" and getattr(message, "subtype", None) == "init":
                self.marks.setdefault("init", time.perf_counter())
            elif kind == "ResultMessage":
                self.marks["result"] = time.perf_counter()
            return original(message)

        return stamped

    def finish(self) -> None:
        marks = self.marks
        start, end = marks[f"{SESSION} start"], marks[f"{SESSION} end"]
        self.timelines.append(
            (marks["init"] - start, marks["result"] - marks["init"], end - marks["result"])
        )
        self.runs.append(self.current)
        self.current, self.marks = {}, {}

    def clear(self) -> None:
        self.runs.clear()
        self.timelines.clear()

    def medians(self) -> dict[str, float]:
        medians = {
            label: statistics.median(run.get(label, 0.0) for run in self.runs)
            for label, _, _ in PHASES
        }
        medians[RUNNER_REST] = statistics.median(r["run"] - r["step"] for r in self.runs)
        medians[STEP_REST] = statistics.median(
            r["step"] - sum(v for k, v in r.items() if k not in NOT_SUMMED) for r in self.runs
        )
        return medians


class Bench:
    """The contenders, sharing one temporary directory; each checks that it did the work."""

    def __init__(self, work: Path, claude: Path) -> None:
        from bcce.application import create_application
        from bcce.settings.layers import LayerOptions
        from bcce.testing.model_server import ScriptedModelServer

        self.work, self.claude = work, claude
        self.script = work / "fix.yaml"
        self.script.write_text(SCRIPT)
        self.workflow = work / "bench.yml"
        self.workflow.write_text(WORKFLOW)
        self.project = work / "project"
        shutil.copytree(PROJECT, self.project)
        self.runs = work / "runs"
        self.env = {
            "BCCE_AGENT__PROVIDER": "scripted",
            "BCCE_AGENT__SCRIPT": str(self.script),
            "BCCE_AGENT__MODEL": MODEL,
            "BCCE_WORKFLOW__STATE_DIR": str(self.runs),
            "BCCE_STORAGE__ROOT": str(self.runs),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
        }
        self.options = LayerOptions(environ=self.env, cwd=work, user_config_file=work / "none.yaml")
        self.runner = create_application(options=self.options).workflow.runner()
        self.off_runner: Any = None
        self.bcce = Path(sys.executable).with_name("bcce")
        self.timers = {IN_PROCESS: PhaseTimer(), SANDBOX_OFF: PhaseTimer()}
        self.claude_ms: dict[str, list[float]] = {}
        self.timelines: dict[str, list[tuple[float, float, float]]] = {}
        # One server for the plain runs; each run has its own copy, so {workspace} is set per run.
        self.server = ScriptedModelServer(self.script).start()
        self._count = 0

    def close(self) -> None:
        self.server.stop()

    def clear(self) -> None:
        """Forget what the warm-up measured."""
        for timer in self.timers.values():
            timer.clear()
        self.claude_ms.clear()
        self.timelines.clear()

    def plain(self, *, sandbox: bool) -> float:
        from bcce.policy.sandbox import claude_code_sandbox_settings

        name = PLAIN_SANDBOX if sandbox else PLAIN
        self._count += 1
        copy = self.work / f"plain-{self._count}" / "project"
        home = copy.parent / "home"
        shutil.copytree(PROJECT, copy)
        home.mkdir()
        self.server.placeholders["workspace"] = str(copy)
        argv = [str(self.claude), "-p", PROMPT, "--output-format", "stream-json", "--verbose"]
        argv += ["--setting-sources", "", "--tools", OFFERED_TOOLS, "--allowedTools", ALLOWED_TOOLS]
        if sandbox:
            # As bcce sets it up: top-level entries no allowed path leads into are not writable.
            denied = [entry for entry in copy.iterdir() if entry.name not in ALLOWED_PATHS]
            argv += [
                "--settings",
                json.dumps({"sandbox": claude_code_sandbox_settings(deny_write=denied)}),
            ]
        env = {
            **self.server.anthropic_env(home),
            "ANTHROPIC_MODEL": MODEL,
            "PATH": self.env["PATH"],
        }
        started = time.perf_counter()
        init = result_at = 0.0
        result: dict[str, Any] = {}
        # stderr to a file: a pipe nobody reads while stdout streams could fill up and block.
        with (
            (copy.parent / "stderr.txt").open("w") as stderr,
            subprocess.Popen(
                argv, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
            ) as process,
        ):
            assert process.stdout is not None
            for line in process.stdout:
                message = json.loads(line) if line.strip() else {}
                if message.get("type") == "system" and message.get("subtype") == "init":
                    init = init or time.perf_counter()
                elif message.get("type") == "result":
                    result_at, result = time.perf_counter(), message
        ended = time.perf_counter()
        if process.returncode != 0:
            errors = (copy.parent / "stderr.txt").read_text()[-2000:]
            raise RuntimeError(f"claude -p exited {process.returncode}: {errors}")
        work_done = FIXED_LINE in (copy / "calculator.py").read_text()
        if result.get("subtype") != "success" or result["permission_denials"] or not work_done:
            raise RuntimeError(f"claude -p did not do the scripted work: {result}")
        self.claude_ms.setdefault(name, []).append(float(result["duration_ms"]))
        timeline = (init - started, result_at - init, ended - result_at)
        self.timelines.setdefault(name, []).append(timeline)
        shutil.rmtree(copy.parent)
        return ended - started

    def in_process(self, *, sandbox: bool = True) -> float:
        from bcce.workflow.runner import RunOptions

        name = IN_PROCESS if sandbox else SANDBOX_OFF
        runner = self.runner if sandbox else self._runner_without_sandbox()
        timer = self.timers[name]
        with timer.installed():
            started = time.perf_counter()
            result = runner.run(self.workflow, RunOptions(workspace=self.project))
            elapsed = time.perf_counter() - started
        run_dir = self.runs / result.state.run_id
        check_bcce_run(run_dir, result.exit_code, result.state.error, sandboxed=sandbox)
        timer.finish()
        usage = json.loads((run_dir / "fix" / "usage.json").read_text())
        self.claude_ms.setdefault(name, []).append(float(usage["duration_ms"]))
        return elapsed

    def _runner_without_sandbox(self) -> Any:
        from bcce.application import create_application
        from bcce.steps.agent import AgentExecutor
        from bcce.workflow.registry import StepType

        if self.off_runner is None:
            app = create_application(options=self.options)
            off = frozenset({"sandbox"})
            app.workflow.steps().register(
                StepType("agent", lambda: AgentExecutor(disabled_layers=off), "benchmark"),
                replace=True,
            )
            self.off_runner = app.workflow.runner()
        return self.off_runner

    def cli(self) -> float:
        argv = [str(self.bcce), "workflow", "run", str(self.workflow), "--json"]
        argv += ["--workspace", str(self.project)]
        started = time.perf_counter()
        completed = subprocess.run(
            argv, env=self.env, cwd=self.work, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        run_id = json.loads(completed.stdout)["run_id"]
        check_bcce_run(self.runs / run_id, completed.returncode, completed.stderr[-2000:])
        return elapsed


def bundled_claude() -> Path:
    from bcce.agent.runtime import bundled_cli

    cli = bundled_cli()
    if cli is None:
        sys.exit("this benchmark needs claude-agent-sdk with its bundled Claude Code CLI")
    return cli


def check_bcce_run(run_dir: Path, exit_code: int, error: object, *, sandboxed: bool = True) -> None:
    """Fail loudly unless the step did the scripted work, every call allowed by the hook."""
    step = run_dir / "fix"
    if exit_code != 0:
        raise RuntimeError(f"bcce run {run_dir.name} exited {exit_code}: {error}")
    lines = (step / "decisions.jsonl").read_text().splitlines()
    decisions = [json.loads(line) for line in lines]
    if len(decisions) != 3 or not all(d["allowed"] for d in decisions):
        raise RuntimeError(f"bcce run {run_dir.name}: unexpected decisions {decisions}")
    if f"+    {FIXED_LINE}" not in (step / "changes.patch").read_text():
        raise RuntimeError(f"bcce run {run_dir.name}: the fix is not in changes.patch")
    isolation = json.loads((step / "policy.json").read_text())["isolation"]
    expected = "claude-code-bubblewrap" if sandboxed else "none"
    if isolation["sandbox"] != expected:
        raise RuntimeError(f"bcce run {run_dir.name}: sandbox {isolation['sandbox']!r}")


# Run in a fresh interpreter: what `bcce workflow run` loads before and around the step, in the
# order it loads it, so that each segment is the extra cost at that point (pydantic, shared by
# bcce and the SDK, is counted once, with bcce).
STARTUP_PROBE = """
import json, sys, time
from pathlib import Path
marks = [time.perf_counter()]
import bcce.cli.main, bcce.cli.workflow
marks.append(time.perf_counter())
from bcce.application import create_application
from bcce.settings.layers import LayerOptions
env, cwd = json.loads(sys.argv[1]), Path(sys.argv[2])
app = create_application(options=LayerOptions(environ=env, cwd=cwd))
app.workflow.runner()
marks.append(time.perf_counter())
import bcce.agent.session, bcce.policy.audit, bcce.policy.hook, bcce.policy.isolation
import bcce.steps.agent, bcce.testing.model_server
marks.append(time.perf_counter())
import claude_agent_sdk
marks.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(marks, marks[1:])]))
"""
STARTUP_LABELS = (
    "python start-up (python -c pass)",
    "import the bcce CLI",
    "settings + application + runner",
    "import bcce's agent-step modules",
    "import claude_agent_sdk (mcp, ...)",
)


def startup_costs(bench: Bench, repeat: int) -> dict[str, float]:
    """Median cost of each start-up segment of the CLI, each measured in a fresh interpreter."""
    rows = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python = time.perf_counter() - started
        completed = subprocess.run(
            [sys.executable, "-c", STARTUP_PROBE, json.dumps(bench.env), str(bench.work)],
            env=bench.env,
            cwd=bench.work,
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append([python, *json.loads(completed.stdout)])
    return {
        label: statistics.median(column)
        for label, column in zip(STARTUP_LABELS, zip(*rows, strict=True), strict=True)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--sandbox-off", action="store_true", help="also run bcce with its sandbox layer off"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    claude = bundled_claude()
    work = Path(tempfile.mkdtemp(prefix="bcce-bench-agent-"))
    bench: Bench | None = None
    try:
        bench = Bench(work, claude)
        contenders: dict[str, Callable[[], float]] = {
            PLAIN: functools.partial(bench.plain, sandbox=False),
            PLAIN_SANDBOX: functools.partial(bench.plain, sandbox=True),
            IN_PROCESS: bench.in_process,
            CLI: bench.cli,
        }
        if args.sandbox_off:
            contenders[SANDBOX_OFF] = functools.partial(bench.in_process, sandbox=False)
        for call in contenders.values():  # warm-up: imports, page cache, first sandbox
            call()
        bench.clear()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders)
        for round_ in range(args.repeat):
            # Rotate the order every round, so that drift in machine load hits all alike.
            shift = round_ % len(order)
            for name in order[shift:] + order[:shift]:
                times[name].append(contenders[name]())
        report = summarise(times, bench, startup_costs(bench, args.repeat))
        if args.json:
            print(json.dumps({"repeat": args.repeat, "claude": str(claude), **report}, indent=2))
        else:
            print_report(args.repeat, report)
        return 0
    finally:
        if bench is not None:
            bench.close()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def summarise(
    times: dict[str, list[float]], bench: Bench, startup: dict[str, float]
) -> dict[str, Any]:
    plain = statistics.median(times[PLAIN])
    sandboxed = statistics.median(times[PLAIN_SANDBOX])
    results = {
        name: {
            "median_s": round(statistics.median(values), 4),
            "min_s": round(min(values), 4),
            "ratio_to_plain": round(statistics.median(values) / plain, 3),
            "ratio_to_plain_sandbox": round(statistics.median(values) / sandboxed, 3),
        }
        for name, values in times.items()
    }
    timelines = dict(bench.timelines)
    phases = {}
    for name, timer in bench.timers.items():
        if timer.runs:
            phases[name] = {label: round(value, 4) for label, value in timer.medians().items()}
            timelines[name] = timer.timelines
    cli_extra = statistics.median(times[CLI]) - statistics.median(times[IN_PROCESS])
    return {
        "results": results,
        "phases_s": phases,
        "session_timeline_s": {
            name: {
                label: round(statistics.median(column), 4)
                for label, column in zip(TIMELINE, zip(*rows, strict=True), strict=True)
            }
            for name, rows in timelines.items()
        },
        "claude_duration_ms": {name: statistics.median(v) for name, v in bench.claude_ms.items()},
        "cli_extra_s": {
            "bcce (CLI) - bcce (in process)": round(cli_extra, 4),
            **{label: round(value, 4) for label, value in startup.items()},
        },
    }


def print_report(repeat: int, report: dict[str, Any]) -> None:
    print(f"One agent step (Read, Edit, Bash, answer), {repeat} runs each")
    print(f"  {'':<20} {'median':>10} {'min':>10}   x plain   x plain+sandbox")
    for name, row in report["results"].items():
        print(
            f"  {name:<20} {row['median_s'] * 1000:7.0f} ms {row['min_s'] * 1000:7.0f} ms"
            f"   {row['ratio_to_plain']:7.2f}   {row['ratio_to_plain_sandbox']:15.2f}"
        )
    phases: dict[str, dict[str, float]] = report["phases_s"]
    print("\nIn-process runs by phase (median ms):")
    print(f"  {'':<44}" + "".join(f"{name:>20}" for name in phases))
    labels = [RUNNER_REST, *(label for label, _, _ in PHASES if label not in ("run", "step"))]
    for label in [*labels, STEP_REST, "run"]:
        shown = "total (WorkflowRunner.run)" if label == "run" else label
        row = "".join(f"{values[label] * 1000:20.1f}" for values in phases.values())
        print(f"  {shown:<44}{row}")
    timelines: dict[str, dict[str, float]] = report["session_timeline_s"]
    print("\nClaude Code session timeline (median ms; bcce: from run_session's start to its end):")
    print(f"  {'':<24}" + "".join(f"{label:>24}" for label in TIMELINE))
    for name, row in timelines.items():
        print(f"  {name:<24}" + "".join(f"{row[label] * 1000:24.0f}" for label in TIMELINE))
    claude_ms = report["claude_duration_ms"]
    print("\nClaude Code's own duration_ms (its result message), median:")
    print("  " + ", ".join(f"{name} {value:.0f}" for name, value in claude_ms.items()))
    print("\nWhat the CLI adds (median ms; segments measured in fresh interpreters):")
    for label, value in report["cli_extra_s"].items():
        print(f"  {label:<44} {value * 1000:7.0f}")


if __name__ == "__main__":
    sys.exit(main())
