from __future__ import annotations

from dependency_injector import containers, providers

from bcce.workflow.registry import StepRegistry


class WorkflowContainer(containers.DeclarativeContainer):
    """The workflow engine: step registry, run-state store and runner."""

    config = providers.Configuration()
    core = providers.DependenciesContainer()
    events = providers.DependenciesContainer()
    storage = providers.DependenciesContainer()
    policy = providers.DependenciesContainer()
    plugins = providers.DependenciesContainer()
    agent = providers.DependenciesContainer()
    auth = providers.DependenciesContainer()

    steps = providers.ThreadSafeSingleton(StepRegistry)
