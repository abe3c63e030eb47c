"""The application as Click commands see it: built on first use, or handed in by a test."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from bcce.containers.application import Application


class AppHandle:
    """Holds the application, building it (and switching on logging) when a command first asks."""

    def __init__(
        self, factory: Callable[[], Application] | None = None, app: Application | None = None
    ) -> None:
        self._factory = factory
        self._app = app
        self._started = False

    @property
    def built(self) -> bool:
        return self._app is not None

    def get(self) -> Application:
        if self._app is None:
            assert self._factory is not None
            self._app = self._factory()
        if not self._started:
            self._started = True
            self._app.core.logging.init()  # type: ignore[attr-defined]
            click.get_current_context().call_on_close(self._app.shutdown_resources)
        return self._app


def get_app(ctx: click.Context | None = None) -> Application:
    """The application for the running command."""
    ctx = ctx or click.get_current_context()
    handle = ctx.find_object(AppHandle)
    if handle is None:  # pragma: no cover - the root group always installs one
        raise click.UsageError("bcce commands must run under the bcce root group")
    return handle.get()


def is_debug(ctx: click.Context) -> bool:
    handle = ctx.find_object(AppHandle)
    level = ctx.find_root().params.get("log_level")
    if level is None and handle is not None and handle.built:
        level = handle.get().settings().core.log_level
    return str(level).upper() in ("DEBUG", "TRACE")
