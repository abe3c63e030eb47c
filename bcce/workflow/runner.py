"""Running workflows: validate, plan, execute, monitor, complete; resume, cancel, status.

One :class:`_Execution` drives one run in one process, holding the run lock. Every transition is
journaled before it is acted on, so a run killed at any instant resumes from what was recorded:
succeeded steps are never re-run, the interrupted step is.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcce.auth.authorization import (
    Authoriser,
    authorise_approval,
    authorise_cancel,
    authorise_workflow,
    identity_from_record,
    identity_record,
    identity_ref,
)
from bcce.core.log import get_logger
from bcce.errors import BcceError, ExitCode, PolicyDenied, UsageError, WorkflowError
from bcce.events.bus import Event, EventBus
from bcce.events.cost import LEDGER_NAME, CostLedger
from bcce.policy.spend import RunBudgets
from bcce.steps.base import StepContext, StepResult
from bcce.workflow.artifacts import ArtifactPublisher, StepUploads, archived_payload
from bcce.workflow.expressions import EvaluationContext, parse
from bcce.workflow.loader import EXPRESSION_ROOTS, LoadOptions, load_workflow
from bcce.workflow.model import CONTROL_TYPES, Step, Workflow
from bcce.workflow.planner import (
    BlockPlan,
    PlannedStep,
    plan_block,
    plan_children,
    plan_workflow,
)
from bcce.workflow.process import kill_cookie
from bcce.workflow.registry import StepRegistry
from bcce.workflow.reports import write_junit
from bcce.workflow.state import (
    CANCEL_REQUEST,
    FINISHED_STEP,
    TERMINAL_RUN,
    RunRecorder,
    RunState,
    RunStateStore,
    append_cancel_request,
    utcnow,
)
from bcce.workflow.templating import render_data

if TYPE_CHECKING:
    from bcce.agent.runtime import AgentRuntime
    from bcce.auth.provider import Identity
    from bcce.core.ids import IdGenerator
    from bcce.core.redaction import Redactor
    from bcce.policy.engine import PolicyEngine
    from bcce.settings.model import BcceSettings
    from bcce.steps.approval import Approval, ApprovalGate, Approver
    from bcce.storage.backend import StorageBackend

log = get_logger("workflow")

OUTPUT_VALUE_LIMIT = 64 * 1024


@dataclass
class RunResult:
    state: RunState
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class RunOptions:
    variables: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    workspace: Path | None = None
    echo: Callable[[str, str, bytes], None] | None = None  # (step id, stream, data)
    approval: Approval | None = None  # --approve / --reject
    approver: Approver | None = None  # a person at the terminal


class WorkflowRunner:
    """Loads, plans and runs workflows; resumes, cancels and reports on runs."""

    def __init__(
        self,
        *,
        registry: StepRegistry,
        store: RunStateStore,
        bus: EventBus,
        redactor: Redactor,
        ids: IdGenerator,
        policy: PolicyEngine,
        settings: BcceSettings,
        storage: StorageBackend | None = None,
        approval_gates: Sequence[ApprovalGate] = (),
        agent_runtime: AgentRuntime | None = None,
        environ: Mapping[str, str] | None = None,
        authoriser: Authoriser | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.bus = bus
        self.redactor = redactor
        self.ids = ids
        self.policy = policy
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.approval_gates = list(approval_gates)
        self.agent_runtime = agent_runtime
        # Without one given, the rules still hold (for the OS user): never silently unenforced.
        self.authoriser = authoriser or Authoriser(settings.auth.authorization, bus=bus)
        #: The runs this runner runs or resumes in this process (see request_cancel).
        self._here: dict[str, _RunHere] = {}
        self.artifacts = ArtifactPublisher(storage, store.root) if storage is not None else None

    # -- loading ---------------------------------------------------------------------------
    def load_options(self, variables: Mapping[str, str], run_id: str) -> LoadOptions:
        return LoadOptions(
            variables=dict(variables),
            environ=self.environ,
            env_allowlist=self.settings.workflow.env_allowlist,
            builtins=self.builtins(run_id, None),
            step_types=self.registry.names(),
            unavailable_types=self.registry.unavailable(),
            step_schemas={t.name: t.schema for t in self.registry if t.schema is not None},
        )

    def builtins(self, run_id: str, workflow_model: str | None) -> dict[str, str]:
        return {
            "RUN_ID": run_id,
            "BEDROCK_MODEL_ID": workflow_model or self.settings.agent.model,
            "AWS_REGION": self.settings.aws.region
            or self.environ.get("AWS_REGION")
            or self.environ.get("AWS_DEFAULT_REGION")
            or "",
        }

    def load(self, path: Path, variables: Mapping[str, str], run_id: str = "RUN_ID") -> Workflow:
        workflow = load_workflow(path, self.load_options(variables, run_id))
        if workflow.model:  # BEDROCK_MODEL_ID follows the workflow's own model
            options = self.load_options(variables, run_id)
            options.builtins = self.builtins(run_id, workflow.model)
            workflow = load_workflow(path, options)
        return workflow

    # -- runs ------------------------------------------------------------------------------
    def run(self, path: Path, options: RunOptions | None = None) -> RunResult:
        options = options or RunOptions()
        run_id = options.run_id or self.ids.run_id()
        with self._running_here(run_id):
            return self._run(path, options, run_id)

    def _run(self, path: Path, options: RunOptions, run_id: str) -> RunResult:
        workflow = self.load(path, options.variables, run_id)
        workspace = (options.workspace or Path.cwd()).resolve()
        if not workspace.is_dir():
            raise WorkflowError(f"workspace {workspace} is not a directory", hint="--workspace DIR")
        # Who runs it, and may they: before anything is recorded (a refused run leaves no trace
        # but its auth.decision events in the audit trail).
        identity = self.authoriser.authenticate()
        self._authorise(identity, "workflow.run", workflow, run_id, options, identity, set())
        state = RunState(
            run_id=run_id,
            workflow={
                "name": workflow.name,
                "path": str(workflow.source),
                "digest": workflow.digest,
            },
            variables={k: self.redactor.redact(v) for k, v in options.variables.items()},
            secret_variables=sorted(
                k for k, v in options.variables.items() if self.redactor.redact(v) != v
            ),
            workspace=str(workspace),
            order=[p.step.id for p in plan_workflow(workflow)],
            steps={
                p.step.id: {"status": "pending", "type": p.step.type}
                for p in plan_workflow(workflow)
            },
            started_by=identity_record(identity),
        )
        recorder = self.store.create(state)
        return _Execution(self, workflow, recorder, options, keep=set()).drive()

    def resume(
        self,
        run_id: str,
        *,
        from_step: str | None = None,
        force: bool = False,
        options: RunOptions | None = None,
    ) -> RunResult:
        with self._running_here(run_id):
            return self._resume(run_id, from_step, force, options or RunOptions())

    def _resume(
        self, run_id: str, from_step: str | None, force: bool, options: RunOptions
    ) -> RunResult:
        state = self.store.load(run_id)
        if state.status in TERMINAL_RUN and state.status == "succeeded" and from_step is None:
            return RunResult(state, 0)
        path = Path(state.workflow["path"])
        missing = [n for n in state.secret_variables if n not in options.variables]
        if missing:
            raise UsageError(
                f"variable(s) {', '.join(missing)} held secrets, which runs never store",
                hint="pass them again: " + " ".join(f"--var {n}=..." for n in missing),
            )
        options.variables = {**state.variables, **options.variables}
        workflow = self.load(path, options.variables, run_id)
        if workflow.digest != state.workflow.get("digest") and not force:
            raise WorkflowError(
                f"the workflow file changed since run {run_id} started",
                location=str(path),
                hint="resume with --force to run the changed workflow, or start a new run",
            )
        order = [p.step.id for p in plan_workflow(workflow)]
        if from_step is not None and from_step not in order:
            raise WorkflowError(
                f"no step {from_step!r} in the workflow",
                hint=f"steps: {', '.join(order)}",
            )
        # Authorised before the run is touched: a refusal leaves it as it was.
        done = {
            step_id
            for step_id, info in state.steps.items()
            if info.get("status") == "succeeded" and from_step is None
        }
        self._authorise(
            self.authoriser.authenticate(),
            "workflow.resume",
            workflow,
            run_id,
            options,
            identity_from_record(state.started_by),
            done,
        )
        recorder = self.store.open(run_id)
        # Leftovers of a driver that died with steps running end before anything re-runs.
        kill_cookie(run_cookie(recorder.directory))
        with contextlib.suppress(FileNotFoundError):
            (recorder.directory / CANCEL_REQUEST).unlink()
        rerun = set(order[order.index(from_step) :]) if from_step else set()
        if from_step:
            rerun |= {s.id for s in workflow.step(from_step).walk()}
            # A nested step re-runs inside its parents: they are re-entered (their children
            # that succeeded before the step stay kept).
            rerun |= set(_ancestors(workflow, from_step))
        keep = {
            step_id
            for step_id, info in recorder.state.steps.items()
            if info.get("status") == "succeeded" and step_id not in rerun
        }
        if workflow.digest != recorder.state.workflow.get("digest"):
            recorder.record(
                "run", None, workflow={**recorder.state.workflow, "digest": workflow.digest}
            )
        recorder.state.order = order
        for step_id in order:
            recorder.state.steps.setdefault(step_id, {"status": "pending"})
        options.workspace = Path(recorder.state.workspace)
        return _Execution(self, workflow, recorder, options, keep=keep, resumed=True).drive()

    def _authorise(
        self,
        identity: Identity,
        action: str,
        workflow: Workflow,
        run_id: str,
        options: RunOptions,
        started_by: Identity | None,
        done: set[str],
    ) -> None:
        """May ``identity`` run the workflow and its steps' policies, and give ``--approve``?"""
        authorise_workflow(
            self.authoriser, identity, action, workflow, run_id=run_id, policy=self.policy
        )
        approval = options.approval
        if approval is None or approval.verdict != "approved":
            return
        # The approval is checked here, not when apply_diff uses it, so that a refusal stops
        # the run before anything runs (exit 6) and the step stays awaiting approval.
        steps = [
            s.id
            for s in workflow.all_steps()
            if s.type == "apply_diff" and s.raw.get("approve") is not True and s.id not in done
        ]
        authorise_approval(
            self.authoriser, approval, started_by=started_by, run_id=run_id, steps=steps
        )

    def cancel(self, run_id: str) -> str:
        """Ask a running run to stop; finalise a run whose driver is gone. Returns what happened.

        Authorised (``workflow.cancel``) before anything is written: a refusal raises
        :class:`~bcce.errors.NotAuthorised` and leaves the run as it was.
        """
        state = self.store.load(run_id)
        identity = self._authorise_cancel(state)
        if state.status in TERMINAL_RUN:
            return f"run {run_id} already {state.status}"
        directory = self.store.run_dir(run_id)
        append_cancel_request(directory, by=identity_record(identity))
        try:
            recorder = self.store.open(run_id)
        except BcceError:
            return f"cancellation requested; the running process of {run_id} is stopping it"
        try:  # nobody drives the run: finish the cancellation ourselves
            if recorder.state.status in TERMINAL_RUN:  # it finished before we got the lock
                with contextlib.suppress(FileNotFoundError):
                    (directory / CANCEL_REQUEST).unlink()
                return f"run {run_id} already {recorder.state.status}"
            killed = kill_cookie(run_cookie(recorder.directory))
            for step_id, info in recorder.state.steps.items():
                if info.get("status") not in FINISHED_STEP:
                    recorder.record("step", step_id, status="cancelled", finished_at=utcnow())
            recorder.record("run", None, status="cancelled", finished_at=utcnow())
            recorder.snapshot()
            events = recorder.directory / "events.jsonl"
            failed = [
                step_id
                for step_id, info in recorder.state.steps.items()
                if info.get("conclusion") == "failure"
            ]
            event = self._publish(
                run_id,
                "workflow.cancelled",
                {
                    "workflow": recorder.state.workflow.get("name"),
                    "status": "cancelled",
                    "duration_seconds": None,  # no process was driving it: nothing was timed
                    "failed_steps": failed,
                    "processes_killed": killed,
                    "cancelled_by": identity_ref(identity),
                },
                seq=_count_lines(events) + 1,
            )
            with events.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(event.to_dict(), default=str) + "\n")
        finally:
            recorder.release()
        return f"run {run_id} cancelled"

    def request_cancel(self, run_id: str) -> None:
        """Ask the process driving ``run_id`` to stop (it polls for the request).

        For a run this runner is running or resuming (from a signal handler, a subscriber),
        nothing is checked, since the run was authorised to start, and nothing is published;
        a request made before the run is authorised and driven waits for it (a refused run
        gets none). Any other run's request is authorised as :meth:`cancel`'s is, and names
        who asked.
        """
        here = self._here.get(run_id)
        if here is not None:
            here.request_cancel()
            return
        identity = self._authorise_cancel(self.store.load(run_id))
        append_cancel_request(self.store.run_dir(run_id), by=identity_record(identity))

    @contextlib.contextmanager
    def _running_here(self, run_id: str) -> Iterator[None]:
        if run_id in self._here:  # already run here (another thread): that one answers
            yield
            return
        self._here[run_id] = _RunHere()
        try:
            yield
        finally:
            self._here.pop(run_id, None)

    def _authorise_cancel(self, state: RunState) -> Identity:
        """Who asks to cancel the run, once authorised (``workflow.cancel``)."""
        identity = self.authoriser.authenticate()
        authorise_cancel(
            self.authoriser,
            identity,
            run_id=state.run_id,
            workflow=state.workflow,
            started_by=identity_from_record(state.started_by),
        )
        return identity

    def status(self, run_id: str) -> RunState:
        return self.store.load(run_id)

    def effective_status(self, state: RunState) -> str:
        """``interrupted`` for a run recorded as running that no process drives any more."""
        if state.status == "running" and not self.store.is_driven(state.run_id):
            return "interrupted"
        return state.status

    def describe_step(self, planned: PlannedStep) -> dict[str, Any]:
        """What ``--dry-run`` shows of a planned step, effective policy included."""
        step = planned.step
        row: dict[str, Any] = {
            "id": step.id,
            "type": step.type,
            "name": step.name,
            "depth": planned.depth,
            "waits_for": list(planned.waits_for),
            "branch": planned.branch,
            "if": step.condition,
            "timeout_seconds": step.timeout_seconds,
            "retry": None if step.retry is None else dataclasses.asdict(step.retry),
            "on_error": step.on_error,
        }
        if step.type in ("agent", "prompt"):
            policy = step.raw.get("policy")
            row["policy"] = (
                dict(policy) if policy else self.policy.default_step_policy().model_dump()
            )
            row["policy_source"] = "step" if policy else "policy.default"
        elif step.type == "cmd":
            allowlist = self.policy.command_allowlist(step.raw.get("policy"))
            if allowlist is not None:
                row["policy"] = {"cmd_allowlist": list(allowlist)}
        return row

    def list_runs(self) -> list[RunState]:
        return self.store.list_runs()

    def _publish(
        self, run_id: str, event_type: str, payload: Mapping[str, Any], *, seq: int
    ) -> Event:
        clean = self.redactor.redact_data(dict(payload))
        assert isinstance(clean, dict)
        event = Event(event_type, clean, run_id=run_id, seq=seq)
        self.bus.publish(event)
        return event


class _RunHere:
    """A run a runner runs or resumes in this process. Its cancel requests go to the run
    directory while it is driven; made before then, they wait for it."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.waiting = 0

    def request_cancel(self) -> None:
        if self.directory is None:
            self.waiting += 1
        else:
            append_cancel_request(self.directory)

    def driven(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            for _ in range(self.waiting):
                append_cancel_request(directory)
        self.waiting = 0


class _Scope:
    """Failure bookkeeping for one block, for ``success()``/``failure()`` of the steps in it."""

    def __init__(
        self,
        parent: _Scope | None,
        *,
        counts_failures: bool = True,
        deadline: float | None = None,
    ) -> None:
        self.parent = parent
        self.counts_failures = counts_failures
        self.failed = False
        self.stop = threading.Event()
        self.deadline = deadline  # a control step's timeout bounds everything inside it

    def earliest_deadline(self) -> float | None:
        deadlines = []
        scope: _Scope | None = self
        while scope is not None:
            if scope.deadline is not None:
                deadlines.append(scope.deadline)
            scope = scope.parent
        return min(deadlines) if deadlines else None

    def record_failure(self) -> None:
        if self.counts_failures:
            self.failed = True

    def any_failed(self) -> bool:
        # Only this block's own failures: whoever started the block (perhaps `if: always()`
        # after a failure) already decided it should run, so earlier failures don't skip it.
        return self.failed

    def stopping(self) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if scope.stop.is_set():
                return True
            scope = scope.parent
        return False


class _Execution:
    def __init__(
        self,
        runner: WorkflowRunner,
        workflow: Workflow,
        recorder: RunRecorder,
        options: RunOptions,
        *,
        keep: set[str],
        resumed: bool = False,
    ) -> None:
        self.runner = runner
        self.workflow = workflow
        self.recorder = recorder
        self.options = options
        self.keep = keep
        self.resumed = resumed
        self.run_id = recorder.state.run_id
        self.settings = runner.settings
        self.lock = threading.RLock()
        self.slots = threading.BoundedSemaphore(self.settings.workflow.max_parallel)
        self.cancelled = threading.Event()
        self.deadline: float | None = None
        self.workspace = Path(recorder.state.workspace)
        self.event_seq = _count_lines(recorder.directory / "events.jsonl")
        self.events_file = (recorder.directory / "events.jsonl").open("a", encoding="utf-8")
        self.denied = False
        self.timed_out = False
        self.paused: str | None = None  # the step awaiting approval, once one is
        self._last_cancel_check = 0.0
        # Steps' artifacts go to a remote backend in the background as each step finishes.
        self.uploads = (
            StepUploads(runner.artifacts, self.run_id, self._artifacts_failed)
            if runner.artifacts is not None and not runner.artifacts.in_place
            else None
        )
        # The step types as registered when the run started: a plugin reloaded mid-run keeps
        # serving this run with the version it started with (each type's lease holds it).
        self.step_types = {
            step.type: runner.registry.get(step.type)
            for top in workflow.steps
            for step in top.walk()
            if step.type not in CONTROL_TYPES
        }
        #: Each nested step's enclosing control step (events carry it: spans nest by it).
        self.parents = {
            child.id: step.id
            for top in workflow.steps
            for step in top.walk()
            for child in (*step.children, *step.else_children)
        }
        # Spend is journaled per step (spent_usd), so budgets count it across resumes.
        self.budgets = RunBudgets(
            settings=self.settings,
            workflow=workflow,
            run_id=self.run_id,
            ledger=CostLedger(runner.store.root / LEDGER_NAME, fsync=self.settings.workflow.fsync),
            steps=recorder.state.steps,
            journal=lambda step_id, spent: self._record_step(step_id, sync=True, spent_usd=spent),
            publish=self.publish,
            lock=self.lock,
        )

    # -- the phases -------------------------------------------------------------------------
    def drive(self) -> RunResult:
        subscription = self._subscribe_events_file()
        started = time.monotonic()
        leases = contextlib.ExitStack()
        here = self.runner._here.get(self.run_id)
        if here is not None:
            here.driven(self.recorder.directory)
        try:
            for step_type in self.step_types.values():
                if step_type.lease is not None:
                    leases.enter_context(step_type.lease())
            with log.contextualize(run_id=self.run_id):
                self._start(started)
                top = _Scope(None)
                self._run_block(plan_block(self.workflow.steps), top)
                return self._complete(top, started)
        except BaseException:
            # Interrupted (KeyboardInterrupt, a crash): the journal already says where we were.
            with contextlib.suppress(Exception):
                self.recorder.snapshot()
            raise
        finally:
            if here is not None:
                here.driven(None)
            if self.uploads is not None:  # interrupted: what is still queued stays local
                self.uploads.abandon()
            leases.close()
            kill_cookie(run_cookie(self.recorder.directory))
            self.runner.bus.unsubscribe("*", subscription)
            self.events_file.close()
            self.recorder.release()
            # The run's events reach the queued subscribers (bounded) before the run returns.
            self.runner.bus.flush()

    def _start(self, started: float) -> None:
        if self.workflow.max_runtime_seconds:
            self.deadline = started + float(self.workflow.max_runtime_seconds)
        changes: dict[str, Any] = {"status": "running", "error": None, "finished_at": None}
        if self.recorder.state.started_at is None:
            changes["started_at"] = utcnow()
        if self.resumed:
            changes["resumes"] = self.recorder.state.resumes + 1
        self.recorder.record("run", None, **changes)
        self.recorder.snapshot()
        self.publish(
            "workflow.started",
            {
                "workflow": self.workflow.name,
                "steps": len(self.recorder.state.order),
                "resumed": self.resumed,
                "kept": sorted(self.keep),
            },
        )
        # validate and plan happened before the run could be recorded (a workflow that does not
        # validate never gets a run); they are recorded now, then execution starts.
        self._phase("validate", digest=self.workflow.digest)
        self._phase("plan", steps=len(self.recorder.state.order), kept=len(self.keep))
        self._phase("execute")

    def _phase(self, phase: str, **details: Any) -> None:
        """The seed's phases: validate, plan, execute, monitor, complete."""
        self.recorder.record("run", None, phase=phase)
        self.publish("workflow.phase", {"phase": phase, **details})

    def _complete(self, top: _Scope, started: float) -> RunResult:
        self._phase("monitor")  # every step has an outcome: take stock of them
        steps = self.recorder.state.steps
        # The run fails when a top-level step concludes failure; nested failures count only
        # through their parents (a composite with on_error: continue absorbs its children's).
        top_failed = [
            s.id for s in self.workflow.steps if steps[s.id].get("conclusion") == "failure"
        ]
        failed = [
            s
            for s in self.recorder.state.order
            if steps[s].get("conclusion") == "failure"
            and self.workflow.step(s).type not in CONTROL_TYPES
        ] or top_failed
        awaiting = [
            s for s in self.recorder.state.order if steps[s].get("status") == "awaiting_approval"
        ]
        if self.cancelled.is_set():
            status, code = "cancelled", ExitCode.INTERRUPTED
        elif top_failed:
            status, code = "failed", ExitCode.POLICY_DENIED if self.denied else ExitCode.RUN_FAILED
        elif awaiting:
            status, code = "awaiting_approval", ExitCode.OK
        else:
            status, code = "succeeded", ExitCode.OK
        self._phase("complete", status=status)
        outcome: dict[str, Any] = {}
        if status == "cancelled":
            by = identity_from_record(self.recorder.cancel_requested_by())
            outcome["cancelled_by"] = identity_ref(by) if by is not None else None
        error = f"failed steps: {', '.join(failed)}" if status == "failed" else None
        if status == "failed" and self.timed_out and self.workflow.max_runtime_seconds:
            error = f"max_runtime_seconds ({self.workflow.max_runtime_seconds}) exceeded; {error}"
        self.recorder.record("run", None, status=status, finished_at=utcnow(), error=error)
        self.recorder.snapshot()
        write_junit(self.recorder.directory / "junit.xml", self.workflow, self.recorder.state)
        if self.uploads is not None:
            self.uploads.wait()  # every step's artifacts are stored before the run ends
        self.publish(
            f"workflow.{'completed' if status in ('succeeded', 'awaiting_approval') else status}",
            {
                "workflow": self.workflow.name,
                "status": status,
                "duration_seconds": round(time.monotonic() - started, 3),
                "failed_steps": failed,
                **outcome,
            },
        )
        self._store_run(status)
        return RunResult(self.recorder.state, int(code))

    def _store_run(self, status: str) -> None:
        """The run's own files to a remote backend, after its last event so that they hold it:
        the run is archived when it has ended (``storage.archive_on_completion``); otherwise (a
        run awaiting approval goes on later) they are copied. A failure never fails the run."""
        artifacts = self.runner.artifacts
        if artifacts is None or artifacts.in_place:
            return
        archive = status in TERMINAL_RUN and self.settings.storage.archive_on_completion
        try:
            if not archive:
                artifacts.publish_run(self.run_id)
                return
            result = artifacts.archive(self.run_id, status=status)
        except Exception as exc:  # noqa: BLE001 - the run has ended; storing it must not fail it
            if isinstance(exc, BcceError):
                message = exc.message
            else:
                log.opt(exception=True).error("storing run {} failed", self.run_id)
                message = f"internal error: {type(exc).__name__}: {exc}"
            log.warning("run {} not stored: {}", self.run_id, message)
            if archive:
                self.publish("storage.archive_failed", {"error": message})
            else:
                self.publish("artifacts.failed", {"step": None, "error": message})
            return
        if result is not None:
            self.publish("storage.archived", archived_payload(result))

    # -- events -----------------------------------------------------------------------------
    def publish(self, event_type: str, payload: Mapping[str, Any]) -> None:
        # Numbered per run (continuing across resumes) and published under the lock, so
        # events.jsonl is in publication order whatever threads the steps run in.
        with self.lock:
            self.event_seq += 1
            self.runner._publish(self.run_id, event_type, payload, seq=self.event_seq)

    def _subscribe_events_file(self) -> Callable[[Event], None]:
        def write(event: Event) -> None:
            if event.run_id == self.run_id:
                with self.lock:
                    self.events_file.write(json.dumps(event.to_dict(), default=str) + "\n")
                    self.events_file.flush()

        self.runner.bus.subscribe("*", write)
        return write

    # -- blocks -----------------------------------------------------------------------------
    def _run_block(
        self,
        plan: BlockPlan,
        scope: _Scope,
        *,
        abort_on_failure: bool = False,
        limit: int | None = None,
    ) -> bool:
        """Run a block's steps as their dependencies allow; True if any step concluded failure."""
        pending = plan.order()
        finished: set[str] = set()
        running: dict[str, threading.Thread] = {}
        done: queue.Queue[str] = queue.Queue()
        block_failed = False
        local_slots = threading.BoundedSemaphore(limit) if limit else None

        def launch(step: Step) -> None:
            def target() -> None:
                try:
                    if local_slots is not None:
                        with local_slots:
                            self._run_step(step, scope)
                    else:
                        self._run_step(step, scope)
                finally:
                    done.put(step.id)

            # Threads start with an empty context: carry the run's (log run_id) into the step.
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=context.run, args=(target,), name=f"step-{step.id}", daemon=True
            )
            running[step.id] = thread
            thread.start()

        while pending or running:
            if abort_on_failure and block_failed:
                for step in pending:
                    self._skip_tree(step, "skipped: an earlier step in the block failed")
                pending = []
                scope.stop.set()
            ready = [s for s in pending if all(d in finished for d in plan.waits_for[s.id])]
            if ready and not running and len(ready) == 1 and local_slots is None:
                step = ready[0]
                pending.remove(step)
                self._run_step(step, scope)  # the common sequential case: no thread needed
                finished.add(step.id)
                block_failed |= self._concluded_failure(step.id)
                continue
            for step in ready:
                pending.remove(step)
                launch(step)
            if not running:
                continue
            step_id = done.get()
            running.pop(step_id).join()
            finished.add(step_id)
            block_failed |= self._concluded_failure(step_id)
        return block_failed

    def _concluded_failure(self, step_id: str) -> bool:
        return self.recorder.state.steps.get(step_id, {}).get("conclusion") == "failure"

    # -- steps ------------------------------------------------------------------------------
    def _run_step(self, step: Step, scope: _Scope) -> None:
        if self.paused is not None and step.id not in self.keep:
            # Everything after a step waiting for approval waits too; resume runs it.
            for item in step.walk():
                self._record_step(item.id, status="pending", reason=f"waiting for {self.paused}")
            return
        if step.id in self.keep:
            self.publish(
                "step.kept", {"step": step.id, "reason": "succeeded in an earlier attempt"}
            )
            return
        cleanup = False
        if self._stop_requested() or scope.stopping():
            # As in GitHub Actions, `if: always()` / `if: cancelled()` steps still run after a
            # cancel (a second cancel stops them too); everything else is cancelled.
            if not self._runs_when_cancelled(step, scope):
                self._skip_tree(step, "skipped: the run is stopping", status="cancelled")
                return
            cleanup = True
        if self._out_of_time(scope):
            self._skip_tree(
                step, "not started: the time limit passed before it could start", status="cancelled"
            )
            scope.record_failure()
            self.timed_out = True
            return
        try:
            if not self._condition_holds(step, scope):
                reason = (
                    f"skipped: condition {step.condition} is false"
                    if step.condition
                    else "skipped: an earlier step failed"
                )
                self._skip_tree(step, reason)
                return
        except BcceError as exc:
            self._finish(
                step, scope, StepResult("failed", error=f"condition failed: {exc.message}"), 0, 1
            )
            return
        if step.type in CONTROL_TYPES:
            self._run_control(step, scope)
        else:
            self._run_leaf(step, scope, cleanup=cleanup)

    def _runs_when_cancelled(self, step: Step, scope: _Scope) -> bool:
        if not step.condition or self._hard_stop():
            return False
        try:
            expression = parse(step.condition, roots=EXPRESSION_ROOTS)
            return expression.has_status_function and expression.should_run(
                self._expression_context(scope)
            )
        except BcceError:
            return False

    def _deadline(self, scope: _Scope) -> float | None:
        limits = [d for d in (self.deadline, scope.earliest_deadline()) if d is not None]
        return min(limits) if limits else None

    def _out_of_time(self, scope: _Scope) -> bool:
        deadline = self._deadline(scope)
        return deadline is not None and time.monotonic() >= deadline

    def _condition_holds(self, step: Step, scope: _Scope) -> bool:
        if not step.condition:
            return self._status(scope) == "success"  # the implicit success()
        context = self._expression_context(scope)
        return parse(step.condition, roots=EXPRESSION_ROOTS).should_run(context)

    def _status(self, scope: _Scope) -> str:
        if self.cancelled.is_set():
            return "cancelled"
        return "failure" if scope.any_failed() else "success"

    def _expression_context(
        self, scope: _Scope, own: Mapping[str, Any] | None = None
    ) -> EvaluationContext:
        with self.lock:
            steps = {
                step_id: {
                    "outcome": info.get("outcome"),
                    "conclusion": info.get("conclusion"),
                    "outputs": dict(info.get("outputs") or {}),
                    "status": info.get("status"),
                }
                for step_id, info in self.recorder.state.steps.items()
            }
        values: dict[str, object] = {
            "steps": steps,
            "env": self.workflow_env(),
            "vars": dict(self.options.variables),
            "inputs": {},
            "run": {"id": self.run_id, "workflow": self.workflow.name},
            "self": dict(own or {}),
        }
        return EvaluationContext(values=values, status=self._status(scope))  # type: ignore[arg-type]

    def _run_leaf(self, step: Step, scope: _Scope, *, cleanup: bool = False) -> None:
        step_type = self.step_types.get(step.type) or self.runner.registry.get(step.type)
        executor = step_type.factory()
        artifacts = self.recorder.directory / step.id
        artifacts.mkdir(parents=True, exist_ok=True)
        max_attempts = step.retry.max_attempts if step.retry else 1
        attempt = int(self.recorder.state.steps.get(step.id, {}).get("attempts", 0))
        first_attempt = attempt
        started = time.monotonic()
        result = StepResult("failed", error="not run")
        with self.slots:
            while True:
                attempt += 1
                self._record_step(
                    step.id, status="running", attempts=attempt, started_at=utcnow(), type=step.type
                )
                self.publish(
                    "step.started",
                    {
                        "step": step.id,
                        "name": step.name,
                        "type": step.type,
                        "attempt": attempt,
                        "parent": self.parents.get(step.id),
                    },
                )
                result = self._execute(step, executor, attempt, artifacts, scope, cleanup=cleanup)
                tries = attempt - first_attempt
                if (
                    result.ok
                    or result.denied
                    or result.status == "cancelled"
                    or tries >= max_attempts
                ):
                    break
                if self._stop_requested() or scope.stopping():
                    break
                delay = _backoff(step, tries)
                self._record_step(step.id, status="retrying", last_error=result.error)
                self.publish(
                    "step.retrying",
                    {
                        "step": step.id,
                        "attempt": attempt,
                        "delay_seconds": round(delay, 3),
                        "error": result.error,
                    },
                )
                if self._sleep(delay, scope):
                    result = StepResult("cancelled", error="cancelled while waiting to retry")
                    break
        self._finish(step, scope, result, time.monotonic() - started, attempt)

    def _execute(
        self,
        step: Step,
        executor: Any,
        attempt: int,
        artifacts: Path,
        scope: _Scope,
        *,
        cleanup: bool = False,
    ) -> StepResult:
        deadline = self._deadline(scope)
        if step.timeout_seconds:
            step_deadline = time.monotonic() + step.timeout_seconds
            deadline = step_deadline if deadline is None else min(deadline, step_deadline)
        cached: list[EvaluationContext] = []

        def render(value: Any) -> Any:
            if not _has_template(value):
                return value
            if not cached:
                cached.append(self._expression_context(scope))
            return render_data(value, cached[0], EXPRESSION_ROOTS)

        echo = None
        if self.options.echo is not None:
            sink = self.options.echo

            def echo(stream: str, data: bytes) -> None:
                sink(step.id, stream, data)

        context = StepContext(
            run_id=self.run_id,
            workflow=self.workflow,
            step=step,
            attempt=attempt,
            workspace=self.workspace,
            artifacts=artifacts,
            env=self._step_env(step),
            deadline=deadline,
            should_stop=self._hard_stop
            if cleanup
            else lambda: self._stop_requested() or scope.stopping(),
            render=render,
            publish=self.publish,
            redactor=self.runner.redactor,
            policy=self.runner.policy,
            settings=self.settings,
            echo=echo,
            cookie=f"{run_cookie(self.recorder.directory)}{step.id}:{attempt}",
            step_states=self.recorder.state.steps,
            approval=self.options.approval,
            approver=self.options.approver,
            approval_gates=self.runner.approval_gates,
            agent_runtime=self.runner.agent_runtime,
            budget=self.budgets.for_step(step, attempt),
            authoriser=self.runner.authoriser,
            started_by=identity_from_record(self.recorder.state.started_by),
        )
        try:
            result: StepResult = executor.execute(context)
        except PolicyDenied as exc:
            result = StepResult("failed", denied=True, error=exc.message)
        except BcceError as exc:
            result = StepResult("failed", error=exc.render())
        except Exception as exc:  # noqa: BLE001 - a broken executor fails its step, not the run
            log.opt(exception=True).error("step {} executor raised", step.id)
            result = StepResult("failed", error=f"internal error: {type(exc).__name__}: {exc}")
        if deadline is not None and time.monotonic() > deadline and result.ok:
            result = StepResult(
                "timed_out", result.outputs, result.exit_code, "exceeded its timeout"
            )
        return result

    def workflow_env(self) -> dict[str, Any]:
        """The workflow's ``env`` with ``--var`` values on top (they win, as in substitution)."""
        return {**self.workflow.env, **self.options.variables}

    def _step_env(self, step: Step) -> dict[str, str]:
        allowed = set(self.settings.workflow.env_allowlist)
        env = {k: v for k, v in self.runner.environ.items() if k in allowed}
        for key, value in self.workflow_env().items():
            if isinstance(value, str | int | float | bool) and key.isidentifier():
                env[key] = str(value).lower() if isinstance(value, bool) else str(value)
        env.update(
            BCCE_RUN_ID=self.run_id,
            BCCE_STEP_ID=step.id,
            BCCE_WORKSPACE=str(self.workspace),
            BCCE_RUN_DIR=str(self.recorder.directory),
        )
        return env

    def _finish(
        self, step: Step, scope: _Scope, result: StepResult, duration: float, attempts: int
    ) -> None:
        outputs = dict(result.outputs)
        if step.outputs:
            try:
                context = self._expression_context(scope, own={"outputs": outputs})
                declared = render_data(dict(step.outputs), context, EXPRESSION_ROOTS)
                outputs.update(declared)
            except BcceError as exc:
                result = StepResult("failed", outputs, result.exit_code, f"outputs: {exc.message}")
        outputs = {k: _cap(v) for k, v in outputs.items()}
        outcome = {"succeeded": "success", "cancelled": "cancelled"}.get(result.status, "failure")
        conclusion = outcome
        if outcome == "failure" and step.on_error == "continue":
            conclusion = "success"
        if result.status == "awaiting_approval":
            outcome = conclusion = "pending"
            self.paused = step.id
        if conclusion == "failure":
            scope.record_failure()
        if result.denied:
            self.denied = True
        error = self.runner.redactor.redact(result.error) if result.error else None
        metrics = {
            "status": result.status,
            "attempts": attempts,
            "duration_seconds": round(duration, 6),
            "exit_code": result.exit_code,
            **result.metrics,
        }
        artifacts = self.recorder.directory / step.id
        if artifacts.is_dir():
            (artifacts / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            if error:
                (artifacts / "error.txt").open("a").write(error + "\n")
        clean_outputs = self.runner.redactor.redact_data(outputs)
        self._record_step(
            step.id,
            sync=True,
            status=result.status,
            outcome=outcome,
            conclusion=conclusion,
            finished_at=utcnow(),
            duration_seconds=round(duration, 6),
            exit_code=result.exit_code,
            error=error,
            denied=result.denied,
            outputs=clean_outputs,
        )
        self._publish_artifacts(step.id)
        event = {
            "succeeded": "step.completed",
            "timed_out": "step.timed_out",
            "cancelled": "step.cancelled",
            "awaiting_approval": "step.awaiting_approval",
        }.get(result.status, "step.failed")
        self.publish(
            event,
            {
                "step": step.id,
                "type": step.type,
                "status": result.status,
                "conclusion": conclusion,
                "attempts": attempts,
                "duration_seconds": round(duration, 6),
                "exit_code": result.exit_code,
                "error": error,
            },
        )

    def _publish_artifacts(self, step_id: str) -> None:
        if self.uploads is not None:
            self.uploads.submit(step_id)

    def _artifacts_failed(self, step_id: str, message: str) -> None:
        # The local copy is intact and the run goes on; the failure is visible.
        self.publish("artifacts.failed", {"step": step_id, "error": message})

    def _run_control(self, step: Step, scope: _Scope) -> None:
        started = time.monotonic()
        self._record_step(step.id, status="running", started_at=utcnow(), type=step.type)
        self.publish(
            "step.started",
            {
                "step": step.id,
                "name": step.name,
                "type": step.type,
                "attempt": 1,
                "parent": self.parents.get(step.id),
            },
        )
        abort = step.failure_strategy == "abort"
        deadline = time.monotonic() + step.timeout_seconds if step.timeout_seconds else None
        child = _Scope(scope, counts_failures=abort, deadline=deadline)
        failed = False
        if step.type == "conditional":
            try:
                assert step.branch_condition is not None
                taken = parse(step.branch_condition, roots=EXPRESSION_ROOTS).truthy(
                    self._expression_context(scope)
                )
            except BcceError as exc:
                self._finish(
                    step, scope, StepResult("failed", error=f"condition: {exc.message}"), 0, 1
                )
                return
            branch, other = (
                (step.children, step.else_children)
                if taken
                else (step.else_children, step.children)
            )
            for skipped in other:
                self._skip_tree(skipped, "skipped: branch not taken")
            failed = self._run_block(plan_block(branch), child, abort_on_failure=True)
            outputs = {"branch": "then" if taken else "else"}
        else:
            failed = self._run_block(
                plan_children(step),
                child,
                abort_on_failure=abort,
                limit=step.max_parallel if step.type == "parallel" else None,
            )
            outputs = {}
        if self._stop_requested():
            result = StepResult("cancelled", outputs, error="cancelled")
        elif deadline is not None and time.monotonic() >= deadline:
            result = StepResult("timed_out", outputs, error="exceeded its timeout")
        elif failed or child.failed:
            result = StepResult("failed", outputs, error="a nested step failed")
        else:
            result = StepResult("succeeded", outputs)
        self._finish(step, scope, result, time.monotonic() - started, 1)

    def _skip_tree(self, step: Step, reason: str, *, status: str = "skipped") -> None:
        for item in step.walk():
            if item.id in self.keep:
                continue
            outcome = "cancelled" if status == "cancelled" else "skipped"
            self._record_step(
                item.id,
                status=status,
                outcome=outcome,
                conclusion=outcome,
                reason=reason,
                finished_at=utcnow(),
            )
            self.publish(
                f"step.{status}",
                {
                    "step": item.id,
                    "type": item.type,
                    "reason": reason,
                    "parent": self.parents.get(item.id),
                },
            )

    def _record_step(self, step_id: str, *, sync: bool = False, **changes: Any) -> None:
        with self.lock:
            self.recorder.record("step", step_id, **changes)
            if sync:
                self.recorder.sync()

    # -- stopping ---------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        if self.cancelled.is_set():
            return True
        now = time.monotonic()
        if now - self._last_cancel_check > 0.05:
            self._last_cancel_check = now
            if self.recorder.cancel_requested():
                self.cancelled.set()
        return self.cancelled.is_set()

    def _hard_stop(self) -> bool:
        """A second cancel request: even cleanup (`always()`) steps stop."""
        return self._stop_requested() and self.recorder.cancel_requests() >= 2

    def _sleep(self, seconds: float, scope: _Scope) -> bool:
        """Sleep, waking early to stop; True if the run is stopping."""
        end = time.monotonic() + seconds
        while (remaining := end - time.monotonic()) > 0:
            if self._stop_requested() or scope.stopping():
                return True
            self.cancelled.wait(min(remaining, 0.05))
        return self._stop_requested()


def run_cookie(run_dir: Path) -> str:
    """The prefix of every cookie a run's processes carry: the run's directory (not only its id,
    which another state directory may reuse) identifies them."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return f"{run_dir.name}.{digest}:"


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def _ancestors(workflow: Workflow, step_id: str) -> list[str]:
    def search(steps: tuple[Step, ...], trail: list[str]) -> list[str] | None:
        for step in steps:
            if step.id == step_id:
                return trail
            found = search((*step.children, *step.else_children), [*trail, step.id])
            if found is not None:
                return found
        return None

    return search(workflow.steps, []) or []


def _backoff(step: Step, tries: int) -> float:
    assert step.retry is not None
    delay = min(step.retry.backoff_seconds * (2 ** (tries - 1)), step.retry.max_backoff_seconds)
    if step.retry.jitter:
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
    return float(delay)


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "${{" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def _cap(value: Any) -> Any:
    if isinstance(value, str) and len(value) > OUTPUT_VALUE_LIMIT:
        return value[:OUTPUT_VALUE_LIMIT] + "…"
    return value
