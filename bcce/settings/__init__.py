"""Layered settings: one validated :class:`BcceSettings` with the provenance of every value."""

from bcce.settings.layers import LayerOptions, LayerStack, PluginDefaults, load_settings
from bcce.settings.model import BcceSettings
from bcce.settings.provenance import LAYER_ORDER, Origin, Provenance

__all__ = [
    "LAYER_ORDER",
    "BcceSettings",
    "LayerOptions",
    "LayerStack",
    "Origin",
    "PluginDefaults",
    "Provenance",
    "load_settings",
]
