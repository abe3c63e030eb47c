"""boto3 sessions and clients built from :class:`~bcce.settings.model.AwsSettings`.

boto3 is imported inside the functions: importing bcce must not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3

    from bcce.settings.model import AwsSettings


def create_session(settings: AwsSettings, *, region: str | None = None) -> boto3.session.Session:
    """A boto3 session for the configured profile and region."""
    import boto3

    return boto3.session.Session(
        profile_name=settings.profile, region_name=region or settings.region
    )


def endpoint_for(settings: AwsSettings, service: str) -> str | None:
    """The endpoint override for ``service``: per-service first, then the global one."""
    return settings.endpoint_urls.get(service) or settings.endpoint_url


def create_client(
    session: boto3.session.Session,
    settings: AwsSettings,
    service: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> Any:
    """A client for ``service`` with bcce's timeouts, retries and endpoint overrides."""
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        user_agent_extra="bcce",
    )
    return session.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url or endpoint_for(settings, service),
        region_name=region,
        config=config,
    )
