"""The ``cloudwatch`` metrics collector: measurements buffered and sent with PutMetricData.

Each measurement becomes one datum in ``events.cloudwatch.namespace`` (default ``BCCE``),
named as the catalogue names it (``step.execution.duration``), with the dimensions the
measurement has (``workflow``, ``step``, ``type``, ``status``...; only those present, values cut
to CloudWatch's 1024 characters), the event's time as its timestamp, and a unit::

    seconds -> Seconds      count -> Count      tokens -> Count      usd -> None

(tokens are counted things; CloudWatch has no currency unit, so dollars are ``None``.)

Data is sent ``events.cloudwatch.batch_size`` at a time: when a batch is full, when a run ends
(the subscriber flushes) and at close. Throttling, server errors and connection failures are
retried with exponential backoff and full jitter, a bounded number of times (on top of the
client's own retries); a batch that still fails, or fails for another reason, is dropped,
logged and counted (:attr:`CloudWatchCollector.lost`). Nothing raises into the event bus.

The boto3 client comes from ``client``, a callable called on first use: building the collector
loads no AWS code and makes no call.
"""

from __future__ import annotations

import datetime
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from bcce.core.log import get_logger
from bcce.events.metrics import Unit, metric_spec

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings

log = get_logger("metrics")

UNITS: Mapping[Unit, str] = {
    "seconds": "Seconds",
    "count": "Count",
    "tokens": "Count",
    "usd": "None",
}
#: Error codes worth another try: throttling and the service's own failures.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServiceError",
        "InternalServiceFault",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: CloudWatch's limits: one datum over them would fail its whole batch.
MAX_DIMENSIONS = 30
MAX_DIMENSION_VALUE = 1024
MAX_NAME = 255


class CloudWatchCollector:
    """Buffers measurements and puts them to CloudWatch in batches; see the module docstring.

    ``max_attempts`` tries per batch, waiting a random time up to ``base_delay * 2**n`` (at
    most ``max_delay``) between them.
    """

    remote = True

    def __init__(
        self,
        *,
        client: Callable[[], Any],
        namespace: str = "BCCE",
        batch_size: int = 20,
        max_attempts: int = 4,
        base_delay: float = 0.1,
        max_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.namespace = namespace
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        #: Data points sent, and data points given up on.
        self.sent = 0
        self.lost = 0
        self._client_factory = client
        self._client: Any = None
        self._sleep = sleep
        self._buffer: list[dict[str, Any]] = []
        self._buffer_lock = threading.Lock()
        # One sender at a time, so batches leave in the order they were filled.
        self._send_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: BcceSettings, *, client: Callable[[], Any]
    ) -> CloudWatchCollector:
        """The collector ``events.cloudwatch`` configures; ``client`` makes the boto3 client."""
        section = settings.events.cloudwatch
        return cls(client=client, namespace=section.namespace, batch_size=section.batch_size)

    def record(
        self,
        name: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
        *,
        unit: Unit | None = None,
        timestamp: float | None = None,
    ) -> None:
        if not math.isfinite(value):  # CloudWatch refuses NaN and infinities
            self._lose(1, f"{name}: value {value} is not a finite number")
            return
        dims = [
            {"Name": key[:MAX_NAME], "Value": str(val)[:MAX_DIMENSION_VALUE]}
            for key, val in (dimensions or {}).items()
            if val != ""
        ][:MAX_DIMENSIONS]
        moment = time.time() if timestamp is None else timestamp
        datum = {
            "MetricName": name[:MAX_NAME],
            "Dimensions": dims,
            "Value": float(value),
            "Unit": UNITS[unit or metric_spec(name).unit],
            "Timestamp": datetime.datetime.fromtimestamp(moment, datetime.UTC),
        }
        with self._buffer_lock:
            self._buffer.append(datum)
            full = len(self._buffer) >= self.batch_size
        if full:
            self._send(whole_batches_only=True)

    def flush(self) -> None:
        """Send everything buffered."""
        self._send(whole_batches_only=False)

    def close(self) -> None:
        """Send everything buffered (the client is boto3's to clean up)."""
        self.flush()

    @property
    def pending(self) -> int:
        """Data points buffered, not yet sent."""
        with self._buffer_lock:
            return len(self._buffer)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, *, whole_batches_only: bool) -> None:
        with self._send_lock:
            while True:
                with self._buffer_lock:
                    if not self._buffer or (
                        whole_batches_only and len(self._buffer) < self.batch_size
                    ):
                        return
                    batch = self._buffer[: self.batch_size]
                    del self._buffer[: self.batch_size]
                self._put(batch)

    def _put(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(1, self.max_attempts + 1):
            try:
                if self._client is None:
                    self._client = self._client_factory()
                self._client.put_metric_data(Namespace=self.namespace, MetricData=batch)
            except Exception as exc:  # noqa: BLE001 - metrics never fail the caller
                if attempt < self.max_attempts and _retryable(exc):
                    cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                    self._sleep(random.uniform(0, cap))  # noqa: S311 - jitter, not security
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                self._lose(len(batch), f"PutMetricData failed{tries}: {_describe(exc)}")
                return
            self.sent += len(batch)
            return

    def _lose(self, count: int, reason: str) -> None:
        self.lost += count
        log.warning(
            "CloudWatch metrics lost: {} data point(s) ({} in all so far); {}",
            count,
            self.lost,
            reason,
        )


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in RETRYABLE_CODES or status == 429 or status >= 500
    return isinstance(
        exc,
        BotocoreConnectionError | EndpointConnectionError | ConnectionClosedError | HTTPClientError,
    )


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["UNITS", "CloudWatchCollector"]
