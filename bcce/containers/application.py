from __future__ import annotations

from dependency_injector import containers, providers

from bcce.containers.agent import AgentContainer
from bcce.containers.auth import AuthContainer
from bcce.containers.aws import AwsContainer
from bcce.containers.core import CoreContainer
from bcce.containers.events import EventsContainer
from bcce.containers.plugins import PluginsContainer
from bcce.containers.policy import PolicyContainer
from bcce.containers.storage import StorageContainer
from bcce.containers.workflow import WorkflowContainer
from bcce.doctor.registry import load_checks
from bcce.settings.model import BcceSettings


class Application(containers.DeclarativeContainer):
    """The root: build it with :func:`bcce.create_application`."""

    settings = providers.Dependency(instance_of=BcceSettings)
    config = providers.Configuration(strict=True)

    core = providers.Container(CoreContainer, config=config.core, settings=settings)
    aws = providers.Container(AwsContainer, settings=settings.provided.aws)
    auth = providers.Container(AuthContainer, config=config.auth, settings=settings, aws=aws)
    events = providers.Container(
        EventsContainer, config=config.events, settings=settings, core=core, aws=aws, auth=auth
    )
    storage = providers.Container(
        StorageContainer, config=config.storage, settings=settings, aws=aws
    )
    policy = providers.Container(PolicyContainer, settings=settings.provided.policy)
    plugins = providers.Container(PluginsContainer, settings=settings, events=events)
    agent = providers.Container(AgentContainer, config=config.agent, aws=aws)
    workflow = providers.Container(
        WorkflowContainer,
        config=config.workflow,
        settings=settings,
        core=core,
        events=events,
        storage=storage,
        policy=policy,
        plugins=plugins,
        agent=agent,
        auth=auth,
    )

    doctor_checks = providers.Singleton(load_checks)
