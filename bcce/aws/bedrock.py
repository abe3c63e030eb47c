"""Amazon Bedrock model discovery: which Claude models a region offers, whether the account may
use them, and which one to pick for a use case.

Every function takes a ``bedrock`` client (``app.aws.bedrock()``); botocore is imported inside the
functions only. AWS failures of the calls that matter become :class:`~bcce.errors.AwsError` with a
hint; the optional look-ups (inference profiles, access status) degrade to a note or an
``unknown`` access status with the reason instead.

Preference table used by :func:`recommend` (tiers in order; within a tier the newest version
wins, ties go to the family listed first)::

    coding   sonnet  >  opus  >  haiku
    review   opus, sonnet  >  haiku
    fast     haiku  >  sonnet

For the chosen model the invocation id is, in order: the system-defined cross-region inference
profile of the region's own geography (``us.``, ``eu.``, ``apac.``...), any other geographic
profile offered in the region, the ``global.`` profile, then the foundation model on demand.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from bcce.errors import AwsError, UsageError

FOUNDATION_MODEL: Final = "foundation-model"
INFERENCE_PROFILE: Final = "inference-profile"
ModelKind = Literal["foundation-model", "inference-profile"]

#: Model families per use case, in tiers: see the module docstring.
PREFERENCES: dict[str, tuple[tuple[str, ...], ...]] = {
    "coding": (("sonnet",), ("opus",), ("haiku",)),
    "review": (("opus", "sonnet"), ("haiku",)),
    "fast": (("haiku",), ("sonnet",)),
}
USE_CASES: tuple[str, ...] = tuple(PREFERENCES)

PROFILE_TYPES = ("SYSTEM_DEFINED", "APPLICATION")

#: Inference-profile prefixes that keep requests in a region's geography, most specific first.
_GEOGRAPHIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("us-gov-", ("us-gov",)),
    ("us-", ("us",)),
    ("eu-", ("eu",)),
    ("ap-northeast-1", ("jp", "apac")),
    ("ap-southeast-2", ("au", "apac")),
    ("ap-", ("apac",)),
)
_GLOBAL = "global"

_CREDENTIALS_HINT = (
    "sign in (`aws sso login --profile <profile>`) and set aws.profile (BCCE_AWS__PROFILE), "
    "or run where a role provides credentials; `bcce doctor --check aws` shows what is found"
)
_PERMISSIONS_HINT = (
    "allow bedrock:ListFoundationModels, bedrock:ListInferenceProfiles and "
    "bedrock:GetFoundationModelAvailability for this identity (IAM policy, permission set or SCP)"
)
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)
_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})
_THROTTLING_CODES = frozenset({"ThrottlingException", "TooManyRequestsException"})


class AccessStatus(enum.StrEnum):
    AVAILABLE = "available"
    PENDING = "pending"
    NOT_AVAILABLE = "not-available"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Access:
    """Whether this account may invoke a model, as GetFoundationModelAvailability says, and why."""

    status: AccessStatus
    reason: str

    @property
    def usable(self) -> bool:
        """Not known to be blocked: ``available`` or ``unknown``."""
        return self.status in (AccessStatus.AVAILABLE, AccessStatus.UNKNOWN)

    def to_dict(self) -> dict[str, str]:
        return {"status": str(self.status), "reason": self.reason}


NOT_CHECKED = Access(AccessStatus.UNKNOWN, "not checked")


@dataclass(frozen=True)
class ModelInfo:
    """A foundation model or an inference profile offered in one region.

    A profile's modalities, streaming and lifecycle are those of its foundation model (when that
    model is listed in the region); ``inference_types`` is empty for profiles, which are invoked
    by their own id.
    """

    id: str
    name: str
    kind: ModelKind
    arn: str
    provider: str
    input_modalities: tuple[str, ...] = ()
    output_modalities: tuple[str, ...] = ()
    streaming: bool | None = None
    lifecycle: str = "unknown"
    inference_types: tuple[str, ...] = ()
    access: Access = NOT_CHECKED
    profile_type: str | None = None
    foundation_model_ids: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    @property
    def foundation_model_id(self) -> str:
        """The foundation model this id invokes (itself, for a foundation model)."""
        if self.kind == FOUNDATION_MODEL or not self.foundation_model_ids:
            return self.id
        return self.foundation_model_ids[0]

    @property
    def region(self) -> str | None:
        """The region this entry was listed in (from its ARN)."""
        return _arn_region(self.arn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "arn": self.arn,
            "provider": self.provider,
            "input_modalities": list(self.input_modalities),
            "output_modalities": list(self.output_modalities),
            "streaming": self.streaming,
            "lifecycle": self.lifecycle,
            "inference_types": list(self.inference_types),
            "access": self.access.to_dict(),
            "profile_type": self.profile_type,
            "foundation_model_ids": list(self.foundation_model_ids),
            "regions": list(self.regions),
        }


@dataclass(frozen=True)
class ModelCatalog:
    """What :func:`discover` found in one region, and notes on what it could not find out."""

    region: str | None
    provider: str
    models: tuple[ModelInfo, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "provider": self.provider,
            "models": [m.to_dict() for m in self.models],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Recommendation:
    use_case: str
    model_id: str
    model: ModelInfo
    reason: str
    alternatives: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "use_case": self.use_case,
            "model_id": self.model_id,
            "reason": self.reason,
            "alternatives": list(self.alternatives),
            "model": self.model.to_dict(),
        }


@dataclass(frozen=True)
class ModelAvailability:
    """Whether a configured model id can be used in the region, why, and what to use instead."""

    model_id: str
    available: bool
    reason: str
    model: ModelInfo | None = None
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "available": self.available,
            "reason": self.reason,
            "suggestion": self.suggestion,
            "model": self.model.to_dict() if self.model else None,
        }


# --- errors -----------------------------------------------------------------------------------


def to_aws_error(exc: BaseException, *, action: str, region: str | None = None) -> AwsError | None:
    """The :class:`AwsError` (with a hint) for a botocore exception; ``None`` for anything else."""
    from botocore import exceptions as bx

    where = f" in {region}" if region else ""
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in _DENIED_CODES:
            return AwsError(
                f"cannot {action}: access denied{where}: {message}", hint=_PERMISSIONS_HINT
            )
        if code in _CREDENTIAL_CODES:
            return AwsError(
                f"cannot {action}: AWS rejected the credentials ({code}: {message})",
                hint=_CREDENTIALS_HINT,
            )
        if code in _THROTTLING_CODES:
            return AwsError(
                f"cannot {action}: throttled by Bedrock{where}",
                hint="try again in a moment, or raise aws.max_attempts",
            )
        return AwsError(
            f"cannot {action}{where}: {code}: {message}",
            hint="read the AWS message above; `--log-level debug` shows the traceback",
        )
    credential_errors: tuple[type[BaseException], ...] = (
        bx.NoCredentialsError,
        bx.PartialCredentialsError,
        bx.CredentialRetrievalError,
        bx.TokenRetrievalError,  # SSO token errors too
    )
    if isinstance(exc, credential_errors):
        return AwsError(
            f"cannot {action}: no usable AWS credentials ({exc})", hint=_CREDENTIALS_HINT
        )
    if isinstance(exc, bx.ProfileNotFound):
        return AwsError(
            f"cannot {action}: {exc}",
            hint="set aws.profile (BCCE_AWS__PROFILE) to a profile in ~/.aws/config",
        )
    if isinstance(exc, bx.NoRegionError):
        return AwsError(
            f"cannot {action}: no AWS region configured",
            hint="pass --region, or set aws.region (BCCE_AWS__REGION) or AWS_REGION",
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return AwsError(
            f"cannot {action}: Amazon Bedrock is not reachable{where} ({exc})",
            hint="check that Bedrock is offered in this region and that this machine can reach "
            "it (proxy, VPC endpoint, aws.endpoint_urls.bedrock)",
        )
    if isinstance(exc, bx.BotoCoreError):
        return AwsError(
            f"cannot {action}{where}: {exc}",
            hint="check the aws.* settings and ~/.aws/config",
        )
    return None


@contextmanager
def aws_errors(action: str, *, region: str | None = None) -> Iterator[None]:
    """Turn botocore exceptions raised inside the block into :class:`AwsError`."""
    try:
        yield
    except Exception as exc:
        error = to_aws_error(exc, action=action, region=region)
        if error is None:
            raise
        raise error from exc


# --- discovery --------------------------------------------------------------------------------


def list_foundation_models(client: Any, *, provider: str = "Anthropic") -> list[ModelInfo]:
    """The provider's foundation models in the client's region (ListFoundationModels).

    Raises :class:`AwsError` when Bedrock cannot be asked (credentials, region, network, IAM).
    """
    region = client.meta.region_name
    with aws_errors("list Bedrock foundation models", region=region):
        response = client.list_foundation_models(byProvider=provider)
    models = [
        _foundation_model(summary)
        for summary in response.get("modelSummaries", [])
        if str(summary.get("providerName", provider)).lower() == provider.lower()
    ]
    return sorted(models, key=lambda m: m.id)


def discover(
    client: Any, *, provider: str = "Anthropic", check_access: bool = True
) -> ModelCatalog:
    """Foundation models and inference profiles of ``provider`` in the client's region.

    ``check_access`` asks GetFoundationModelAvailability once per invocable foundation model;
    when that API is missing from botocore or denied, access is ``unknown`` with the reason.
    """
    region: str | None = client.meta.region_name
    foundation = list_foundation_models(client, provider=provider)
    profiles, notes = _inference_profiles(client, foundation, provider)
    if check_access:
        foundation, profiles, access_notes = _with_access(client, foundation, profiles)
        notes += access_notes
    return ModelCatalog(region, provider, (*foundation, *profiles), tuple(notes))


def list_models(
    client: Any, *, provider: str = "Anthropic", check_access: bool = True
) -> list[ModelInfo]:
    """Foundation models then inference profiles of ``provider`` (see :func:`discover`)."""
    return list(discover(client, provider=provider, check_access=check_access).models)


def model_access(client: Any, model_id: str) -> Access:
    """Whether this account may invoke the foundation model ``model_id`` in the client's region."""
    return _fetch_access(client, model_id)[0]


def _foundation_model(summary: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        id=summary["modelId"],
        name=summary.get("modelName") or summary["modelId"],
        kind=FOUNDATION_MODEL,
        arn=summary.get("modelArn", ""),
        provider=summary.get("providerName", ""),
        input_modalities=tuple(summary.get("inputModalities", ())),
        output_modalities=tuple(summary.get("outputModalities", ())),
        streaming=summary.get("responseStreamingSupported"),
        lifecycle=(summary.get("modelLifecycle") or {}).get("status", "unknown"),
        inference_types=tuple(summary.get("inferenceTypesSupported", ())),
        foundation_model_ids=(summary["modelId"],),
    )


def _inference_profiles(
    client: Any, foundation: list[ModelInfo], provider: str
) -> tuple[list[ModelInfo], list[str]]:
    if not _has_operation(client, "ListInferenceProfiles"):
        return [], [
            f"inference profiles not listed: botocore {_botocore_version()} has no "
            "ListInferenceProfiles (upgrade boto3)"
        ]
    by_id = {m.id: m for m in foundation}
    prefix = provider.lower().split()[0] + "."
    profiles: list[ModelInfo] = []
    notes: list[str] = []
    for profile_type in PROFILE_TYPES:
        try:
            summaries = _paginate_profiles(client, profile_type)
        except AwsError as error:
            notes.append(f"{profile_type} inference profiles not listed: {error.message}")
            continue
        for summary in summaries:
            routes = summary.get("models", [])
            model_ids = _unique(_arn_resource_id(m.get("modelArn", "")) for m in routes)
            if any(i in by_id or i.startswith(prefix) for i in model_ids):
                profiles.append(_profile(summary, model_ids, by_id, provider))
    return sorted(profiles, key=lambda m: m.id), notes


def _paginate_profiles(client: Any, profile_type: str) -> list[dict[str, Any]]:
    region = client.meta.region_name
    summaries: list[dict[str, Any]] = []
    params: dict[str, Any] = {"typeEquals": profile_type, "maxResults": 1000}
    seen: set[str] = set()
    while True:
        with aws_errors(f"list {profile_type} inference profiles", region=region):
            page = client.list_inference_profiles(**params)
        summaries.extend(page.get("inferenceProfileSummaries", []))
        token = page.get("nextToken")
        # A token seen before would loop forever; the service should never send one.
        if not token or token in seen:
            return summaries
        seen.add(token)
        params["nextToken"] = token


def _profile(
    summary: dict[str, Any],
    model_ids: tuple[str, ...],
    by_id: dict[str, ModelInfo],
    provider: str,
) -> ModelInfo:
    base = next((by_id[i] for i in model_ids if i in by_id), None)
    regions = _unique(_arn_region(m.get("modelArn", "")) or "" for m in summary.get("models", []))
    return ModelInfo(
        id=summary["inferenceProfileId"],
        name=summary.get("inferenceProfileName") or summary["inferenceProfileId"],
        kind=INFERENCE_PROFILE,
        arn=summary.get("inferenceProfileArn", ""),
        provider=base.provider if base else provider,
        input_modalities=base.input_modalities if base else (),
        output_modalities=base.output_modalities if base else (),
        streaming=base.streaming if base else None,
        lifecycle=base.lifecycle if base else summary.get("status", "unknown"),
        profile_type=summary.get("type"),
        foundation_model_ids=model_ids,
        regions=tuple(r for r in regions if r),
    )


def _with_access(
    client: Any, foundation: list[ModelInfo], profiles: list[ModelInfo]
) -> tuple[list[ModelInfo], list[ModelInfo], list[str]]:
    wanted = [m.id for m in foundation if _invocable(m)]
    wanted += [p.foundation_model_id for p in profiles]
    access: dict[str, Access] = {}
    stop: Access | None = None
    for model_id in _unique(wanted):
        if stop is not None:
            access[model_id] = stop
            continue
        access[model_id], keep_going = _fetch_access(client, model_id)
        if not keep_going:
            stop = access[model_id]
    provisioned_only = Access(AccessStatus.UNKNOWN, "not checked: provisioned throughput only")
    foundation = [replace(m, access=access.get(m.id, provisioned_only)) for m in foundation]
    profiles = [replace(p, access=access.get(p.foundation_model_id, NOT_CHECKED)) for p in profiles]
    notes = [f"access status unknown: {stop.reason}"] if stop is not None else []
    return foundation, profiles, notes


def _fetch_access(client: Any, model_id: str) -> tuple[Access, bool]:
    """The access and whether asking about other models is worth it (not missing, not denied)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not _has_operation(client, "GetFoundationModelAvailability"):
        reason = f"botocore {_botocore_version()} has no GetFoundationModelAvailability"
        return Access(AccessStatus.UNKNOWN, f"{reason} (upgrade boto3)"), False
    try:
        response = client.get_foundation_model_availability(modelId=model_id)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _DENIED_CODES:
            reason = "not permitted to call bedrock:GetFoundationModelAvailability"
            return Access(AccessStatus.UNKNOWN, reason), False
        return Access(AccessStatus.UNKNOWN, f"{code}: {error.get('Message', '')}"), True
    except BotoCoreError as exc:
        return Access(AccessStatus.UNKNOWN, str(exc)), False
    return _access_from(response), True


def _access_from(response: dict[str, Any]) -> Access:
    problems = []
    if response.get("authorizationStatus") == "NOT_AUTHORIZED":
        problems.append("not authorised (IAM policy or SCP)")
    if response.get("entitlementAvailability") == "NOT_AVAILABLE":
        problems.append("the account is not entitled to it (request access in the Bedrock console)")
    if response.get("regionAvailability") == "NOT_AVAILABLE":
        problems.append("not available in this region")
    agreement = response.get("agreementAvailability") or {}
    if agreement.get("status") == "NOT_AVAILABLE":
        problems.append("no model agreement (submit the use-case form in the Bedrock console)")
    elif agreement.get("status") == "ERROR":
        problems.append(f"model agreement error: {agreement.get('errorMessage', 'no details')}")
    if problems:
        return Access(AccessStatus.NOT_AVAILABLE, "; ".join(problems))
    if agreement.get("status") == "PENDING":
        return Access(AccessStatus.PENDING, "the model agreement is pending")
    return Access(AccessStatus.AVAILABLE, "authorised, entitled and agreed")


# --- recommendation and availability -------------------------------------------------------


@dataclass(frozen=True, order=True)
class _Option:
    rank: int
    model_id: str
    model: ModelInfo = field(compare=False)
    why: str = field(compare=False)


_CLAUDE = re.compile(
    r"claude-(?:(?P<family>opus|sonnet|haiku)-(?P<major>\d+)(?:-(?P<minor>\d{1,2}))?"
    r"|(?P<major2>\d+)(?:-(?P<minor2>\d{1,2}))?-(?P<family2>opus|sonnet|haiku))"
    r"-(?P<date>\d{8})"
)


def _claude_version(model_id: str) -> tuple[str, tuple[int, int], int] | None:
    """(family, (major, minor), date) of ``anthropic.claude-sonnet-4-5-20250929-v1:0`` and kin."""
    found = _CLAUDE.search(model_id)
    if found is None:
        return None
    family = found["family"] or found["family2"]
    major = int(found["major"] or found["major2"])
    minor = int(found["minor"] or found["minor2"] or 0)
    return family, (major, minor), int(found["date"])


def recommend(
    models: Sequence[ModelInfo], use_case: str, *, region: str | None = None
) -> Recommendation:
    """The model id to use for ``use_case`` (``coding``, ``review`` or ``fast``), with the reason.

    Considers models that are not legacy, not known to be blocked for this account, and
    invocable on demand or through a system-defined inference profile.
    Raises :class:`AwsError` when none is usable in the region.
    """
    if use_case not in PREFERENCES:
        raise UsageError(
            f"unknown use case {use_case!r}", hint=f"choose one of: {', '.join(USE_CASES)}"
        )
    region = region or _region_of(models)
    tiers = PREFERENCES[use_case]
    ranked: list[tuple[tuple[int, int, int, int, int], str, list[_Option]]] = []
    for base_id, options in _options_by_model(models, region).items():
        version = _claude_version(base_id)
        if version is None or not options:
            continue
        family, (major, minor), date = version
        tier = next((i for i, t in enumerate(tiers) if family in t), None)
        if tier is None:
            continue
        key = (tier, -major, -minor, -date, tiers[tier].index(family))
        ranked.append((key, base_id, sorted(options)))
    if not ranked:
        raise AwsError(
            f"no usable Anthropic model for {use_case} in {region or 'this region'}",
            hint="run `bcce models list` to see what is offered and its access status; "
            "request model access in the Bedrock console or try another --region",
        )
    ranked.sort(key=lambda item: (item[0], item[1]))
    _, base_id, options = ranked[0]
    best = options[0]
    alternatives = [o.model_id for o in options[1:]] + [r[2][0].model_id for r in ranked[1:]]
    label = _display_name(models, base_id)
    reason = (
        f"{use_case} prefers {_describe(tiers)}; the newest usable here is {label} "
        f"({base_id}); {best.why}"
    )
    return Recommendation(use_case, best.model_id, best.model, reason, tuple(alternatives[:3]))


def find_model(models: Sequence[ModelInfo], model_id: str) -> ModelInfo | None:
    """The listed model or profile that ``model_id`` (an id or an ARN) names, if any."""
    for model in models:
        if model_id in (model.id, model.arn):
            return model
    if model_id.startswith("arn:"):
        resource_id, region = _arn_resource_id(model_id), _arn_region(model_id)
        for model in models:
            if model.id == resource_id and model.region == region:
                return model
    return None


def check_model_available(
    models: Sequence[ModelInfo], model_id: str, *, region: str | None = None
) -> ModelAvailability:
    """Whether ``model_id`` can be invoked in the region these ``models`` were listed in."""
    region = region or _region_of(models) or "this region"
    model = find_model(models, model_id)
    options = _options_by_model(models, region)
    if model is None:
        alternative = _best(options.get(_base_model_id(model_id), []))
        reason = f"{model_id} is not offered in {region}"
        if alternative:
            reason += f"; the same model is offered there as {alternative}"
        return ModelAvailability(model_id, False, reason, suggestion=alternative)
    alternative = _best([o for o in options.get(model.foundation_model_id, []) if o.model != model])
    if not model.access.usable:
        reason = f"{model.id} is offered in {region} but access is {model.access.status}: "
        return ModelAvailability(model_id, False, reason + model.access.reason, model)
    if model.kind == FOUNDATION_MODEL and model.inference_types and not _on_demand(model):
        reason = (
            f"{model.id} cannot be invoked on demand in {region} "
            f"(supports {', '.join(model.inference_types)})"
        )
        if alternative or "INFERENCE_PROFILE" in model.inference_types:
            reason += ": use an inference profile"
        return ModelAvailability(model_id, False, reason, model, alternative)
    kind = "inference profile" if model.kind == INFERENCE_PROFILE else "foundation model"
    reason = f"{model.id} ({model.name}, {kind}) is offered in {region}"
    if model.lifecycle == "LEGACY":
        reason += "; it is a legacy model: plan a move to a newer one"
    if model.access.status == AccessStatus.UNKNOWN:
        reason += f"; access not verified: {model.access.reason}"
    return ModelAvailability(model_id, True, reason, model)


def _options_by_model(models: Sequence[ModelInfo], region: str | None) -> dict[str, list[_Option]]:
    """Ways to invoke each foundation model here, keyed by its id (rank: lower is better)."""
    options: dict[str, list[_Option]] = {}
    for model in models:
        options.setdefault(model.foundation_model_id, [])
        if model.lifecycle == "LEGACY" or not model.access.usable:
            continue
        if model.output_modalities and "TEXT" not in model.output_modalities:
            continue
        option = _option(model, region)
        if option is not None:
            options[model.foundation_model_id].append(option)
    return options


def _option(model: ModelInfo, region: str | None) -> _Option | None:
    here = region or "this region"
    if model.kind == FOUNDATION_MODEL:
        if not _on_demand(model):
            return None
        return _Option(30, model.id, model, f"{model.id} is invoked on demand in {here}")
    if model.profile_type != "SYSTEM_DEFINED":
        return None
    prefix = model.id.split(".", 1)[0]
    local = _geographies(region)
    if prefix in local:
        why = (
            f"{model.id} is the {prefix} cross-region inference profile for {here}: "
            f"requests stay in the {prefix} geography"
        )
        return _Option(local.index(prefix), model.id, model, why)
    if prefix == _GLOBAL:
        why = f"{model.id} is the global cross-region inference profile offered in {here}"
        return _Option(20, model.id, model, why)
    return _Option(10, model.id, model, f"{model.id} is a cross-region profile offered in {here}")


def _best(options: list[_Option]) -> str | None:
    return min(options).model_id if options else None


def _on_demand(model: ModelInfo) -> bool:
    return "ON_DEMAND" in model.inference_types


def _invocable(model: ModelInfo) -> bool:
    return bool({"ON_DEMAND", "INFERENCE_PROFILE"} & set(model.inference_types))


def _geographies(region: str | None) -> tuple[str, ...]:
    for region_prefix, geographies in _GEOGRAPHIES:
        if region and region.startswith(region_prefix):
            return geographies
    return ()


def _base_model_id(model_id: str) -> str:
    """``anthropic.x`` from ``us.anthropic.x``, ``global.anthropic.x`` or an ARN of either."""
    resource = _arn_resource_id(model_id) if model_id.startswith("arn:") else model_id
    _, _, rest = resource.partition(".")
    return rest if "." in rest else resource


def _describe(tiers: tuple[tuple[str, ...], ...]) -> str:
    return " > ".join("/".join(t.capitalize() for t in tier) for tier in tiers)


def _display_name(models: Sequence[ModelInfo], base_id: str) -> str:
    for model in models:
        if model.id == base_id:
            return model.name
    return base_id


def _region_of(models: Sequence[ModelInfo]) -> str | None:
    return next((m.region for m in models if m.region), None)


# --- small helpers ----------------------------------------------------------------------------


def _arn_region(arn: str) -> str | None:
    parts = arn.split(":", 5)
    return parts[3] or None if len(parts) == 6 and parts[0] == "arn" else None


def _arn_resource_id(arn: str) -> str:
    """``anthropic.x`` from ``arn:aws:bedrock:us-east-1::foundation-model/anthropic.x``."""
    return arn.split(":", 5)[-1].rsplit("/", 1)[-1]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _has_operation(client: Any, operation: str) -> bool:
    return operation in client.meta.service_model.operation_names


def _botocore_version() -> str:
    import botocore

    return str(botocore.__version__)


__all__ = [
    "FOUNDATION_MODEL",
    "INFERENCE_PROFILE",
    "NOT_CHECKED",
    "PREFERENCES",
    "USE_CASES",
    "Access",
    "AccessStatus",
    "ModelAvailability",
    "ModelCatalog",
    "ModelInfo",
    "ModelKind",
    "Recommendation",
    "aws_errors",
    "check_model_available",
    "discover",
    "find_model",
    "list_foundation_models",
    "list_models",
    "model_access",
    "recommend",
    "to_aws_error",
]
