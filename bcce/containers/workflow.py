from __future__ import annotations

from dependency_injector import containers, providers

from bcce.settings.model import BcceSettings
from bcce.steps.registration import builtin_step_types
from bcce.workflow.registry import StepRegistry
from bcce.workflow.runner import WorkflowRunner
from bcce.workflow.state import JsonRunStateStore


class WorkflowContainer(containers.DeclarativeContainer):
    """The workflow engine: step registry, run-state store and runner."""

    config = providers.Configuration()
    settings = providers.Dependency(instance_of=BcceSettings)
    core = providers.DependenciesContainer()
    events = providers.DependenciesContainer()
    storage = providers.DependenciesContainer()
    policy = providers.DependenciesContainer()
    plugins = providers.DependenciesContainer()
    agent = providers.DependenciesContainer()
    auth = providers.DependenciesContainer()

    steps = providers.ThreadSafeSingleton(StepRegistry.with_types, builtin_step_types)
    state_store = providers.Selector(
        config.state_store,
        json=providers.Singleton(JsonRunStateStore, root=config.state_dir, fsync=config.fsync),
    )
    runner = providers.Factory(
        WorkflowRunner,
        registry=steps,
        store=state_store,
        bus=events.bus,
        redactor=core.redactor,
        ids=core.ids,
        policy=policy.engine,
        settings=settings,
        storage=storage.backend,
        agent_runtime=agent.runtime,
        approval_gates=plugins.manager.provided.approval_gates.call(),
        authoriser=providers.Factory(auth.authoriser, bus=events.bus),
    )
