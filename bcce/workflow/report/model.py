"""The run report's model: what happened in one run, gathered from its run directory.

Everything comes from what the run already recorded, and redacted, as it ran: the run state
(through the run-state store), ``events.jsonl`` (each event's time and ``seq``) and each step's
artifact folder. A missing or damaged file leaves its part of the report empty: runs that are
still running, were interrupted, or were written by an older bcce get a report of what there is.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bcce.errors import BcceError
from bcce.workflow.model import CONTROL_TYPES
from bcce.workflow.state import RunState, RunStateStore

#: How much of a diff, and of a step's output, the report holds (the artifact links have all).
DIFF_MAX_BYTES = 512 * 1024
DIFF_MAX_LINES = 5000
TAIL_MAX_LINES = 40
TAIL_MAX_BYTES = 8 * 1024
OUTPUT_VALUE_MAX_CHARS = 500
SUBJECT_MAX_CHARS = 300

#: The run's own files the report links to (the report itself is not one of them).
RUN_FILES = ("run.json", "journal.jsonl", "events.jsonl", "junit.xml")

#: The event that ends an attempt, and the status that attempt ended with.
_ENDING = {
    "step.completed": "succeeded",
    "step.failed": "failed",
    "step.timed_out": "timed_out",
    "step.cancelled": "cancelled",
    "step.awaiting_approval": "awaiting_approval",
    "step.retrying": "retried",
}
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")


@dataclass
class Segment:
    """One attempt of a step on the time axis: retries and re-runs are separate segments."""

    attempt: int
    status: str  # how the attempt ended: a step status, "retried", "running" or "interrupted"
    started_at: str
    finished_at: str
    offset_seconds: float  # from the start of the timeline
    duration_seconds: float
    open: bool = False  # no event ended it: the step is running, or its driver died
    error: str | None = None


@dataclass
class Decision:
    """A policy decision about one tool call (agent steps) or one command (cmd steps)."""

    kind: str  # "tool" or "command"
    subject: str
    allowed: bool
    tool: str | None = None
    rule: str | None = None
    reason: str | None = None
    layer: str | None = None
    time: str | None = None
    offset_seconds: float | None = None


@dataclass
class Usage:
    """Model usage of an agent or prompt step: every attempt's cost and tokens added up."""

    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    model: str | None = None
    turns: int | None = None
    records: int = 0  # cost.recorded events counted; 0 when usage.json was the source


@dataclass
class Approval:
    verdict: str
    by: str | None = None
    via: str | None = None
    reason: str | None = None
    steps: list[str] = field(default_factory=list)


@dataclass
class Diff:
    """A patch a step produced: ``applied``, ``rejected``, ``proposed`` (waiting for approval)
    or ``changes`` (an agent step's change set)."""

    kind: str
    path: str  # relative to the run directory
    text: str
    files: list[str] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    truncated: bool = False


@dataclass
class Artifact:
    name: str  # relative to the step's folder (or the run directory for run files)
    path: str  # relative to the run directory, '/'-separated
    size: int


@dataclass
class Tail:
    """The end of a step's output file."""

    name: str
    text: str
    truncated: bool


@dataclass
class StepReport:
    id: str
    name: str
    type: str
    status: str
    depth: int = 0
    parent: str | None = None
    branch: str | None = None  # "then"/"else" for the children of a conditional step
    control: bool = False
    conclusion: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    attempts: int = 0
    exit_code: int | None = None
    error: str | None = None
    reason: str | None = None  # why it was skipped, cancelled or is pending
    denied: bool = False
    kept: bool = False  # succeeded before a resume, so not run again
    budget_notes: list[str] = field(default_factory=list)  # budget.exceeded for this step
    segments: list[Segment] = field(default_factory=list)
    skipped_offset_seconds: float | None = None  # when it was skipped or cancelled unstarted
    decisions: list[Decision] = field(default_factory=list)
    usage: Usage | None = None
    approval: Approval | None = None
    diffs: list[Diff] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    tails: list[Tail] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)

    @property
    def denials(self) -> list[Decision]:
        return [d for d in self.decisions if not d.allowed]

    @property
    def retries(self) -> int:
        return sum(1 for s in self.segments if s.status == "retried")


@dataclass
class RunReport:
    run_id: str
    workflow: str
    workflow_path: str | None
    status: str  # the effective status: "interrupted" for a run nobody drives any more
    phase: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_seconds: float | None
    error: str | None
    resumes: int
    generated_at: str
    run_dir: str
    timeline_start: str | None = None
    timeline_seconds: float = 0.0
    resume_offsets: list[float] = field(default_factory=list)
    steps: list[StepReport] = field(default_factory=list)
    files: list[Artifact] = field(default_factory=list)

    @property
    def total_cost_usd(self) -> float | None:
        costs = [s.usage.cost_usd for s in self.steps if s.usage and s.usage.cost_usd is not None]
        return round(sum(costs), 10) if costs else None

    @property
    def total_tokens(self) -> tuple[int, int] | None:
        used = [s.usage for s in self.steps if s.usage is not None]
        if not used:
            return None
        return sum(u.input_tokens or 0 for u in used), sum(u.output_tokens or 0 for u in used)

    @property
    def denials(self) -> int:
        return sum(len(s.denials) for s in self.steps)

    def step(self, step_id: str) -> StepReport:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for step in self.steps:
            if not step.control:
                counts[step.status] = counts.get(step.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["format"] = "bcce.run-report/1"
        data["total_cost_usd"] = self.total_cost_usd
        tokens = self.total_tokens
        data["total_tokens"] = None if tokens is None else {"input": tokens[0], "output": tokens[1]}
        data["denials"] = self.denials
        for step, row in zip(self.steps, data["steps"], strict=True):
            row["retries"] = step.retries
            row["denials"] = len(step.denials)
        return data


# -- building -----------------------------------------------------------------------------------
def build_report(
    store: RunStateStore, run_id: str, *, now: datetime.datetime | None = None
) -> RunReport:
    """The report of run ``run_id``; an unknown run raises the store's :class:`UsageError`."""
    state = store.load(run_id)
    run_dir = store.run_dir(run_id)
    moment = now or datetime.datetime.now(datetime.UTC)
    status: str = state.status
    if status == "running" and not store.is_driven(run_id):
        status = "interrupted"
    events = list(_read_events(run_dir / "events.jsonl"))
    return _Builder(state, run_dir, events, status, moment).build()


class _Builder:
    def __init__(
        self,
        state: RunState,
        run_dir: Path,
        events: list[dict[str, Any]],
        status: str,
        now: datetime.datetime,
    ) -> None:
        self.state = state
        self.run_dir = run_dir
        self.events = events
        self.status = status
        self.now = now
        self.by_step: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            step = (event.get("payload") or {}).get("step")
            if isinstance(step, str):
                self.by_step.setdefault(step, []).append(event)

    def build(self) -> RunReport:
        state = self.state
        start, end = self._bounds()
        report = RunReport(
            run_id=state.run_id,
            workflow=str(state.workflow.get("name") or "?"),
            workflow_path=state.workflow.get("path"),
            status=self.status,
            phase=state.phase,
            created_at=state.created_at,
            started_at=state.started_at,
            finished_at=state.finished_at,
            duration_seconds=self._run_duration(end),
            error=state.error,
            resumes=state.resumes,
            generated_at=_iso(self.now),
            run_dir=str(self.run_dir),
            timeline_start=_iso(start) if start else None,
            timeline_seconds=_seconds(start, end) if start and end else 0.0,
        )
        segments, skipped, resumed = self._timeline(start, end)
        report.resume_offsets = resumed
        structure = self._structure()
        ids = list(state.order) + [s for s in state.steps if s not in state.order]
        for step_id in ids:
            info = state.steps.get(step_id, {})
            parent, branch, name = structure.get(step_id, (None, None, None))
            step = StepReport(
                id=step_id,
                # The name the run used (variables substituted, redacted), else the file's.
                name=self._started_name(step_id) or name or step_id,
                type=str(info.get("type") or self._started_type(step_id) or "?"),
                status=str(info.get("status") or "pending"),
                parent=parent,
                branch=branch,
                conclusion=info.get("conclusion"),
                started_at=info.get("started_at"),
                finished_at=info.get("finished_at"),
                duration_seconds=_number(info.get("duration_seconds")),
                attempts=int(info.get("attempts") or 0),
                exit_code=info.get("exit_code") if isinstance(info.get("exit_code"), int) else None,
                error=info.get("error") or None,
                reason=info.get("reason") or None,
                denied=bool(info.get("denied")),
                kept=any(e.get("type") == "step.kept" for e in self.by_step.get(step_id, [])),
                segments=segments.get(step_id, []),
                skipped_offset_seconds=skipped.get(step_id),
                outputs=_outputs(info.get("outputs")),
            )
            if self.status == "interrupted" and step.status in ("running", "retrying"):
                step.status = "interrupted"  # its driver is gone: it is not running any more
            step.control = step.type in CONTROL_TYPES
            if step.control:
                step.attempts = step.attempts or len(step.segments)
            if step.duration_seconds is None and step.segments:
                step.duration_seconds = round(sum(s.duration_seconds for s in step.segments), 6)
            self._fill_artifacts(step, start)
            report.steps.append(step)
        _set_depths(report.steps)
        report.files = [
            Artifact(name, name, (self.run_dir / name).stat().st_size)
            for name in RUN_FILES
            if (self.run_dir / name).is_file()
        ]
        return report

    # -- the run ------------------------------------------------------------------------------
    def _bounds(self) -> tuple[datetime.datetime | None, datetime.datetime | None]:
        times = [t for t in (_parse_time(e.get("time")) for e in self.events) if t is not None]
        start = _parse_time(self.state.started_at) or (min(times) if times else None)
        if self.status == "running":
            end: datetime.datetime | None = self.now
        else:
            end = _parse_time(self.state.finished_at) if self.status != "interrupted" else None
            end = end or (max(times) if times else None)
        if start is not None and times:
            start = min(start, *times)
            end = max(end or start, *times)
        return start, end

    def _run_duration(self, end: datetime.datetime | None) -> float | None:
        started = _parse_time(self.state.started_at)
        if started is None:
            return None
        finished = _parse_time(self.state.finished_at)
        if self.status in ("running", "interrupted") or finished is None:
            finished = end
        return round(_seconds(started, finished), 3) if finished else None

    def _timeline(
        self, start: datetime.datetime | None, end: datetime.datetime | None
    ) -> tuple[dict[str, list[Segment]], dict[str, float], list[float]]:
        """Each step's attempts as segments, when unstarted steps were skipped, and resumes."""
        segments: dict[str, list[Segment]] = {}
        skipped: dict[str, float] = {}
        resumed: list[float] = []
        if start is None:
            return segments, skipped, resumed
        open_: dict[str, tuple[int, datetime.datetime]] = {}
        previous = start

        def close(step: str, at: datetime.datetime, status: str, error: Any = None) -> None:
            attempt, began = open_.pop(step)
            segments.setdefault(step, []).append(
                Segment(
                    attempt=attempt,
                    status=status,
                    started_at=_iso(began),
                    finished_at=_iso(at),
                    offset_seconds=round(_seconds(start, began), 6),
                    duration_seconds=round(max(0.0, _seconds(began, at)), 6),
                    open=status in ("running", "interrupted"),
                    error=error if isinstance(error, str) and error else None,
                )
            )

        for event in self.events:
            kind = event.get("type")
            payload = event.get("payload") or {}
            at = _parse_time(event.get("time")) or previous
            step = payload.get("step")
            if kind == "workflow.started" and payload.get("resumed"):
                # The previous driver died or paused: what it left running ended with it.
                for left in list(open_):
                    close(left, previous, "interrupted")
                resumed.append(round(_seconds(start, at), 6))
            elif kind == "step.started" and isinstance(step, str):
                if step in open_:
                    close(step, previous, "interrupted")
                attempt = payload.get("attempt")
                open_[step] = (attempt if isinstance(attempt, int) else 1, at)
            elif kind in _ENDING and isinstance(step, str):
                if step in open_:
                    close(step, at, _ENDING[kind], payload.get("error"))
                elif kind == "step.cancelled":  # cancelled before it started
                    skipped[step] = round(_seconds(start, at), 6)
            elif kind == "step.skipped" and isinstance(step, str):
                skipped[step] = round(_seconds(start, at), 6)
            elif kind == "workflow.cancelled":
                for left in list(open_):
                    close(left, previous, "interrupted")
            previous = at
        for left in list(open_):
            if self.status == "running":
                close(left, end or previous, "running")
            else:
                close(left, previous, "interrupted")
        for rows in segments.values():
            rows.sort(key=lambda s: s.offset_seconds)
        return segments, skipped, resumed

    # -- structure ----------------------------------------------------------------------------
    def _structure(self) -> dict[str, tuple[str | None, str | None, str | None]]:
        """Each step's parent, branch and name: from the workflow file if it is the one the run
        ran (its digest matches), else what the step.started events say."""
        found: dict[str, tuple[str | None, str | None, str | None]] = {}
        for step_id, events in self.by_step.items():
            for event in events:
                payload = event.get("payload") or {}
                if event.get("type") == "step.started":
                    parent = payload.get("parent")
                    found[step_id] = (parent if isinstance(parent, str) else None, None, None)
        found.update(self._file_structure())
        return found

    def _file_structure(self) -> dict[str, tuple[str | None, str | None, str | None]]:
        from bcce.core.strict_yaml import load_yaml
        from bcce.workflow.loader import WORKFLOW_LIMITS

        path = self.state.workflow.get("path")
        digest = self.state.workflow.get("digest")
        if not path or not digest:
            return {}
        try:
            raw = Path(path).read_bytes()
            if hashlib.sha256(raw).hexdigest() != digest:
                return {}
            document = load_yaml(raw, source=str(path), limits=WORKFLOW_LIMITS)
        except (OSError, BcceError):
            return {}
        found: dict[str, tuple[str | None, str | None, str | None]] = {}

        def visit(steps: Any, parent: str | None, branch: str | None) -> None:
            if not isinstance(steps, list):
                return
            for item in steps:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    continue
                name = item.get("name")
                found[item["id"]] = (parent, branch, name if isinstance(name, str) else None)
                visit(item.get("steps"), item["id"], None)
                visit(item.get("then"), item["id"], "then")
                visit(item.get("else"), item["id"], "else")

        data = document.data
        if isinstance(data, dict):
            visit(data.get("steps"), None, None)
        return found

    def _started_name(self, step_id: str) -> str | None:
        for event in self.by_step.get(step_id, []):
            name = (event.get("payload") or {}).get("name")
            if event.get("type") == "step.started" and isinstance(name, str):
                return name
        return None

    def _started_type(self, step_id: str) -> str | None:
        for event in self.by_step.get(step_id, []):
            kind = (event.get("payload") or {}).get("type")
            if isinstance(kind, str):
                return kind
        return None

    # -- a step's files -----------------------------------------------------------------------
    def _fill_artifacts(self, step: StepReport, start: datetime.datetime | None) -> None:
        folder = self.run_dir / step.id
        events = self.by_step.get(step.id, [])
        step.decisions = _decisions(folder / "decisions.jsonl", events, start)
        step.usage = _usage(folder / "usage.json", events)
        step.approval = _approval(folder / "approval.json", events)
        step.diffs = _diffs(folder, step.id)
        step.tails = [
            tail
            for name in ("output.txt", "error.txt")
            if (tail := _tail(folder / name)) is not None
        ]
        step.artifacts = list(_artifacts(self.run_dir, folder))
        step.budget_notes = [
            _budget_note(e["payload"]) for e in events if e.get("type") == "budget.exceeded"
        ]


# -- reading files ------------------------------------------------------------------------------
def _read_events(path: Path) -> Iterator[dict[str, Any]]:
    rows = []
    for index, record in enumerate(_json_lines(path)):
        if not isinstance(record.get("payload"), dict):
            record["payload"] = {}
        seq = record.get("seq")
        rows.append((seq if isinstance(seq, int) else index, index, record))
    rows.sort(key=lambda row: (row[0], row[1]))
    for _, _, record in rows:
        yield record


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; a torn or damaged line is left out."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _decisions(
    path: Path, events: list[dict[str, Any]], start: datetime.datetime | None
) -> list[Decision]:
    """decisions.jsonl for agent steps (every attempt's), else the step's policy events."""
    records = [("tool", r) for r in _json_lines(path)]
    if not records:
        records = [
            (str(e["payload"].get("kind") or "tool"), {**e["payload"], "time": e.get("time")})
            for e in events
            if e.get("type") == "policy.decision"
        ]
    if not records:  # runs recorded before policy.decision events existed
        records = [
            ("tool" if e["payload"].get("tool") else "command", {**e["payload"], "allowed": False})
            for e in events
            if e.get("type") == "policy.denied"
        ]
    decisions = []
    for kind, record in records:
        moment = _parse_time(record.get("time"))
        decisions.append(
            Decision(
                kind=kind,
                subject=_subject(record),
                allowed=bool(record.get("allowed")),
                tool=_text(record.get("tool")),
                rule=_text(record.get("rule")),
                reason=_text(record.get("reason")),
                layer=_text(record.get("layer")),
                time=_iso(moment) if moment else None,
                offset_seconds=round(_seconds(start, moment), 6) if start and moment else None,
            )
        )
    return decisions


def _subject(record: Mapping[str, Any]) -> str:
    subject = record.get("subject")
    if isinstance(subject, str):
        return _cap(subject, SUBJECT_MAX_CHARS)
    data = record.get("input")
    if isinstance(data, dict):
        for key in ("command", "file_path", "path", "notebook_path", "pattern", "url"):
            if isinstance(data.get(key), str):
                return _cap(data[key], SUBJECT_MAX_CHARS)
        return _cap(json.dumps(data, sort_keys=True, default=str), SUBJECT_MAX_CHARS)
    return "" if data is None else _cap(str(data), SUBJECT_MAX_CHARS)


def _usage(path: Path, events: list[dict[str, Any]]) -> Usage | None:
    recorded = [e["payload"] for e in events if e.get("type") == "cost.recorded"]
    detail = _json_file(path)
    if not recorded and detail is None:
        return None
    usage = Usage()
    tokens = (detail or {}).get("usage")
    tokens = tokens if isinstance(tokens, dict) else {}
    if detail is not None:
        usage.model = _text(detail.get("model"))
        usage.turns = _integer(detail.get("num_turns"))
        usage.cost_usd = _number(detail.get("total_cost_usd"))
        usage.input_tokens = _integer(tokens.get("input_tokens"))
        usage.output_tokens = _integer(tokens.get("output_tokens"))
        usage.cache_read_tokens = _integer(tokens.get("cache_read_input_tokens"))
        usage.cache_creation_tokens = _integer(tokens.get("cache_creation_input_tokens"))
    if recorded:
        # One cost.recorded per attempt; usage.json holds only the last attempt's.
        usage.records = len(recorded)
        usage.cost_usd = _sum(p.get("total_cost_usd") for p in recorded)
        usage.input_tokens = _sum_int(p.get("input_tokens") for p in recorded)
        usage.output_tokens = _sum_int(p.get("output_tokens") for p in recorded)
        for key, attribute in (
            ("cache_read_input_tokens", "cache_read_tokens"),
            ("cache_creation_input_tokens", "cache_creation_tokens"),
        ):
            if any(key in p for p in recorded):
                setattr(usage, attribute, _sum_int(p.get(key) for p in recorded))
        usage.model = usage.model or _text(recorded[-1].get("model"))
    return usage


def _budget_note(payload: Mapping[str, Any]) -> str:
    scope = str(payload.get("scope") or "?")
    team = f" of team {payload['team']}" if payload.get("team") else ""
    limit, spent = _number(payload.get("limit_usd")), _number(payload.get("spent_usd"))
    amounts = f": ${spent or 0:.4f} spent of ${limit or 0:.4f}" if limit is not None else ""
    return f"the {scope} budget{team} was exceeded{amounts}"


def _approval(path: Path, events: list[dict[str, Any]]) -> Approval | None:
    data = _json_file(path)
    if data is None:
        answers = [e for e in events if str(e.get("type", "")).startswith("approval.")]
        if not answers:
            return None
        payload = answers[-1].get("payload") or {}
        data = {**payload, "verdict": str(answers[-1]["type"]).partition(".")[2]}
    steps = data.get("steps")
    return Approval(
        verdict=str(data.get("verdict") or "?"),
        by=_text(data.get("by")),
        via=_text(data.get("via")),
        reason=_text(data.get("reason")) or None,
        steps=[str(s) for s in steps] if isinstance(steps, list) else [],
    )


def _diffs(folder: Path, step_id: str) -> list[Diff]:
    found = []
    present = {name for name in ("applied.patch", "rejected.patch") if (folder / name).is_file()}
    kinds = [("applied.patch", "applied"), ("rejected.patch", "rejected")]
    if not present:  # waiting for approval: what would be applied
        kinds.append(("proposed.patch", "proposed"))
    kinds.append(("changes.patch", "changes"))
    for name, kind in kinds:
        path = folder / name
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        if not raw.strip():
            continue
        truncated = len(raw) > DIFF_MAX_BYTES
        text = raw[:DIFF_MAX_BYTES].decode("utf-8", "replace")
        lines = text.splitlines()
        if len(lines) > DIFF_MAX_LINES:
            lines, truncated = lines[:DIFF_MAX_LINES], True
        whole = raw.decode("utf-8", "replace").splitlines()
        found.append(
            Diff(
                kind=kind,
                path=f"{step_id}/{name}",
                text="\n".join(lines),
                files=_patched_files(whole),
                added=sum(1 for x in whole if x.startswith("+") and not x.startswith("+++")),
                removed=sum(1 for x in whole if x.startswith("-") and not x.startswith("---")),
                truncated=truncated,
            )
        )
    return found


def _patched_files(lines: Iterable[str]) -> list[str]:
    files = []
    for line in lines:
        if line.startswith("diff --git "):
            _, sep, name = line.partition(" b/")
            if sep and name not in files:
                files.append(name)
    return files


def _tail(path: Path) -> Tail | None:
    try:
        size = path.stat().st_size
        if size == 0:
            return None
        with path.open("rb") as handle:
            handle.seek(max(0, size - TAIL_MAX_BYTES))
            raw = handle.read()
    except OSError:
        return None
    text = _ANSI.sub("", raw.decode("utf-8", "replace"))
    lines = text.splitlines()
    truncated = size > TAIL_MAX_BYTES or len(lines) > TAIL_MAX_LINES
    if size > TAIL_MAX_BYTES and lines:
        lines = lines[1:]  # the first line was probably cut in the middle
    return Tail(path.name, "\n".join(lines[-TAIL_MAX_LINES:]), truncated)


def _artifacts(run_dir: Path, folder: Path) -> Iterator[Artifact]:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        # Hidden files are the writers' temporary files, not artifacts.
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        try:
            size = path.stat().st_size
        except OSError:
            continue
        yield Artifact(relative.as_posix(), path.relative_to(run_dir).as_posix(), size)


# -- small helpers ------------------------------------------------------------------------------
def _set_depths(steps: list[StepReport]) -> None:
    parents = {s.id: s.parent for s in steps}
    for step in steps:
        depth, seen, parent = 0, {step.id}, step.parent
        while parent is not None and parent not in seen:
            seen.add(parent)
            depth += 1
            parent = parents.get(parent)
        step.depth = depth


def _outputs(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {
        str(k): _cap(
            v if isinstance(v, str) else json.dumps(v, default=str), OUTPUT_VALUE_MAX_CHARS
        )
        for k, v in value.items()
    }


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds")


def _seconds(start: datetime.datetime, end: datetime.datetime) -> float:
    return (end - start).total_seconds()


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sum(values: Iterable[Any]) -> float | None:
    numbers = [n for n in map(_number, values) if n is not None]
    return round(sum(numbers), 10) if numbers else None


def _sum_int(values: Iterable[Any]) -> int | None:
    numbers = [n for n in map(_integer, values) if n is not None]
    return sum(numbers) if numbers else None
