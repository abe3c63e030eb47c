"""The Prometheus collector: real runs measured into a parsed exposition file and HTTP endpoint."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bcce.containers.application import Application
from bcce.errors import ConfigError
from bcce.events.metrics import CATALOGUE, metric_spec
from bcce.events.prometheus import PrometheusCollector, prometheus_name
from bcce.settings.model import BcceSettings
from bcce.workflow.runner import RunOptions

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]

SUCCEEDS = """
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

FAILS = """
version: 1
workflow: release
steps:
  - {id: build, type: cmd, command: 'exit 2'}
"""

STEP_DIMS = {"workflow": "nightly", "type": "cmd"}


def samples(text: str) -> Samples:
    """Sample name -> {label set: value}, from exposition text (which must parse)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def step(name: str, status: str) -> frozenset[tuple[str, str]]:
    return labels(**STEP_DIMS, step=name, status=status)


@pytest.fixture
def prom_file(tmp_path: Path) -> Path:
    return tmp_path / "textfile" / "bcce.prom"


@pytest.fixture
def prometheus_app(
    bcce_make_app: Callable[..., Application], prom_file: Path
) -> Callable[..., Application]:
    def make(**prometheus: object) -> Application:
        return bcce_make_app(
            events={
                "subscribers": ["metrics"],
                "metrics": "prometheus",
                "prometheus": {"file": str(prom_file), **prometheus},
            }
        )

    return make


def run(app: Application, tmp_path: Path, text: str, run_id: str) -> int:
    path = tmp_path / f"{run_id}.yml"
    path.write_text(text)
    result = app.workflow.runner().run(path, RunOptions(run_id=run_id, workspace=tmp_path))
    return int(result.exit_code)


# -- a real run, read back from the file ---------------------------------------------------------


def test_a_run_writes_its_step_outcomes_with_exact_counts_and_labels(
    prometheus_app: Callable[..., Application], prom_file: Path, tmp_path: Path
) -> None:
    app = prometheus_app()

    assert run(app, tmp_path, SUCCEEDS, "r1") == 0

    found = samples(prom_file.read_text())
    assert found["bcce_step_execution_completed_total"] == {
        step("ok", "succeeded"): 1,
        step("flaky", "succeeded"): 1,
    }
    assert found["bcce_step_execution_failed_total"] == {step("broken", "failed"): 1}
    assert found["bcce_step_execution_retried_total"] == {labels(**STEP_DIMS, step="flaky"): 1}
    assert found["bcce_step_execution_duration_seconds_count"] == {
        step("ok", "succeeded"): 1,
        step("flaky", "succeeded"): 1,
        step("broken", "failed"): 1,
    }
    infinite = {
        key - {("le", "+Inf")}: value
        for key, value in found["bcce_step_execution_duration_seconds_bucket"].items()
        if ("le", "+Inf") in key
    }
    assert infinite == found["bcce_step_execution_duration_seconds_count"]


def test_a_run_writes_its_outcome_and_duration(
    prometheus_app: Callable[..., Application], prom_file: Path, tmp_path: Path
) -> None:
    app = prometheus_app()

    run(app, tmp_path, SUCCEEDS, "r1")

    found = samples(prom_file.read_text())
    succeeded = labels(workflow="nightly", status="succeeded")
    assert found["bcce_workflow_execution_completed_total"] == {succeeded: 1}
    assert found["bcce_workflow_execution_duration_seconds_count"] == {succeeded: 1}
    assert found["bcce_workflow_execution_duration_seconds_sum"][succeeded] > 0
    assert "bcce_workflow_execution_failed_total" not in found


def test_a_failed_run_is_counted_apart_from_a_succeeded_one(
    prometheus_app: Callable[..., Application], prom_file: Path, tmp_path: Path
) -> None:
    app = prometheus_app()

    run(app, tmp_path, SUCCEEDS, "r1")
    assert run(app, tmp_path, FAILS, "r2") != 0

    found = samples(prom_file.read_text())
    assert found["bcce_workflow_execution_completed_total"] == {
        labels(workflow="nightly", status="succeeded"): 1
    }
    assert found["bcce_workflow_execution_failed_total"] == {
        labels(workflow="release", status="failed"): 1
    }
    assert found["bcce_step_execution_failed_total"] == {
        step("broken", "failed"): 1,
        labels(workflow="release", type="cmd", step="build", status="failed"): 1,
    }


def test_the_default_file_is_metrics_prom_in_the_state_dir(bcce_settings: BcceSettings) -> None:
    collector = PrometheusCollector.from_settings(bcce_settings)
    try:
        assert collector.file == bcce_settings.workflow.state_dir / "metrics.prom"
        assert collector.port is None
    finally:
        collector.close()


# -- the HTTP endpoint ---------------------------------------------------------------------------


def scrape(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    with opener.open(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_the_http_endpoint_serves_the_runs_metrics(
    prometheus_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = prometheus_app(port=0, host="127.0.0.1")
    collector = app.events.metrics()
    assert isinstance(collector, PrometheusCollector)
    assert collector.port not in (None, 0)

    run(app, tmp_path, SUCCEEDS, "r1")

    found = samples(scrape(f"http://127.0.0.1:{collector.port}/metrics"))
    assert found["bcce_step_execution_completed_total"] == {
        step("ok", "succeeded"): 1,
        step("flaky", "succeeded"): 1,
    }
    assert found["bcce_workflow_execution_completed_total"] == {
        labels(workflow="nightly", status="succeeded"): 1
    }


def test_the_http_endpoint_stops_when_the_application_shuts_down(
    prometheus_app: Callable[..., Application],
) -> None:
    app = prometheus_app(port=0)
    collector = app.events.metrics()
    url = collector.url
    assert url is not None
    scrape(url)

    app.shutdown_resources()

    assert collector.port is None
    with pytest.raises(urllib.error.URLError):
        scrape(url)


def test_a_busy_port_is_a_configuration_error(prom_file: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        with pytest.raises(ConfigError) as raised:
            PrometheusCollector(prom_file, port=port, host="127.0.0.1")

    assert raised.value.key == "events.prometheus.port"


# -- the file ------------------------------------------------------------------------------------


def test_the_file_is_replaced_atomically_so_no_reader_sees_it_partial(prom_file: Path) -> None:
    collector = PrometheusCollector(prom_file)
    # Many series make a file of a few hundred kilobytes: a non-atomic write would be seen torn.
    for index in range(300):
        collector.record("step.execution.duration", 0.2, {"step": f"s{index}"}, unit="seconds")
    collector.flush()
    stop = threading.Event()
    torn: list[str] = []
    reads = 0

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            text = prom_file.read_text()
            reads += 1
            # Whole: every series' count line, and the last line complete (cheap to check).
            whole = text.count("bcce_step_execution_duration_seconds_count{") == 300
            if not whole or not text.endswith("\n"):
                torn.append(text[-200:])

    reader = threading.Thread(target=read)
    reader.start()
    inodes = set()
    try:
        for _ in range(15):
            collector.record("step.execution.duration", 0.2, {"step": "s0"}, unit="seconds")
            collector.flush()
            inodes.add(prom_file.stat().st_ino)
    finally:
        stop.set()
        reader.join(30)

    assert torn == []
    assert reads > 0
    assert len(samples(prom_file.read_text())["bcce_step_execution_duration_seconds_count"]) == 300
    assert len(inodes) > 1  # each flush put a new file in place (a rename, not a rewrite)
    assert sorted(p.name for p in prom_file.parent.iterdir()) == [".bcce.prom.lock", "bcce.prom"]


def test_the_file_accumulates_the_counts_of_successive_processes(prom_file: Path) -> None:
    first = PrometheusCollector(prom_file)
    first.record("workflow.execution.completed", 1, {"workflow": "w", "status": "succeeded"})
    first.close()
    second = PrometheusCollector(prom_file)  # a later `bcce` command: its counters start at 0
    second.record("workflow.execution.completed", 1, {"workflow": "w", "status": "succeeded"})
    second.record("workflow.execution.duration", 4.0, {"workflow": "w"}, unit="seconds")
    second.close()

    found = samples(prom_file.read_text())
    assert found["bcce_workflow_execution_completed_total"] == {
        labels(workflow="w", status="succeeded"): 2
    }
    assert found["bcce_workflow_execution_duration_seconds_sum"] == {
        labels(workflow="w", status=""): 4.0
    }


def test_repeated_flushes_add_only_what_is_new(prom_file: Path) -> None:
    collector = PrometheusCollector(prom_file)
    for _ in range(3):
        collector.record("plugin.calls", 1, {"plugin": "db", "type": "db:query"})
        collector.flush()
    collector.close()

    found = samples(prom_file.read_text())
    assert found["bcce_plugin_calls_total"] == {labels(plugin="db", type="db:query"): 3}


def test_concurrent_processes_lose_no_increment(prom_file: Path) -> None:
    writers = [PrometheusCollector(prom_file) for _ in range(3)]

    def work(collector: PrometheusCollector) -> None:
        for _ in range(20):
            collector.record("budget.exceeded", 1, {"scope": "run"})
            collector.flush()

    threads = [threading.Thread(target=work, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    found = samples(prom_file.read_text())
    assert found["bcce_budget_exceeded_total"] == {labels(scope="run"): 60}


def test_an_unreadable_file_is_started_afresh(prom_file: Path) -> None:
    prom_file.parent.mkdir(parents=True)
    prom_file.write_text("this is { not exposition text\n")
    collector = PrometheusCollector(prom_file)
    collector.record("budget.exceeded", 1, {"scope": "step"})

    collector.close()

    assert samples(prom_file.read_text())["bcce_budget_exceeded_total"] == {labels(scope="step"): 1}


def test_a_histogram_whose_buckets_changed_starts_again(prom_file: Path) -> None:
    older = PrometheusCollector(prom_file, buckets=(1.0, 2.0))
    older.record("workflow.execution.duration", 1.5, {"workflow": "w"}, unit="seconds")
    older.close()
    newer = PrometheusCollector(prom_file)
    newer.record("workflow.execution.duration", 0.2, {"workflow": "w"}, unit="seconds")

    newer.close()

    found = samples(prom_file.read_text())
    series = labels(workflow="w", status="")
    assert found["bcce_workflow_execution_duration_seconds_count"] == {series: 1}
    assert found["bcce_workflow_execution_duration_seconds_sum"] == {series: 0.2}
    bounds = {dict(key)["le"] for key in found["bcce_workflow_execution_duration_seconds_bucket"]}
    assert bounds == {
        "0.01",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1.0",
        "2.5",
        "5.0",
        "10.0",
        "30.0",
        "60.0",
        "120.0",
        "300.0",
        "600.0",
        "1800.0",
        "3600.0",
        "+Inf",
    }


def test_a_file_that_cannot_be_written_is_counted_and_never_raises(prom_file: Path) -> None:
    prom_file.mkdir(parents=True)  # a directory where the file should be
    collector = PrometheusCollector(prom_file)
    collector.record("budget.exceeded", 1, {"scope": "step"})

    collector.flush()

    assert collector.write_failures == 1


def test_increments_not_written_are_written_by_the_next_flush(prom_file: Path) -> None:
    prom_file.mkdir(parents=True)
    collector = PrometheusCollector(prom_file)
    collector.record("budget.exceeded", 1, {"scope": "step"})
    collector.flush()  # fails: a directory is in the way
    prom_file.rmdir()
    collector.record("budget.exceeded", 1, {"scope": "step"})

    collector.flush()

    found = samples(prom_file.read_text())
    assert found["bcce_budget_exceeded_total"] == {labels(scope="step"): 2}


def test_nothing_recorded_writes_no_file_and_makes_no_directory(prom_file: Path) -> None:
    PrometheusCollector(prom_file).close()

    assert not prom_file.parent.exists()


def test_a_file_under_something_that_is_not_a_directory_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "plain").write_text("")

    with pytest.raises(ConfigError) as raised:
        PrometheusCollector(tmp_path / "plain" / "sub" / "bcce.prom")

    assert raised.value.key == "events.prometheus.file"


# -- names ---------------------------------------------------------------------------------------


def test_every_catalogue_metric_has_its_prometheus_name() -> None:
    names = {name: prometheus_name(spec) for name, spec in CATALOGUE.items()}

    assert names == {
        "step.execution.duration": "bcce_step_execution_duration_seconds",
        "step.execution.completed": "bcce_step_execution_completed",
        "step.execution.failed": "bcce_step_execution_failed",
        "step.execution.cancelled": "bcce_step_execution_cancelled",
        "step.execution.retried": "bcce_step_execution_retried",
        "workflow.execution.duration": "bcce_workflow_execution_duration_seconds",
        "workflow.execution.completed": "bcce_workflow_execution_completed",
        "workflow.execution.failed": "bcce_workflow_execution_failed",
        "workflow.execution.cancelled": "bcce_workflow_execution_cancelled",
        "policy.denials": "bcce_policy_denials",
        "plugin.calls": "bcce_plugin_calls",
        "agent.tokens.input": "bcce_agent_tokens_input",
        "agent.tokens.output": "bcce_agent_tokens_output",
        "agent.cost": "bcce_agent_cost_usd",
        "budget.exceeded": "bcce_budget_exceeded",
    }


def test_cost_is_exposed_as_a_dollar_counter(prom_file: Path) -> None:
    collector = PrometheusCollector(prom_file)
    dims = {"model": "m", "team": "t", "project": "p", "workflow": "w"}
    collector.record("agent.cost", 0.25, dims, unit="usd")
    collector.record("agent.tokens.input", 100, dims, unit="tokens")
    collector.close()

    found = samples(prom_file.read_text())
    assert found["bcce_agent_cost_usd_total"] == {labels(**dims): 0.25}
    assert found["bcce_agent_tokens_input_total"] == {labels(**dims): 100}


def test_a_name_outside_the_catalogue_is_exposed_with_its_own_labels(prom_file: Path) -> None:
    collector = PrometheusCollector(prom_file)
    collector.record("queue.wait", 0.5, {"queue": "q"}, unit="seconds")
    collector.close()

    assert metric_spec("queue.wait", "seconds").kind == "histogram"
    found = samples(prom_file.read_text())
    assert found["bcce_queue_wait_seconds_count"] == {labels(queue="q"): 1}


def test_a_name_that_clashes_in_prometheus_is_dropped_without_raising(prom_file: Path) -> None:
    collector = PrometheusCollector(prom_file)
    collector.record("queue.depth", 1, {"q": "a"})
    collector.record("queue_depth", 5, {"q": "a"})  # also bcce_queue_depth_total
    collector.close()

    found = samples(prom_file.read_text())
    assert found["bcce_queue_depth_total"] == {labels(q="a"): 1}


def test_the_global_registry_is_never_used(prom_file: Path) -> None:
    collector = PrometheusCollector(prom_file)
    collector.record("budget.exceeded", 1, {"scope": "run"})
    collector.close()

    exposed = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "bcce_" not in exposed
