"""bcce's own doctor checks (registered in pyproject.toml under ``bcce.doctor``)."""

from __future__ import annotations

import os
import sys

from bcce.doctor.registry import Check, CheckResult, DoctorContext

MIN_PYTHON = (3, 11)


def _python(_ctx: DoctorContext) -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return CheckResult.fail(
            f"Python {version} is too old",
            f"install Python >= {'.'.join(map(str, MIN_PYTHON))} and recreate the virtualenv",
        )
    return CheckResult.ok(f"Python {version} ({sys.executable})", version=version)


def _configuration(ctx: DoctorContext) -> CheckResult:
    if ctx.config_error is not None:
        error = ctx.config_error
        where = ": ".join(p for p in (error.location, error.key) if p)
        return CheckResult.fail(
            f"{where + ': ' if where else ''}{error.message}",
            error.hint or "run `bcce config validate` for details",
        )
    assert ctx.app is not None
    provenance = ctx.app.settings().provenance
    return CheckResult.ok(
        f"{len(provenance.sources)} layers load and validate",
        layers=list(provenance.sources),
    )


def _aws_required(ctx: DoctorContext) -> bool:
    assert ctx.app is not None
    settings = ctx.app.settings()
    return bool(
        settings.agent.provider == "bedrock"
        or settings.storage.backend == "s3"
        or settings.ssm.path
    )


def _aws(ctx: DoctorContext) -> CheckResult:
    assert ctx.app is not None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = ctx.app.aws.session()
        region = session.region_name
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        return CheckResult.fail(
            f"AWS configuration cannot be read: {exc}",
            "check aws.profile and ~/.aws/config",
        )
    if not region:
        return CheckResult.fail(
            "no AWS region configured",
            "set aws.region (BCCE_AWS__REGION) or AWS_REGION, or a region in your AWS profile",
        )
    if credentials is None:
        return CheckResult.fail(
            f"no AWS credentials found (region {region})",
            "sign in with `aws sso login --profile <profile>` and set aws.profile, "
            "or run where a role provides credentials",
        )
    try:
        identity = ctx.app.aws.sts().get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        return CheckResult.fail(
            f"STS GetCallerIdentity failed in {region}: {exc}",
            "refresh your credentials (`aws sso login`) and check network access to STS",
        )
    return CheckResult.ok(
        f"{identity['Arn']} in {region} (credentials: {credentials.method})",
        arn=identity["Arn"],
        account=identity["Account"],
        region=region,
        method=credentials.method,
    )


def _claude_code(ctx: DoctorContext) -> CheckResult:
    assert ctx.app is not None
    runtime = ctx.app.agent.runtime()
    info = runtime.locate()
    return CheckResult.ok(
        f"Claude Code {info.version} ({info.source}: {info.path})",
        version=info.version,
        path=str(info.path),
        source=info.source,
    )


python_version = Check(
    name="python", title="Python version", run=_python, order=10, needs_app=False
)
configuration = Check(
    name="configuration", title="Configuration", run=_configuration, order=20, needs_app=False
)
aws_credentials = Check(
    name="aws", title="AWS credentials and region", run=_aws, order=30, required=_aws_required
)
claude_code = Check(name="claude-code", title="Claude Code", run=_claude_code, order=40)


def _claude_code_session(ctx: DoctorContext) -> CheckResult:
    """A real one-turn session against the scripted model server: the CLI starts, talks to a
    model endpoint and reports a result (no network beyond 127.0.0.1, no cost)."""
    import tempfile
    import time
    from pathlib import Path

    from bcce.agent.endpoint import QUIET
    from bcce.agent.session import AgentRequest, run_session
    from bcce.testing.model_server import ScriptedModelServer

    assert ctx.app is not None
    runtime = ctx.app.agent.runtime()
    info = runtime.locate()
    script = {"turns": [{"text": "bcce doctor: ok"}]}
    with (
        tempfile.TemporaryDirectory(prefix="bcce-doctor-") as scratch,
        ScriptedModelServer(script) as server,
    ):
        root = Path(scratch)
        (root / "home").mkdir()
        env = {
            **QUIET,
            "CLAUDE_CODE_USE_BEDROCK": "0",
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "doctor",
        }
        started = time.monotonic()
        result = run_session(
            AgentRequest(
                prompt="Say ok.",
                workspace=root,
                home=root / "home",
                cli=info.path,
                env=env,
                tools=["Read"],
                disallowed_tools=[],
                hooks=None,
                cookie=f"doctor:{os.getpid()}",
                deadline=time.monotonic() + 60,
            ),
            root,
        )
    took = time.monotonic() - started
    if result.is_error or result.text != "bcce doctor: ok":
        return CheckResult.fail(
            f"Claude Code {info.version} did not complete a session: "
            f"{result.error or result.subtype} {result.text[:120]}".strip(),
            "run `bcce doctor --json` and check the Claude Code installation "
            "(reinstall claude-agent-sdk or fix agent.cli_path)",
        )
    return CheckResult.ok(
        f"Claude Code {info.version} completed a scripted session in {took:.1f}s",
        seconds=round(took, 2),
    )


claude_code_session = Check(
    name="claude-code-session",
    title="Claude Code runs",
    run=_claude_code_session,
    order=45,
)
