"""``bcce models list|recommend`` against a test application whose bedrock client is stubbed.

moto has no ListFoundationModels/ListInferenceProfiles, so ``app.aws.bedrock`` is overridden with
a real botocore client answering from a ``Stubber``; the region flag is exercised over real HTTP
to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner, Result
from dependency_injector import providers

from bcce.cli.main import cli
from bcce.containers.application import Application
from bcce.errors import ExitCode
from bcce.testing.aws import MotoServer

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE_ARN_PREFIX = "arn:aws:bedrock:us-east-1:123456789012:inference-profile"


def _fm(model_id: str, name: str, inference: str = "INFERENCE_PROFILE") -> dict[str, Any]:
    return {
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
        "modelId": model_id,
        "modelName": name,
        "providerName": "Anthropic",
        "inputModalities": ["TEXT"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": True,
        "inferenceTypesSupported": [inference],
        "modelLifecycle": {"status": "ACTIVE"},
    }


def _profile(prefix: str, model_id: str) -> dict[str, Any]:
    profile_id = f"{prefix}.{model_id}"
    return {
        "inferenceProfileName": f"{prefix.upper()} {model_id}",
        "inferenceProfileArn": f"{PROFILE_ARN_PREFIX}/{profile_id}",
        "inferenceProfileId": profile_id,
        "models": [
            {"modelArn": f"arn:aws:bedrock:{r}::foundation-model/{model_id}"}
            for r in ("us-east-1", "us-west-2")
        ],
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    }


def _available(model_id: str) -> dict[str, Any]:
    return {
        "modelId": model_id,
        "agreementAvailability": {"status": "AVAILABLE"},
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "AVAILABLE",
        "regionAvailability": "AVAILABLE",
    }


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@pytest.fixture
def stubber() -> Iterator[Stubber]:
    client = _session().client(
        "bedrock", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    stub = Stubber(client)
    with stub:
        yield stub
    stub.assert_no_pending_responses()


@pytest.fixture
def app(bcce_make_app: Callable[..., Application], stubber: Stubber) -> Application:
    application = bcce_make_app(aws={"region": "us-east-1"})
    application.aws.bedrock.override(providers.Object(stubber.client))
    return application


def _catalog(stubber: Stubber, *, access: bool = True) -> None:
    stubber.add_response(
        "list_foundation_models",
        {
            "modelSummaries": [
                _fm(HAIKU_3, "Claude 3 Haiku", inference="ON_DEMAND"),
                _fm(SONNET_45, "Claude Sonnet 4.5"),
            ]
        },
        {"byProvider": "Anthropic"},
    )
    for kind, summaries in (
        ("SYSTEM_DEFINED", [_profile("us", SONNET_45), _profile("global", SONNET_45)]),
        ("APPLICATION", []),
    ):
        stubber.add_response(
            "list_inference_profiles",
            {"inferenceProfileSummaries": summaries},
            {"typeEquals": kind, "maxResults": 1000},
        )
    if access:
        for model_id in (HAIKU_3, SONNET_45):
            stubber.add_response(
                "get_foundation_model_availability", _available(model_id), {"modelId": model_id}
            )


def _run(app: Application, *args: str) -> Result:
    return CliRunner().invoke(cli, ["models", *args], obj=app)


def test_models_is_listed_in_the_root_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    assert "models    List Claude models on Amazon Bedrock and recommend one." in result.stdout


def test_list_prints_a_table_of_models_and_profiles(app: Application, stubber: Stubber) -> None:
    _catalog(stubber)

    result = _run(app, "list")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Anthropic models in us-east-1: 2 foundation models, 2 inference profiles"
    assert lines[1].split() == ["ID", "NAME", "KIND", "LIFECYCLE", "ACCESS", "INVOCATION", "STREAM"]
    haiku = next(line for line in lines if line.startswith(HAIKU_3))
    assert haiku.split()[-4:] == ["ACTIVE", "available", "ON_DEMAND", "yes"]
    us_sonnet = next(line for line in lines if line.startswith(f"us.{SONNET_45}"))
    assert "profile" in us_sonnet.split()
    assert "cross-region (us-east-1, us-west-2)" in us_sonnet


def test_list_json_has_region_models_and_access(app: Application, stubber: Stubber) -> None:
    _catalog(stubber)

    result = _run(app, "list", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["region"] == "us-east-1"
    assert data["provider"] == "Anthropic"
    assert [m["id"] for m in data["models"]] == [
        HAIKU_3,
        SONNET_45,
        f"global.{SONNET_45}",
        f"us.{SONNET_45}",
    ]
    assert {m["access"]["status"] for m in data["models"]} == {"available"}
    assert data["notes"] == []


def test_list_without_access_check_makes_no_availability_calls(
    app: Application, stubber: Stubber
) -> None:
    _catalog(stubber, access=False)

    result = _run(app, "list", "--no-access-check")

    assert result.exit_code == 0, result.output
    assert "access unknown: not checked" in result.stdout


def test_list_prints_notes_about_what_it_could_not_list(app: Application, stubber: Stubber) -> None:
    stubber.add_response(
        "list_foundation_models",
        {"modelSummaries": [_fm(HAIKU_3, "Claude 3 Haiku", inference="ON_DEMAND")]},
    )
    stubber.add_client_error("list_inference_profiles", "AccessDeniedException", "no", 403)
    stubber.add_client_error("list_inference_profiles", "AccessDeniedException", "no", 403)

    result = _run(app, "list", "--no-access-check")

    assert result.exit_code == 0, result.output
    assert "note: SYSTEM_DEFINED inference profiles not listed: " in result.stdout
    assert "note: APPLICATION inference profiles not listed: " in result.stdout


def test_recommend_prints_the_model_the_reason_and_the_setting(
    app: Application, stubber: Stubber
) -> None:
    _catalog(stubber)

    result = _run(app, "recommend", "--use-case", "coding")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"coding in us-east-1: us.{SONNET_45}"
    assert lines[1].startswith("  why: coding prefers Sonnet > Opus > Haiku")
    assert lines[2] == f"  alternatives: global.{SONNET_45}, {HAIKU_3}"
    assert f"BCCE_AGENT__MODEL=us.{SONNET_45}" in lines[3]


def test_recommend_defaults_to_coding(app: Application, stubber: Stubber) -> None:
    _catalog(stubber)

    result = _run(app, "recommend", "--json")

    assert json.loads(result.stdout)["use_case"] == "coding"


def test_recommend_json_has_the_choice_and_why(app: Application, stubber: Stubber) -> None:
    _catalog(stubber)

    result = _run(app, "recommend", "--use-case", "fast", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["region"] == "us-east-1"
    assert data["use_case"] == "fast"
    assert data["model_id"] == HAIKU_3
    assert "on demand" in data["reason"]
    assert data["model"]["id"] == HAIKU_3


def test_recommend_rejects_an_unknown_use_case(app: Application) -> None:
    result = _run(app, "recommend", "--use-case", "poetry")

    assert result.exit_code == ExitCode.USAGE
    assert "'poetry' is not one of 'coding', 'review', 'fast'" in result.stderr


def test_an_aws_error_prints_one_message_with_a_hint_and_exits_1(
    app: Application, stubber: Stubber
) -> None:
    stubber.add_client_error("list_foundation_models", "AccessDeniedException", "nope", 403)

    result = _run(app, "list")

    assert result.exit_code == ExitCode.RUN_FAILED
    assert result.stderr.startswith("error: [BCCE800] cannot list Bedrock foundation models")
    assert "hint: allow bedrock:ListFoundationModels" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_usable_model_is_an_error_with_a_hint(app: Application, stubber: Stubber) -> None:
    stubber.add_response("list_foundation_models", {"modelSummaries": []})
    for _ in ("SYSTEM_DEFINED", "APPLICATION"):
        stubber.add_response("list_inference_profiles", {"inferenceProfileSummaries": []})

    result = _run(app, "recommend")

    assert result.exit_code == ExitCode.RUN_FAILED
    assert "no usable Anthropic model for coding in us-east-1" in result.stderr


def test_the_configured_region_uses_the_applications_client(
    app: Application, stubber: Stubber
) -> None:
    _catalog(stubber, access=False)

    result = _run(app, "list", "--region", "us-east-1", "--no-access-check")

    assert result.exit_code == 0, result.output


def test_another_region_gets_a_client_for_that_region(
    bcce_make_app: Callable[..., Application], aws_env: MotoServer
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    app = bcce_make_app(
        aws={
            "region": "us-east-1",
            "endpoint_urls": {"bedrock": f"http://127.0.0.1:{closed}"},
            "max_attempts": 1,
        }
    )

    result = _run(app, "list", "--region", "eu-west-1")

    assert result.exit_code == ExitCode.RUN_FAILED
    assert "Amazon Bedrock is not reachable in eu-west-1" in result.stderr
