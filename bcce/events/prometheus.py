"""The ``prometheus`` metrics collector: a text exposition file, and an HTTP endpoint on request.

Names. A catalogue name becomes ``bcce_`` + the name with ``.`` as ``_`` + the unit
(``_seconds``, ``_usd``; none for counts and tokens) + ``_total`` for a counter::

    step.execution.duration      histogram  bcce_step_execution_duration_seconds
    step.execution.completed     counter    bcce_step_execution_completed_total
    step.execution.failed        counter    bcce_step_execution_failed_total
    step.execution.cancelled     counter    bcce_step_execution_cancelled_total
    step.execution.retried       counter    bcce_step_execution_retried_total
    workflow.execution.duration  histogram  bcce_workflow_execution_duration_seconds
    workflow.execution.completed counter    bcce_workflow_execution_completed_total
    workflow.execution.failed    counter    bcce_workflow_execution_failed_total
    workflow.execution.cancelled counter    bcce_workflow_execution_cancelled_total
    policy.denials               counter    bcce_policy_denials_total
    plugin.calls                 counter    bcce_plugin_calls_total
    agent.tokens.input           counter    bcce_agent_tokens_input_total
    agent.tokens.output          counter    bcce_agent_tokens_output_total
    agent.cost                   counter    bcce_agent_cost_usd_total
    budget.exceeded              counter    bcce_budget_exceeded_total

Labels are the metric's catalogue dimensions; one a measurement does not know is ``""``.
Histogram buckets are :data:`BUCKETS` (seconds).

The file (``events.prometheus.file``, default ``<workflow.state_dir>/metrics.prom``) is for
node_exporter's textfile collector. Each ``bcce`` command is a process of its own whose counters
start at zero, so the file is *cumulative*: on every flush (when a run ends, and at exit) the
process adds what it counted since its previous flush to the values already in the file, under
an exclusive lock (``.<file>.lock`` beside it), and replaces the file atomically. The file thus
holds the totals of every process that wrote it, like a counter of a long-running exporter;
deleting it resets them (which Prometheus handles as a counter reset).

The HTTP endpoint (``events.prometheus.port``; ``0`` picks a free port, see :attr:`port`)
serves this process's own counts at ``/metrics`` while the collector is open: for a
long-running process, scraped directly. They live in the collector's own ``CollectorRegistry``
(never prometheus_client's global one), filled only while the endpoint is served: the file is
kept from increments of its own, so a run pays for the registry only when something scrapes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import start_http_server

from bcce.core.durable import atomic_write_bytes
from bcce.core.log import get_logger
from bcce.errors import BcceError, ConfigError
from bcce.events.metrics import MetricSpec, Unit, metric_spec

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from bcce.settings.model import BcceSettings

log = get_logger("metrics")

#: Histogram buckets (seconds): from a quick command to an hour-long agent step.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_UNIT_SUFFIX: Mapping[Unit, str] = {"seconds": "_seconds", "usd": "_usd", "count": "", "tokens": ""}
#: How long a flush waits for another process holding the file's lock before it gives up
#: (the increments stay pending for the next flush).
LOCK_TIMEOUT_SECONDS = 5.0


def prometheus_name(spec: MetricSpec) -> str:
    """The family name of a metric (a counter's samples add ``_total``)."""
    base = "bcce_" + _sanitise(spec.name)
    suffix = _UNIT_SUFFIX[spec.unit]
    return base if base.endswith(suffix) else base + suffix


def _sanitise(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


@dataclass
class _Family:
    """A metric family as the text format has it: TYPE-line name, type, HELP text, samples."""

    name: str
    type: str
    documentation: str
    samples: dict[str, float] = field(default_factory=dict)  # canonical series text -> value


@dataclass(frozen=True)
class _Series:
    """One labelled series: the sample keys it writes (a histogram's buckets, count and sum)."""

    family: str
    keys: tuple[str, ...]


@dataclass
class _Metric:
    """What the collector knows of one metric name."""

    spec: MetricSpec
    family: _Family  # name, type and HELP; no samples
    labels: tuple[str, ...]  # label names, sanitised
    series: dict[tuple[str, ...], _Series] = field(default_factory=dict)
    served: Counter | Histogram | None = None  # its counterpart in the HTTP registry


class PrometheusCollector:
    """Counters and histograms for a cumulative textfile and, when asked, an HTTP endpoint.

    ``file``: the exposition file (None: no file); ``port``: serve ``/metrics`` on ``host``
    while open (``0``: a free port, read :attr:`port`).
    """

    remote = False

    def __init__(
        self,
        file: Path | None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        buckets: tuple[float, ...] = BUCKETS,
    ) -> None:
        #: What the HTTP endpoint serves (filled only while it is served).
        self.registry = CollectorRegistry(auto_describe=False)
        self.file = file
        self.host = host
        self.buckets = tuple(sorted(buckets))
        self._bounds = (*self.buckets, math.inf)
        self._le = tuple(_number(b) for b in self._bounds)
        #: Flushes whose file could not be written (each logged).
        self.write_failures = 0
        self._metrics: dict[str, _Metric | None] = {}
        self._families: dict[str, _Family] = {}  # by family name, in order of first use
        self._pending: dict[_Series, list[float]] = {}  # increments not yet in the file
        #: The file as this process last wrote it: (inode, size, mtime) and its families. While
        #: no other process has replaced it, the next flush merges into these, unparsed.
        self._written: tuple[tuple[int, int, int], dict[str, _Family]] | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        #: The port the HTTP endpoint listens on (None: not serving).
        self.port: int | None = None
        if file is not None:
            _check_writable(file)
        if port is not None:
            self._serve(host, port)

    @classmethod
    def from_settings(cls, settings: BcceSettings) -> PrometheusCollector:
        """The collector ``events.prometheus`` configures."""
        section = settings.events.prometheus
        file = section.file or settings.workflow.state_dir / "metrics.prom"
        return cls(file, port=section.port, host=section.host)

    # -- recording ---------------------------------------------------------------------------
    def record(
        self,
        name: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
        *,
        unit: Unit | None = None,
        timestamp: float | None = None,
    ) -> None:
        dims = dimensions or {}
        metric = (
            self._metrics.get(name) if name in self._metrics else self._metric(name, unit, dims)
        )
        if metric is None:
            return
        values = tuple(dims.get(d, "") for d in metric.spec.dimensions)
        histogram = metric.spec.kind == "histogram"
        # A counter only goes up; a NaN would poison the file's sums for good.
        if not math.isfinite(value) or (not histogram and value < 0):
            return
        if self.file is not None:
            self._add(metric, values, value, histogram=histogram)
        served = metric.served
        if served is not None:
            child = served.labels(*values)
            if isinstance(child, Histogram):
                child.observe(value)
            else:
                child.inc(value)

    def _add(
        self, metric: _Metric, values: tuple[str, ...], value: float, *, histogram: bool
    ) -> None:
        with self._lock:
            series = metric.series.get(values) or self._new_series(metric, values)
            pending = self._pending.get(series)
            if pending is None:
                pending = self._pending[series] = [0.0] * len(series.keys)
            if histogram:
                for index, bound in enumerate(self._bounds):
                    if value <= bound:
                        pending[index] += 1
                pending[-2] += 1
                pending[-1] += value
            else:
                pending[0] += value

    def _metric(self, name: str, unit: Unit | None, dims: Mapping[str, str]) -> _Metric | None:
        with self._lock:
            if name not in self._metrics:
                self._metrics[name] = self._create(name, unit, dims)
            return self._metrics[name]

    def _create(self, name: str, unit: Unit | None, dims: Mapping[str, str]) -> _Metric | None:
        spec = metric_spec(name, unit, dims)
        base = prometheus_name(spec)
        family_name = base if spec.kind == "histogram" else f"{base}_total"
        labels = tuple(_sanitise(d) for d in spec.dimensions)
        if family_name in self._families or len(set(labels)) < len(labels) or "le" in labels:
            log.warning("metric {} cannot be exposed to Prometheus as {}; dropped", name, base)
            return None
        doc = (spec.description or spec.name).replace("\\", "\\\\").replace("\n", "\\n")
        family = self._families[family_name] = _Family(family_name, spec.kind, doc)
        served: Counter | Histogram | None = None
        if self._server is not None:
            help_text = spec.description or spec.name
            if spec.kind == "histogram":
                served = Histogram(
                    base, help_text, labels, registry=self.registry, buckets=self.buckets
                )
            else:
                served = Counter(base, help_text, labels, registry=self.registry)
        return _Metric(spec, family, labels, served=served)

    def _new_series(self, metric: _Metric, values: tuple[str, ...]) -> _Series:
        pairs = [f'{k}="{_escape_label(v)}"' for k, v in zip(metric.labels, values, strict=True)]
        base = metric.family.name
        if metric.spec.kind == "histogram":
            buckets = [_series(f"{base}_bucket", [*pairs, f'le="{le}"']) for le in self._le]
            keys = (*buckets, _series(f"{base}_count", pairs), _series(f"{base}_sum", pairs))
        else:
            keys = (_series(base, pairs),)
        series = metric.series[values] = _Series(base, keys)
        return series

    # -- the file ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Add what this process counted since its last flush to the file (atomically)."""
        if self.file is None:
            return
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                with _locked(self.file):
                    merged = self._merge(self._current(), pending)
                    atomic_write_bytes(self.file, _exposition(merged), fsync=False)
                    self._written = (_signature(self.file), merged)
            except (BcceError, OSError, TimeoutError) as exc:
                self.write_failures += 1
                message = exc.message if isinstance(exc, BcceError) else str(exc)
                log.warning("Prometheus metrics file {} not written: {}", self.file, message)
                with self._lock:  # kept for the next flush
                    for series, increments in pending.items():
                        kept = self._pending.setdefault(series, [0.0] * len(increments))
                        for index, increment in enumerate(increments):
                            kept[index] += increment

    def _current(self) -> dict[str, _Family]:
        """The file's families: what this process wrote last, if the file is still that one."""
        assert self.file is not None
        if self._written is not None:
            signature, families = self._written
            self._written = None  # merged into in place: never reused after a failed write
            if _signature(self.file) == signature:
                return families
        return _read_families(self.file)

    def _merge(
        self, families: dict[str, _Family], pending: Mapping[_Series, list[float]]
    ) -> dict[str, _Family]:
        for name in dict.fromkeys(series.family for series in pending):
            own = self._families[name]
            found = families.get(name)
            if found is not None and self._compatible(found, own):
                continue
            if found is not None:
                log.warning(
                    "Prometheus metrics file {}: {} has another type or buckets; restarted",
                    self.file,
                    name,
                )
            families[name] = _Family(own.name, own.type, own.documentation)
        for series, increments in pending.items():
            samples = families[series.family].samples
            for key, increment in zip(series.keys, increments, strict=True):
                samples[key] = samples.get(key, 0.0) + increment
        return families

    def _compatible(self, found: _Family, own: _Family) -> bool:
        if found.type != own.type:
            return False
        return own.type != "histogram" or not found.samples or _bounds(found) == set(self._le)

    # -- the endpoint ------------------------------------------------------------------------
    def _serve(self, host: str, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve Prometheus metrics on {host}:{port}: {exc}",
                key="events.prometheus.port",
                hint="choose a free port for events.prometheus.port (0: any free port)",
            ) from exc
        self.port = int(self._server.server_port)
        log.info("serving Prometheus metrics on http://{}:{}/metrics", host, self.port)

    @property
    def url(self) -> str | None:
        """``http://HOST:PORT/metrics`` while serving, else None."""
        return None if self.port is None else f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Flush, then stop the HTTP endpoint (if any)."""
        self.flush()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.port = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5.0)


# -- reading, merging and writing exposition text ------------------------------------------------
# The file is read and written here, not with prometheus_client's parser and generate_latest:
# the parser takes about a second for a file of a few hundred histogram series, and the file
# is merged at the end of every run. Series are keyed by their canonical text, ``name{a="1"}``
# with the labels sorted and escaped as the text format escapes them.
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_LE = re.compile(r'[{,]le="([^"]*)"')


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name: str, pairs: list[str]) -> str:
    return f"{name}{{{','.join(sorted(pairs))}}}" if pairs else name


def _signature(path: Path) -> tuple[int, int, int]:
    """What tells one version of the file from another: inode (replaced), size and mtime."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return (0, -1, 0)
    return (status.st_ino, status.st_size, status.st_mtime_ns)


def _read_families(path: Path) -> dict[str, _Family]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        return _parse(text)
    except ValueError as exc:
        # Not ours, or damaged: the totals start again (Prometheus sees a counter reset).
        log.warning("Prometheus metrics file {} unreadable ({}); starting it afresh", path, exc)
        return {}


def _parse(text: str) -> dict[str, _Family]:
    families: dict[str, _Family] = {}
    current: _Family | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                current = families.setdefault(parts[2], _Family(parts[2], "untyped", ""))
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    current.documentation = rest
                else:
                    current.type = rest.strip()
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise ValueError(f"line {number} is not a sample: {line[:80]!r}")
        name, labels, value = match.groups()
        pairs = [f'{k}="{v}"' for k, v in _PAIR.findall(labels or "")]
        if current is None or not name.startswith(current.name.removesuffix("_total")):
            current = families.setdefault(name, _Family(name, "untyped", ""))
        current.samples[_series(name, pairs)] = float(value)
    return families


def _bounds(family: _Family) -> set[str]:
    return {m.group(1) for key in family.samples if (m := _LE.search(key)) is not None}


def _exposition(families: Mapping[str, _Family]) -> bytes:
    lines = []
    for family in families.values():
        lines.append(f"# HELP {family.name} {family.documentation}")
        lines.append(f"# TYPE {family.name} {family.type}")
        lines.extend(f"{key} {_number(value)}" for key, value in family.samples.items())
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _check_writable(file: Path) -> None:
    """Fail fast on a file that can never be written; create nothing (that waits for data)."""
    ancestor = file.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the Prometheus metrics file {file} cannot be written: "
            f"{ancestor} is not a writable directory",
            key="events.prometheus.file",
            hint="choose a writable path for events.prometheus.file",
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``.<name>.lock`` beside ``path``, waited for at most a bound."""
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{lock_path} held by another process for {LOCK_TIMEOUT_SECONDS:g}s"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


__all__ = ["BUCKETS", "PrometheusCollector", "prometheus_name"]
