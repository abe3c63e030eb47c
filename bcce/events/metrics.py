"""Metrics: the catalogue, the collector protocol, and the subscriber that maps events to metrics.

``events.metrics`` chooses the collector (a Selector): ``log`` (this module), ``prometheus``
(:mod:`bcce.events.prometheus`), ``cloudwatch`` (:mod:`bcce.events.cloudwatch`) or ``otel``
(:mod:`bcce.events.otel`). With ``metrics`` in ``events.subscribers``, a :class:`MetricsSubscriber`
turns the bus's events into measurements on that collector.

The collector protocol
======================

A collector is any object with::

    remote: bool
    def record(self, name: str, value: float, dimensions: Mapping[str, str] | None = None,
               *, unit: Unit | None = None, timestamp: float | None = None) -> None
    def flush(self) -> None
    def close(self) -> None

- ``record`` adds one measurement. ``name`` is a catalogue name (``step.execution.duration``);
  for a counter ``value`` is the increment, for a histogram one observation. ``dimensions``
  holds only the dimensions that are known: a metric's full set is in :data:`CATALOGUE`, and a
  collector that needs a fixed label set (Prometheus) fills the missing ones with ``""``, one
  that does not (CloudWatch) sends only those present. ``unit`` is one of :data:`Unit`; ``None``
  means the catalogue's. ``timestamp`` is when it happened (epoch seconds, the event's), ``None``
  for now. :func:`metric_spec` gives a collector everything it needs about a name (kind, unit,
  dimensions), for names outside the catalogue too. ``record`` must be thread-safe and must not
  raise: a collector logs and counts what it cannot deliver.
- ``flush`` pushes out what is buffered (the subscriber calls it when a run ends); ``close``
  flushes and releases what the collector holds (threads, sockets, servers); both never raise.
- ``remote`` is true when ``record`` or ``flush`` may wait on the network: the subscriber is
  then delivered from its own queue (``mode="queued"``) so a run never waits for it.

The mapping (event -> metric)
=============================

================================  ==========================================================
event                             metrics
================================  ==========================================================
``workflow.started``              none; remembers the run's workflow name (bounded map)
``step.started``                  none; remembers the step's type (for ``step.retrying``)
``step.completed``                ``step.execution.duration``, ``step.execution.completed``
``step.failed``, ``step.timed_out``  ``step.execution.duration``, ``step.execution.failed``
``step.cancelled``                ``step.execution.duration`` (if it ran), ``.cancelled``
``step.awaiting_approval``        ``step.execution.duration``
``step.retrying``                 ``step.execution.retried``
``workflow.completed|failed|cancelled``  ``workflow.execution.duration`` and ``.completed``,
                                  ``.failed`` or ``.cancelled``; then the collector is flushed
``policy.denied``                 ``policy.denials``
``plugin.call``                   ``plugin.calls``
``cost.recorded``                 ``agent.tokens.input``, ``agent.tokens.output``, ``agent.cost``
``budget.exceeded``               ``budget.exceeded``
================================  ==========================================================

Skipped steps (``step.skipped``) and steps kept from an earlier attempt are not measured.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from bcce.core.log import get_logger

if TYPE_CHECKING:
    from bcce.events.bus import Event, Mode

log = get_logger("metrics")

#: Units of measurement; each collector maps them to its own (docs/observability.md).
Unit = Literal["seconds", "count", "tokens", "usd"]
#: ``counter``: a running sum of increments; ``histogram``: a distribution of observations.
Kind = Literal["counter", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name, kind, unit, dimensions, the event(s) it comes from, what it means."""

    name: str
    kind: Kind
    unit: Unit
    dimensions: tuple[str, ...]
    event: str
    description: str


_STEP_DIMS = ("workflow", "step", "type", "status")
_WORKFLOW_DIMS = ("workflow", "status")
_USAGE_DIMS = ("model", "team", "project", "workflow")

#: Every metric the metrics subscriber records, by name.
CATALOGUE: Mapping[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "step.execution.duration",
            "histogram",
            "seconds",
            _STEP_DIMS,
            "step.completed, step.failed, step.timed_out, step.cancelled, step.awaiting_approval",
            "wall-clock time of a step, all its attempts and retry delays included",
        ),
        MetricSpec(
            "step.execution.completed",
            "counter",
            "count",
            _STEP_DIMS,
            "step.completed",
            "steps that succeeded",
        ),
        MetricSpec(
            "step.execution.failed",
            "counter",
            "count",
            _STEP_DIMS,
            "step.failed, step.timed_out",
            "steps that failed or timed out (after their last attempt)",
        ),
        MetricSpec(
            "step.execution.cancelled",
            "counter",
            "count",
            _STEP_DIMS,
            "step.cancelled",
            "steps cancelled, running or before they started",
        ),
        MetricSpec(
            "step.execution.retried",
            "counter",
            "count",
            ("workflow", "step", "type"),
            "step.retrying",
            "retries: attempts after a step's first",
        ),
        MetricSpec(
            "workflow.execution.duration",
            "histogram",
            "seconds",
            _WORKFLOW_DIMS,
            "workflow.completed, workflow.failed, workflow.cancelled",
            "wall-clock time of a run (of this process's part of it, when resumed)",
        ),
        MetricSpec(
            "workflow.execution.completed",
            "counter",
            "count",
            _WORKFLOW_DIMS,
            "workflow.completed",
            "runs that succeeded (status succeeded) or stopped for an approval",
        ),
        MetricSpec(
            "workflow.execution.failed",
            "counter",
            "count",
            _WORKFLOW_DIMS,
            "workflow.failed",
            "runs that failed",
        ),
        MetricSpec(
            "workflow.execution.cancelled",
            "counter",
            "count",
            _WORKFLOW_DIMS,
            "workflow.cancelled",
            "runs that were cancelled",
        ),
        MetricSpec(
            "policy.denials",
            "counter",
            "count",
            ("workflow", "step", "rule", "layer"),
            "policy.denied",
            "actions a policy denied",
        ),
        MetricSpec(
            "plugin.calls",
            "counter",
            "count",
            ("plugin", "type"),
            "plugin.call",
            "calls of plugin step types",
        ),
        MetricSpec(
            "agent.tokens.input",
            "counter",
            "tokens",
            _USAGE_DIMS,
            "cost.recorded",
            "input tokens of agent and prompt steps, from the model's result message",
        ),
        MetricSpec(
            "agent.tokens.output",
            "counter",
            "tokens",
            _USAGE_DIMS,
            "cost.recorded",
            "output tokens of agent and prompt steps, from the model's result message",
        ),
        MetricSpec(
            "agent.cost",
            "counter",
            "usd",
            _USAGE_DIMS,
            "cost.recorded",
            "cost of agent and prompt steps in US dollars (total_cost_usd)",
        ),
        MetricSpec(
            "budget.exceeded",
            "counter",
            "count",
            ("scope",),
            "budget.exceeded",
            "steps stopped or refused for a budget (scope step, run or team)",
        ),
    )
}


def metric_spec(
    name: str, unit: Unit | None = None, dimensions: Mapping[str, str] | None = None
) -> MetricSpec:
    """The catalogue's entry for ``name``, or one derived from a measurement of another name.

    A name outside the catalogue is a histogram when its unit is ``seconds`` and a counter
    otherwise; its dimensions are those of the measurement, sorted.
    """
    spec = CATALOGUE.get(name)
    if spec is not None:
        return spec
    chosen: Unit = unit or "count"
    return MetricSpec(
        name,
        "histogram" if chosen == "seconds" else "counter",
        chosen,
        tuple(sorted(dimensions or {})),
        "",
        "",
    )


@runtime_checkable
class MetricsCollector(Protocol):
    """Where measurements go; see the module docstring for the contract."""

    remote: bool

    def record(
        self,
        name: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
        *,
        unit: Unit | None = None,
        timestamp: float | None = None,
    ) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class LogMetricsCollector:
    """Writes each measurement to the log (at DEBUG) and keeps running totals in memory."""

    remote = False

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(
        self,
        name: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
        *,
        unit: Unit | None = None,
        timestamp: float | None = None,
    ) -> None:
        with self._lock:
            self.totals[name] = self.totals.get(name, 0.0) + value
        log.debug(
            "metric {}={} {} {}",
            name,
            value,
            unit or metric_spec(name).unit,
            dict(dimensions or {}),
        )

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing is held."""


# -- the subscriber ------------------------------------------------------------------------------
_STEP_OUTCOMES = {
    "step.completed": "step.execution.completed",
    "step.failed": "step.execution.failed",
    "step.timed_out": "step.execution.failed",
    "step.cancelled": "step.execution.cancelled",
    "step.awaiting_approval": None,
}
_RUN_OUTCOMES = {
    "workflow.completed": "workflow.execution.completed",
    "workflow.failed": "workflow.execution.failed",
    "workflow.cancelled": "workflow.execution.cancelled",
}
_EVENT_STATUS = {
    "step.completed": "succeeded",
    "step.failed": "failed",
    "step.timed_out": "timed_out",
    "step.cancelled": "cancelled",
    "step.awaiting_approval": "awaiting_approval",
    "workflow.completed": "succeeded",
    "workflow.failed": "failed",
    "workflow.cancelled": "cancelled",
}


class _Run:
    """What the subscriber remembers of a run until it ends: its workflow and step types."""

    __slots__ = ("step_types", "workflow")

    def __init__(self, workflow: str | None) -> None:
        self.workflow = workflow
        self.step_types: dict[str, str] = {}


class MetricsSubscriber:
    """Turns events into measurements on a :class:`MetricsCollector` (the table above).

    Inline for a local collector, queued for a remote one. ``max_runs`` bounds how many runs'
    workflow names it remembers at once (the oldest is forgotten first; a run whose name was
    forgotten is measured without its ``workflow`` dimension).
    """

    name = "metrics"
    patterns: tuple[str, ...] = (
        "workflow.started",
        "workflow.completed",
        "workflow.failed",
        "workflow.cancelled",
        "step.started",
        "step.completed",
        "step.failed",
        "step.timed_out",
        "step.cancelled",
        "step.awaiting_approval",
        "step.retrying",
        "policy.denied",
        "plugin.call",
        "cost.recorded",
        "budget.exceeded",
    )

    def __init__(self, collector: MetricsCollector, *, max_runs: int = 256) -> None:
        self.collector = collector
        self.mode: Mode = "queued" if getattr(collector, "remote", False) else "inline"
        self.max_runs = max_runs
        self._runs: collections.OrderedDict[str, _Run] = collections.OrderedDict()
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        kind = event.type
        payload = event.payload
        if kind in _STEP_OUTCOMES:
            self._step_outcome(event)
        elif kind == "step.started":
            run = self._run(event.run_id)
            if run is not None and payload.get("step") and payload.get("type"):
                with self._lock:
                    run.step_types[str(payload["step"])] = str(payload["type"])
        elif kind == "step.retrying":
            step = _text(payload.get("step"))
            run = self._run(event.run_id)
            dims = {
                "workflow": run.workflow if run else None,
                "step": step,
                "type": run.step_types.get(step or "") if run else None,
            }
            self._record("step.execution.retried", 1, dims, event)
        elif kind == "workflow.started":
            self._remember(event.run_id, _text(payload.get("workflow")))
        elif kind in _RUN_OUTCOMES:
            self._run_outcome(event)
        elif kind == "policy.denied":
            dims = {
                "workflow": self._workflow(event),
                "step": payload.get("step"),
                "rule": payload.get("rule"),
                "layer": payload.get("layer"),
            }
            self._record("policy.denials", 1, dims, event)
        elif kind == "plugin.call":
            dims = {"plugin": payload.get("plugin"), "type": payload.get("type")}
            self._record("plugin.calls", 1, dims, event)
        elif kind == "cost.recorded":
            self._usage(event)
        elif kind == "budget.exceeded":
            self._record("budget.exceeded", 1, {"scope": payload.get("scope")}, event)

    def flush(self) -> None:
        self.collector.flush()

    def close(self) -> None:
        self.collector.close()

    # -- mapping ----------------------------------------------------------------------------
    def _step_outcome(self, event: Event) -> None:
        payload = event.payload
        step = _text(payload.get("step"))
        run = self._run(event.run_id)
        step_type = _text(payload.get("type")) or (run.step_types.get(step or "") if run else None)
        dims = {
            "workflow": run.workflow if run else None,
            "step": step,
            "type": step_type,
            "status": _text(payload.get("status")) or _EVENT_STATUS[event.type],
        }
        duration = _number(payload.get("duration_seconds"))
        if duration is not None:
            self._record("step.execution.duration", duration, dims, event)
        counter = _STEP_OUTCOMES[event.type]
        if counter is not None:
            self._record(counter, 1, dims, event)

    def _run_outcome(self, event: Event) -> None:
        payload = event.payload
        dims = {
            "workflow": self._workflow(event),
            "status": _text(payload.get("status")) or _EVENT_STATUS[event.type],
        }
        duration = _number(payload.get("duration_seconds"))
        if duration is not None:
            self._record("workflow.execution.duration", duration, dims, event)
        self._record(_RUN_OUTCOMES[event.type], 1, dims, event)
        if event.run_id is not None:
            with self._lock:
                self._runs.pop(event.run_id, None)
        # A run is the natural unit of work: its metrics leave the process when it ends.
        self.collector.flush()

    def _usage(self, event: Event) -> None:
        payload = event.payload
        dims = {
            "model": payload.get("model"),
            "team": payload.get("team"),
            "project": payload.get("project"),
            "workflow": self._workflow(event),
        }
        for name, key in (
            ("agent.tokens.input", "input_tokens"),
            ("agent.tokens.output", "output_tokens"),
            ("agent.cost", "total_cost_usd"),
        ):
            value = _number(payload.get(key))
            if value is not None:
                self._record(name, value, dims, event)

    def _record(self, name: str, value: float, dims: Mapping[str, Any], event: Event) -> None:
        present = {key: str(val) for key, val in dims.items() if val is not None and val != ""}
        self.collector.record(
            name, value, present, unit=CATALOGUE[name].unit, timestamp=event.timestamp
        )

    # -- what is remembered of each run -----------------------------------------------------
    def _remember(self, run_id: str | None, workflow: str | None) -> None:
        if run_id is None:
            return
        with self._lock:
            self._runs[run_id] = _Run(workflow)
            self._runs.move_to_end(run_id)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)

    def _run(self, run_id: str | None) -> _Run | None:
        if run_id is None:
            return None
        with self._lock:
            return self._runs.get(run_id)

    def _workflow(self, event: Event) -> str | None:
        named = _text(event.payload.get("workflow"))
        if named:
            return named
        run = self._run(event.run_id)
        return run.workflow if run else None


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _number(value: Any) -> float | None:
    # bool is an int, but a flag is not a measurement; NaN and infinities are not either.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


__all__ = [
    "CATALOGUE",
    "Kind",
    "LogMetricsCollector",
    "MetricSpec",
    "MetricsCollector",
    "MetricsSubscriber",
    "Unit",
    "metric_spec",
]
