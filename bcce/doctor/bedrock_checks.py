"""Doctor checks for Amazon Bedrock: reachable in the region, and the configured model usable there.

Registered in pyproject.toml under ``bcce.doctor`` as ``bedrock`` and ``model``. Both are required
only when ``agent.provider`` is ``bedrock`` without an ``agent.base_url`` gateway, and skipped
when another provider is configured.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from bcce.doctor.registry import Check, CheckResult, DoctorContext
from bcce.errors import AwsError

if TYPE_CHECKING:
    from bcce.aws.bedrock import ModelAvailability

_OTHER_REGION_FIX = (
    "choose a region where Claude is offered: set aws.region (BCCE_AWS__REGION); "
    "`bcce models list --region REGION` shows what a region offers"
)


def _bedrock_required(ctx: DoctorContext) -> bool:
    assert ctx.app is not None
    agent = ctx.app.settings().agent
    # Behind a gateway (agent.base_url) Claude Code may not call Bedrock directly: advisory only.
    return agent.provider == "bedrock" and agent.base_url is None


def _skip_unless_bedrock(ctx: DoctorContext) -> CheckResult | None:
    assert ctx.app is not None
    provider = ctx.app.settings().agent.provider
    if provider != "bedrock":
        return CheckResult.skip(f"agent.provider is '{provider}': Amazon Bedrock is not used")
    return None


def _bedrock(ctx: DoctorContext) -> CheckResult:
    if (skipped := _skip_unless_bedrock(ctx)) is not None:
        return skipped
    assert ctx.app is not None
    from bcce.aws.bedrock import aws_errors, list_foundation_models

    try:
        with aws_errors("create a Bedrock client"):
            client = ctx.app.aws.bedrock()
        found = list_foundation_models(client)
    except AwsError as error:
        return CheckResult.fail(error.message, error.hint or "see the message")
    region = client.meta.region_name
    if not found:
        return CheckResult.fail(
            f"Amazon Bedrock answers in {region} but offers no Anthropic models there",
            _OTHER_REGION_FIX,
            region=region,
        )
    return CheckResult.ok(
        f"reachable in {region}: {len(found)} Anthropic foundation models",
        region=region,
        endpoint=client.meta.endpoint_url,
        foundation_models=len(found),
    )


def _model(ctx: DoctorContext) -> CheckResult:
    if (skipped := _skip_unless_bedrock(ctx)) is not None:
        return skipped
    assert ctx.app is not None
    from bcce.aws import bedrock

    model_id = ctx.app.settings().agent.model
    if not model_id:
        return CheckResult.fail(
            "agent.model is empty",
            "set agent.model; `bcce models recommend` suggests one",
        )
    try:
        with bedrock.aws_errors("create a Bedrock client"):
            client = ctx.app.aws.bedrock()
        models = bedrock.list_models(client, check_access=False)
    except AwsError as error:
        return CheckResult.fail(error.message, error.hint or "see the message")
    region = client.meta.region_name
    match = bedrock.find_model(models, model_id)
    if match is not None:
        # One availability call for the configured model, not one per listed model.
        access = bedrock.model_access(client, match.foundation_model_id)
        models = [replace(m, access=access) if m == match else m for m in models]
    availability = bedrock.check_model_available(models, model_id, region=region)
    details = {"model": model_id, "region": region, **_access_details(availability)}
    if not availability.available:
        fix = (
            f"set agent.model to {availability.suggestion} "
            f"(BCCE_AGENT__MODEL={availability.suggestion})"
            if availability.suggestion
            else "run `bcce models recommend` and set agent.model to its answer, "
            "or request access to the model in the Bedrock console"
        )
        return CheckResult.fail(availability.reason, fix, **details)
    if availability.model is not None and availability.model.access.status == "unknown":
        return CheckResult.warn(
            availability.reason,
            "allow bedrock:GetFoundationModelAvailability to verify access, "
            "or check model access in the Bedrock console",
            **details,
        )
    return CheckResult.ok(availability.reason, **details)


def _access_details(availability: ModelAvailability) -> dict[str, str]:
    model = availability.model
    return {"access": str(model.access.status)} if model is not None else {}


bedrock_reachable = Check(
    name="bedrock",
    title="Amazon Bedrock",
    run=_bedrock,
    order=32,
    required=_bedrock_required,
)
configured_model = Check(
    name="model",
    title="Configured model",
    run=_model,
    order=34,
    required=_bedrock_required,
)
