"""Finding plugins: every source searched, every manifest read, one plugin chosen per name.

Sources, in order: ``./plugins``, ``BCCE_PLUGIN_PATH`` (``os.pathsep``-separated), the configured
``plugins.paths``, the first-party plugins shipped with bcce, and installed distributions that
expose the ``bcce.plugins`` entry-point group (the entry point names a package holding
``bcce.plugin.json``; it is located with import finders, never imported). A search directory is
either a plugin itself or a directory of plugin directories.

Nothing here raises for a bad plugin: a bad manifest, an incompatible plugin, a shadowed
duplicate and a disabled plugin all end up in the :class:`DiscoveryReport`, each with its source.
Among the compatible manifests of one name the highest version wins; at equal versions the
earlier source wins. A first-party plugin's name is reserved: it always wins.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from packaging.version import Version

from bcce._version import __version__
from bcce.core.resources import data_dir
from bcce.errors import PluginError
from bcce.plugin.manifest import DEFAULT_API_VERSION, Manifest, PluginSource, load_manifest
from bcce.plugin.schema import MANIFEST_FILE
from bcce.settings.layers import PluginDefaults
from bcce.settings.model import PluginsSettings

ENTRY_POINT_GROUP = "bcce.plugins"
PLUGIN_PATH_ENV = "BCCE_PLUGIN_PATH"

ProblemKind = Literal["invalid", "incompatible", "missing"]


@dataclass(frozen=True, slots=True)
class DiscoveryProblem:
    """A plugin that could not be used: which file, which field, what is wrong, where from."""

    kind: ProblemKind
    file: str
    message: str
    source: PluginSource
    field: str | None = None
    hint: str | None = None
    plugin: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message} ({self.source.kind})"


@dataclass(frozen=True, slots=True)
class ShadowedPlugin:
    """A manifest that lost to another of the same name."""

    manifest: Manifest
    winner: Manifest


@dataclass(slots=True)
class DiscoveryReport:
    """What discovery found: the chosen plugins, and everything left out with the reason."""

    plugins: list[Manifest] = field(default_factory=list)
    problems: list[DiscoveryProblem] = field(default_factory=list)
    shadowed: list[ShadowedPlugin] = field(default_factory=list)
    disabled: list[Manifest] = field(default_factory=list)

    def get(self, name: str) -> Manifest | None:
        """The chosen plugin called ``name``, if any."""
        return next((m for m in self.plugins if m.name == name), None)


def discover(
    settings: PluginsSettings,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    bcce_version: str = __version__,
    api_version: str = DEFAULT_API_VERSION,
    first_party: Path | None = None,
) -> DiscoveryReport:
    """Search every source and choose one compatible, enabled manifest per plugin name.

    ``first_party`` replaces the shipped plugins directory (tests, benchmarks).
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    host = Version(bcce_version)
    report = DiscoveryReport()
    candidates: list[Manifest] = []
    seen: set[Path] = set()
    for source, manifest_file in _candidates(settings, cwd, environ, first_party, report):
        key = manifest_file.resolve()
        if key in seen:  # the same directory reached through two sources
            continue
        seen.add(key)
        try:
            manifest = load_manifest(manifest_file, source=source)
        except PluginError as exc:
            report.problems.append(
                DiscoveryProblem(
                    "invalid",
                    exc.location or str(manifest_file),
                    exc.message,
                    source,
                    field=exc.key,
                    hint=exc.hint,
                )
            )
            continue
        problem = incompatibility(manifest, host, api_version)
        if problem is not None:
            report.problems.append(problem)
            continue
        candidates.append(manifest)
    disabled = set(settings.disabled)
    for name in sorted({m.name for m in candidates}):
        same = [m for m in candidates if m.name == name]
        # A first-party plugin's name is reserved: whatever its version, another source cannot
        # take its place (nor the grants the administrator gave it). Otherwise the highest
        # version wins; sorted() is stable, so at equal versions the earlier source does.
        winner, *losers = sorted(same, key=lambda m: (_is_first_party(m), m.release), reverse=True)
        report.shadowed.extend(ShadowedPlugin(loser, winner) for loser in losers)
        (report.disabled if name in disabled else report.plugins).append(winner)
    return report


def plugin_defaults(report: DiscoveryReport) -> list[PluginDefaults]:
    """The settings defaults of the chosen plugins, for the plugin-defaults settings layer."""
    return [PluginDefaults(m.name, m.defaults) for m in report.plugins if m.defaults]


def search_directories(
    settings: PluginsSettings,
    cwd: Path,
    environ: Mapping[str, str],
    first_party: Path | None = None,
) -> list[tuple[PluginSource, bool]]:
    """The directory sources in search order, each with whether it must exist."""
    out: list[tuple[PluginSource, bool]] = [(PluginSource("cwd", cwd / "plugins"), False)]
    for entry in environ.get(PLUGIN_PATH_ENV, "").split(os.pathsep):
        if entry.strip():
            out.append((PluginSource("env", _absolute(Path(entry.strip()), cwd)), True))
    out.extend((PluginSource("settings", _absolute(p, cwd)), True) for p in settings.paths)
    shipped = first_party if first_party is not None else data_dir("plugins")
    out.append((PluginSource("first-party", shipped), False))
    return out


# -- sources -------------------------------------------------------------------------------
def _candidates(
    settings: PluginsSettings,
    cwd: Path,
    environ: Mapping[str, str],
    first_party: Path | None,
    report: DiscoveryReport,
) -> Iterator[tuple[PluginSource, Path]]:
    for source, required in search_directories(settings, cwd, environ, first_party):
        if not source.directory.is_dir():
            if required:
                report.problems.append(
                    DiscoveryProblem(
                        "missing",
                        str(source.directory),
                        "plugin search directory does not exist",
                        source,
                        hint=f"fix or remove it in {_setting_name(source)}",
                    )
                )
            continue
        yield from _scan(source)
    yield from _entry_point_candidates(report)


def _scan(source: PluginSource) -> Iterator[tuple[PluginSource, Path]]:
    own = source.directory / MANIFEST_FILE
    if own.is_file():
        yield source, own
        return
    try:
        children = sorted(source.directory.iterdir())
    except OSError:
        return
    for child in children:
        manifest = child / MANIFEST_FILE
        if manifest.is_file():
            yield PluginSource(source.kind, child, source.distribution), manifest


def _entry_point_candidates(report: DiscoveryReport) -> Iterator[tuple[PluginSource, Path]]:
    points = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: (ep.name, ep.value),
    )
    for point in points:
        dist = point.dist
        label = f"{dist.name} {dist.version}" if dist is not None else point.name
        try:
            directory = _package_directory(point.value)
        except LookupError as exc:
            report.problems.append(
                DiscoveryProblem(
                    "invalid",
                    f"entry point {point.name} = {point.value}",
                    str(exc),
                    PluginSource("entry-point", Path(point.value), label),
                    hint="the bcce.plugins entry point names a package holding bcce.plugin.json",
                )
            )
            continue
        yield PluginSource("entry-point", directory, label), directory / MANIFEST_FILE


def _package_directory(dotted: str) -> Path:
    """The directory holding ``bcce.plugin.json`` of the package ``dotted``, without importing.

    ``importlib.util.find_spec("a.b")`` would import ``a``, running plugin code in the host, so
    each segment is located with the path finder over the parent's search locations.
    """
    if ":" in dotted or not all(part.isidentifier() for part in dotted.split(".")):
        raise LookupError(f"{dotted!r} is not a package name")
    locations: Sequence[str] | None = None
    for part in dotted.split("."):
        spec = (
            importlib.util.find_spec(part)
            if locations is None
            else importlib.machinery.PathFinder.find_spec(part, list(locations))
        )
        if spec is None or not spec.submodule_search_locations:
            raise LookupError(f"package {dotted!r} is not installed")
        locations = list(spec.submodule_search_locations)
    assert locations is not None
    for location in locations:
        if (Path(location) / MANIFEST_FILE).is_file():
            return Path(location)
    raise LookupError(f"package {dotted!r} has no {MANIFEST_FILE}")


def _is_first_party(manifest: Manifest) -> bool:
    return manifest.source is not None and manifest.source.kind == "first-party"


# -- checks --------------------------------------------------------------------------------
def incompatibility(
    manifest: Manifest, host: Version | None = None, api_version: str = DEFAULT_API_VERSION
) -> DiscoveryProblem | None:
    """Why ``manifest`` cannot run on this bcce (API or bcce version), or None."""
    host = Version(__version__) if host is None else host
    assert manifest.source is not None
    file = str(manifest.path)
    wanted_api = api_version.removeprefix("v")
    if manifest.api_version != wanted_api:
        return DiscoveryProblem(
            "incompatible",
            file,
            f"plugin API version {manifest.api_version} is not supported"
            f" (bcce supports {wanted_api})",
            manifest.source,
            field="apiVersion",
            plugin=manifest.name,
        )
    if not manifest.bcce_version.contains(host, prereleases=True):
        return DiscoveryProblem(
            "incompatible",
            file,
            f"requires bcce {manifest.bcce_version}, this is bcce {host}",
            manifest.source,
            field="bcceVersion",
            hint="install a version of the plugin made for this bcce, or upgrade bcce",
            plugin=manifest.name,
        )
    return None


def _absolute(path: Path, cwd: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else cwd / path


def _setting_name(source: PluginSource) -> str:
    return PLUGIN_PATH_ENV if source.kind == "env" else "plugins.paths"


__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGIN_PATH_ENV",
    "DiscoveryProblem",
    "DiscoveryReport",
    "ShadowedPlugin",
    "discover",
    "incompatibility",
    "plugin_defaults",
    "search_directories",
]
