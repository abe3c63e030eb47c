from __future__ import annotations

from dependency_injector import containers, providers

from bcce.aws.session import create_client, create_session
from bcce.settings.model import AwsSettings


class AwsContainer(containers.DeclarativeContainer):
    """One boto3 session, created on first use, and a factory per client bcce uses."""

    settings = providers.Dependency(instance_of=AwsSettings)

    session = providers.Singleton(create_session, settings)

    sts = providers.Singleton(create_client, session, settings, "sts")
    ssm = providers.Singleton(create_client, session, settings, "ssm")
    s3 = providers.Singleton(create_client, session, settings, "s3")
    bedrock = providers.Singleton(create_client, session, settings, "bedrock")
    bedrock_runtime = providers.Singleton(create_client, session, settings, "bedrock-runtime")
    events = providers.Singleton(create_client, session, settings, "events")
    cloudwatch = providers.Singleton(create_client, session, settings, "cloudwatch")
    identitystore = providers.Singleton(create_client, session, settings, "identitystore")
