"""Doctor check ``static-keys``: bcce's AWS credentials are short-lived, and no long-lived keys lie
around where bcce would find them.

Registered in pyproject.toml under ``bcce.doctor``. It warns (never fails) on:

* ``AWS_ACCESS_KEY_ID`` in the environment that is a long-lived key (``AKIA...``) or comes
  without ``AWS_SESSION_TOKEN``;
* ``aws_access_key_id`` without a session token in the shared credentials or config file, in the
  active profile or a ``source_profile`` it assumes a role from;
* any bcce setting whose value looks like an AWS access key id or secret access key.

It names where each key is and never shows a key. The credential method bcce would use is
resolved with botocore's own chain and reported by botocore's names (``sso``, ``assume-role``,
``assume-role-with-web-identity``, ``container-role``, ``iam-role``, ``env``...), without
network calls: credential processes are not run and the container and instance metadata
endpoints are not asked (their presence is told from the environment).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from bcce.core.redaction import BUILTIN_PATTERNS
from bcce.doctor.registry import Check, CheckResult, DoctorContext

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings

#: botocore credential methods whose credentials are temporary by construction.
SHORT_LIVED_METHODS = frozenset(
    {
        "sso",
        "login",
        "assume-role",
        "assume-role-with-web-identity",
        "container-role",
        "iam-role",
    }
)
#: Methods that read keys as written down: short-lived only with a session token.
STATIC_METHODS = frozenset(
    {
        "env",
        "shared-credentials-file",
        "config-file",
        "boto-config",
        "ec2-credentials-file",
        "explicit",
    }
)
_NOT_QUERIED = frozenset({"custom-process", "container-role", "iam-role"})

ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
_SECRET_KEY = re.compile(r"[A-Za-z0-9/+]{40}")
_LABELLED_SECRET = re.compile(BUILTIN_PATTERNS["aws-secret-access-key"])
_KEY_NAME = re.compile(r"aws_?(secret_?access_?key|access_?key_?id|session_?token)", re.I)
_FIX = (
    "remove long-lived keys and use short-lived credentials: an IAM Identity Center profile "
    "(`aws configure sso`, then `aws sso login --profile NAME` and aws.profile / "
    "BCCE_AWS__PROFILE), an assumed role, or the role of the instance, container or CI job; "
    "keep secrets bcce needs in SSM Parameter Store (SecureString), not in files"
)


@dataclass
class Scan:
    """What the check found: where long-lived keys are, and the credential method in use."""

    findings: list[str] = field(default_factory=list)
    method: str | None = None
    note: str | None = None


# -- where keys may be ------------------------------------------------------------------------
def environment_findings(environ: Mapping[str, str]) -> list[str]:
    """Long-lived keys in the process environment."""
    key = environ.get("AWS_ACCESS_KEY_ID", "")
    if not key:
        return []
    if key.startswith("AKIA"):
        return ["environment: AWS_ACCESS_KEY_ID is a long-lived IAM user access key (AKIA...)"]
    if not (environ.get("AWS_SESSION_TOKEN") or environ.get("AWS_SECURITY_TOKEN")):
        return ["environment: AWS_ACCESS_KEY_ID is set without AWS_SESSION_TOKEN (not temporary)"]
    return []


def profile_findings(session: Any, profile: str) -> list[str]:
    """Keys without a session token in the shared files, for ``profile`` and the profiles it
    assumes a role from (``source_profile``)."""
    from botocore.configloader import raw_config_parse
    from botocore.exceptions import ConfigNotFound

    def sections(variable: str) -> tuple[str, dict[str, dict[str, str]]]:
        path = str(Path(str(session.get_config_variable(variable))).expanduser())
        try:
            return path, raw_config_parse(path)
        except ConfigNotFound:
            return path, {}

    credentials_path, credentials = sections("credentials_file")
    config_path, config = sections("config_file")
    findings: list[str] = []
    seen: set[str] = set()
    name: str | None = profile
    while name is not None and name not in seen:
        seen.add(name)
        via = "" if name == profile else f" (source_profile of profile {profile})"
        config_section = config.get(name if name == "default" else f"profile {name}") or {}
        for path, section in (
            (credentials_path, credentials.get(name) or {}),
            (config_path, config_section),
        ):
            if section.get("aws_access_key_id") and not (
                section.get("aws_session_token") or section.get("aws_security_token")
            ):
                findings.append(f"{path}: profile {name}{via} holds a long-lived access key")
        source = config_section.get("source_profile")
        name = source if config_section.get("role_arn") and source else None
    return findings


def settings_findings(settings: BcceSettings) -> list[str]:
    """bcce settings whose value looks like an AWS access key id or secret access key."""
    findings = []
    for path, value in _leaves(settings.model_dump(mode="python"), ()):
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str) or not text:
            continue
        what = _looks_like(path, text)
        if what is None:
            continue
        origin = settings.provenance.origin_of(path)
        where = f" ({origin})" if origin is not None else ""
        dotted = ".".join(map(str, path))
        findings.append(f"bcce setting {dotted}{where} holds what looks like {what}")
    return findings


def _looks_like(path: tuple[str | int, ...], text: str) -> str | None:
    if ACCESS_KEY_ID.search(text):
        return "an AWS access key id"
    if _LABELLED_SECRET.search(text) or (
        _SECRET_KEY.fullmatch(text)
        # 40 characters of base64 alone are common (hex digests are not mixed-case); an AWS
        # secret key has upper and lower case letters and digits.
        and re.search(r"[A-Z]", text)
        and re.search(r"[a-z]", text)
        and re.search(r"[0-9]", text)
    ):
        return "an AWS secret access key"
    if isinstance(path[-1], str) and _KEY_NAME.fullmatch(path[-1]):
        return f"an AWS credential (its key is {path[-1]})"
    return None


def _leaves(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


# -- the credentials bcce would use -----------------------------------------------------------
def credential_method(session: Any, environ: Mapping[str, str]) -> tuple[str | None, bool]:
    """botocore's name for the credentials ``session`` would use, and whether they carry a
    session token (False when unknown). Nothing is fetched: see the module docstring."""
    from botocore.credentials import RefreshableCredentials

    profile = session.get_config_variable("profile") or "default"
    resolver = session.get_component("credential_provider")
    for provider in resolver.providers:
        method = provider.METHOD
        if method in _NOT_QUERIED:
            found = _present_without_asking(method, session, profile, environ)
            if found:
                return found, False
            continue
        credentials = provider.load()
        if credentials is None:
            continue
        if isinstance(credentials, RefreshableCredentials):
            return str(credentials.method), True  # refreshed by botocore: temporary
        return str(credentials.method), bool(credentials.token)
    return None, False


def _present_without_asking(
    method: str, session: Any, profile: str, environ: Mapping[str, str]
) -> str | None:
    if method == "custom-process":
        profiles = session.full_config.get("profiles", {})
        return method if profiles.get(profile, {}).get("credential_process") else None
    if method == "container-role":
        container = (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
        return method if any(environ.get(name) for name in container) else None
    disabled = environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
    return None if disabled else method


def scan(settings: BcceSettings | None, environ: Mapping[str, str]) -> Scan:
    """Everything the check looks at; ``settings`` None when the configuration is invalid."""
    import botocore.session

    result = Scan(findings=environment_findings(environ))
    notes = []
    profile = settings.aws.profile if settings is not None else None
    session = botocore.session.Session(profile=profile)
    try:
        active = session.get_config_variable("profile") or "default"
        result.findings += profile_findings(session, active)
        method, has_token = credential_method(session, environ)
    except Exception as exc:  # noqa: BLE001 - a broken AWS config is reported, not a crash
        notes.append(f"the credential chain cannot be resolved: {exc}")
    else:
        result.method = method
        # Keys from the environment and the shared files were named above already.
        scanned = {"env", "shared-credentials-file", "config-file"}
        if method in STATIC_METHODS - scanned and not has_token:
            result.findings.append(f"the credentials in use ({method}) are long-lived keys")
    if settings is not None:
        result.findings += settings_findings(settings)
    else:
        notes.append("bcce's configuration is invalid: its values were not checked")
    result.note = "; ".join(notes) or None
    return result


def _static_keys(ctx: DoctorContext) -> CheckResult:
    settings = ctx.app.settings() if ctx.app is not None else None
    found = scan(settings, os.environ)
    details: dict[str, Any] = {"method": found.method, "findings": found.findings}
    if found.note:
        details["note"] = found.note
    if found.findings:
        count = len(found.findings)
        return CheckResult.warn(
            f"long-lived AWS keys in {count} place{'s' if count > 1 else ''}: "
            + "; ".join(found.findings),
            _FIX,
            **details,
        )
    if found.method is None:
        message = "no long-lived AWS keys found; no AWS credentials are configured here"
    elif found.method == "iam-role":  # not asked: there may be no instance role at all
        message = (
            "no long-lived AWS keys found; no other credentials are configured, so an "
            "instance role (iam-role, short-lived) would be used where there is one"
        )
    elif found.method in SHORT_LIVED_METHODS:
        message = f"credentials are short-lived ({found.method}); no long-lived keys found"
    elif found.method == "custom-process":
        message = (
            "credentials come from a credential_process (not run by this check); "
            "no long-lived keys found"
        )
    else:
        message = f"credentials are temporary ({found.method} with a session token)"
    if found.note:
        message += f" ({found.note})"
    return CheckResult.ok(message, **details)


short_lived_credentials = Check(
    name="static-keys",
    title="AWS credentials are short-lived",
    run=_static_keys,
    order=31,
    required=lambda _ctx: False,
    needs_app=False,
)
