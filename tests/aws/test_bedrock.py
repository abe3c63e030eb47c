"""Bedrock model discovery, recommendation and availability (bcce.aws.bedrock).

moto 5.2 implements none of ListFoundationModels, ListInferenceProfiles,
GetFoundationModelAvailability or GetFoundationModel, so these tests drive a real botocore client
through ``botocore.stub.Stubber`` (responses validated against the service model). Failures of
the transport itself (connection refused, no credentials) use real clients on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber

from bcce.aws import bedrock
from bcce.aws.bedrock import AccessStatus, ModelInfo
from bcce.errors import AwsError, UsageError
from bcce.testing.aws import MotoServer

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
OPUS_41 = "anthropic.claude-opus-4-1-20250805-v1:0"
OPUS_45 = "anthropic.claude-opus-4-5-20251101-v1:0"
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET_35 = "anthropic.claude-3-5-sonnet-20240620-v1:0"
SONNET_3_28K = "anthropic.claude-3-sonnet-20240229-v1:0:28k"
LLAMA = "meta.llama3-70b-instruct-v1:0"
ACCOUNT = "123456789012"
APP_PROFILE_ARN = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:application-inference-profile/a1b2c3d4e5f6"


def fm(
    model_id: str,
    name: str,
    *,
    region: str = "us-east-1",
    inference: tuple[str, ...] = ("INFERENCE_PROFILE",),
    lifecycle: str = "ACTIVE",
    provider: str = "Anthropic",
    streaming: bool = True,
) -> dict[str, Any]:
    """A ListFoundationModels summary as Bedrock returns it."""
    return {
        "modelArn": f"arn:aws:bedrock:{region}::foundation-model/{model_id}",
        "modelId": model_id,
        "modelName": name,
        "providerName": provider,
        "inputModalities": ["TEXT", "IMAGE"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": streaming,
        "customizationsSupported": [],
        "inferenceTypesSupported": list(inference),
        "modelLifecycle": {"status": lifecycle},
    }


def profile(
    prefix: str,
    model_id: str,
    *,
    region: str = "us-east-1",
    routes: tuple[str, ...] = ("us-east-1", "us-east-2", "us-west-2"),
    kind: str = "SYSTEM_DEFINED",
) -> dict[str, Any]:
    """A ListInferenceProfiles summary for ``prefix.model_id``."""
    profile_id = f"{prefix}.{model_id}"
    return {
        "inferenceProfileName": f"{prefix.upper()} {model_id}",
        "inferenceProfileArn": f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{profile_id}",
        "inferenceProfileId": profile_id,
        "models": [
            {"modelArn": f"arn:aws:bedrock:{r}::foundation-model/{model_id}"} for r in routes
        ],
        "status": "ACTIVE",
        "type": kind,
    }


def app_profile(model_id: str = SONNET_45) -> dict[str, Any]:
    return {
        "inferenceProfileName": "team-coding",
        "inferenceProfileArn": APP_PROFILE_ARN,
        "inferenceProfileId": "a1b2c3d4e5f6",
        "models": [{"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}"}],
        "status": "ACTIVE",
        "type": "APPLICATION",
    }


def availability(
    model_id: str,
    *,
    agreement: str = "AVAILABLE",
    authorization: str = "AUTHORIZED",
    entitlement: str = "AVAILABLE",
    region: str = "AVAILABLE",
) -> dict[str, Any]:
    return {
        "modelId": model_id,
        "agreementAvailability": {"status": agreement},
        "authorizationStatus": authorization,
        "entitlementAvailability": entitlement,
        "regionAvailability": region,
    }


@functools.cache
def _shared_session() -> boto3.session.Session:
    """One session for the stubbed clients: it loads the service model once, not per test."""
    return boto3.session.Session()


class FakeBedrock:
    """A real bedrock client whose responses are queued on a Stubber, in call order."""

    def __init__(self, region: str = "us-east-1", client: Any = None) -> None:
        self.client = client or _shared_session().client(
            "bedrock",
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.stubber = Stubber(self.client)

    def foundation_models(self, *summaries: dict[str, Any]) -> FakeBedrock:
        self.stubber.add_response(
            "list_foundation_models",
            {"modelSummaries": list(summaries)},
            {"byProvider": "Anthropic"},
        )
        return self

    def profiles(
        self,
        kind: str,
        *summaries: dict[str, Any],
        token: str | None = None,
        next_token: str | None = None,
    ) -> FakeBedrock:
        params: dict[str, Any] = {"typeEquals": kind, "maxResults": 1000}
        if token:
            params["nextToken"] = token
        response: dict[str, Any] = {"inferenceProfileSummaries": list(summaries)}
        if next_token:
            response["nextToken"] = next_token
        self.stubber.add_response("list_inference_profiles", response, params)
        return self

    def access(self, *responses: dict[str, Any]) -> FakeBedrock:
        for response in responses:
            self.stubber.add_response(
                "get_foundation_model_availability", response, {"modelId": response["modelId"]}
            )
        return self

    def error(self, operation: str, code: str, status: int = 400, **params: Any) -> FakeBedrock:
        self.stubber.add_client_error(
            operation, code, f"{code} message", status, expected_params=params or None
        )
        return self


@pytest.fixture
def fake() -> Iterator[FakeBedrock]:
    stub = FakeBedrock()
    with stub.stubber:
        yield stub
    stub.stubber.assert_no_pending_responses()


def us_east_1(fake: FakeBedrock, *extra_fms: dict[str, Any]) -> FakeBedrock:
    """A us-east-1 catalogue like Bedrock's: new models only through profiles, older on demand."""
    return fake.foundation_models(
        fm(HAIKU_3, "Claude 3 Haiku", inference=("ON_DEMAND",)),
        fm(SONNET_35, "Claude 3.5 Sonnet", inference=("ON_DEMAND",), lifecycle="LEGACY"),
        fm(SONNET_3_28K, "Claude 3 Sonnet", inference=("PROVISIONED",)),
        fm(SONNET_45, "Claude Sonnet 4.5"),
        fm(OPUS_41, "Claude Opus 4.1"),
        fm(HAIKU_45, "Claude Haiku 4.5"),
        *extra_fms,
    ).profiles(
        "SYSTEM_DEFINED",
        profile("us", SONNET_45),
        profile("global", SONNET_45, routes=("us-east-1", "eu-west-1", "ap-northeast-1")),
        profile("us", OPUS_41),
        profile("us", HAIKU_45),
        profile("global", HAIKU_45),
        profile("us", HAIKU_3),
        profile("us", LLAMA),
    )


def listed(fake: FakeBedrock) -> list[ModelInfo]:
    return bedrock.list_models(fake.client, check_access=False)


def by_id(models: list[ModelInfo]) -> dict[str, ModelInfo]:
    return {m.id: m for m in models}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- listing ----------------------------------------------------------------------------------


def test_only_the_providers_foundation_models_are_kept(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"), fm(LLAMA, "Llama", provider="Meta"))
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION")

    assert [m.id for m in listed(fake)] == [SONNET_45]


def test_foundation_models_carry_what_the_api_says(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(HAIKU_3, "Claude 3 Haiku", inference=("ON_DEMAND",), streaming=False))
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION")

    (model,) = listed(fake)

    assert model.kind == "foundation-model"
    assert model.name == "Claude 3 Haiku"
    assert model.input_modalities == ("TEXT", "IMAGE")
    assert model.output_modalities == ("TEXT",)
    assert model.streaming is False
    assert model.lifecycle == "ACTIVE"
    assert model.inference_types == ("ON_DEMAND",)
    assert model.region == "us-east-1"


def test_inference_profiles_of_the_providers_models_are_merged_after_the_models(
    fake: FakeBedrock,
) -> None:
    us_east_1(fake).profiles("APPLICATION")

    ids = [m.id for m in listed(fake)]

    assert ids.index(SONNET_45) < ids.index(f"us.{SONNET_45}")
    assert f"global.{SONNET_45}" in ids
    assert f"us.{LLAMA}" not in ids


def test_a_profile_inherits_modalities_streaming_and_lifecycle_from_its_model(
    fake: FakeBedrock,
) -> None:
    us_east_1(fake).profiles("APPLICATION")

    us_sonnet = by_id(listed(fake))[f"us.{SONNET_45}"]

    assert us_sonnet.kind == "inference-profile"
    assert us_sonnet.profile_type == "SYSTEM_DEFINED"
    assert us_sonnet.foundation_model_id == SONNET_45
    assert us_sonnet.regions == ("us-east-1", "us-east-2", "us-west-2")
    assert us_sonnet.output_modalities == ("TEXT",)
    assert us_sonnet.streaming is True
    assert us_sonnet.lifecycle == "ACTIVE"
    assert us_sonnet.inference_types == ()


def test_application_inference_profiles_are_listed(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"))
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION", app_profile())

    team = by_id(listed(fake))["a1b2c3d4e5f6"]

    assert team.profile_type == "APPLICATION"
    assert team.arn == APP_PROFILE_ARN
    assert team.foundation_model_id == SONNET_45


def test_inference_profiles_are_read_page_by_page(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"), fm(HAIKU_45, "Claude Haiku 4.5"))
    fake.profiles("SYSTEM_DEFINED", profile("us", SONNET_45), next_token="page-2")
    fake.profiles("SYSTEM_DEFINED", profile("us", HAIKU_45), token="page-2")
    fake.profiles("APPLICATION")

    ids = {m.id for m in listed(fake)}

    assert {f"us.{SONNET_45}", f"us.{HAIKU_45}"} <= ids


def test_a_repeated_page_token_ends_the_listing(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"))
    fake.profiles("SYSTEM_DEFINED", profile("us", SONNET_45), next_token="again")
    fake.profiles("SYSTEM_DEFINED", token="again", next_token="again")
    fake.profiles("APPLICATION")

    assert f"us.{SONNET_45}" in {m.id for m in listed(fake)}


def test_denied_inference_profiles_leave_a_note_and_the_models(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"))
    fake.error("list_inference_profiles", "AccessDeniedException", 403)
    fake.profiles("APPLICATION")

    catalog = bedrock.discover(fake.client, check_access=False)

    assert [m.id for m in catalog.models] == [SONNET_45]
    (note,) = catalog.notes
    assert note.startswith("SYSTEM_DEFINED inference profiles not listed: ")
    assert "access denied" in note


def test_denied_foundation_models_raise_an_aws_error_naming_the_permissions(
    fake: FakeBedrock,
) -> None:
    fake.error("list_foundation_models", "AccessDeniedException", 403)

    with pytest.raises(AwsError) as caught:
        bedrock.list_models(fake.client)

    assert "access denied in us-east-1" in caught.value.message
    assert caught.value.hint is not None
    assert "bedrock:ListFoundationModels" in caught.value.hint


def test_rejected_credentials_get_a_sign_in_hint(fake: FakeBedrock) -> None:
    fake.error("list_foundation_models", "UnrecognizedClientException", 403)

    with pytest.raises(AwsError) as caught:
        bedrock.list_models(fake.client)

    assert "rejected the credentials" in caught.value.message
    assert caught.value.hint is not None
    assert "aws sso login" in caught.value.hint


def test_throttling_gets_a_retry_hint(fake: FakeBedrock) -> None:
    fake.error("list_foundation_models", "ThrottlingException", 429)

    with pytest.raises(AwsError) as caught:
        bedrock.list_models(fake.client)

    assert caught.value.hint is not None
    assert "max_attempts" in caught.value.hint


# --- transport failures on real clients -------------------------------------------------------


def test_an_unreachable_endpoint_is_an_aws_error_naming_the_region(aws_env: MotoServer) -> None:
    from botocore.config import Config

    client = boto3.session.Session().client(
        "bedrock",
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )

    with pytest.raises(AwsError) as caught:
        bedrock.list_foundation_models(client)

    assert "Amazon Bedrock is not reachable in eu-west-1" in caught.value.message
    assert caught.value.hint is not None
    assert "aws.endpoint_urls.bedrock" in caught.value.hint


def test_missing_credentials_get_a_sign_in_hint() -> None:
    # The test environment has no AWS credentials: botocore fails before sending (and the
    # endpoint is a closed loopback port, so nothing could leave the machine anyway).
    session = boto3.session.Session()
    client = session.client(
        "bedrock", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{closed_port()}"
    )

    with pytest.raises(AwsError) as caught:
        bedrock.list_foundation_models(client)

    assert "no usable AWS credentials" in caught.value.message
    assert caught.value.hint is not None
    assert "aws.profile" in caught.value.hint


def test_a_missing_region_asks_for_one() -> None:
    with pytest.raises(AwsError) as caught, bedrock.aws_errors("create a Bedrock client"):
        boto3.session.Session(region_name=None).client("bedrock")

    assert "no AWS region configured" in caught.value.message
    assert caught.value.hint is not None
    assert "--region" in caught.value.hint


def test_errors_that_are_not_from_aws_pass_through() -> None:
    with pytest.raises(KeyError), bedrock.aws_errors("do something"):
        raise KeyError("not ours")


# --- access status ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "status", "reason"),
    [
        (availability(SONNET_45), AccessStatus.AVAILABLE, "authorised"),
        (availability(SONNET_45, agreement="PENDING"), AccessStatus.PENDING, "pending"),
        (
            availability(SONNET_45, agreement="NOT_AVAILABLE"),
            AccessStatus.NOT_AVAILABLE,
            "use-case",
        ),
        (
            availability(SONNET_45, authorization="NOT_AUTHORIZED"),
            AccessStatus.NOT_AVAILABLE,
            "SCP",
        ),
        (
            availability(SONNET_45, entitlement="NOT_AVAILABLE"),
            AccessStatus.NOT_AVAILABLE,
            "entitled",
        ),
        (availability(SONNET_45, region="NOT_AVAILABLE"), AccessStatus.NOT_AVAILABLE, "region"),
    ],
)
def test_model_access_reads_get_foundation_model_availability(
    fake: FakeBedrock, response: dict[str, Any], status: AccessStatus, reason: str
) -> None:
    fake.access(response)

    access = bedrock.model_access(fake.client, SONNET_45)

    assert access.status == status
    assert reason in access.reason


def test_access_is_checked_once_per_invocable_foundation_model(fake: FakeBedrock) -> None:
    fake.foundation_models(
        fm(SONNET_45, "Claude Sonnet 4.5"),
        fm(SONNET_3_28K, "Claude 3 Sonnet", inference=("PROVISIONED",)),
    )
    fake.profiles("SYSTEM_DEFINED", profile("us", SONNET_45), profile("global", SONNET_45))
    fake.profiles("APPLICATION")
    fake.access(availability(SONNET_45, agreement="NOT_AVAILABLE"))

    models = by_id(bedrock.list_models(fake.client))

    assert models[SONNET_45].access.status == AccessStatus.NOT_AVAILABLE
    assert models[f"us.{SONNET_45}"].access == models[SONNET_45].access
    assert models[f"global.{SONNET_45}"].access == models[SONNET_45].access
    assert models[SONNET_3_28K].access.status == AccessStatus.UNKNOWN
    assert "provisioned throughput only" in models[SONNET_3_28K].access.reason


def test_denied_access_checks_stop_and_mark_every_model_unknown(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"), fm(HAIKU_45, "Claude Haiku 4.5"))
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION")
    fake.error("get_foundation_model_availability", "AccessDeniedException", 403)

    catalog = bedrock.discover(fake.client)

    assert {m.access.status for m in catalog.models} == {AccessStatus.UNKNOWN}
    reason = "not permitted to call bedrock:GetFoundationModelAvailability"
    assert {m.access.reason for m in catalog.models} == {reason}
    assert catalog.notes == (f"access status unknown: {reason}",)


def test_a_model_the_availability_api_rejects_is_unknown_and_the_others_still_checked(
    fake: FakeBedrock,
) -> None:
    fake.foundation_models(fm(HAIKU_45, "Claude Haiku 4.5"), fm(SONNET_45, "Claude Sonnet 4.5"))
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION")
    fake.error("get_foundation_model_availability", "ResourceNotFoundException", 404)
    fake.access(availability(SONNET_45))

    models = by_id(bedrock.list_models(fake.client))

    assert models[HAIKU_45].access.status == AccessStatus.UNKNOWN
    assert "ResourceNotFoundException" in models[HAIKU_45].access.reason
    assert models[SONNET_45].access.status == AccessStatus.AVAILABLE


def _client_without(tmp_path: Path, *operations: str) -> Any:
    """A real bedrock client of a botocore whose service model lacks ``operations`` (an old one)."""
    session = botocore.session.Session()
    loader = session.get_component("data_loader")
    version = loader.determine_latest_version("bedrock", "service-2")
    model = loader.load_service_model("bedrock", "service-2", version)
    for operation in operations:
        del model["operations"][operation]
    target = tmp_path / "botocore-data" / "bedrock" / version
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    loader.search_paths.insert(0, str(tmp_path / "botocore-data"))
    return session.create_client(
        "bedrock", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )


def test_without_the_availability_api_access_is_unknown_with_the_reason(tmp_path: Path) -> None:
    stub = FakeBedrock(client=_client_without(tmp_path, "GetFoundationModelAvailability"))
    stub.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"))
    stub.profiles("SYSTEM_DEFINED").profiles("APPLICATION")

    with stub.stubber:
        catalog = bedrock.discover(stub.client)

    (model,) = catalog.models
    assert model.access.status == AccessStatus.UNKNOWN
    assert "has no GetFoundationModelAvailability (upgrade boto3)" in model.access.reason
    stub.stubber.assert_no_pending_responses()


def test_without_the_inference_profile_api_models_are_listed_with_a_note(tmp_path: Path) -> None:
    stub = FakeBedrock(client=_client_without(tmp_path, "ListInferenceProfiles"))
    stub.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"))

    with stub.stubber:
        catalog = bedrock.discover(stub.client, check_access=False)

    assert [m.id for m in catalog.models] == [SONNET_45]
    assert "has no ListInferenceProfiles (upgrade boto3)" in catalog.notes[0]


# --- recommendation ---------------------------------------------------------------------------


def test_coding_gets_the_newest_sonnet_through_the_regions_geographic_profile(
    fake: FakeBedrock,
) -> None:
    us_east_1(fake).profiles("APPLICATION")

    choice = bedrock.recommend(listed(fake), "coding")

    assert choice.model_id == f"us.{SONNET_45}"
    assert choice.model.foundation_model_id == SONNET_45
    assert "Claude Sonnet 4.5" in choice.reason
    assert "requests stay in the us geography" in choice.reason
    assert choice.alternatives[0] == f"global.{SONNET_45}"


def test_review_takes_the_newer_of_opus_and_sonnet(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION")

    choice = bedrock.recommend(listed(fake), "review")

    assert choice.model_id == f"us.{SONNET_45}"


def test_review_prefers_opus_when_opus_and_sonnet_are_the_same_version(fake: FakeBedrock) -> None:
    us_east_1(fake, fm(OPUS_45, "Claude Opus 4.5")).profiles("APPLICATION")
    models = [*listed(fake), *_profiles_for(OPUS_45, "us")]

    choice = bedrock.recommend(models, "review")

    assert choice.model_id == f"us.{OPUS_45}"


def test_fast_gets_the_newest_haiku(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION")

    choice = bedrock.recommend(listed(fake), "fast")

    assert choice.model_id == f"us.{HAIKU_45}"


def _profiles_for(model_id: str, *prefixes: str, region: str = "us-east-1") -> list[ModelInfo]:
    return [
        ModelInfo(
            id=f"{p}.{model_id}",
            name=f"{p} profile",
            kind="inference-profile",
            arn=f"arn:aws:bedrock:{region}:123456789012:inference-profile/{p}.{model_id}",
            provider="Anthropic",
            output_modalities=("TEXT",),
            lifecycle="ACTIVE",
            profile_type="SYSTEM_DEFINED",
            foundation_model_ids=(model_id,),
        )
        for p in prefixes
    ]


@pytest.mark.parametrize(
    ("region", "prefixes", "expected"),
    [
        ("eu-west-1", ("eu", "global"), "eu"),
        ("eu-central-1", ("global", "eu"), "eu"),
        ("ap-southeast-1", ("global", "apac"), "apac"),
        ("ap-northeast-1", ("apac", "jp", "global"), "jp"),
        ("us-west-2", ("global", "us"), "us"),
        ("us-gov-west-1", ("us-gov",), "us-gov"),
        ("ca-central-1", ("global", "us"), "us"),
        ("sa-east-1", ("global",), "global"),
    ],
)
def test_the_profile_of_the_regions_geography_is_preferred_then_other_then_global(
    region: str, prefixes: tuple[str, ...], expected: str
) -> None:
    models = _profiles_for(SONNET_45, *prefixes, region=region)

    choice = bedrock.recommend(models, "coding")

    assert choice.model_id == f"{expected}.{SONNET_45}"


def test_a_global_only_choice_says_so() -> None:
    choice = bedrock.recommend(_profiles_for(SONNET_45, "global", region="sa-east-1"), "coding")

    assert "global cross-region inference profile offered in sa-east-1" in choice.reason


def test_a_model_without_profiles_is_recommended_on_demand() -> None:
    stub = FakeBedrock(region="eu-west-3")
    stub.foundation_models(
        fm(HAIKU_3, "Claude 3 Haiku", region="eu-west-3", inference=("ON_DEMAND",))
    )
    stub.profiles("SYSTEM_DEFINED").profiles("APPLICATION")
    with stub.stubber:
        models = bedrock.list_models(stub.client, check_access=False)

    choice = bedrock.recommend(models, "fast")

    assert choice.model_id == HAIKU_3
    assert "invoked on demand in eu-west-3" in choice.reason


def test_a_model_that_needs_a_profile_is_not_recommended_without_one(fake: FakeBedrock) -> None:
    fake.foundation_models(
        fm(SONNET_45, "Claude Sonnet 4.5"), fm(HAIKU_3, "Claude 3 Haiku", inference=("ON_DEMAND",))
    )
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION")

    choice = bedrock.recommend(listed(fake), "coding")

    assert choice.model_id == HAIKU_3


def test_legacy_models_are_not_recommended(fake: FakeBedrock) -> None:
    fake.foundation_models(
        fm(SONNET_35, "Claude 3.5 Sonnet", inference=("ON_DEMAND",), lifecycle="LEGACY"),
        fm(HAIKU_3, "Claude 3 Haiku", inference=("ON_DEMAND",)),
    )
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION")

    assert bedrock.recommend(listed(fake), "coding").model_id == HAIKU_3


def test_models_without_access_are_not_recommended(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION")
    # Asked in model-id order, for the models invocable on demand or through a profile.
    fake.access(
        availability(SONNET_35),
        availability(HAIKU_3),
        availability(HAIKU_45),
        availability(OPUS_41),
        availability(SONNET_45, agreement="NOT_AVAILABLE"),
    )

    choice = bedrock.recommend(bedrock.list_models(fake.client), "coding")

    assert choice.model_id == f"us.{OPUS_41}"


def test_no_usable_model_is_an_aws_error_with_a_hint(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_3_28K, "Claude 3 Sonnet", inference=("PROVISIONED",)))
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION")

    with pytest.raises(AwsError) as caught:
        bedrock.recommend(listed(fake), "coding")

    assert caught.value.message == "no usable Anthropic model for coding in us-east-1"
    assert caught.value.hint is not None
    assert "bcce models list" in caught.value.hint


def test_an_unknown_use_case_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown use case 'poetry'"):
        bedrock.recommend([], "poetry")


# --- availability of a configured model -------------------------------------------------------


def test_an_offered_profile_is_available(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION")

    result = bedrock.check_model_available(listed(fake), f"us.{SONNET_45}")

    assert result.available
    assert result.model is not None
    assert result.model.id == f"us.{SONNET_45}"
    assert "is offered in us-east-1" in result.reason
    assert "access not verified" in result.reason


def test_a_model_only_invocable_through_a_profile_is_unavailable_with_a_suggestion(
    fake: FakeBedrock,
) -> None:
    us_east_1(fake).profiles("APPLICATION")

    result = bedrock.check_model_available(listed(fake), SONNET_45)

    assert not result.available
    assert "cannot be invoked on demand in us-east-1" in result.reason
    assert result.suggestion == f"us.{SONNET_45}"


def test_a_profile_of_another_geography_is_unavailable_with_the_local_one_suggested() -> None:
    models = _profiles_for(SONNET_45, "eu", "global", region="eu-west-1")

    result = bedrock.check_model_available(models, f"us.{SONNET_45}")

    assert not result.available
    assert result.reason.startswith(f"us.{SONNET_45} is not offered in eu-west-1")
    assert result.suggestion == f"eu.{SONNET_45}"


def test_an_unknown_model_is_unavailable_without_a_suggestion(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION")

    result = bedrock.check_model_available(listed(fake), "anthropic.claude-unknown-v1:0")

    assert not result.available
    assert result.suggestion is None


def test_a_model_without_access_is_unavailable_with_the_reason(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"))
    fake.profiles("SYSTEM_DEFINED", profile("us", SONNET_45)).profiles("APPLICATION")
    fake.access(availability(SONNET_45, agreement="PENDING"))

    result = bedrock.check_model_available(bedrock.list_models(fake.client), f"us.{SONNET_45}")

    assert not result.available
    assert "access is pending" in result.reason


def test_an_application_profile_is_found_by_its_arn(fake: FakeBedrock) -> None:
    fake.foundation_models(fm(SONNET_45, "Claude Sonnet 4.5"))
    fake.profiles("SYSTEM_DEFINED").profiles("APPLICATION", app_profile())

    result = bedrock.check_model_available(listed(fake), APP_PROFILE_ARN)

    assert result.available
    assert result.model is not None
    assert result.model.profile_type == "APPLICATION"


def test_a_foundation_model_arn_of_the_region_is_found() -> None:
    stub = FakeBedrock()
    stub.foundation_models(fm(HAIKU_3, "Claude 3 Haiku", inference=("ON_DEMAND",)))
    stub.profiles("SYSTEM_DEFINED").profiles("APPLICATION")
    with stub.stubber:
        models = bedrock.list_models(stub.client, check_access=False)

    here = bedrock.find_model(models, f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU_3}")
    elsewhere = bedrock.find_model(models, f"arn:aws:bedrock:eu-west-1::foundation-model/{HAIKU_3}")

    assert here is not None
    assert here.id == HAIKU_3
    assert elsewhere is None


def test_a_legacy_model_is_available_with_a_warning_in_the_reason(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION")

    result = bedrock.check_model_available(listed(fake), SONNET_35)

    assert result.available
    assert "legacy model" in result.reason


def test_results_serialise_to_json(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION", app_profile())
    catalog = bedrock.discover(fake.client, check_access=False)
    choice = bedrock.recommend(catalog.models, "coding")
    check = bedrock.check_model_available(catalog.models, SONNET_45)

    data = json.loads(json.dumps([catalog.to_dict(), choice.to_dict(), check.to_dict()]))

    assert data[0]["region"] == "us-east-1"
    assert data[0]["models"][0]["access"] == {"status": "unknown", "reason": "not checked"}
    assert data[1]["model_id"] == f"us.{SONNET_45}"
    assert data[2]["suggestion"] == f"us.{SONNET_45}"


def test_a_provisioned_only_model_is_unavailable_without_a_profile_hint(fake: FakeBedrock) -> None:
    us_east_1(fake).profiles("APPLICATION")

    result = bedrock.check_model_available(listed(fake), SONNET_3_28K)

    assert not result.available
    assert result.reason.endswith("cannot be invoked on demand in us-east-1 (supports PROVISIONED)")
    assert result.suggestion is None
