"""Reading a settings layer from AWS Systems Manager Parameter Store.

Parameter ``/bcce/prod/storage/backend`` under ``ssm.path=/bcce/prod`` sets ``storage.backend``.
SecureString parameters are decrypted and their values marked secret (masked in every output).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bcce.aws.session import create_client, create_session
from bcce.errors import ConfigError
from bcce.settings.model import AwsSettings, SsmSettings
from bcce.settings.provenance import Origin, PathKey


@dataclass(frozen=True)
class Parameter:
    name: str
    path: PathKey
    value: Any
    secure: bool


def read_parameters(
    ssm: SsmSettings, aws: AwsSettings, *, where: Origin | None = None
) -> Iterator[Parameter]:
    """Every parameter under ``ssm.path``, recursively, as settings paths and values."""
    from botocore.exceptions import BotoCoreError, ClientError

    assert ssm.path is not None
    location = where.location if where is not None else None
    # Fail fast when Parameter Store cannot be reached: this runs at every start-up.
    quick = aws.model_copy(update={"max_attempts": min(aws.max_attempts, 2)})
    try:
        session = create_session(aws, region=ssm.region)
        client = create_client(
            session, quick, "ssm", endpoint_url=ssm.endpoint_url, region=ssm.region
        )
        pages = client.get_paginator("get_parameters_by_path").paginate(
            Path=ssm.path, Recursive=True, WithDecryption=ssm.decrypt
        )
        parameters = [p for page in pages for p in page.get("Parameters", [])]
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(
            f"cannot read SSM Parameter Store path {ssm.path}: {exc}",
            key="ssm.path",
            location=location,
            hint="check the network, aws.region/ssm.region and credentials, "
            "or unset ssm.path to run without the Parameter Store layer",
        ) from None
    from bcce.settings.layers import decode_value

    prefix = ssm.path.rstrip("/") + "/"
    for parameter in sorted(parameters, key=lambda p: p["Name"]):
        name = parameter["Name"]
        relative = name[len(prefix) :] if name.startswith(prefix) else name.lstrip("/")
        parts = tuple(p.lower().replace("-", "_") for p in relative.split("/") if p)
        if not parts:
            continue
        kind = parameter.get("Type", "String")
        raw = parameter.get("Value", "")
        value: Any = raw.split(",") if kind == "StringList" else decode_value(raw)
        yield Parameter(name=name, path=parts, value=value, secure=kind == "SecureString")
