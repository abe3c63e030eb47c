"""The ``eventbridge`` subscriber: a run's events on an EventBridge bus (moto server), batched,
retried, trimmed to the size limit, and never failing the run."""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bcce.containers.application import Application
    from bcce.events.eventbridge import EventBridgeSubscriber
    from bcce.testing.aws import MotoServer

pytestmark = pytest.mark.usefixtures("aws_env")

WORKFLOW = """
version: 1
workflow: ship
steps:
  - {id: build, type: cmd, command: echo built}
  - {id: test, type: cmd, command: 'exit 2'}
  - {id: deploy, type: cmd, command: echo never}
"""

BUS = "bcce-bus"


class Bus:
    """An EventBridge bus on the moto server whose rule (source "bcce") feeds an SQS queue."""

    def __init__(self, moto: MotoServer) -> None:
        import boto3

        self.events = boto3.client("events", endpoint_url=moto.url, region_name="us-east-1")
        self.sqs = boto3.client("sqs", endpoint_url=moto.url, region_name="us-east-1")
        self.events.create_event_bus(Name=BUS)
        self.queue = self.sqs.create_queue(QueueName="bcce-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])
        self.events.put_rule(
            Name="bcce-all", EventBusName=BUS, EventPattern=json.dumps({"source": ["bcce"]})
        )
        self.events.put_targets(
            Rule="bcce-all",
            EventBusName=BUS,
            Targets=[{"Id": "queue", "Arn": arn["Attributes"]["QueueArn"]}],
        )

    def received(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The EventBridge events the queue got, in ``detail.seq`` order, once ``count`` came."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            reply = self.sqs.receive_message(
                QueueUrl=self.queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            for message in reply.get("Messages", []):
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
        # SQS standard queues do not keep order; the detail's seq does.
        return sorted(found, key=lambda e: int(e["detail"]["seq"]))

    def empty(self) -> bool:
        reply = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
        return not reply.get("Messages")


@pytest.fixture
def bus(aws_env: MotoServer) -> Bus:
    return Bus(aws_env)


@pytest.fixture
def make_app(
    bcce_make_app: Callable[..., Application], tmp_path: Path, aws_env: MotoServer
) -> Callable[..., Application]:
    """``make_app(**eventbridge)``: the eventbridge subscriber on, AWS on the moto server."""
    from bcce.settings.layers import LayerOptions

    def make(**eventbridge: Any) -> Application:
        options = LayerOptions(
            environ={"PATH": os.environ["PATH"]},
            cwd=tmp_path,
            user_config_file=tmp_path / "none.yaml",
        )
        runs = str(tmp_path / "runs")
        return bcce_make_app(
            options=options,
            storage={"root": runs},
            workflow={"state_dir": runs},
            aws={"endpoint_url": aws_env.url, "region": "us-east-1"},
            events={"subscribers": ["eventbridge"], "eventbridge": {"bus": BUS, **eventbridge}},
        )

    return make


def run(app: Application, tmp_path: Path, text: str = WORKFLOW, run_id: str = "run-1") -> str:
    from bcce.workflow.runner import RunOptions

    path = tmp_path / "workflow.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    result = app.workflow.runner().run(path, RunOptions(run_id=run_id, workspace=tmp_path))
    return str(result.state.status)


def subscriber(app: Application) -> EventBridgeSubscriber:
    found: EventBridgeSubscriber = app.events.eventbridge()
    return found


def events_file(tmp_path: Path, run_id: str = "run-1") -> list[dict[str, Any]]:
    path = tmp_path / "runs" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- a real run on the moto server -------------------------------------------------------------
def test_a_runs_selected_events_reach_the_bus_in_order(
    make_app: Callable[..., Application], bus: Bus, tmp_path: Path
) -> None:
    app = make_app()
    assert run(app, tmp_path) == "failed"
    received = bus.received(3)
    assert [e["detail-type"] for e in received] == [
        "workflow.started",
        "step.failed",
        "workflow.failed",
    ]
    assert {e["source"] for e in received} == {"bcce"}
    failed = received[1]["detail"]
    assert (failed["run_id"], failed["type"]) == ("run-1", "step.failed")
    assert failed["payload"]["step"] == "test"
    assert failed["payload"]["exit_code"] == 2
    # The detail is the event as the run recorded it.
    [recorded] = [e for e in events_file(tmp_path) if e["type"] == "step.failed"]
    assert (failed["seq"], failed["time"], failed["payload"]) == (
        recorded["seq"],
        recorded["time"],
        recorded["payload"],
    )


def test_every_event_the_patterns_select_is_published_once(
    make_app: Callable[..., Application], bus: Bus, tmp_path: Path
) -> None:
    app = make_app(events=["workflow.*", "step.*"])
    run(app, tmp_path)
    expected = [
        (e["seq"], e["type"])
        for e in events_file(tmp_path)
        if e["type"].startswith(("workflow.", "step."))
    ]
    received = bus.received(len(expected))
    assert [(e["detail"]["seq"], e["detail-type"]) for e in received] == expected
    assert bus.empty()


def test_entries_go_in_batches_of_batch_size(
    make_app: Callable[..., Application], bus: Bus, tmp_path: Path
) -> None:
    app = make_app(events=["workflow.*", "step.*"], batch_size=3)
    sizes: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(json.loads(params["body"])["Entries"]))

    app.aws.events().meta.events.register("before-call.events.PutEvents", count)
    run(app, tmp_path)
    total = len([e for e in events_file(tmp_path) if e["type"].startswith(("workflow.", "step."))])
    assert sum(sizes) == total > 3
    assert all(size == 3 for size in sizes[:-1])
    assert 1 <= sizes[-1] <= 3


def test_events_are_sent_when_the_run_ends_not_when_bcce_shuts_down(
    make_app: Callable[..., Application], bus: Bus, tmp_path: Path
) -> None:
    app = make_app()  # three selected events: less than one batch
    run(app, tmp_path)
    assert [e["detail-type"] for e in bus.received(3)] == [
        "workflow.started",
        "step.failed",
        "workflow.failed",
    ]
    assert subscriber(app).calls == 1


class FirstEntryFailsOnce:
    """An events client whose first PutEvents reports its first entry failed (throttled)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[list[str]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([e["DetailType"] for e in Entries])
        if len(self.calls) > 1:
            return dict(self.real.put_events(Entries=Entries))
        rest = self.real.put_events(Entries=Entries[1:]) if Entries[1:] else {"Entries": []}
        failed = {"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}
        return {"FailedEntryCount": 1, "Entries": [failed, *rest["Entries"]]}


def test_a_refused_entry_is_retried_and_delivered_once(
    make_app: Callable[..., Application], bus: Bus, tmp_path: Path
) -> None:
    app = make_app()
    wrapper = FirstEntryFailsOnce(app.aws.events())
    app.aws.events.override(wrapper)
    try:
        assert run(app, tmp_path) == "failed"
    finally:
        app.aws.events.reset_override()
    received = bus.received(3)
    assert [e["detail-type"] for e in received] == [
        "workflow.started",
        "step.failed",
        "workflow.failed",
    ]
    assert wrapper.calls[1] == ["workflow.started"]  # only the refused entry again
    assert bus.empty()
    assert (subscriber(app).retried, subscriber(app).lost) == (1, 0)


class AlwaysFails:
    def __init__(self) -> None:
        self.calls = 0

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        raise ConnectionError("EventBridge is unreachable")


def test_an_unreachable_bus_never_fails_the_run_and_the_loss_is_counted(
    make_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = make_app(max_attempts=2)
    failing = AlwaysFails()
    app.aws.events.override(failing)
    try:
        assert run(app, tmp_path) == "failed"  # the step's failure, nothing else
    finally:
        app.aws.events.reset_override()
    assert subscriber(app).lost == 3
    assert failing.calls == 2
    assert app.events.bus().failures == 0
    states = {e["payload"].get("step"): e["type"] for e in events_file(tmp_path)}
    assert states["build"] == "step.completed"


# -- the subscriber on its own -------------------------------------------------------------
class Recorder:
    """A stand-in events client that accepts everything and keeps each call's entries."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(list(Entries))
        return {
            "FailedEntryCount": 0,
            "Entries": [{"EventId": str(i)} for i in range(len(Entries))],
        }


def make_subscriber(client: Any, **options: Any) -> EventBridgeSubscriber:
    from bcce.events.eventbridge import EventBridgeSubscriber

    return EventBridgeSubscriber(client=lambda: client, bus=BUS, **options)


def event(event_type: str, seq: int = 1, **payload: Any) -> Any:
    from bcce.events.bus import Event

    return Event(event_type, payload, run_id="run-7", timestamp=1_700_000_000.5, seq=seq)


def test_an_entry_has_source_detail_type_detail_bus_and_time() -> None:
    import datetime

    client = Recorder()
    publisher = make_subscriber(client, source="acme.bcce")
    publisher.handle(event("step.failed", seq=4, step="test"))
    publisher.flush()
    [[entry]] = client.calls
    assert entry["Source"] == "acme.bcce"
    assert entry["DetailType"] == "step.failed"
    assert entry["EventBusName"] == BUS
    assert entry["Time"] == datetime.datetime.fromtimestamp(1_700_000_000.5, datetime.UTC)
    assert json.loads(entry["Detail"]) == {
        "run_id": "run-7",
        "seq": 4,
        "time": "2023-11-14T22:13:20.500+00:00",
        "type": "step.failed",
        "payload": {"step": "test"},
    }


def test_an_entry_over_the_size_limit_is_sent_with_a_note_instead_of_its_payload() -> None:
    from bcce.events.eventbridge import MAX_REQUEST_BYTES, entry_size

    client = Recorder()
    publisher = make_subscriber(client)
    publisher.handle(event("step.failed", error="x" * (300 * 1024)))
    publisher.flush()
    [[entry]] = client.calls
    detail = json.loads(entry["Detail"])
    assert detail["payload"]["bcce_trimmed"] is True
    assert "over EventBridge's" in detail["payload"]["note"]
    assert (detail["type"], detail["seq"]) == ("step.failed", 1)
    assert entry_size(entry) <= MAX_REQUEST_BYTES
    assert publisher.trimmed == 1


def test_a_request_never_carries_more_than_256_kb() -> None:
    from bcce.events.eventbridge import MAX_REQUEST_BYTES, entry_size

    client = Recorder()
    publisher = make_subscriber(client)
    for seq in range(5):
        publisher.handle(event("step.failed", seq=seq, error="x" * (100 * 1024)))
    publisher.flush()
    assert sum(len(call) for call in client.calls) == 5
    assert all(sum(map(entry_size, call)) <= MAX_REQUEST_BYTES for call in client.calls)


def test_only_selected_events_are_published_and_a_runs_end_sends_them() -> None:
    client = Recorder()
    publisher = make_subscriber(client, events=["step.failed"])
    publisher.handle(event("step.completed", seq=1))
    publisher.handle(event("step.failed", seq=2))
    assert client.calls == []
    publisher.handle(event("workflow.failed", seq=3))
    assert [[e["DetailType"] for e in call] for call in client.calls] == [["step.failed"]]


def test_an_entry_eventbridge_calls_malformed_is_not_retried() -> None:
    class Malformed(Recorder):
        def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            self.calls.append(list(Entries))
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "MalformedDetail"}]}

    client = Malformed()
    publisher = make_subscriber(client)
    publisher.handle(event("step.failed"))
    publisher.flush()
    assert (len(client.calls), publisher.lost, publisher.retried) == (1, 1, 0)


def test_the_client_is_created_on_first_use_only() -> None:
    from bcce.events.eventbridge import EventBridgeSubscriber

    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    publisher = EventBridgeSubscriber(client=factory, bus=BUS)
    publisher.handle(event("step.completed"))  # not selected: no call, no client
    assert made == []
    publisher.handle(event("workflow.failed", seq=2))
    publisher.handle(event("workflow.failed", seq=3))
    assert len(made) == 1
    assert len(made[0].calls) == 2


def test_without_a_bus_building_the_subscriber_is_a_config_error(bcce_settings: Any) -> None:
    from bcce.errors import ConfigError
    from bcce.events.eventbridge import EventBridgeSubscriber

    with pytest.raises(ConfigError) as raised:
        EventBridgeSubscriber.from_settings(
            bcce_settings, client=lambda: pytest.fail("the client was built")
        )
    assert raised.value.key == "events.eventbridge.bus"
    assert "events.eventbridge.bus" in raised.value.render()


def test_an_application_choosing_eventbridge_without_a_bus_does_not_build(
    bcce_make_app: Callable[..., Application],
) -> None:
    from bcce.errors import ConfigError

    with pytest.raises(ConfigError, match="needs an event bus"):
        bcce_make_app(events={"subscribers": ["eventbridge"]})
