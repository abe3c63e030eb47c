"""Doctor checks ``bedrock`` and ``model`` run through a CheckRegistry against test applications.

The application's bedrock client is a real botocore client answering from a ``Stubber`` (moto
has no ListFoundationModels); an unreachable Bedrock is a closed port on 127.0.0.1.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from dependency_injector import providers

from bcce.containers.application import Application
from bcce.doctor.bedrock_checks import bedrock_reachable, configured_model
from bcce.doctor.registry import CheckRegistry, DoctorContext, Outcome, Status
from bcce.testing.aws import MotoServer

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
ACCOUNT = "123456789012"


def _fm(model_id: str, inference: str, region: str = "us-east-1") -> dict[str, Any]:
    return {
        "modelArn": f"arn:aws:bedrock:{region}::foundation-model/{model_id}",
        "modelId": model_id,
        "modelName": model_id,
        "providerName": "Anthropic",
        "outputModalities": ["TEXT"],
        "inferenceTypesSupported": [inference],
        "modelLifecycle": {"status": "ACTIVE"},
    }


def _profile(prefix: str, model_id: str, region: str = "us-east-1") -> dict[str, Any]:
    profile_id = f"{prefix}.{model_id}"
    return {
        "inferenceProfileName": profile_id,
        "inferenceProfileArn": f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{profile_id}",
        "inferenceProfileId": profile_id,
        "models": [{"modelArn": f"arn:aws:bedrock:{region}::foundation-model/{model_id}"}],
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    }


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


class Bedrock:
    """Queues Bedrock answers on a Stubber over a real client."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.client = _session().client(
            "bedrock", region_name=region, aws_access_key_id="t", aws_secret_access_key="t"
        )
        self.stubber = Stubber(self.client)

    def models(self, *summaries: dict[str, Any]) -> Bedrock:
        self.stubber.add_response(
            "list_foundation_models",
            {"modelSummaries": list(summaries)},
            {"byProvider": "Anthropic"},
        )
        return self

    def profiles(self, *summaries: dict[str, Any]) -> Bedrock:
        self.stubber.add_response(
            "list_inference_profiles",
            {"inferenceProfileSummaries": list(summaries)},
            {"typeEquals": "SYSTEM_DEFINED", "maxResults": 1000},
        )
        self.stubber.add_response(
            "list_inference_profiles",
            {"inferenceProfileSummaries": []},
            {"typeEquals": "APPLICATION", "maxResults": 1000},
        )
        return self

    def access(self, model_id: str, agreement: str = "AVAILABLE") -> Bedrock:
        response = {
            "modelId": model_id,
            "agreementAvailability": {"status": agreement},
            "authorizationStatus": "AUTHORIZED",
            "entitlementAvailability": "AVAILABLE",
            "regionAvailability": "AVAILABLE",
        }
        self.stubber.add_response(
            "get_foundation_model_availability", response, {"modelId": model_id}
        )
        return self

    def error(self, operation: str, code: str, status: int = 403) -> Bedrock:
        self.stubber.add_client_error(operation, code, f"{code} message", status)
        return self

    def us_east_1(self) -> Bedrock:
        return self.models(_fm(HAIKU_3, "ON_DEMAND"), _fm(SONNET_45, "INFERENCE_PROFILE")).profiles(
            _profile("us", SONNET_45), _profile("global", SONNET_45)
        )


@pytest.fixture
def bedrock() -> Iterator[Bedrock]:
    stub = Bedrock()
    with stub.stubber:
        yield stub
    stub.stubber.assert_no_pending_responses()


@pytest.fixture
def make_app(
    bcce_make_app: Callable[..., Application], bedrock: Bedrock
) -> Callable[..., Application]:
    """An application using ``bedrock`` as its Bedrock client, with ``agent`` settings."""

    def make(**agent: Any) -> Application:
        app = bcce_make_app(aws={"region": "us-east-1"}, agent={"provider": "bedrock", **agent})
        app.aws.bedrock.override(providers.Object(bedrock.client))
        return app

    return make


def _run(app: Application, name: str) -> Outcome:
    registry = CheckRegistry([bedrock_reachable, configured_model])
    (outcome,) = registry.run(DoctorContext(app=app), {name})
    return outcome


def test_the_checks_are_named_bedrock_and_model() -> None:
    assert CheckRegistry([bedrock_reachable, configured_model]).names() == ["bedrock", "model"]


# --- bedrock ----------------------------------------------------------------------------------


def test_bedrock_is_ok_when_it_lists_anthropic_models(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.models(_fm(SONNET_45, "INFERENCE_PROFILE"), _fm(HAIKU_3, "ON_DEMAND"))

    outcome = _run(make_app(), "bedrock")

    assert outcome.result.status == Status.OK
    assert outcome.result.message == "reachable in us-east-1: 2 Anthropic foundation models"
    assert outcome.required


def test_bedrock_fails_when_listing_is_denied(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.error("list_foundation_models", "AccessDeniedException")

    outcome = _run(make_app(), "bedrock")

    assert outcome.result.status == Status.FAIL
    assert "access denied in us-east-1" in outcome.result.message
    assert outcome.result.fix is not None
    assert "bedrock:ListFoundationModels" in outcome.result.fix


def test_bedrock_fails_when_the_region_offers_no_anthropic_models(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.models()

    outcome = _run(make_app(), "bedrock")

    assert outcome.result.status == Status.FAIL
    assert "offers no Anthropic models" in outcome.result.message
    assert outcome.result.fix is not None
    assert "aws.region" in outcome.result.fix


def test_bedrock_fails_when_the_endpoint_is_unreachable(
    bcce_make_app: Callable[..., Application], aws_env: MotoServer
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    app = bcce_make_app(
        agent={"provider": "bedrock"},
        aws={
            "region": "us-east-1",
            "endpoint_urls": {"bedrock": f"http://127.0.0.1:{closed}"},
            "max_attempts": 1,
        },
    )

    outcome = _run(app, "bedrock")

    assert outcome.result.status == Status.FAIL
    assert "Amazon Bedrock is not reachable in us-east-1" in outcome.result.message


@pytest.mark.parametrize("name", ["bedrock", "model"])
@pytest.mark.parametrize("provider", ["scripted", "anthropic"])
def test_checks_are_skipped_when_another_provider_is_configured(
    bcce_make_app: Callable[..., Application], name: str, provider: str
) -> None:
    app = bcce_make_app(agent={"provider": provider})

    outcome = _run(app, name)

    assert outcome.result.status == Status.SKIP
    assert outcome.result.message == (f"agent.provider is '{provider}': Amazon Bedrock is not used")
    assert not outcome.required


def test_behind_a_gateway_a_bedrock_failure_only_warns(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.error("list_foundation_models", "AccessDeniedException")

    outcome = _run(make_app(base_url="http://127.0.0.1:9"), "bedrock")

    assert outcome.result.status == Status.WARN
    assert not outcome.required


# --- model ------------------------------------------------------------------------------------


def test_model_is_ok_when_the_configured_profile_is_offered_and_accessible(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.us_east_1().access(SONNET_45)

    outcome = _run(make_app(model=f"us.{SONNET_45}"), "model")

    assert outcome.result.status == Status.OK
    assert outcome.result.message.startswith(f"us.{SONNET_45} (")
    assert "is offered in us-east-1" in outcome.result.message
    assert outcome.result.details["access"] == "available"


def test_model_fails_for_a_model_that_needs_an_inference_profile(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.us_east_1().access(SONNET_45)

    outcome = _run(make_app(model=SONNET_45), "model")

    assert outcome.result.status == Status.FAIL
    assert "cannot be invoked on demand in us-east-1" in outcome.result.message
    assert outcome.result.fix == (
        f"set agent.model to us.{SONNET_45} (BCCE_AGENT__MODEL=us.{SONNET_45})"
    )


def test_model_fails_for_a_profile_of_another_geography_and_suggests_the_local_one(
    bcce_make_app: Callable[..., Application],
) -> None:
    eu = Bedrock(region="eu-west-1")
    eu.models(_fm(SONNET_45, "INFERENCE_PROFILE", "eu-west-1")).profiles(
        _profile("eu", SONNET_45, "eu-west-1"), _profile("global", SONNET_45, "eu-west-1")
    )
    app = bcce_make_app(
        aws={"region": "eu-west-1"}, agent={"provider": "bedrock", "model": f"us.{SONNET_45}"}
    )
    app.aws.bedrock.override(providers.Object(eu.client))

    with eu.stubber:
        outcome = _run(app, "model")

    assert outcome.result.status == Status.FAIL
    assert outcome.result.message.startswith(f"us.{SONNET_45} is not offered in eu-west-1")
    assert outcome.result.fix is not None
    assert f"eu.{SONNET_45}" in outcome.result.fix


def test_model_fails_for_an_unknown_model_and_points_at_recommend(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.us_east_1()

    outcome = _run(make_app(model="anthropic.claude-nonexistent-v1:0"), "model")

    assert outcome.result.status == Status.FAIL
    assert outcome.result.fix is not None
    assert "bcce models recommend" in outcome.result.fix


def test_model_fails_when_the_account_has_no_access(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.us_east_1().access(SONNET_45, agreement="NOT_AVAILABLE")

    outcome = _run(make_app(model=f"us.{SONNET_45}"), "model")

    assert outcome.result.status == Status.FAIL
    assert "access is not-available" in outcome.result.message
    assert outcome.result.details["access"] == "not-available"


def test_model_warns_when_access_cannot_be_verified(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.us_east_1().error("get_foundation_model_availability", "AccessDeniedException")

    outcome = _run(make_app(model=f"us.{SONNET_45}"), "model")

    assert outcome.result.status == Status.WARN
    assert "access not verified" in outcome.result.message
    assert outcome.result.fix is not None
    assert "bedrock:GetFoundationModelAvailability" in outcome.result.fix


def test_model_fails_when_bedrock_cannot_be_asked(
    make_app: Callable[..., Application], bedrock: Bedrock
) -> None:
    bedrock.error("list_foundation_models", "UnrecognizedClientException")

    outcome = _run(make_app(model=f"us.{SONNET_45}"), "model")

    assert outcome.result.status == Status.FAIL
    assert "rejected the credentials" in outcome.result.message
    assert outcome.required


def test_model_fails_when_no_region_is_configured(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(agent={"provider": "bedrock"})

    outcome = _run(app, "model")

    assert outcome.result.status == Status.FAIL
    assert "no AWS region configured" in outcome.result.message
