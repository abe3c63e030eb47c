"""The catalogue of every event bcce publishes: its payload fields and who publishes it.

The catalogue is the contract between publishers and subscribers (audit trail, metrics,
tracing, EventBridge, notifications, anything users attach). ``tests/events`` drives real runs
and checks that every event published is in it, with its required fields and no others, and
that ``docs/observability.md`` shows :func:`render_markdown` between the :data:`MARKERS`.
After changing an event, update :data:`CATALOGUE` and regenerate the docs section::

    python -m bcce.events.catalogue --write docs/observability.md

Field types are JSON types spelt as in Python: ``str``, ``int``, ``float`` (an int is accepted
too), ``bool``, ``list[str]``, ``list``, ``object`` (a JSON object), ``any``; a field
``nullable`` may also be ``null``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The comments between which ``docs/observability.md`` holds :func:`render_markdown`'s text.
MARKERS = ("<!-- event-catalogue:start -->", "<!-- event-catalogue:end -->")

TYPES = ("str", "int", "float", "bool", "list[str]", "list", "object", "any")


@dataclass(frozen=True)
class FieldSpec:
    """One payload field: ``required`` fields are in every event of the type."""

    name: str
    type: str
    description: str
    required: bool = True
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"field {self.name}: unknown type {self.type!r}")

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this field's type."""
        if value is None:
            return self.nullable or self.type == "any"
        match self.type:
            case "str":
                return isinstance(value, str)
            case "int":
                return isinstance(value, int) and not isinstance(value, bool)
            case "float":
                return isinstance(value, int | float) and not isinstance(value, bool)
            case "bool":
                return isinstance(value, bool)
            case "list[str]":
                return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            case "list":
                return isinstance(value, list | tuple)
            case "object":
                return isinstance(value, Mapping)
        return True


@dataclass(frozen=True)
class EventSpec:
    """One event type.

    ``in_run``: the event carries the ``run_id`` of the run it belongs to (else ``None``: a
    process event). ``open``: the payload may hold fields beyond those listed.
    """

    type: str
    description: str
    publisher: str
    fields: tuple[FieldSpec, ...]
    in_run: bool = True
    open: bool = False

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def problems(self, payload: Mapping[str, Any], run_id: str | None = None) -> list[str]:
        """What is wrong with an event of this type: missing, unknown or mistyped fields."""
        found = []
        for spec in self.fields:
            if spec.name not in payload:
                if spec.required:
                    found.append(f"{self.type}: required field {spec.name!r} is missing")
            elif not spec.accepts(payload[spec.name]):
                found.append(
                    f"{self.type}: field {spec.name!r} is {payload[spec.name]!r}, "
                    f"not {_type_text(spec)}"
                )
        if not self.open:
            declared = {f.name for f in self.fields}
            found += [
                f"{self.type}: field {name!r} is not in the catalogue"
                for name in payload
                if name not in declared
            ]
        if self.in_run and not run_id:
            found.append(f"{self.type}: published without the run_id of its run")
        if not self.in_run and run_id:
            found.append(f"{self.type}: a process event published with run_id {run_id!r}")
        return found


def _f(
    name: str,
    type: str,
    description: str,
    *,
    required: bool = True,
    nullable: bool = False,
) -> FieldSpec:
    return FieldSpec(name, type, description, required=required, nullable=nullable)


def _opt(name: str, type: str, description: str, *, nullable: bool = False) -> FieldSpec:
    return FieldSpec(name, type, description, required=False, nullable=nullable)


RUNNER = "workflow runner (`bcce/workflow/runner.py`)"
CANCEL = "`bcce workflow cancel` of a run no process drives (`WorkflowRunner.cancel`)"
CMD = "`cmd` step (`bcce/steps/cmd.py`)"
AGENT = "`agent` and `prompt` steps (`bcce/steps/agent.py`)"
SPEND = "budget enforcement of `agent` and `prompt` steps (`bcce/policy/spend.py`)"
APPLY = "`apply_diff` step (`bcce/steps/apply_diff.py`)"
MANAGER = "plugin manager (`bcce/plugin/manager.py`)"
HOST = "plugin host (`bcce/plugin/host.py`)"
BUS = "event bus (`bcce/events/bus.py`)"
STORAGE = (
    "workflow runner at run completion; `bcce workflow archive` (`bcce/workflow/artifacts.py`)"
)
AUTHZ = (
    "authoriser (`bcce/auth/authorization.py`): `bcce workflow run`, `resume` and `cancel`, "
    "`apply_diff` approvals, `bcce plugin enable`, `disable` and `reload`"
)

_STEP = _f("step", "str", "the step's id")
_TYPE = _f("type", "str", "the step's type (`cmd`, `agent`, `composite`, `db:query`...)")
_WORKFLOW = _f("workflow", "str", "the workflow's name")

_OUTCOME_FIELDS = (
    _STEP,
    _TYPE,
    _f(
        "status",
        "str",
        "`succeeded`, `failed`, `timed_out`, `cancelled` or `awaiting_approval`",
    ),
    _f(
        "conclusion",
        "str",
        "`success`, `failure`, `cancelled` or `pending`; a failure under `on_error: continue` "
        "concludes `success`",
    ),
    _f("attempts", "int", "attempts made, earlier runs of a resumed run included"),
    _f("duration_seconds", "float", "wall time of all attempts, retry delays included"),
    _f("exit_code", "int", "the command's exit code (`cmd` steps)", nullable=True),
    _f("error", "str", "why it did not succeed (redacted)", nullable=True),
)

_RUN_END_FIELDS = (
    _WORKFLOW,
    _f("status", "str", "the run's status"),
    _f("duration_seconds", "float", "wall time of this run (or resume) of the workflow"),
    _f("failed_steps", "list[str]", "ids of the steps that concluded failure"),
)

_PLUGIN_FIELDS = (
    _f("name", "str", "the plugin's name"),
    _f("version", "str", "the plugin's version"),
    _f("generation", "int", "counts loads of the plugin in this process (a reload adds one)"),
    _f("type", "str", "the plugin's type: `step`, `integration`, `storage` or `auth`"),
)
_ISOLATION = _f(
    "isolation",
    "object",
    "how the plugin runs: `tier` (`A`, `B`, `C` or `in-process`), `mechanism`, `reason`; "
    "for a worker also `requested`, `landlock_abi`, `permissions` (and `limits` at tier B)",
)

_SUBSCRIBER_FIELDS = (
    _f("subscriber", "str", "the subscriber's name"),
    _f("event", "str", "the type of the event it was handling"),
    _f("run_id", "str", "the run of that event", nullable=True),
    _f("step", "str", "the step of that event", nullable=True),
)

_APPROVAL_FIELDS = (
    _STEP,
    _f("by", "str", "who decided (`nobody` while pending)"),
    _f(
        "via",
        "str",
        "how: `workflow` (`approve: true`), `command line`, `terminal`, an approval "
        "integration's name, or `none`",
    ),
    _f("files", "list[str]", "the files the change set touches"),
)


CATALOGUE: tuple[EventSpec, ...] = (
    # -- workflow.* -------------------------------------------------------------------------
    EventSpec(
        "workflow.started",
        "A run starts, or resumes.",
        RUNNER,
        (
            _WORKFLOW,
            _f("steps", "int", "steps in the workflow, nested steps included"),
            _f("resumed", "bool", "whether this is `bcce workflow resume`"),
            _f("kept", "list[str]", "steps kept from an earlier attempt (on resume)"),
        ),
    ),
    EventSpec(
        "workflow.phase",
        "The run enters a phase: `validate`, `plan`, `execute`, `monitor`, `complete`.",
        RUNNER,
        (
            _f("phase", "str", "the phase entered"),
            _opt("digest", "str", "`validate`: the digest of the workflow file"),
            _opt("steps", "int", "`plan`: steps planned"),
            _opt("kept", "int", "`plan`: steps kept from an earlier attempt"),
            _opt("status", "str", "`complete`: the run's final status"),
        ),
    ),
    EventSpec(
        "workflow.completed",
        "A run ends without failure: `status` is `succeeded`, or `awaiting_approval` when a "
        "step waits for an approval (`bcce workflow resume`).",
        RUNNER,
        _RUN_END_FIELDS,
    ),
    EventSpec(
        "workflow.failed",
        "A run ends with a top-level step concluding failure.",
        RUNNER,
        _RUN_END_FIELDS,
    ),
    EventSpec(
        "workflow.cancelled",
        "A run is cancelled (signal, `bcce workflow cancel`), by the process driving it, or by "
        "`bcce workflow cancel` itself when no process drives the run (then `duration_seconds` "
        "is null and `processes_killed` counts the leftover step processes it killed).",
        f"{RUNNER}; {CANCEL}",
        (
            _WORKFLOW,
            _f("status", "str", "`cancelled`"),
            _f(
                "duration_seconds",
                "float",
                "wall time of this run (or resume) of the workflow",
                nullable=True,
            ),
            _f("failed_steps", "list[str]", "ids of the steps that concluded failure"),
            _f(
                "cancelled_by",
                "str",
                "who cancelled it (`provider:user`), as `bcce workflow cancel` authenticated "
                "them; null when the process driving the run stopped it (a signal)",
                nullable=True,
            ),
            _opt("processes_killed", "int", "leftover step processes killed by the cancel"),
        ),
    ),
    # -- step.* ----------------------------------------------------------------------------
    EventSpec(
        "step.started",
        "A step starts an attempt (a control step starts once).",
        RUNNER,
        (
            _STEP,
            _f("name", "str", "the step's name (its id when it has none)"),
            _TYPE,
            _f("attempt", "int", "the attempt's number, from 1"),
            _f("parent", "str", "the enclosing control step's id", nullable=True),
        ),
    ),
    EventSpec(
        "step.retrying",
        "An attempt failed and the step will be tried again after `delay_seconds`.",
        RUNNER,
        (
            _STEP,
            _f("attempt", "int", "the attempt that failed"),
            _f("delay_seconds", "float", "the backoff before the next attempt"),
            _f("error", "str", "why the attempt failed", nullable=True),
        ),
    ),
    EventSpec(
        "step.completed",
        "A step succeeded.",
        RUNNER,
        _OUTCOME_FIELDS,
    ),
    EventSpec(
        "step.failed",
        "A step failed (a policy denial included).",
        RUNNER,
        _OUTCOME_FIELDS,
    ),
    EventSpec(
        "step.timed_out",
        "A step exceeded its `timeout_seconds` (or the run its `max_runtime_seconds`).",
        RUNNER,
        _OUTCOME_FIELDS,
    ),
    EventSpec(
        "step.awaiting_approval",
        "An `apply_diff` step waits for an approval; the run pauses.",
        RUNNER,
        _OUTCOME_FIELDS,
    ),
    EventSpec(
        "step.cancelled",
        "A step was stopped by a cancel (with the outcome fields), or never started because "
        "the run was stopping or out of time (with `reason` instead).",
        RUNNER,
        (
            _STEP,
            _TYPE,
            _opt("status", "str", "`cancelled` (a step that was stopped)"),
            _opt("conclusion", "str", "`cancelled` (a step that was stopped)"),
            *(
                FieldSpec(f.name, f.type, f.description, False, f.nullable)
                for f in _OUTCOME_FIELDS[4:]
            ),
            _opt("reason", "str", "why it never started"),
            _opt("parent", "str", "the enclosing control step's id (never started)", nullable=True),
        ),
    ),
    EventSpec(
        "step.skipped",
        "A step did not run: its condition was false, an earlier step failed, or its branch "
        "was not taken.",
        RUNNER,
        (
            _STEP,
            _TYPE,
            _f("reason", "str", "why it was skipped"),
            _f("parent", "str", "the enclosing control step's id", nullable=True),
        ),
    ),
    EventSpec(
        "step.kept",
        "On resume, a step that succeeded in an earlier attempt is kept, not run again.",
        RUNNER,
        (_STEP, _f("reason", "str", "why it is kept")),
    ),
    EventSpec(
        "artifacts.failed",
        "A step's artifacts (or, with `step` null, the run's own files of a run awaiting "
        "approval) could not be copied to the storage backend; the local copy is intact and "
        "the run goes on.",
        RUNNER,
        (
            _f("step", "str", "the step's id; null for the run's own files", nullable=True),
            _f("error", "str", "the storage error"),
        ),
    ),
    # -- storage.* -------------------------------------------------------------------------
    EventSpec(
        "storage.archived",
        "A run was archived in the storage backend: every file of its run directory, then the "
        "manifest `<run_id>/archive.json` (at completion with `storage.archive_on_completion`, "
        "or by `bcce workflow archive`).",
        STORAGE,
        (
            _f("location", "str", "where the archive is, e.g. `s3://bucket/prefix/RUN_ID`"),
            _f("files", "int", "files in the archive (the manifest not counted)"),
            _f("bytes", "int", "their total size"),
            _f("uploaded", "int", "files stored this time (the others were there already)"),
        ),
    ),
    EventSpec(
        "storage.archive_failed",
        "Archiving a run failed; its run directory is intact (`bcce workflow archive RUN_ID` "
        "tries again). The run's own outcome is unchanged.",
        STORAGE,
        (_f("error", "str", "the storage error"),),
    ),
    # -- policy.* --------------------------------------------------------------------------
    EventSpec(
        "policy.decision",
        "A policy decision: a `cmd` step's command (`kind: command`), or a tool call of an "
        "agent step (`kind: tool`, one per hook decision).",
        f"{CMD}; {AGENT}",
        (
            _STEP,
            _f("kind", "str", "`command` or `tool`"),
            _f("allowed", "bool", "whether it was allowed"),
            _f(
                "rule",
                "str",
                "the rule that decided (`cmd.allowlist`, `path.outside_workspace`...)",
                nullable=True,
            ),
            _f("reason", "str", "the decision in words", nullable=True),
            _f(
                "layer", "str", "the policy layer that decided (`policy`, `hook`...)", nullable=True
            ),
            _opt("subject", "str", "`command`: the command line"),
            _opt("tool", "str", "`tool`: the tool's name", nullable=True),
            _opt("tool_use_id", "str", "`tool`: the tool call's id", nullable=True),
            _opt("input", "any", "`tool`: the tool call's input (redacted, truncated)"),
        ),
    ),
    EventSpec(
        "policy.denied",
        "A policy denied something: an agent step's tool call (by the tool set or the hook), its "
        "change set (`layer: audit`), or a cmd step's command (`kind: command`). Every denial "
        "is one `policy.denied` (tool and command denials also have their `policy.decision`).",
        f"{AGENT}; {CMD}",
        (
            _STEP,
            _f("rule", "str", "the rule that denied it", nullable=True),
            _f("reason", "str", "why", nullable=True),
            _f("layer", "str", "`hook` (or the deciding layer) or `audit`", nullable=True),
            _opt("tool", "str", "the denied tool (hook denials)", nullable=True),
            _opt("kind", "str", "`command` for a cmd step's command"),
            _opt("subject", "str", "the denied command (redacted)"),
        ),
    ),
    EventSpec(
        "policy.isolation",
        "The OS sandbox tier an agent step gets, probed before it starts.",
        AGENT,
        (
            _STEP,
            _f("strict", "bool", "`policy.strict`: refuse to run without a sandbox"),
            _f("sandboxed", "bool", "whether Claude Code's Bash sandbox is on for the step"),
            _f("tier", "str", "the sandbox tier found (`bubblewrap` or `none`)"),
            _f("reason", "str", "why that tier"),
            _f("bwrap", "str", "the bubblewrap binary", nullable=True),
            _f("socat", "str", "the socat binary", nullable=True),
            _f("claude_code_ready", "bool", "whether Claude Code's sandbox can run here"),
        ),
    ),
    # -- agent.*, cost.*, budget.* ---------------------------------------------------------
    EventSpec(
        "agent.tool_result",
        "A tool call of an agent step returned (from the session's transcript).",
        AGENT,
        (
            _STEP,
            _f("tool_use_id", "str", "the tool call's id"),
            _f("tool", "str", "the tool's name (`?` if the call was not seen)"),
            _f("is_error", "bool", "whether the tool reported an error"),
        ),
    ),
    EventSpec(
        "cost.recorded",
        "An agent or prompt step attempt's usage, from Claude Code's result message.",
        f"{AGENT}; {SPEND}",
        (
            _WORKFLOW,
            _STEP,
            _f("attempt", "int", "the attempt"),
            _f("team", "str", "`core.team`", nullable=True),
            _f("project", "str", "`core.project`", nullable=True),
            _f("model", "str", "the step's model"),
            _f(
                "total_cost_usd",
                "float",
                "the session's cost in US dollars (null: no result message)",
                nullable=True,
            ),
            _f("input_tokens", "int", "input tokens"),
            _f("output_tokens", "int", "output tokens"),
            _f("cache_read_input_tokens", "int", "input tokens read from the prompt cache"),
            _f("cache_creation_input_tokens", "int", "input tokens written to the prompt cache"),
            _f(
                "model_usage",
                "object",
                "per model: `input_tokens`, `output_tokens`, `cache_*_input_tokens`, `cost_usd`",
            ),
        ),
    ),
    EventSpec(
        "budget.exceeded",
        "A step was refused or stopped for a budget (`max_budget_usd`, `policy.budgets`); "
        "the step fails.",
        SPEND,
        (
            _STEP,
            _f("scope", "str", "`step`, `run` or `team`"),
            _f("limit_usd", "float", "the budget"),
            _f("spent_usd", "float", "spent within the scope"),
            _opt("team", "str", "the team (scope `team`)", nullable=True),
        ),
    ),
    # -- approval.* -----------------------------------------------------------------------
    EventSpec(
        "approval.approved",
        "An `apply_diff` step's change set was approved.",
        APPLY,
        _APPROVAL_FIELDS,
    ),
    EventSpec(
        "approval.rejected",
        "An `apply_diff` step's change set was rejected.",
        APPLY,
        _APPROVAL_FIELDS,
    ),
    EventSpec(
        "approval.pending",
        "An `apply_diff` step's change set waits for an approval.",
        APPLY,
        _APPROVAL_FIELDS,
    ),
    # -- auth.* ---------------------------------------------------------------------------
    EventSpec(
        "auth.failed",
        "A login failed: the configured auth provider could not authenticate who is running "
        "bcce (the command exits 6). Not a run's event: no run is recorded.",
        AUTHZ,
        (
            _f("provider", "str", "the auth provider (`auth.provider`)"),
            _f("error", "str", "why, as the command reports it (never a password or token)"),
        ),
        in_run=False,
    ),
    EventSpec(
        "auth.decision",
        "An authorisation decision (`auth.authorization`), allowed or refused; with "
        "authorisation disabled every action is allowed by rule `authorization disabled`. "
        "Not a run's event (a refused run is never recorded): the run it concerns is the "
        "payload's `run_id`.",
        AUTHZ,
        (
            _f(
                "action",
                "str",
                "`workflow.run`, `workflow.resume`, `workflow.cancel`, `policy.use`, "
                "`approval.give` or `plugin.manage`",
            ),
            _f(
                "subject",
                "str",
                "what it is about: a workflow path, a run, a policy, a step, a plugin",
            ),
            _f("allowed", "bool", "whether it was allowed"),
            _f(
                "rule",
                "str",
                "the rule that decided (`auth.authorization.workflows[0]`, "
                "`auth.authorization.approvals.four_eyes`, `started the run`, `no rule allows "
                "it`...)",
            ),
            _f("reason", "str", "the decision in words"),
            _f("user", "str", "who asked (for `approval.give`: who approved)"),
            _f("groups", "list[str]", "their groups"),
            _f("provider", "str", "the auth provider that vouched for them (or the integration)"),
            _opt("run_id", "str", "the run it concerns"),
            _opt("step", "str", "the step it concerns (`policy.use`, `approval.give`)"),
            _opt("workflow", "str", "`workflow.*`: the workflow's name"),
            _opt("path", "str", "`workflow.*`: its path relative to the working directory"),
            _opt("absolute", "str", "`workflow.*`: its absolute path, symbolic links resolved"),
            _opt("preset", "str", "`policy.use`: the preset the step's policy names"),
            _opt(
                "looser_than_default",
                "list[str]",
                "`policy.use`: what the policy allows beyond `policy.default` (empty: nothing)",
            ),
            _opt(
                "looser_than_preset",
                "list[str]",
                "`policy.use`: what it allows beyond its preset",
            ),
            _opt("via", "str", "`approval.give`: how the approval came"),
            _opt(
                "started_by",
                "str",
                "`approval.give`, `workflow.cancel`: who started the run (`provider:user`)",
            ),
            _opt("operation", "str", "`plugin.manage`: `enable`, `disable` or `reload`"),
        ),
        in_run=False,
    ),
    # -- plugin.* -------------------------------------------------------------------------
    EventSpec(
        "plugin.call",
        "A step of a plugin's step type calls the plugin.",
        HOST,
        (
            _STEP,
            _f("plugin", "str", "the plugin's name"),
            _f("version", "str", "the plugin's version"),
            _f("type", "str", "the step type"),
            _f("tier", "str", "the isolation tier", nullable=True),
            _f("mechanism", "str", "the isolation mechanism", nullable=True),
        ),
    ),
    EventSpec(
        "plugin.registered",
        "A plugin is prepared and its step types (if any) are registered.",
        MANAGER,
        (*_PLUGIN_FIELDS, _f("provides", "list[str]", "what it provides")),
        in_run=False,
    ),
    EventSpec(
        "plugin.started",
        "A plugin's worker (or in-process instance) started and was configured.",
        HOST,
        (*_PLUGIN_FIELDS, _ISOLATION),
        in_run=False,
    ),
    EventSpec(
        "plugin.restarted",
        "A plugin's worker started again (after a crash or an idle stop).",
        HOST,
        (*_PLUGIN_FIELDS, _ISOLATION),
        in_run=False,
    ),
    EventSpec(
        "plugin.loaded",
        "A plugin was loaded (`bcce plugin load`) or reloaded and is healthy.",
        MANAGER,
        (
            *_PLUGIN_FIELDS,
            _ISOLATION,
            _opt("reloaded", "bool", "true for a reload"),
            _opt("previous", "str", "the version it replaced (a reload)", nullable=True),
        ),
        in_run=False,
    ),
    EventSpec(
        "plugin.unloaded",
        "A plugin was unloaded (it closes once the runs using it finish).",
        MANAGER,
        _PLUGIN_FIELDS,
        in_run=False,
    ),
    EventSpec(
        "plugin.failed",
        "A plugin failed to load or reload (on reload the old version keeps serving).",
        MANAGER,
        (
            _f("name", "str", "the plugin's name"),
            _f("error", "str", "what went wrong, with its hint"),
            _opt("version", "str", "the version that failed", nullable=True),
            _opt("kept", "str", "a reload: the version still serving", nullable=True),
        ),
        in_run=False,
    ),
    EventSpec(
        "plugin.health",
        "A plugin's health check; the payload also carries the plugin's own health report.",
        MANAGER,
        (
            *_PLUGIN_FIELDS,
            _f("ok", "bool", "whether it is healthy"),
            _f("ms", "float", "how long the check took"),
            _opt("error", "str", "why it is not healthy"),
        ),
        in_run=False,
        open=True,
    ),
    # -- events.* (the bus itself) --------------------------------------------------------
    EventSpec(
        "events.subscriber_failed",
        "A subscriber raised on an event (or an async one ran past the bound). The publisher "
        "and the other subscribers are unaffected.",
        BUS,
        (*_SUBSCRIBER_FIELDS, _f("error", "str", "the exception: `Type: message`")),
        in_run=False,
    ),
    EventSpec(
        "events.subscriber_slow",
        "A subscriber took longer than `events.subscriber_timeout_seconds` on one event. "
        "Published once per subscriber.",
        BUS,
        (
            *_SUBSCRIBER_FIELDS,
            _f("mode", "str", "the subscriber's delivery mode now (`inline` or `queued`)"),
            _f("seconds", "float", "how long the call took (or has taken so far)"),
            _f("bound_seconds", "float", "`events.subscriber_timeout_seconds`"),
            _f(
                "action",
                "str",
                "`queued`: an inline subscriber moved to a queue of its own; `not waited for`: "
                "a flush stopped waiting for a hung call; `none`: a queued call was slow",
            ),
        ),
        in_run=False,
    ),
)

_BY_TYPE = {spec.type: spec for spec in CATALOGUE}


def spec(event_type: str) -> EventSpec | None:
    """The catalogue entry of ``event_type``, None if it has none."""
    return _BY_TYPE.get(event_type)


def event_types() -> list[str]:
    """Every event type in the catalogue, in catalogue order."""
    return [spec.type for spec in CATALOGUE]


def problems(event_type: str, payload: Mapping[str, Any], run_id: str | None = None) -> list[str]:
    """What is wrong with an event against the catalogue (nothing: an empty list)."""
    entry = _BY_TYPE.get(event_type)
    if entry is None:
        return [f"{event_type}: not in the event catalogue (bcce/events/catalogue.py)"]
    return entry.problems(payload, run_id)


# -- the docs ---------------------------------------------------------------------------------
def _type_text(field: FieldSpec) -> str:
    return f"`{field.type}` or null" if field.nullable else f"`{field.type}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(catalogue: Sequence[EventSpec] = CATALOGUE) -> str:
    """The catalogue as Markdown: an index table, then each event's fields (no H2 heading)."""
    lines = [
        "| event | in a run | published by | when |",
        "|---|---|---|---|",
    ]
    for entry in catalogue:
        lines.append(
            f"| [`{entry.type}`](#{_anchor(entry.type)}) | {'yes' if entry.in_run else 'no'} "
            f"| {_cell(entry.publisher)} | {_cell(entry.description)} |"
        )
    for entry in catalogue:
        lines += ["", f"### `{entry.type}`", "", entry.description, ""]
        run = "yes (`run_id` is the run's)" if entry.in_run else "no (`run_id` is null)"
        lines.append(f"Published by: {entry.publisher}. In a run: {run}.")
        if entry.open:
            lines.append("The payload may carry further fields.")
        lines += ["", "| field | type | required | description |", "|---|---|---|---|"]
        for field in entry.fields:
            lines.append(
                f"| `{field.name}` | {_cell(_type_text(field))} "
                f"| {'yes' if field.required else 'no'} | {_cell(field.description)} |"
            )
    return "\n".join(lines) + "\n"


def _anchor(event_type: str) -> str:
    # GitHub's heading anchors: lower case, punctuation other than - and _ dropped.
    return "".join(c for c in event_type.lower() if c.isalnum() or c in "-_")


def docs_section(text: str) -> str:
    """The text between the :data:`MARKERS` of a document (ValueError if they are missing)."""
    start, end = MARKERS
    try:
        _, rest = text.split(start, 1)
        body, _ = rest.split(end, 1)
    except ValueError:
        raise ValueError(f"the document has no {start} ... {end} section") from None
    return body.strip("\n") + "\n"


def with_docs_section(text: str, catalogue: Sequence[EventSpec] = CATALOGUE) -> str:
    """``text`` with the section between the :data:`MARKERS` replaced by the catalogue."""
    start, end = MARKERS
    docs_section(text)  # both markers are there
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{render_markdown(catalogue)}{end}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bcce.events.catalogue [--write FILE]``: print, or rewrite FILE's section."""
    parser = argparse.ArgumentParser(description="bcce's event catalogue as Markdown")
    parser.add_argument("--write", type=Path, help="rewrite the catalogue section of this file")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(render_markdown())
        return 0
    from bcce.core.durable import atomic_write_bytes

    text = args.write.read_text(encoding="utf-8")
    atomic_write_bytes(args.write, with_docs_section(text).encode("utf-8"), fsync=False)
    return 0


__all__ = [
    "CATALOGUE",
    "MARKERS",
    "TYPES",
    "EventSpec",
    "FieldSpec",
    "docs_section",
    "event_types",
    "main",
    "problems",
    "render_markdown",
    "spec",
    "with_docs_section",
]

if __name__ == "__main__":
    sys.exit(main())
