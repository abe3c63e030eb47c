from __future__ import annotations

from dependency_injector import containers, providers

from bcce.agent.runtime import ClaudeCodeRuntime


class AgentContainer(containers.DeclarativeContainer):
    """The agent runtime that agent, prompt and apply_diff steps drive."""

    config = providers.Configuration()
    aws = providers.DependenciesContainer()

    runtime = providers.Selector(
        config.runtime,
        **{"claude-code": providers.Singleton(ClaudeCodeRuntime, cli_path=config.cli_path)},
    )
