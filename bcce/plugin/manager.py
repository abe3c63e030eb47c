"""The plugin manager: what plugins contribute to the application.

Discovery, sandboxed loading and the lifecycle arrive with the plugin system; until then the
manager knows no plugins, so it contributes no Selector choices and no settings defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bcce.settings.layers import PluginDefaults
from bcce.settings.model import PluginsSettings


class PluginManager:
    def __init__(self, settings: PluginsSettings) -> None:
        self.settings = settings
        self.loaded: dict[str, Any] = {}

    def selector_choices(self) -> Mapping[str, Mapping[str, Any]]:
        """Extra Selector choices by settings key: ``{"storage.backend": {"gcs": provider}}``."""
        return {}

    def settings_defaults(self) -> Sequence[PluginDefaults]:
        return ()
