"""The ``static-keys`` doctor check: long-lived AWS keys are found wherever bcce would pick them
up, short-lived credential sources pass, and no key is ever shown. Also: every secret-looking
setting is a SecretStr that ``bcce config show`` masks."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from pydantic import BaseModel, SecretStr

from bcce.containers.application import Application
from bcce.doctor.registry import CheckResult, DoctorContext, Status, load_checks
from bcce.doctor.static_keys import short_lived_credentials
from bcce.settings.model import BcceSettings
from bcce.settings.render import MASK

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TEMP_KEY = "ASIAIOSFODNN7EXAMPLE"
SESSION_TOKEN = "FwoGZXIvYXdzEBYaDGV4YW1wbGVzZXNzaW9udG9rZW4"

SSO_CONFIG = """\
[profile dev]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = Developers
region = us-east-1

[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
sso_region = us-east-1
"""


@pytest.fixture
def aws_files(tmp_path: Path) -> tuple[Path, Path]:
    """The AWS config and credentials files the environment points at (tests/conftest.py)."""
    folder = tmp_path / "no-aws"
    folder.mkdir(exist_ok=True)
    return folder / "config", folder / "credentials"


@pytest.fixture
def check(bcce_make_app: Callable[..., Application]) -> Callable[..., CheckResult]:
    """``check(**settings)``: the check's result for an application with those settings."""

    def run(**settings: Any) -> CheckResult:
        return short_lived_credentials.run(DoctorContext(app=bcce_make_app(**settings)))

    return run


def shown(result: CheckResult) -> str:
    """Everything the check lets out: message, fix and details."""
    return json.dumps([result.message, result.fix, result.details])


def assert_no_key_shown(text: str) -> None:
    for secret in (ACCESS_KEY, SECRET_KEY, TEMP_KEY, SESSION_TOKEN, "IOSFODNN7", "bPxRfiCY"):
        assert secret not in text


# -- the environment -------------------------------------------------------------------------
def test_a_long_lived_access_key_in_the_environment_is_a_warning(
    check: Callable[..., CheckResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)

    result = check()

    assert result.status is Status.WARN
    assert result.details["findings"] == [
        "environment: AWS_ACCESS_KEY_ID is a long-lived IAM user access key (AKIA...)"
    ]
    assert result.details["method"] == "env"
    assert "aws sso login --profile" in (result.fix or "")
    assert_no_key_shown(shown(result))


def test_temporary_keys_in_the_environment_pass(
    check: Callable[..., CheckResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEMP_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)

    result = check()

    assert result.status is Status.OK
    assert result.message == "credentials are temporary (env with a session token)"
    assert_no_key_shown(shown(result))


def test_a_key_in_the_environment_without_a_session_token_is_a_warning(
    check: Callable[..., CheckResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEMP_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)

    result = check()

    assert result.status is Status.WARN
    assert result.details["findings"] == [
        "environment: AWS_ACCESS_KEY_ID is set without AWS_SESSION_TOKEN (not temporary)"
    ]


# -- the shared files ------------------------------------------------------------------------
def test_static_keys_in_the_shared_credentials_file_are_a_warning(
    check: Callable[..., CheckResult], aws_files: tuple[Path, Path]
) -> None:
    _config, credentials = aws_files
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )

    result = check()

    assert result.status is Status.WARN
    assert result.details == {
        "method": "shared-credentials-file",
        "findings": [f"{credentials}: profile default holds a long-lived access key"],
    }
    assert_no_key_shown(shown(result))


def test_static_keys_of_another_profile_are_not_this_checks_business(
    check: Callable[..., CheckResult], aws_files: tuple[Path, Path]
) -> None:
    config, credentials = aws_files
    config.write_text(SSO_CONFIG)
    credentials.write_text(
        f"[old]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )

    assert check(aws={"profile": "dev"}).status is Status.OK


def test_an_sso_profile_passes_without_signing_in(
    check: Callable[..., CheckResult], aws_files: tuple[Path, Path]
) -> None:
    config, _credentials = aws_files
    config.write_text(SSO_CONFIG)

    result = check(aws={"profile": "dev"})

    assert result.status is Status.OK
    assert result.message == "credentials are short-lived (sso); no long-lived keys found"
    assert result.details["method"] == "sso"


def test_a_role_assumed_from_an_sso_profile_passes(
    check: Callable[..., CheckResult], aws_files: tuple[Path, Path]
) -> None:
    config, _credentials = aws_files
    config.write_text(
        SSO_CONFIG
        + "\n[profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/deploy\n"
        + "source_profile = dev\n"
    )

    result = check(aws={"profile": "deploy"})

    assert (result.status, result.details["method"]) == (Status.OK, "assume-role")


def test_a_role_assumed_with_long_lived_source_keys_is_a_warning(
    check: Callable[..., CheckResult], aws_files: tuple[Path, Path]
) -> None:
    config, credentials = aws_files
    config.write_text(
        "[profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/deploy\n"
        "source_profile = keys\n"
    )
    credentials.write_text(
        f"[keys]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )

    result = check(aws={"profile": "deploy"})

    assert result.status is Status.WARN
    assert result.details == {
        "method": "assume-role",
        "findings": [
            f"{credentials}: profile keys (source_profile of profile deploy) holds a "
            "long-lived access key"
        ],
    }


def test_web_identity_passes(
    check: Callable[..., CheckResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "web-identity-token"
    token.write_text("header.payload.signature")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ci")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))

    result = check()

    assert (result.status, result.details["method"]) == (
        Status.OK,
        "assume-role-with-web-identity",
    )


def test_a_container_role_passes_without_asking_the_endpoint(
    check: Callable[..., CheckResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: asking would fail and show as a note.
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds")

    result = check()

    assert result.status is Status.OK
    assert result.details == {"method": "container-role", "findings": []}


def test_an_instance_role_passes_without_asking_the_metadata_service(
    check: Callable[..., CheckResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")

    result = check()

    assert result.status is Status.OK
    assert result.details == {"method": "iam-role", "findings": []}
    assert "an instance role (iam-role, short-lived) would be used" in result.message


def test_no_credentials_at_all_pass_with_that_said(check: Callable[..., CheckResult]) -> None:
    result = check()

    assert result.status is Status.OK
    assert result.message == (
        "no long-lived AWS keys found; no AWS credentials are configured here"
    )


# -- bcce's own configuration ----------------------------------------------------------------
def test_aws_keys_in_bcce_settings_are_a_warning_naming_the_key_and_file(
    check: Callable[..., CheckResult], tmp_path: Path
) -> None:
    (tmp_path / "bcce.yaml").write_text(
        f"core:\n  project: {ACCESS_KEY}\nagent:\n  api_key: {SECRET_KEY}\n"
    )

    result = check()

    assert result.status is Status.WARN
    file = tmp_path / "bcce.yaml"
    assert result.details["findings"] == [
        f"bcce setting core.project (file: {file}:2:12) holds what looks like an AWS access key id",
        f"bcce setting agent.api_key (file: {file}:4:12) holds what looks like an AWS secret "
        "access key",
    ]
    assert_no_key_shown(shown(result))


def test_a_setting_named_for_an_aws_credential_is_a_warning(
    check: Callable[..., CheckResult],
) -> None:
    integration = {"type": "http:webhook", "aws_session_token": "opaque"}

    result = check(plugins={"integrations": [integration], "disabled": ["http"]})

    assert result.details["findings"] == [
        "bcce setting plugins.integrations.0.aws_session_token (override: explicit override) "
        "holds what looks like an AWS credential (its key is aws_session_token)"
    ]


def test_hex_digests_and_ordinary_values_are_not_taken_for_secret_keys(
    check: Callable[..., CheckResult],
) -> None:
    digest = "3f786850e387550fdab836ed7e6dc881de23001b"  # 40 characters, like a secret key

    result = check(core={"project": digest, "team": "platform"})

    assert result.status is Status.OK


def test_with_an_invalid_configuration_the_environment_is_still_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)

    result = short_lived_credentials.run(DoctorContext(app=None))

    assert result.status is Status.WARN
    assert "its values were not checked" in result.details["note"]


# -- through the command line ----------------------------------------------------------------
def test_the_check_is_registered_and_never_fails_doctor(
    bcce_cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)

    result = bcce_cli(["doctor", "--json", "--check", "static-keys"])

    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.stdout)["checks"]
    assert (outcome["title"], outcome["status"], outcome["required"]) == (
        "AWS credentials are short-lived",
        "warn",
        False,
    )
    assert "static-keys" in load_checks().names()


def test_doctor_output_never_shows_a_key(
    bcce_cli: Callable[..., Result],
    bcce_make_app: Callable[..., Application],
    monkeypatch: pytest.MonkeyPatch,
    aws_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    _config, credentials = aws_files
    credentials.write_text(
        f"[default]\naws_access_key_id = {TEMP_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    (tmp_path / "bcce.yaml").write_text(f"core:\n  team: {SECRET_KEY}\n")
    app = bcce_make_app()

    # Only this check: the others would ask AWS and run Claude Code.
    for args in (
        ["doctor", "--check", "static-keys"],
        ["doctor", "--json", "--check", "static-keys"],
    ):
        result = bcce_cli(args, app=app)
        assert "long-lived" in result.output
        assert_no_key_shown(result.output)


# -- secrets in settings ---------------------------------------------------------------------
#: Settings whose names sound secret but hold no secret, and why.
NOT_SECRETS = {
    "auth.cognito_oidc.token_file": "the path of the token file, not the token",
    "auth.cognito_oidc.token_env": "the name of the variable holding the token",
    "storage.s3.kms_key_id": "a KMS key id, ARN or alias: the key never leaves KMS",
    "plugins.trusted_keys": "public keys",
}
SECRET_NAME = re.compile(
    r"token|secret|passw|api_?key|credential|private|webhook|(^|_)keys?($|_)", re.I
)


def settings_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, field.annotation
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from settings_fields(candidate, f"{path}.")


def holds_secret_str(annotation: Any) -> bool:
    """``SecretStr``, or a type built of it (``SecretStr | None``, ``list[SecretStr]``)."""
    return annotation is SecretStr or any(map(holds_secret_str, typing.get_args(annotation)))


def secret_fields() -> list[str]:
    return [
        path for path, annotation in settings_fields(BcceSettings) if holds_secret_str(annotation)
    ]


def test_every_secret_looking_setting_is_a_secret_str() -> None:
    secret_looking = [
        path
        for path, _annotation in settings_fields(BcceSettings)
        if SECRET_NAME.search(path.rsplit(".", 1)[-1]) and path not in NOT_SECRETS
    ]

    assert secret_looking, "the name pattern finds nothing: the test is broken"
    assert sorted(set(secret_looking) - set(secret_fields())) == []


def nested(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: nested(rest, value) if rest else value}


@pytest.mark.parametrize("path", secret_fields())
@pytest.mark.parametrize(
    "args", [["config", "show"], ["config", "show", "--json"], ["config", "show", "--sources"]]
)
def test_every_secret_setting_is_masked_by_config_show(
    bcce_make_app: Callable[..., Application],
    bcce_cli: Callable[..., Result],
    path: str,
    args: list[str],
) -> None:
    value = "s3cr3t-value-for-" + path.replace(".", "-")
    section, _, rest = path.partition(".")
    is_list = dict(settings_fields(BcceSettings))[path] == list[SecretStr]
    app = bcce_make_app(**{section: nested(rest, [value] if is_list else value)})

    result = bcce_cli(args, app=app)

    assert result.exit_code == 0, result.output
    assert value not in result.output
    assert MASK in result.output
