"""Named step policies shipped in ``config/policies/`` (or given as a file)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bcce.core.resources import data_dir
from bcce.core.strict_yaml import load_yaml_file
from bcce.errors import ConfigError
from bcce.settings.model import StepPolicySettings


def preset_names() -> list[str]:
    directory = data_dir("config") / "policies"
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def load_policy(name_or_path: str) -> StepPolicySettings:
    """A preset by name (``test-fixer``) or a YAML file of step policy keys."""
    path = Path(name_or_path)
    if not path.is_file():
        preset = data_dir("config") / "policies" / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"no policy file or preset {name_or_path!r}",
                hint=f"presets: {', '.join(preset_names()) or 'none'}; or give a YAML file",
            )
        path = preset
    document = load_yaml_file(path)
    data = dict(document.data or {}) if isinstance(document.data, dict) else None
    if data is None:
        raise ConfigError("a policy file must be a mapping of policy keys", location=str(path))
    data.pop("description", None)
    try:
        return StepPolicySettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        mark = document.mark_of(tuple(first["loc"]))
        raise ConfigError(
            first["msg"],
            key=key,
            location=str(mark) if mark else str(path),
            hint="policy keys: timeout_seconds, max_files, max_edits, allowed_paths, cmd_allowlist",
        ) from None


def expand_policy(declared: str | Mapping[str, Any]) -> dict[str, Any]:
    """A step's ``policy`` as plain keys: a preset's name, or keys refining an optional preset.

    The result keeps ``preset`` (for display); unknown presets are a :class:`ConfigError`.
    """
    if isinstance(declared, str):
        declared = {"preset": declared}
    name = declared.get("preset")
    if name is None:
        return dict(declared)
    if name not in preset_names():
        raise ConfigError(
            f"unknown policy preset {name!r}",
            hint=f"presets: {', '.join(preset_names()) or 'none'} (config/policies/)",
        )
    base = load_policy(str(name)).model_dump(exclude_unset=True)
    return {**base, **declared}
