"""OpenTelemetry: spans for runs, steps and tool calls, and the ``otel`` metrics collector.

Both read ``events.otel``: the exporter (``otlp`` over HTTP/protobuf to ``endpoint``, or to
where the ``OTEL_EXPORTER_OTLP_*`` variables say when no endpoint is set; ``console`` on
stderr, one JSON document a line; ``memory`` for tests), the resource (``service.name``,
``service.version``, ``bcce.team`` / ``bcce.project`` from ``core``) and, for spans,
X-Ray-compatible trace ids (``xray_ids``). Each owns its providers: the process-wide
OpenTelemetry providers are never set or read, so embedding bcce in an instrumented
application changes nothing there.

Spans are built from the bus's events after the fact, with the events' own timestamps, so the
subscriber may run queued without skewing a single duration:

    workflow <name>                 workflow.started -> workflow.completed|failed|cancelled
    └── step <id>                   step.started -> step.completed|failed|timed_out|... (or
        │                           step.retrying: one span per attempt)
        ├── step <child id>         children of control steps (step.started's ``parent``)
        └── tool <Tool>             policy.decision (kind tool) -> agent.tool_result; a denied
                                    call ends at once, with error status and the rule
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode

from bcce._version import __version__
from bcce.core.log import get_logger
from bcce.events.metrics import metric_spec

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricsData

    from bcce.events.bus import Event, Mode
    from bcce.events.metrics import Unit
    from bcce.settings.model import BcceSettings, OtelSettings

log = get_logger("otel")

INSTRUMENTATION = "bcce"
#: Resumed runs whose last root span is remembered, so the next drive can link to it.
REMEMBERED_RUNS = 256


# -- shared set-up ----------------------------------------------------------------------------
def otel_resource(settings: BcceSettings) -> Resource:
    """The resource every span and metric carries.

    ``Resource.create`` also merges ``OTEL_RESOURCE_ATTRIBUTES`` (the OpenTelemetry
    convention); the attributes set here win over it.
    """
    attributes: dict[str, str] = {
        "service.name": settings.events.otel.service_name,
        "service.version": __version__,
    }
    if settings.core.team:
        attributes["bcce.team"] = settings.core.team
    if settings.core.project:
        attributes["bcce.project"] = settings.core.project
    return Resource.create(attributes)


def signal_endpoint(otel: OtelSettings, signal: str) -> str | None:
    """The OTLP/HTTP URL for ``signal`` (``traces``, ``metrics``) from ``events.otel.endpoint``.

    ``endpoint`` is the base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is; ``None`` leaves the
    choice to the exporter, which follows the ``OTEL_EXPORTER_OTLP_*`` variables.
    """
    if not otel.endpoint:
        return None
    return f"{otel.endpoint.rstrip('/')}/v1/{signal}"


def export_timeout(settings: BcceSettings, signal: str) -> float | None:
    """Seconds an OTLP export may take: ``events.subscriber_timeout_seconds`` (at most 10, the
    OpenTelemetry default) unless an ``OTEL_EXPORTER_OTLP_*TIMEOUT`` variable says otherwise.

    An unreachable collector otherwise holds every bcce command up at exit, retrying.
    """
    names = ("OTEL_EXPORTER_OTLP_TIMEOUT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT")
    if any(os.environ.get(name) for name in names):
        return None
    return min(10.0, settings.events.subscriber_timeout_seconds)


def _one_line_span(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + os.linesep


def _one_line_metrics(data: MetricsData) -> str:
    return str(data.to_json(indent=None)) + os.linesep


def span_processor(
    otel: OtelSettings, timeout: float | None = None
) -> tuple[SpanProcessor, SpanExporter]:
    """The processor and exporter ``events.otel.exporter`` chooses (``timeout``: OTLP's)."""
    if otel.exporter == "memory":
        memory = InMemorySpanExporter()
        return SimpleSpanProcessor(memory), memory
    if otel.exporter == "console":
        # stderr: stdout may be a command's machine-readable output (--json).
        console = ConsoleSpanExporter(out=sys.stderr, formatter=_one_line_span)
        return SimpleSpanProcessor(console), console
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    otlp = OTLPSpanExporter(endpoint=signal_endpoint(otel, "traces"), timeout=timeout)
    # Batched on a thread of its own: exporting never holds up the subscriber's queue.
    return BatchSpanProcessor(otlp), otlp


def metric_reader(otel: OtelSettings, timeout: float | None = None) -> MetricReader:
    """The reader ``events.otel.exporter`` chooses: in memory, or exporting periodically."""
    if otel.exporter == "memory":
        return InMemoryMetricReader()
    interval = int(otel.metric_interval_seconds * 1000)
    if otel.exporter == "console":
        console = ConsoleMetricExporter(out=sys.stderr, formatter=_one_line_metrics)
        return PeriodicExportingMetricReader(console, export_interval_millis=interval)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    otlp = OTLPMetricExporter(endpoint=signal_endpoint(otel, "metrics"), timeout=timeout)
    return PeriodicExportingMetricReader(otlp, export_interval_millis=interval)


def id_generator(otel: OtelSettings) -> Any:
    """X-Ray's trace id format (epoch seconds in the first 8 hex digits) when ``xray_ids``."""
    if otel.xray_ids:
        from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator

        return AwsXRayIdGenerator()
    return None


def _nanos(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


# -- tracing ----------------------------------------------------------------------------------
@dataclass(eq=False)
class _Open:
    """A span not ended yet, and the open spans under it (ended with it when it ends)."""

    span: Span
    key: tuple[str, str] | None
    children: list[_Open] = field(default_factory=list)
    ended: bool = False


@dataclass
class _RunTrace:
    """What the subscriber holds for one run while its spans are open."""

    run_id: str
    workflow: str | None = None
    root: _Open | None = None
    open: dict[tuple[str, str], _Open] = field(default_factory=dict)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


_STEP_END = {
    "step.completed",
    "step.failed",
    "step.timed_out",
    "step.cancelled",
    "step.awaiting_approval",
    "step.skipped",
    "step.kept",
}
_RUN_END = {"workflow.completed", "workflow.failed", "workflow.cancelled"}


class TracingSubscriber:
    """Turns a run's events into OpenTelemetry spans (the ``tracing`` subscriber).

    ``exporter`` is the span exporter; with ``events.otel.exporter: memory`` it is an
    ``InMemorySpanExporter`` whose ``get_finished_spans()`` returns what was traced.
    """

    name = "tracing"
    patterns: tuple[str, ...] = (
        "workflow.*",
        "step.*",
        "policy.decision",
        "agent.tool_result",
        "cost.recorded",
    )
    mode: Mode = "queued"

    def __init__(
        self,
        resource: Resource,
        processor: SpanProcessor,
        exporter: SpanExporter,
        *,
        id_generator: Any = None,
    ) -> None:
        self.exporter = exporter
        self.provider = TracerProvider(
            resource=resource, id_generator=id_generator, shutdown_on_exit=False
        )
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(INSTRUMENTATION, __version__)
        self._runs: dict[str, _RunTrace] = {}
        self._previous: collections.OrderedDict[str, SpanContext] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: BcceSettings) -> TracingSubscriber:
        """The subscriber ``events.otel`` describes."""
        otel = settings.events.otel
        processor, exporter = span_processor(otel, export_timeout(settings, "traces"))
        return cls(otel_resource(settings), processor, exporter, id_generator=id_generator(otel))

    # -- the Subscriber protocol ----------------------------------------------------------------
    def handle(self, event: Event) -> None:
        if event.run_id is None:
            return
        with self._lock:
            if self._closed:
                return
            self._dispatch(event, event.run_id)

    def flush(self) -> None:
        self.provider.force_flush()

    def close(self) -> None:
        """End what is still open (a run that never finished), export it and shut down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            now = _nanos(time.time())
            for run in list(self._runs.values()):
                for record in list(run.open.values()):
                    record.span.set_attribute("bcce.incomplete", True)
                    self._end(run, record, now)
                if run.root is not None:
                    run.root.span.set_attribute("bcce.incomplete", True)
                    self._end(run, run.root, now)
            self._runs.clear()
        self.provider.shutdown()

    # -- events -----------------------------------------------------------------------------
    def _dispatch(self, event: Event, run_id: str) -> None:
        kind, payload = event.type, event.payload
        if kind == "workflow.started":
            self._start_run(event, run_id)
            return
        run = self._runs.get(run_id)
        if run is None:
            if kind != "step.started":
                # Nothing to trace: an event after the run ended (storage.archived), or one of a
                # run whose start this subscriber did not see and that opens no span.
                return
            # A run this subscriber did not see start: traced from its next step on, rootless.
            run = self._runs[run_id] = _RunTrace(run_id, workflow=payload.get("workflow"))
        if kind in _RUN_END:
            self._end_run(event, run)
        elif kind == "step.started":
            self._start_step(event, run)
        elif kind == "step.retrying":
            self._retrying(event, run)
        elif kind in _STEP_END:
            self._end_step(event, run)
        elif kind == "policy.decision":
            self._decision(event, run)
        elif kind == "agent.tool_result":
            self._tool_result(event, run)
        elif kind == "cost.recorded":
            self._cost(event, run)
        elif run.root is not None:
            # workflow.phase and the like: moments in the run, not spans of their own.
            run.root.span.add_event(kind, _attributes(payload), timestamp=_nanos(event.timestamp))

    def _start_run(self, event: Event, run_id: str) -> None:
        previous = self._runs.pop(run_id, None)
        if previous is not None:  # a run that started again without ending: close the old one
            self._end_everything(previous, _nanos(event.timestamp))
        workflow = event.payload.get("workflow")
        run = self._runs[run_id] = _RunTrace(run_id, workflow=workflow)
        attributes: dict[str, Any] = {
            "bcce.run_id": run_id,
            "bcce.workflow": str(workflow),
            "bcce.resumed": bool(event.payload.get("resumed")),
        }
        links = []
        earlier = self._previous.get(run_id)
        if earlier is not None:
            # Each drive of a resumed run is a trace of its own; the link (and bcce.run_id)
            # joins them.
            links.append(Link(earlier, {"bcce.relation": "resumes"}))
        span = self.tracer.start_span(
            f"workflow {workflow}",
            context=Context(),
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=_nanos(event.timestamp),
        )
        run.root = _Open(span, None)
        self._previous[run_id] = span.get_span_context()
        self._previous.move_to_end(run_id)
        while len(self._previous) > REMEMBERED_RUNS:
            self._previous.popitem(last=False)

    def _end_run(self, event: Event, run: _RunTrace) -> None:
        payload = event.payload
        self._runs.pop(run.run_id, None)
        if run.root is None:
            self._end_everything(run, _nanos(event.timestamp))
            return
        span = run.root.span
        status = str(payload.get("status") or event.type.rsplit(".", 1)[1])
        span.set_attribute("bcce.status", status)
        if run.cost_usd:
            span.set_attribute("bcce.cost.usd", run.cost_usd)
        if run.input_tokens or run.output_tokens:
            span.set_attribute("gen_ai.usage.input_tokens", run.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", run.output_tokens)
        failed = payload.get("failed_steps") or []
        if failed:
            span.set_attribute("bcce.failed_steps", [str(s) for s in failed])
        if event.type == "workflow.failed":
            span.set_status(
                Status(StatusCode.ERROR, f"failed steps: {', '.join(map(str, failed))}")
            )
        elif status == "succeeded":
            span.set_status(Status(StatusCode.OK))
        self._end_everything(run, _nanos(event.timestamp))

    def _start_step(self, event: Event, run: _RunTrace) -> None:
        payload = event.payload
        step_id = str(payload.get("step"))
        stale = run.open.get(("step", step_id))
        if stale is not None:  # an attempt that never reported its end
            self._end(run, stale, _nanos(event.timestamp))
        parent = self._parent_of(run, payload.get("parent"))
        attributes: dict[str, Any] = {
            "bcce.run_id": run.run_id,
            "bcce.step.id": step_id,
            "bcce.step.type": str(payload.get("type")),
            "bcce.step.attempt": int(payload.get("attempt") or 1),
        }
        if run.workflow is not None:
            attributes["bcce.workflow"] = run.workflow
        if payload.get("name"):
            attributes["bcce.step.name"] = str(payload["name"])
        if payload.get("parent"):
            attributes["bcce.step.parent"] = str(payload["parent"])
        self._open(run, ("step", step_id), f"step {step_id}", parent, attributes, event.timestamp)

    def _retrying(self, event: Event, run: _RunTrace) -> None:
        payload = event.payload
        record = run.open.get(("step", str(payload.get("step"))))
        if record is None:
            return
        error = str(payload.get("error") or "failed")
        record.span.set_attribute("bcce.step.status", "failed")
        record.span.set_attribute("bcce.step.retried", True)
        record.span.set_status(Status(StatusCode.ERROR, error))
        record.span.add_event(
            "retrying",
            {"bcce.retry.delay_seconds": float(payload.get("delay_seconds") or 0.0)},
            timestamp=_nanos(event.timestamp),
        )
        self._end(run, record, _nanos(event.timestamp))

    def _end_step(self, event: Event, run: _RunTrace) -> None:
        payload = event.payload
        step_id = str(payload.get("step"))
        status = str(payload.get("status") or event.type.split(".", 1)[1])
        record = run.open.get(("step", step_id))
        if record is None:
            # Skipped, cancelled before it started or kept from an earlier drive: a moment,
            # shown as a span without duration so the tree still lists the step.
            parent = self._parent_of(run, payload.get("parent"))
            attributes = {
                "bcce.run_id": run.run_id,
                "bcce.step.id": step_id,
                "bcce.step.type": str(payload.get("type")),
            }
            record = self._open(run, None, f"step {step_id}", parent, attributes, event.timestamp)
        span = record.span
        span.set_attribute("bcce.step.status", status)
        for key in ("conclusion", "reason"):
            if payload.get(key):
                span.set_attribute(f"bcce.step.{key}", str(payload[key]))
        if payload.get("attempts") is not None:
            span.set_attribute("bcce.step.attempts", int(payload["attempts"]))
        if payload.get("exit_code") is not None:
            span.set_attribute("bcce.step.exit_code", int(payload["exit_code"]))
        if event.type in ("step.failed", "step.timed_out"):
            span.set_status(Status(StatusCode.ERROR, str(payload.get("error") or status)))
        elif event.type == "step.completed" and status == "succeeded":
            span.set_status(Status(StatusCode.OK))
        self._end(run, record, _nanos(event.timestamp))

    def _decision(self, event: Event, run: _RunTrace) -> None:
        payload = event.payload
        step = run.open.get(("step", str(payload.get("step"))))
        allowed = bool(payload.get("allowed"))
        if payload.get("kind") != "tool":
            # A cmd step's command check: a moment in the step's span.
            if step is not None:
                step.span.add_event(
                    "policy.decision", _attributes(payload), timestamp=_nanos(event.timestamp)
                )
            return
        tool = str(payload.get("tool"))
        call_id = payload.get("tool_use_id")
        attributes: dict[str, Any] = {
            "bcce.run_id": run.run_id,
            "bcce.step.id": str(payload.get("step")),
            "bcce.tool.name": tool,
            "bcce.policy.allowed": allowed,
        }
        if call_id:
            attributes["bcce.tool.use_id"] = str(call_id)
        for field_name in ("rule", "layer", "reason"):
            if payload.get(field_name):
                attributes[f"bcce.policy.{field_name}"] = str(payload[field_name])
        key = ("tool", str(call_id)) if call_id and allowed else None
        parent = step if step is not None else run.root
        record = self._open(run, key, f"tool {tool}", parent, attributes, event.timestamp)
        if not allowed:
            rule = payload.get("rule") or "policy"
            reason = payload.get("reason")
            record.span.set_status(
                Status(StatusCode.ERROR, f"denied by {rule}" + (f": {reason}" if reason else ""))
            )
        if key is None:  # denied (or untraceable): nothing more will come for it
            self._end(run, record, _nanos(event.timestamp))

    def _tool_result(self, event: Event, run: _RunTrace) -> None:
        payload = event.payload
        record = run.open.get(("tool", str(payload.get("tool_use_id"))))
        if record is None:
            return  # a denied call's error result, or a call that was never decided
        is_error = bool(payload.get("is_error"))
        record.span.set_attribute("bcce.tool.is_error", is_error)
        if is_error:
            record.span.set_status(Status(StatusCode.ERROR, "the tool returned an error"))
        self._end(run, record, _nanos(event.timestamp))

    def _cost(self, event: Event, run: _RunTrace) -> None:
        payload = event.payload
        cost = payload.get("total_cost_usd")
        tokens_in = payload.get("input_tokens")
        tokens_out = payload.get("output_tokens")
        run.cost_usd += float(cost or 0.0)
        run.input_tokens += int(tokens_in or 0)
        run.output_tokens += int(tokens_out or 0)
        record = run.open.get(("step", str(payload.get("step"))))
        if record is None:
            return
        span = record.span
        if cost is not None:
            span.set_attribute("bcce.cost.usd", float(cost))
        if tokens_in is not None:
            span.set_attribute("gen_ai.usage.input_tokens", int(tokens_in))
        if tokens_out is not None:
            span.set_attribute("gen_ai.usage.output_tokens", int(tokens_out))
        if payload.get("model"):
            span.set_attribute("gen_ai.request.model", str(payload["model"]))

    # -- span bookkeeping ---------------------------------------------------------------------
    def _parent_of(self, run: _RunTrace, parent_step: Any) -> _Open | None:
        if parent_step:
            found = run.open.get(("step", str(parent_step)))
            if found is not None:
                return found
        return run.root

    def _open(
        self,
        run: _RunTrace,
        key: tuple[str, str] | None,
        name: str,
        parent: _Open | None,
        attributes: Mapping[str, Any],
        timestamp: float,
    ) -> _Open:
        context = trace.set_span_in_context(parent.span) if parent is not None else Context()
        span = self.tracer.start_span(
            name, context=context, attributes=attributes, start_time=_nanos(timestamp)
        )
        record = _Open(span, key)
        if parent is not None:
            parent.children.append(record)
        if key is not None:
            run.open[key] = record
        return record

    def _end(self, run: _RunTrace, record: _Open, end_time: int) -> None:
        """End ``record`` and, first, whatever is still open under it (at the same time)."""
        if record.ended:
            return
        for child in record.children:
            if not child.ended:
                child.span.set_attribute("bcce.ended_with_parent", True)
                self._end(run, child, end_time)
        record.children.clear()
        record.ended = True
        record.span.end(end_time=end_time)
        if record.key is not None and run.open.get(record.key) is record:
            del run.open[record.key]

    def _end_everything(self, run: _RunTrace, end_time: int) -> None:
        if run.root is not None:
            self._end(run, run.root, end_time)
        for record in list(run.open.values()):  # spans of a run traced without its root
            self._end(run, record, end_time)


def _attributes(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Payload fields that OpenTelemetry attributes can carry (scalars, lists of strings)."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, bool | int | float | str):
            out[f"bcce.{key}"] = value
        elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
            out[f"bcce.{key}"] = list(value)
    return out


# -- metrics ----------------------------------------------------------------------------------
#: bcce's units (bcce.events.metrics.Unit) in OpenTelemetry's UCUM spelling.
OTEL_UNITS: Mapping[str, str] = {"seconds": "s", "count": "1", "tokens": "{token}", "usd": "USD"}
#: Histogram buckets for durations in seconds: from a quick command to an hour-long agent.
#: (OpenTelemetry's default buckets are meant for milliseconds.)
SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class OtelMetricsCollector:
    """The ``otel`` metrics collector: bcce's metrics as OpenTelemetry instruments.

    Each catalogue name (``step.execution.duration``...) is an instrument of the catalogue's
    kind (histogram or counter) and unit; dimensions become attributes. ``reader`` is the
    metric reader; with ``events.otel.exporter: memory`` it is an ``InMemoryMetricReader``
    whose ``get_metrics_data()`` returns what was recorded. Measurements take the time they
    are recorded (OpenTelemetry instruments have no other).
    """

    #: Recording only aggregates in memory; exporting runs on the reader's own thread.
    remote = False

    def __init__(self, resource: Resource, reader: MetricReader) -> None:
        self.reader = reader
        self.provider = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
        self.meter = self.provider.get_meter(INSTRUMENTATION, __version__)
        self._instruments: dict[str, Counter | Histogram] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.failures = 0

    @classmethod
    def from_settings(cls, settings: BcceSettings) -> OtelMetricsCollector:
        """The collector ``events.otel`` describes."""
        reader = metric_reader(settings.events.otel, export_timeout(settings, "metrics"))
        return cls(otel_resource(settings), reader)

    def record(
        self,
        name: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
        *,
        unit: Unit | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Add ``value`` to counter ``name``, or record it in histogram ``name``; never raises."""
        if self._closed:
            return
        try:
            attributes = {str(k): str(v) for k, v in (dimensions or {}).items() if v is not None}
            instrument = self._instrument(name, unit, dimensions)
            if isinstance(instrument, Histogram):
                instrument.record(value, attributes)
            elif value >= 0:  # a counter only goes up; OpenTelemetry would drop it anyway
                instrument.add(value, attributes)
            else:
                log.debug("metric {}: negative value {} ignored for a counter", name, value)
        except Exception as exc:  # noqa: BLE001 - a metric is never worth a failed run
            self.failures += 1
            log.opt(exception=exc).warning("metric {} not recorded: {}", name, exc)

    def flush(self) -> None:
        try:
            self.provider.force_flush()
        except Exception as exc:  # noqa: BLE001 - see record
            log.opt(exception=exc).warning("OpenTelemetry metrics not flushed: {}", exc)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.provider.shutdown()
        except Exception as exc:  # noqa: BLE001 - see record
            log.opt(exception=exc).warning("OpenTelemetry metrics not shut down: {}", exc)

    def _instrument(
        self, name: str, unit: Unit | None, dimensions: Mapping[str, str] | None
    ) -> Counter | Histogram:
        found = self._instruments.get(name)
        if found is not None:
            return found
        with self._lock:
            found = self._instruments.get(name)
            if found is None:
                spec = metric_spec(name, unit, dimensions)
                otel_unit = OTEL_UNITS.get(spec.unit, spec.unit)
                if spec.kind == "histogram":
                    found = self.meter.create_histogram(
                        name,
                        unit=otel_unit,
                        description=spec.description,
                        explicit_bucket_boundaries_advisory=(
                            SECONDS_BUCKETS if spec.unit == "seconds" else None
                        ),
                    )
                else:
                    found = self.meter.create_counter(
                        name, unit=otel_unit, description=spec.description
                    )
                self._instruments[name] = found
            return found


__all__ = [
    "OtelMetricsCollector",
    "TracingSubscriber",
    "export_timeout",
    "id_generator",
    "metric_reader",
    "otel_resource",
    "signal_endpoint",
    "span_processor",
]
