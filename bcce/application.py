"""Building the application: settings in, a checked container tree out."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

from dependency_injector import providers

from bcce.errors import ConfigError, PluginError
from bcce.settings.layers import LayerOptions, load_settings, with_overrides
from bcce.settings.model import BcceSettings
from bcce.settings.provenance import dotted

if TYPE_CHECKING:
    from bcce.containers.application import Application


def selector_points(app: Application) -> dict[str, providers.Selector[Any]]:
    """Every swappable component, by the settings key that chooses it."""
    points = {
        "events.metrics": app.events.metrics,
        "auth.provider": app.auth.authenticator,
        "storage.backend": app.storage.backend,
        "agent.runtime": app.agent.runtime,
        "workflow.state_store": app.workflow.state_store,
    }
    return {key: cast("providers.Selector[Any]", selector) for key, selector in points.items()}


def create_application(
    settings: BcceSettings | None = None,
    *,
    options: LayerOptions | None = None,
    **overrides: Any,
) -> Application:
    """Build the application tree.

    ``settings``: a loaded :class:`BcceSettings`; when omitted every configuration layer is loaded
    (as ``options`` says, else from the process environment and working directory).
    ``overrides``: the highest layer, by section, e.g. ``storage={"backend": "local"}``.
    """
    from bcce.containers.application import Application
    from bcce.plugin.discovery import discover, plugin_defaults

    options = options or LayerOptions()
    if settings is None:
        settings = load_settings(options, overrides)
        report = discover(settings.plugins, cwd=options.cwd, environ=options.environ)
        defaults = plugin_defaults(report)
        if defaults:  # the plugin-defaults layer sits below the files: load the layers again
            options = dataclasses.replace(options, plugin_defaults=defaults)
            settings = load_settings(options, overrides)
    else:
        if overrides:
            settings = with_overrides(settings, overrides)
        report = discover(settings.plugins, cwd=options.cwd, environ=options.environ)
    app = Application(settings=providers.Object(settings))
    app.config.from_pydantic(settings)
    app.plugins.cwd.override(providers.Object(options.cwd))
    app.plugins.environ.override(providers.Object(options.environ))
    app.plugins.report.override(providers.Object(report))
    _merge_plugin_choices(app)
    _check_selectors(app, settings)
    app.check_dependencies()
    app.events.attached()  # before plugins register: their events reach the subscribers
    manager = app.plugins.manager()
    manager.attach(registry=app.workflow.steps(), bus=app.events.bus())
    manager.activate()
    return app


def _merge_plugin_choices(app: Application) -> None:
    manager = app.plugins.manager()
    points = selector_points(app)
    for key, choices in manager.selector_choices().items():
        selector = points[key]  # the manager offers only storage.backend and auth.provider
        added = dict(selector.providers)
        for choice, provider in choices.items():
            if choice in added:
                # That plugin is refused; the host and the built-in carry on.
                owner = manager.owner_of(key, choice)
                manager.reject(
                    owner,
                    PluginError(
                        f"plugin {owner!r} offers {key} choice {choice!r}, "
                        "which a built-in already is",
                        key=key,
                        hint="plugins add choices under new names; they never replace built-ins",
                    ),
                )
                continue
            added[choice] = provider
        # set_providers replaces; keep the built-ins and add the plugins'.
        selector.set_providers(**added)


def _check_selectors(app: Application, settings: BcceSettings) -> None:
    for key, selector in selector_points(app).items():
        section, name = key.split(".")
        value = getattr(getattr(settings, section), name)
        if value not in selector.providers:
            origin = settings.provenance.origin_of((section, name))
            raise ConfigError(
                f"unknown choice {value!r}",
                key=dotted((section, name)),
                location=origin.location if origin is not None else None,
                hint=f"allowed values: {', '.join(sorted(selector.providers))}",
            )
