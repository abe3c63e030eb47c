"""The CloudWatch collector: real runs measured into the moto server, batching, retries, losses."""

from __future__ import annotations

import datetime
import io
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError, NoRegionError
from loguru import logger

from bcce.containers.application import Application
from bcce.events.cloudwatch import CloudWatchCollector
from bcce.workflow.runner import RunOptions

if TYPE_CHECKING:
    from bcce.testing.aws import MotoServer

NAMESPACE = "BCCE/Test"

WORKFLOW = """
version: 1
workflow: nightly
steps:
  - {id: ok, type: cmd, command: 'true'}
  - id: flaky
    type: cmd
    retry: {max_attempts: 2, backoff_seconds: 0.01, jitter: false}
    command: 'test -e .flaky || { touch .flaky; exit 1; }'
  - {id: broken, type: cmd, command: 'exit 3', on_error: continue}
"""
#: What WORKFLOW measures: ok and flaky (duration, completed), flaky's retry, broken (duration,
#: failed), the run (duration, completed).
DATA_POINTS = 9


def dims(**values: str) -> list[dict[str, str]]:
    return [{"Name": name, "Value": value} for name, value in values.items()]


def step_dims(step: str, status: str) -> list[dict[str, str]]:
    return dims(workflow="nightly", step=step, type="cmd", status=status)


@pytest.fixture
def cloudwatch(aws_env: MotoServer) -> Any:
    """A client of the moto server, to read back what the collector put."""
    return boto3.client("cloudwatch", endpoint_url=aws_env.url, region_name="us-east-1")


@pytest.fixture
def cloudwatch_app(
    bcce_make_app: Callable[..., Application], aws_env: MotoServer
) -> Callable[..., Application]:
    """``cloudwatch_app(endpoint=None, batch_size=20)``: metrics go to CloudWatch (moto)."""

    def make(endpoint: str | None = None, batch_size: int = 20) -> Application:
        return bcce_make_app(
            # One attempt per client call: retries are the collector's, and these tests see them.
            aws={"endpoint_url": endpoint or aws_env.url, "max_attempts": 1},
            events={
                "subscribers": ["metrics"],
                "metrics": "cloudwatch",
                "cloudwatch": {"namespace": NAMESPACE, "batch_size": batch_size},
            },
        )

    return make


def run(app: Application, tmp_path: Path) -> int:
    path = tmp_path / "wf.yml"
    path.write_text(WORKFLOW)
    result = app.workflow.runner().run(path, RunOptions(run_id="r1", workspace=tmp_path))
    return int(result.exit_code)


def total(cloudwatch: Any, name: str, dimensions: list[dict[str, str]]) -> tuple[float, str]:
    """The sum of every data point of ``name`` with exactly ``dimensions``, and their unit."""
    now = datetime.datetime.now(datetime.UTC)
    reply = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=name,
        Dimensions=dimensions,
        StartTime=now - datetime.timedelta(hours=1),
        EndTime=now + datetime.timedelta(hours=1),
        Period=3600,
        Statistics=["Sum"],
    )
    points = reply["Datapoints"]
    units = {point["Unit"] for point in points}
    assert len(units) == 1, points
    return sum(point["Sum"] for point in points), units.pop()


def count_puts(app: Application) -> list[int]:
    """Sizes of the PutMetricData calls the app's client makes from now on."""
    sizes: list[int] = []

    def before_call(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["MetricData"]))

    app.aws.cloudwatch().meta.events.register(
        "before-parameter-build.cloudwatch.PutMetricData", before_call
    )
    return sizes


@pytest.fixture
def warnings() -> Iterator[io.StringIO]:
    """bcce's log records at WARNING and above, as text."""
    sink = io.StringIO()
    logger.enable("bcce")
    handler = logger.add(sink, level="WARNING", format="{message}")
    yield sink
    logger.remove(handler)
    logger.disable("bcce")


# -- a real run, read back from moto -------------------------------------------------------------


def test_a_run_puts_each_metric_with_the_dimensions_it_has(
    cloudwatch_app: Callable[..., Application], cloudwatch: Any, tmp_path: Path
) -> None:
    app = cloudwatch_app()

    assert run(app, tmp_path) == 0

    def listed(name: str) -> list[list[dict[str, str]]]:
        metrics = cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName=name)["Metrics"]
        return sorted((m["Dimensions"] for m in metrics), key=str)

    assert listed("step.execution.completed") == sorted(
        [step_dims("ok", "succeeded"), step_dims("flaky", "succeeded")], key=str
    )
    assert listed("step.execution.failed") == [step_dims("broken", "failed")]
    assert listed("step.execution.retried") == [dims(workflow="nightly", step="flaky", type="cmd")]
    assert listed("workflow.execution.completed") == [dims(workflow="nightly", status="succeeded")]


def test_a_runs_sums_and_units_read_back_equal_what_happened(
    cloudwatch_app: Callable[..., Application], cloudwatch: Any, tmp_path: Path
) -> None:
    app = cloudwatch_app()

    run(app, tmp_path)

    assert total(cloudwatch, "step.execution.failed", step_dims("broken", "failed")) == (
        1.0,
        "Count",
    )
    assert total(
        cloudwatch, "step.execution.retried", dims(workflow="nightly", step="flaky", type="cmd")
    ) == (1.0, "Count")
    assert total(
        cloudwatch, "workflow.execution.completed", dims(workflow="nightly", status="succeeded")
    ) == (1.0, "Count")
    seconds, unit = total(cloudwatch, "step.execution.duration", step_dims("ok", "succeeded"))
    assert unit == "Seconds"
    assert 0 < seconds < 60


def test_list_metrics_filtered_by_a_dimension_finds_that_steps_metrics(
    cloudwatch_app: Callable[..., Application], cloudwatch: Any, tmp_path: Path
) -> None:
    app = cloudwatch_app()

    run(app, tmp_path)

    found = cloudwatch.list_metrics(
        Namespace=NAMESPACE, Dimensions=[{"Name": "step", "Value": "broken"}]
    )["Metrics"]
    assert sorted(m["MetricName"] for m in found) == [
        "step.execution.duration",
        "step.execution.failed",
    ]


# -- batching ------------------------------------------------------------------------------------


def test_data_is_put_in_batches_of_the_configured_size(
    cloudwatch_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = cloudwatch_app(batch_size=4)
    sizes = count_puts(app)

    run(app, tmp_path)

    # Two full batches as the run goes, the rest when it ends.
    assert sizes == [4, 4, 1]


def test_nothing_is_put_before_a_batch_fills() -> None:
    client = RecordingClient()
    collector = CloudWatchCollector(client=lambda: client, batch_size=3)

    collector.record("plugin.calls", 1, {"plugin": "p"})
    collector.record("plugin.calls", 1, {"plugin": "p"})
    assert client.batches == []
    collector.record("plugin.calls", 1, {"plugin": "p"})

    assert [len(batch) for batch in client.batches] == [3]
    assert collector.pending == 0


def test_close_puts_what_is_buffered() -> None:
    client = RecordingClient()
    collector = CloudWatchCollector(client=lambda: client, batch_size=20)
    collector.record("plugin.calls", 1, {"plugin": "p"})

    collector.close()

    assert [len(batch) for batch in client.batches] == [1]
    assert collector.sent == 1


# -- the data ------------------------------------------------------------------------------------


def test_a_datum_has_the_event_time_the_unit_and_only_the_dimensions_present() -> None:
    client = RecordingClient()
    collector = CloudWatchCollector(client=lambda: client, namespace="NS", batch_size=1)

    collector.record(
        "agent.cost",
        0.25,
        {"model": "m", "team": "", "workflow": "w"},
        unit="usd",
        timestamp=1_700_000_000.5,
    )

    assert client.namespaces == ["NS"]
    assert client.batches == [
        [
            {
                "MetricName": "agent.cost",
                "Dimensions": dims(model="m", workflow="w"),
                "Value": 0.25,
                "Unit": "None",
                "Timestamp": datetime.datetime(2023, 11, 14, 22, 13, 20, 500000, datetime.UTC),
            }
        ]
    ]


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("seconds", "Seconds"), ("count", "Count"), ("tokens", "Count"), ("usd", "None")],
)
def test_units_map_to_cloudwatch_units(unit: Any, expected: str) -> None:
    client = RecordingClient()
    collector = CloudWatchCollector(client=lambda: client, batch_size=1)

    collector.record("x", 1.0, unit=unit)

    assert client.batches[0][0]["Unit"] == expected


def test_the_client_is_made_on_first_use_not_at_construction() -> None:
    made: list[int] = []
    client = RecordingClient()

    def factory() -> RecordingClient:
        made.append(1)
        return client

    collector = CloudWatchCollector(client=factory, batch_size=2)
    collector.flush()
    assert made == []
    collector.record("x", 1.0)
    collector.record("x", 1.0)
    collector.record("x", 1.0)
    collector.close()

    assert made == [1]


# -- retries and losses --------------------------------------------------------------------------


def test_a_throttled_call_is_retried_and_the_data_arrives(
    cloudwatch_app: Callable[..., Application], cloudwatch: Any, tmp_path: Path
) -> None:
    app = cloudwatch_app()
    answers: list[str] = []

    def throttle_once(**_: Any) -> Any:
        if answers:
            answers.append("sent")
            return None  # on to moto
        answers.append("throttled")
        error = {"Code": "Throttling", "Message": "Rate exceeded"}
        return (FakeHttp(400), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}})

    app.aws.cloudwatch().meta.events.register("before-call.cloudwatch.PutMetricData", throttle_once)

    run(app, tmp_path)

    assert answers == ["throttled", "sent"]
    collector = app.events.metrics()
    assert (collector.sent, collector.lost) == (DATA_POINTS, 0)
    assert total(cloudwatch, "step.execution.failed", step_dims("broken", "failed"))[0] == 1.0


def test_a_permanently_failing_endpoint_never_fails_the_run(
    cloudwatch_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = cloudwatch_app(endpoint=f"http://127.0.0.1:{closed_port()}")

    assert run(app, tmp_path) == 0

    assert app.events.bus().failures == 0


def test_a_permanently_failing_endpoint_counts_and_logs_the_loss(
    cloudwatch_app: Callable[..., Application], tmp_path: Path, warnings: io.StringIO
) -> None:
    app = cloudwatch_app(endpoint=f"http://127.0.0.1:{closed_port()}")

    run(app, tmp_path)

    collector = app.events.metrics()
    assert (collector.sent, collector.lost) == (0, DATA_POINTS)
    assert "CloudWatch metrics lost: 9 data point(s)" in warnings.getvalue()
    assert "after 4 attempts" in warnings.getvalue()


def test_retries_back_off_exponentially_with_jitter_up_to_a_bound() -> None:
    slept: list[float] = []
    client = RecordingClient(fail_with=[throttling()] * 10)
    collector = CloudWatchCollector(
        client=lambda: client,
        batch_size=1,
        max_attempts=5,
        base_delay=0.1,
        max_delay=0.3,
        sleep=slept.append,
    )

    collector.record("x", 1.0)

    assert client.calls == 5
    assert len(slept) == 4
    assert all(0 <= s <= cap for s, cap in zip(slept, [0.1, 0.2, 0.3, 0.3], strict=True))
    assert collector.lost == 1


def test_an_error_that_is_not_transient_is_not_retried() -> None:
    invalid = ClientError(
        {"Error": {"Code": "InvalidParameterValue", "Message": "bad"}}, "PutMetricData"
    )
    client = RecordingClient(fail_with=[invalid])
    collector = CloudWatchCollector(client=lambda: client, batch_size=1, sleep=lambda _: None)

    collector.record("x", 1.0)

    assert (client.calls, collector.lost) == (1, 1)


def test_a_client_that_cannot_be_made_loses_the_data_without_raising() -> None:
    def no_region() -> Any:
        raise NoRegionError()

    collector = CloudWatchCollector(client=no_region, batch_size=1, sleep=lambda _: None)

    collector.record("x", 1.0)

    assert collector.lost == 1


def test_a_value_that_is_not_finite_is_dropped_and_counted() -> None:
    client = RecordingClient()
    collector = CloudWatchCollector(client=lambda: client, batch_size=1)

    collector.record("x", float("nan"))

    assert (client.batches, collector.lost) == ([], 1)


# -- imports -------------------------------------------------------------------------------------

BUILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bcce.application import create_application
    from bcce.settings.layers import LayerOptions

    here = Path.cwd()
    options = LayerOptions(environ={{}}, cwd=here, user_config_file=here / "none.yaml")
    app = create_application(options=options, events={events!r})
    app.shutdown_resources()
    print("boto3" in sys.modules)
    """
)


def test_building_an_app_with_the_cloudwatch_collector_imports_no_boto3(tmp_path: Path) -> None:
    script = BUILD.format(events={"subscribers": ["metrics"], "metrics": "cloudwatch"})
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["False"]


# -- helpers -------------------------------------------------------------------------------------


class RecordingClient:
    """A stand-in for the boto3 client: keeps each batch; raises ``fail_with`` errors first."""

    def __init__(self, fail_with: list[Exception] | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.namespaces: list[str] = []
        self.calls = 0
        self.fail_with = list(fail_with or [])

    def put_metric_data(self, *, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.namespaces.append(Namespace)
        self.batches.append(list(MetricData))


class FakeHttp:
    """The HTTP half of a short-circuited botocore call (what botocore's Stubber returns)."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


def throttling() -> ClientError:
    return ClientError(
        {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "PutMetricData"
    )


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
