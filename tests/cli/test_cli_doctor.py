"""``bcce doctor`` run against test applications."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dependency_injector import providers

from bcce.cli.main import cli
from bcce.containers.application import Application
from bcce.doctor.registry import Check, CheckRegistry, CheckResult, DoctorContext
from bcce.errors import ExitCode
from bcce.testing.aws import MotoServer


@pytest.fixture
def ready_app(
    bcce_make_app: Callable[..., Application], fake_claude: Callable[..., Path]
) -> Application:
    """Offline and ready: the scripted model (no AWS needed) and a working Claude Code."""
    return bcce_make_app(agent={"provider": "scripted", "cli_path": str(fake_claude("2.0.0"))})


def _check(name: str, run: Callable[[DoctorContext], CheckResult], **kwargs: Any) -> Check:
    return Check(name=name, title=f"{name} title", run=run, **kwargs)


def _with_checks(app: Application, *checks: Check) -> Application:
    app.doctor_checks.override(providers.Object(CheckRegistry(list(checks))))
    return app


def _doctor_json(app: Application, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["doctor", "--json", *args], obj=app)
    return result.exit_code, json.loads(result.stdout)


# The ready app's Claude Code is a stand-in that only answers --version, so the session check
# (which runs a real scripted session) is left to its own tests below.
FOUNDATION_CHECKS = [
    "--check",
    "python",
    "--check",
    "configuration",
    "--check",
    "aws",
    "--check",
    "claude-code",
]


def test_doctor_exits_0_when_every_required_check_passes(ready_app: Application) -> None:
    result = CliRunner().invoke(cli, ["doctor", *FOUNDATION_CHECKS], obj=ready_app)

    assert result.exit_code == 0, result.output
    assert "✓ Python version: Python 3." in result.stdout
    assert "✓ Claude Code: Claude Code 2.0.0 (configured: " in result.stdout
    assert "all required checks passed" in result.stdout


def test_aws_is_not_required_when_nothing_uses_it(ready_app: Application) -> None:
    _, data = _doctor_json(ready_app, "--check", "aws")

    (aws,) = data["checks"]
    assert aws["required"] is False
    assert aws["status"] == "warn"
    assert data["ok"] is True


def test_doctor_exits_1_when_a_required_check_fails(ready_app: Application) -> None:
    app = _with_checks(
        ready_app,
        _check("good", lambda _ctx: CheckResult.ok("fine")),
        _check("bad", lambda _ctx: CheckResult.fail("broken", "do the fix")),
    )

    result = CliRunner().invoke(cli, ["doctor"], obj=app)

    assert result.exit_code == ExitCode.RUN_FAILED
    assert "✗ bad title: broken" in result.stdout
    assert "    fix: do the fix" in result.stdout
    assert "1 required check(s) failed" in result.stdout


def test_a_failing_check_that_is_not_required_only_warns(ready_app: Application) -> None:
    optional = _check(
        "optional",
        lambda _ctx: CheckResult.fail("not great", "maybe fix"),
        required=lambda _ctx: False,
    )

    code, data = _doctor_json(_with_checks(ready_app, optional))

    assert code == 0
    assert data["checks"][0]["status"] == "warn"


def test_doctor_json_lists_every_check_with_status_message_and_fix(
    ready_app: Application,
) -> None:
    app = _with_checks(
        ready_app,
        _check("first", lambda _ctx: CheckResult.ok("fine", detail=1), order=1),
        _check("second", lambda _ctx: CheckResult.fail("broken", "fix it"), order=2),
    )

    code, data = _doctor_json(app)

    assert code == ExitCode.RUN_FAILED
    assert data == {
        "ok": False,
        "checks": [
            {
                "name": "first",
                "title": "first title",
                "status": "ok",
                "required": True,
                "message": "fine",
                "fix": None,
                "details": {"detail": 1},
            },
            {
                "name": "second",
                "title": "second title",
                "status": "fail",
                "required": True,
                "message": "broken",
                "fix": "fix it",
                "details": {},
            },
        ],
    }


def test_doctor_json_of_the_builtin_checks(ready_app: Application) -> None:
    code, data = _doctor_json(ready_app, *FOUNDATION_CHECKS)

    assert code == 0
    checks = {c["name"]: c for c in data["checks"]}
    assert {"python", "configuration", "aws", "claude-code"} <= set(checks)
    claude = checks["claude-code"]
    assert claude["details"]["version"] == "2.0.0"
    assert claude["details"]["source"] == "configured"


def test_a_check_that_raises_is_reported_as_failed_not_a_crash(ready_app: Application) -> None:
    def explode(_ctx: DoctorContext) -> CheckResult:
        raise RuntimeError("boom")

    app = _with_checks(ready_app, _check("explodes", explode))

    result = CliRunner().invoke(cli, ["doctor"], obj=app)

    assert result.exit_code == ExitCode.RUN_FAILED
    assert "Traceback" not in result.output
    assert "✗ explodes title: the check itself failed: RuntimeError: boom" in result.stdout


def test_check_selects_one_check(ready_app: Application) -> None:
    _, data = _doctor_json(ready_app, "--check", "python")

    assert [c["name"] for c in data["checks"]] == ["python"]


def test_an_unknown_check_name_is_a_usage_error(ready_app: Application) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--check", "nope"], obj=ready_app)

    assert result.exit_code == ExitCode.USAGE
    assert "unknown check(s) nope" in result.stderr


def test_claude_code_fails_with_a_fix_when_the_configured_cli_is_missing(
    bcce_make_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = bcce_make_app(agent={"provider": "scripted", "cli_path": str(tmp_path / "no-claude")})

    code, data = _doctor_json(app, "--check", "claude-code")

    assert code == ExitCode.RUN_FAILED
    (claude,) = data["checks"]
    assert claude["status"] == "fail"
    assert "is not an executable file" in claude["message"]
    assert "agent.cli_path" in claude["fix"]


def test_the_aws_check_passes_against_moto_sts(
    aws_env: MotoServer, bcce_make_app: Callable[..., Application]
) -> None:
    app = bcce_make_app(aws={"endpoint_url": aws_env.url})

    code, data = _doctor_json(app, "--check", "aws")

    assert code == 0
    (aws,) = data["checks"]
    assert aws["status"] == "ok"
    assert aws["required"] is True  # agent.provider defaults to bedrock
    assert aws["details"]["account"] == "123456789012"
    assert aws["details"]["region"] == "us-east-1"
    assert aws["details"]["arn"].startswith("arn:aws:sts::123456789012:")


def test_the_aws_check_fails_with_a_fix_without_credentials(
    aws_env: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    bcce_make_app: Callable[..., Application],
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    app = bcce_make_app(aws={"endpoint_url": aws_env.url})

    result = CliRunner().invoke(cli, ["doctor", "--check", "aws"], obj=app)

    assert result.exit_code == ExitCode.RUN_FAILED
    assert "✗ AWS credentials and region: no AWS credentials found (region us-east-1)" in (
        result.stdout
    )
    assert "    fix: sign in with `aws sso login" in result.stdout


def test_the_aws_check_fails_with_a_fix_without_a_region(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app()

    code, data = _doctor_json(app, "--check", "aws")

    assert code == ExitCode.RUN_FAILED
    (aws,) = data["checks"]
    assert aws["message"] == "no AWS region configured"
    assert "AWS_REGION" in aws["fix"]


def test_the_aws_check_reports_sts_refusing_the_credentials(
    aws_env: MotoServer, bcce_make_app: Callable[..., Application]
) -> None:
    class RefusingSts:
        def get_caller_identity(self) -> dict[str, str]:
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": "ExpiredToken", "Message": "token expired"}}
            raise ClientError(error, "GetCallerIdentity")  # type: ignore[arg-type]

    app = bcce_make_app(aws={"endpoint_url": aws_env.url})

    with app.aws.sts.override(providers.Object(RefusingSts())):
        code, data = _doctor_json(app, "--check", "aws")

    assert code == ExitCode.RUN_FAILED
    assert "STS GetCallerIdentity failed in us-east-1" in data["checks"][0]["message"]
    assert "ExpiredToken" in data["checks"][0]["message"]


def test_the_session_check_runs_the_real_claude_code_offline(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(agent={"provider": "scripted"})

    code, data = _doctor_json(app, "--check", "claude-code-session")

    assert code == 0, data
    (check,) = data["checks"]
    assert check["status"] == "ok"
    assert "completed a scripted session" in check["message"]


def test_the_session_check_fails_with_a_fix_when_claude_code_cannot_hold_a_session(
    ready_app: Application,
) -> None:
    code, data = _doctor_json(ready_app, "--check", "claude-code-session")

    assert code == ExitCode.RUN_FAILED
    (check,) = data["checks"]
    assert check["status"] == "fail"
    assert "did not complete a session" in check["message"]
    assert check["fix"]
