"""The settings model: one section per container of the application tree.

Defaults here equal ``config/defaults.yaml`` (a test keeps them equal); the layers that override
them are assembled in :mod:`bcce.settings.layers`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bcce.settings.provenance import Provenance

#: Free-form plugin options (plugins.config, plugins.integrations) are secrets by name.
SECRET_OPTION = re.compile(r"webhook|token|secret|password|passwd|api_?key|credential", re.I)


def is_secret_option(path: tuple[str | int, ...]) -> bool:
    """Whether ``path`` is a free-form plugin option whose name says it holds a secret."""
    return (
        len(path) >= 4
        and path[:2] in (("plugins", "config"), ("plugins", "integrations"))
        and isinstance(path[-1], str)
        and bool(SECRET_OPTION.search(path[-1]))
    )


LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]


class Section(BaseModel):
    """A settings section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class CoreSettings(Section):
    log_level: LogLevel = "INFO"
    log_format: Literal["text", "json"] = "text"
    redact_patterns: list[str] = Field(
        default_factory=list, description="extra regular expressions whose matches are redacted"
    )
    secrets: list[SecretStr] = Field(
        default_factory=list, description="extra literal values redacted wherever they appear"
    )
    team: str | None = None
    project: str | None = None


class AwsSettings(Section):
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = Field(
        default=None, description="one endpoint for every AWS service (a gateway or moto)"
    )
    endpoint_urls: dict[str, str] = Field(
        default_factory=dict, description="per-service endpoints, e.g. {sts: http://...}"
    )
    max_attempts: int = Field(default=3, ge=1, le=20)
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)


class SsmSettings(Section):
    path: str | None = Field(
        default=None, description="Parameter Store path whose parameters form a settings layer"
    )
    region: str | None = None
    endpoint_url: str | None = None
    decrypt: bool = True

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/', e.g. /bcce/prod")
        return value.rstrip("/") if value not in (None, "/") else value


#: What the audit trail records by default: who ran what, every step's outcome, every policy
#: decision, approval, budget and cost, and plugin code starting or failing. Not the noise of
#: progress (workflow.phase), tool results, or plugin registration on every command.
AUDITED_EVENTS = (
    "workflow.started",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "step.*",
    "policy.*",
    "approval.*",
    "budget.*",
    "cost.*",
    "artifacts.*",
    "plugin.started",
    "plugin.restarted",
    "plugin.loaded",
    "plugin.unloaded",
    "plugin.failed",
    "plugin.call",
    "events.subscriber_failed",
    "auth.*",
    "storage.*",
)


class AuditSettings(Section):
    file: Path | None = Field(
        default=None,
        description="the append-only audit trail; default <workflow.state_dir>/audit.jsonl",
    )
    key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key chaining the records (else a plain SHA-256 chain); "
        "set it from SSM as a SecureString",
    )
    events: list[str] = Field(
        default_factory=lambda: list(AUDITED_EVENTS),
        description="event type patterns the trail records",
    )


class PrometheusSettings(Section):
    file: Path | None = Field(
        default=None,
        description="text exposition file, rewritten atomically (default "
        "<workflow.state_dir>/metrics.prom)",
    )
    port: int | None = Field(
        default=None, ge=0, le=65535, description="serve /metrics on this port while bcce runs"
    )
    host: str = "127.0.0.1"


class CloudWatchSettings(Section):
    namespace: str = "BCCE"
    batch_size: int = Field(default=20, ge=1, le=1000, description="metrics per PutMetricData")


class OtelSettings(Section):
    exporter: Literal["otlp", "console", "memory"] = Field(
        default="otlp", description="where spans and OTel metrics go (memory: tests)"
    )
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318 (default: the "
        "OTEL_EXPORTER_OTLP_ENDPOINT convention)",
    )
    service_name: str = "bcce"
    xray_ids: bool = Field(default=False, description="trace ids that AWS X-Ray accepts")
    metric_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often OTel metrics are exported"
    )
    claude_code: bool = Field(
        default=False,
        description="turn on Claude Code's own telemetry, tagged with the run and step ids",
    )


class EventBridgeSettings(Section):
    bus: str | None = Field(default=None, description="event bus name or ARN")
    source: str = "bcce"
    events: list[str] = Field(
        default_factory=lambda: [
            "workflow.started",
            "workflow.completed",
            "workflow.failed",
            "workflow.cancelled",
            "step.failed",
            "step.timed_out",
            "policy.denied",
            "approval.*",
            "budget.exceeded",
        ],
        description="event type patterns published to the bus",
    )
    batch_size: int = Field(default=10, ge=1, le=10, description="entries per PutEvents")
    max_attempts: int = Field(default=5, ge=1, le=20, description="tries per failed entry")


class EventsSettings(Section):
    metrics: str = "log"
    subscribers: list[str] = Field(
        default_factory=lambda: ["audit", "metrics"],
        description="event subscribers to attach: audit, metrics, tracing, eventbridge",
    )
    subscriber_timeout_seconds: float = Field(
        default=5.0, gt=0, description="bound on how long a slow subscriber may hold events up"
    )
    queue_size: int = Field(default=10_000, ge=1, description="events queued per subscriber")
    audit: AuditSettings = Field(default_factory=AuditSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    cloudwatch: CloudWatchSettings = Field(default_factory=CloudWatchSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    eventbridge: EventBridgeSettings = Field(default_factory=EventBridgeSettings)

    @field_validator("subscribers")
    @classmethod
    def _known_subscribers(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SUBSCRIBERS))
        if unknown:
            raise ValueError(
                f"unknown subscriber(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(SUBSCRIBERS)}"
            )
        return value


#: The event subscribers ``events.subscribers`` may name.
SUBSCRIBERS = ("audit", "metrics", "tracing", "eventbridge")


class IdentityCenterSettings(Section):
    identity_store_id: str | None = Field(
        default=None,
        description="d-xxxxxxxxxx: groups come from the Identity Store API (else group_mapping)",
    )
    region: str | None = Field(
        default=None, description="the Identity Store's region (default: aws.region)"
    )
    group_mapping: dict[str, list[str]] = Field(
        default_factory=dict,
        description="permission set (or IAM role) name -> the groups it stands for",
    )


class CognitoOidcSettings(Section):
    issuer: str | None = Field(
        default=None,
        description="the token issuer, e.g. https://cognito-idp.REGION.amazonaws.com/POOL_ID",
    )
    audience: str | None = Field(default=None, description="the app client id the token is for")
    jwks_url: str | None = Field(
        default=None, description="default: <issuer>/.well-known/jwks.json"
    )
    token_file: Path | None = Field(
        default=None, description="a file holding the ID token (else token_env)"
    )
    token_env: str = Field(
        default="BCCE_ID_TOKEN", description="the environment variable holding the ID token"
    )
    username_claim: str = Field(
        default="cognito:username", description="the claim naming the user (else email, sub)"
    )
    groups_claim: str = Field(default="cognito:groups", description="the claim listing groups")
    leeway_seconds: int = Field(default=30, ge=0, le=600, description="clock skew allowed")

    @field_validator("token_env")
    @classmethod
    def _not_a_settings_variable(cls, value: str) -> str:
        from bcce.settings.layers import is_settings_variable

        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be an environment variable name")
        if is_settings_variable(value.upper()):
            raise ValueError(
                "BCCE_<SECTION>... variables are settings: use BCCE_ID_TOKEN or another name"
            )
        return value


class _Grantees(Section):
    """Who a rule grants something to: members of any of ``groups``, or any of ``users``."""

    groups: list[str] = Field(
        default_factory=list, description="group names (from the auth provider) it applies to"
    )
    users: list[str] = Field(
        default_factory=list,
        description="user names it applies to (an approval integration's users have no groups)",
    )

    @field_validator("groups", "users")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip() or name != name.strip():
                raise ValueError(f"{name!r} is not a name: empty or surrounded by spaces")
        return value


class _Rule(_Grantees):
    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not self.groups and not self.users:
            raise ValueError("a rule needs groups (or users) to apply to; both are empty")
        return self


class WorkflowRule(_Rule):
    allow: list[str] = Field(
        description="workflow path globs (relative to the working directory, or absolute) "
        "and name:GLOB for workflow names",
    )

    @field_validator("allow")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("the rule allows nothing: give workflow path globs or name:GLOB")
        for pattern in value:
            if not pattern.strip() or pattern == "name:":
                raise ValueError(f"{pattern!r} is not a workflow path glob or name:GLOB")
        return value


class PolicyRule(_Rule):
    presets: list[str] = Field(
        default_factory=list,
        description="policy preset names (globs) whose limits the steps may use, as named",
    )
    looser_than_default: bool = Field(
        default=False, description="any step policy, however much looser than policy.default"
    )

    @model_validator(mode="after")
    def _grants_something(self) -> Self:
        if not self.presets and not self.looser_than_default:
            raise ValueError("the rule allows nothing: give presets, or looser_than_default: true")
        if any(not p.strip() for p in self.presets):
            raise ValueError("a preset name is empty")
        return self


class ApprovalRules(_Grantees):
    four_eyes: bool = Field(
        default=False,
        description="never the identity that started the run (provider and user compared)",
    )


class PluginRules(_Grantees):
    pass


class AuthorizationSettings(Section):
    enabled: bool = Field(
        default=False, description="enforce the rules below (off: everyone may do everything)"
    )
    admins: list[str] = Field(
        default_factory=list, description="groups allowed everything (four-eyes still applies)"
    )
    workflows: list[WorkflowRule] = Field(
        default_factory=list, description="who may run (resume, cancel) which workflows"
    )
    policies: list[PolicyRule] = Field(
        default_factory=list,
        description="who may run steps whose policy is looser than policy.default",
    )
    approvals: ApprovalRules = Field(
        default_factory=ApprovalRules, description="who may approve apply_diff changes"
    )
    plugins: PluginRules = Field(
        default_factory=PluginRules,
        description="who may enable, disable and reload plugins (bcce plugin ...)",
    )

    @field_validator("admins")
    @classmethod
    def _admin_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip() or name != name.strip():
                raise ValueError(f"{name!r} is not a group name: empty or surrounded by spaces")
        return value


class AuthSettings(Section):
    provider: str = "local"
    identity_center: IdentityCenterSettings = Field(default_factory=IdentityCenterSettings)
    cognito_oidc: CognitoOidcSettings = Field(default_factory=CognitoOidcSettings)
    authorization: AuthorizationSettings = Field(default_factory=AuthorizationSettings)


class S3StorageSettings(Section):
    bucket: str | None = Field(default=None, description="the bucket (storage.backend: s3)")
    prefix: str = Field(default="bcce", description="key prefix: <prefix>/<run_id>/...")
    kms_key_id: str | None = Field(
        default=None,
        description="SSE-KMS key id, ARN or alias (None: the bucket's default encryption)",
    )
    multipart_threshold_mb: int = Field(
        default=8, ge=5, le=5120, description="artifacts from this size up go in parts"
    )
    multipart_chunk_mb: int = Field(default=8, ge=5, le=5120, description="the size of a part")
    max_attempts: int = Field(default=5, ge=1, le=20, description="tries per request")


class StorageSettings(Section):
    backend: str = "local"
    root: Path = Path(".bcce_runs")
    archive_on_completion: bool = Field(
        default=True,
        description="with a remote backend: archive the run's files there when it completes",
    )
    s3: S3StorageSettings = Field(default_factory=S3StorageSettings)


class StepPolicySettings(Section):
    timeout_seconds: int = Field(default=900, ge=1)
    max_files: int = Field(default=50, ge=0)
    max_edits: int = Field(default=20, ge=0)
    allowed_paths: list[str] = Field(default_factory=lambda: ["**"])
    cmd_allowlist: list[str] | None = None


class BudgetSettings(Section):
    step_usd: float | None = Field(
        default=None, gt=0, description="max_budget_usd of an agent or prompt step without one"
    )
    run_usd: float | None = Field(
        default=None, gt=0, description="max_budget_usd of a run whose workflow sets none"
    )
    team_daily_usd: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="per team (core.team), per UTC day, all runs together"
    )


class PolicySettings(Section):
    strict: bool = False
    default: StepPolicySettings = Field(default_factory=StepPolicySettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    cmd_allowlist: list[str] | None = Field(
        default=None, description="an organisation-wide allowlist applied to every cmd step"
    )


class IntegrationSettings(BaseModel):
    """One integration instance: a plugin integration type, the events it hears, its options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    type: str = Field(pattern=r"^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$")
    events: list[str] = Field(
        default_factory=lambda: [
            "workflow.started",
            "workflow.completed",
            "workflow.failed",
            "workflow.cancelled",
        ],
        description="event type patterns (step.*, workflow.failed) a notification hears",
    )


class PluginsSettings(Section):
    paths: list[Path] = Field(
        default_factory=list, description="extra directories searched for plugins"
    )
    disabled: list[str] = Field(default_factory=list, description="plugins not to load")
    require_signature: bool = Field(
        default=False, description="reject unsigned plugins and plugins signed by unknown keys"
    )
    trusted_keys: list[str] = Field(
        default_factory=list, description="Ed25519 public keys trusted (PEM or OpenSSH lines)"
    )
    strict: bool = Field(
        default=True,
        description="refuse to run plugin code without an OS sandbox (bubblewrap or Landlock)",
    )
    in_process: list[str] = Field(
        default_factory=list,
        description="first-party plugins trusted to run inside the engine process (faster)",
    )
    grants: dict[str, list[str | dict[str, Any]]] = Field(
        default_factory=dict,
        description="permissions granted per plugin; a plugin gets declared ∩ granted",
    )
    config: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="configuration per plugin, checked against the plugin's schema",
    )
    integrations: list[IntegrationSettings] = Field(
        default_factory=list, description="integration instances for every run"
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="per call to a plugin")
    memory_mb: int = Field(default=512, ge=64, description="address-space limit of a worker")
    health_interval_seconds: float = Field(
        default=60.0, ge=0, description="periodic health checks in long-running hosts (0: off)"
    )
    watch: bool = Field(
        default=True, description="long-running hosts reload a plugin whose files change"
    )


class AgentSettings(Section):
    runtime: str = "claude-code"
    provider: Literal["bedrock", "anthropic", "scripted"] = "bedrock"
    cli_path: Path | None = None
    model: str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    base_url: str | None = Field(
        default=None, description="a gateway or local endpoint instead of the provider's own"
    )
    api_key: SecretStr | None = Field(default=None, description="Anthropic API key (anthropic)")
    bedrock_skip_auth: bool = Field(
        default=False, description="with base_url: the gateway signs requests, Claude Code does not"
    )
    script: Path | None = Field(
        default=None,
        description="scripted provider: a reply script, or a directory of <step_id>.yaml scripts",
    )
    scripted_format: Literal["anthropic", "bedrock"] = Field(
        default="anthropic", description="wire format the scripted model server is spoken in"
    )
    max_turns: int | None = Field(default=50, ge=1)


class WorkflowSettings(Section):
    state_store: str = "json"
    state_dir: Path = Field(
        default=Path(".bcce_runs"), description="where run state (run.json, journal) is kept"
    )
    fsync: bool = Field(
        default=True, description="fsync every state transition (survives power loss too)"
    )
    max_parallel: int = Field(default=4, ge=1, le=256)
    shell: str = "/bin/bash"
    kill_grace_seconds: float = Field(
        default=2.0, ge=0, description="SIGTERM-to-SIGKILL grace when a step is stopped"
    )
    env_allowlist: list[str] = Field(
        default_factory=lambda: ["PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ"]
    )


class BcceSettings(BaseSettings):
    """All of bcce's settings, layered: overrides > env > SSM > files > plugin defaults > defaults.

    ``BcceSettings()`` loads every layer for the current process;
    :func:`bcce.settings.load_settings` does the same with explicit options.
    ``settings.provenance`` tells where each value came from.
    """

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True)

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "core",
        "aws",
        "ssm",
        "events",
        "auth",
        "storage",
        "policy",
        "plugins",
        "agent",
        "workflow",
    )

    core: CoreSettings = Field(default_factory=CoreSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    ssm: SsmSettings = Field(default_factory=SsmSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)

    _provenance: Provenance = PrivateAttr(default_factory=Provenance)

    def __init__(self, **values: Any) -> None:
        from bcce.settings.layers import build_settings

        build_settings(self, values, super().__init__)

    @property
    def provenance(self) -> Provenance:
        return self._provenance

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from bcce.settings.layers import current_sources

        return (init_settings, *current_sources(settings_cls))
