"""``bcce plugin``: list, inspect, validate, scaffold, enable, disable, reload, health-check,
sign and verify plugins.

Read commands (``list``, ``info``, ``health``) ask the application's plugin manager, so they see
what a workflow run would see. ``validate``, ``sign`` and ``verify`` work on a plugin directory;
``enable`` and ``disable`` edit ``plugins.disabled`` in a YAML configuration file, keeping its
comments and order. No command imports plugin code into this process: a plugin that is started
(``reload``, ``health``) runs in its sandboxed worker.

``enable``, ``disable`` and ``reload`` change what runs: with authorisation enabled they need
``auth.authorization.plugins`` (exit 6 otherwise). No command here trusts a plugin
(``plugins.in_process``, ``plugins.trusted_keys``): that is a configuration edit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bcce.cli.context import get_app
from bcce.cli.output import echo_json
from bcce.errors import BcceError, ConfigError, ExitCode, PluginError

if TYPE_CHECKING:
    from bcce.core.strict_yaml import YamlDocument
    from bcce.plugin.discovery import DiscoveryProblem, DiscoveryReport, ShadowedPlugin
    from bcce.plugin.manager import PluginManager, PluginStatus
    from bcce.plugin.manifest import Manifest
    from bcce.settings.layers import LayerOptions
    from bcce.settings.model import BcceSettings, PluginsSettings

#: bcce.plugin.manifest.PluginType, spelled out: importing the manifest module costs ~60 ms.
PLUGIN_TYPES = ("step", "integration", "storage", "auth")
DEFAULT_KEY_NAME = "bcce-plugin"
LOADED_STATES = ("registered", "running")


@click.group()
def plugin() -> None:
    """List, inspect, validate, sign and manage plugins."""


# -- list and info ---------------------------------------------------------------------------
@plugin.command(
    name="list", short_help="List plugins, their state, problems and shadowed duplicates."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(as_json: bool) -> None:
    """Every plugin found, its state and source; then discovery problems and shadowed plugins.

    Problems are reported, not fatal: the exit status is 0.
    """
    manager = get_app().plugins.manager()
    statuses = manager.statuses()
    report = manager.report
    problems = [_problem(p) for p in report.problems]
    shadowed = [_shadowed(s) for s in report.shadowed]
    configuration = [error.to_dict() for error in manager.problems]
    if as_json:
        echo_json(
            {
                "plugins": [s.to_dict() for s in statuses],
                "problems": problems,
                "shadowed": shadowed,
                "configuration": configuration,
            }
        )
        return
    if statuses:
        _table(
            ["NAME", "VERSION", "TYPE", "STATE", "SOURCE", "PROVIDES"],
            [
                [s.name, s.version, s.type, s.state, s.source, ", ".join(s.provides)]
                for s in statuses
            ],
        )
    else:
        click.echo("no plugins found (put them in ./plugins or list directories in plugins.paths)")
    failed = [s for s in statuses if s.error]
    if failed:
        click.echo(f"\nfailed ({len(failed)}):")
        for status in failed:
            click.echo(f"  {status.name}: {_indent(status.error or '', 4)}")
    if problems:
        click.echo(f"\nproblems ({len(problems)}):")
        for problem in problems:
            where = (
                f"{problem['file']}: {problem['field']}" if problem["field"] else problem["file"]
            )
            click.echo(f"  {problem['kind']}: {where}: {problem['message']}")
            click.echo(f"    from {problem['source']}")
            if problem["hint"]:
                click.echo(f"    hint: {problem['hint']}")
    if manager.problems:
        click.echo(f"\nconfiguration ({len(manager.problems)}):")
        for error in manager.problems:
            click.echo(f"  {_indent(error.render(), 4)}")
    if shadowed:
        click.echo(f"\nshadowed ({len(shadowed)}):")
        for entry in shadowed:
            click.echo(
                f"  {entry['name']} {entry['version']} from {entry['source']}\n"
                f"    lost to {entry['winner']['version']} from {entry['winner']['source']}"
            )


@plugin.command(short_help="Show a plugin: manifest, permissions, isolation, signature.")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(name: str, as_json: bool) -> None:
    """One plugin: manifest, permissions, isolation tier, signature, configuration and state.

    An unknown NAME exits 4 and names the plugins that were found.
    """
    app = get_app()
    manager = app.plugins.manager()
    settings = app.settings().plugins
    status, manifest = _status_and_manifest(manager, name)
    loaded = status.state in LOADED_STATES
    permissions = status.permissions if loaded else _would_get(manifest, settings)
    data: dict[str, Any] = {
        **status.to_dict(),
        "author": manifest.author,
        "entry_point": manifest.entry_point,
        "directory": str(manifest.root),
        "bcce_version": str(manifest.bcce_version) or None,
        "api_version": manifest.api_version,
        "step_schemas": {t: _parameters(s) for t, s in manifest.step_schemas.items()},
        "permissions": permissions,
        "isolation": status.isolation if loaded else _isolation_preview(manifest, settings),
        "signature": _signature(manifest, status, settings),
        "config": app.core.redactor().redact_data(dict(settings.config.get(name, {}))),
        "shadows": [
            {"version": s.manifest.version, "source": str(s.manifest.source)}
            for s in manager.report.shadowed
            if s.manifest.name == name
        ],
    }
    if as_json:
        echo_json(data)
        return
    click.echo(f"{data['name']} {data['version']} ({data['type']} plugin)")
    rows: list[tuple[str, str]] = [
        ("description", data["description"] or "-"),
        ("author", data["author"] or "-"),
        ("state", data["state"] + (f", generation {data['generation']}" if loaded else "")),
        ("source", data["source"]),
        ("directory", data["directory"]),
        ("entry point", data["entry_point"]),
        ("requires", f"bcce {data['bcce_version'] or '(any)'}, plugin API {data['api_version']}"),
        ("provides", ", ".join(data["provides"])),
        ("declared", _permissions_text(data["declared"])),
        ("permissions", _effective_text(permissions, name)),
        ("isolation", _isolation_text(data["isolation"])),
        ("signature", _signature_text(data["signature"])),
        ("config", _json_text(data["config"]) if data["config"] else "(none)"),
    ]
    if data["step_schemas"]:
        lines = [f"{t}: {_parameters_text(p)}" for t, p in data["step_schemas"].items()]
        rows.append(("parameters", "\n".join(lines)))
    for shadow in data["shadows"]:
        rows.append(("shadows", f"{shadow['version']} from {shadow['source']}"))
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        click.echo(f"  {(label + ':').ljust(width)}{_indent(value, width + 2)}")
    if data["error"]:
        click.echo(f"  {'error:'.ljust(width)}{_indent(data['error'], width + 2)}")


# -- validate and new ------------------------------------------------------------------------
@plugin.command(short_help="Check a plugin directory before shipping it.")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def validate(directory: Path, as_json: bool) -> None:
    """Check a plugin directory before shipping it: exit 4 with the file and field at fault.

    Checks the manifest (schema, versions, paths), that this bcce supports its bcceVersion and
    apiVersion, that the entry point's module is in DIRECTORY, and, when DIRECTORY has a
    bcce.plugin.sig, that it verifies against plugins.trusted_keys. Nothing is imported.
    """
    try:
        manifest, signature = _validate(directory)
    except BcceError as error:
        if not as_json:
            _print_changes(error)
            raise
        echo_json({"valid": False, "directory": str(directory), "error": _error_dict(error)})
        sys.exit(int(error.exit_code))
    data = {
        "valid": True,
        "directory": str(directory),
        "name": manifest.name,
        "version": manifest.version,
        "type": manifest.type,
        "provides": list(manifest.provides),
        "entry_point": manifest.entry_point,
        "signature": signature,
    }
    if as_json:
        echo_json(data)
        return
    mark = click.style("ok", fg="green", bold=True)
    click.echo(
        f"{mark}: {manifest.name} {manifest.version} ({manifest.type} plugin, "
        f"provides {', '.join(manifest.provides)})"
    )
    click.echo(f"  entry point: {manifest.entry_point}")
    click.echo(f"  signature:   {_signature_text(signature)}")


@plugin.command(short_help="Create a plugin from a template.")
@click.argument("name")
@click.option(
    "--type",
    "plugin_type",
    type=click.Choice(PLUGIN_TYPES),
    required=True,
    help="What the plugin provides.",
)
@click.option(
    "--dir",
    "parent",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("plugins"),
    show_default=True,
    help="The directory to create the plugin in.",
)
def new(name: str, plugin_type: str, parent: Path) -> None:
    """Create a plugin from a template: manifest, code and a test to start from."""
    from bcce.plugin.scaffold import scaffold_plugin

    created = scaffold_plugin(name, plugin_type, parent)
    click.echo(f"created {plugin_type} plugin {name} in {created}")
    steps = [
        ("run its tests", f"pytest {created}"),
        ("check it", f"bcce plugin validate {created}"),
    ]
    if parent.resolve() != Path("plugins").resolve():
        steps.append(("let bcce find it", f"add {parent} to plugins.paths"))
    steps.append(("see it loaded", f"bcce plugin info {name}"))
    click.echo("next steps:")
    for label, action in steps:
        click.echo(f"  {(label + ':').ljust(18)}{action}")


# -- enable and disable ----------------------------------------------------------------------
def _target_options(command: Any) -> Any:
    command = click.option(
        "--user", is_flag=True, help="Edit the user configuration file instead of ./bcce.yaml."
    )(command)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Edit this YAML file instead of ./bcce.yaml.",
    )(command)


@plugin.command(short_help="Remove a plugin from plugins.disabled in a config file.")
@click.argument("name")
@_target_options
def enable(name: str, config_file: Path | None, user: bool) -> None:
    """Remove NAME from plugins.disabled in ./bcce.yaml (or --user, or --config FILE).

    Warns when another configuration layer (an environment variable, a file that takes
    precedence) still disables it.
    """
    _authorise(name, "enable")
    _edit_disabled(name, disable=False, target=_target(config_file, user))


@plugin.command(short_help="Add a plugin to plugins.disabled in a config file.")
@click.argument("name")
@_target_options
def disable(name: str, config_file: Path | None, user: bool) -> None:
    """Add NAME to plugins.disabled in ./bcce.yaml (or --user, or --config FILE).

    The file is created if missing; its comments and order are kept. Warns when no plugin has
    NAME, and when another configuration layer takes precedence over the file.
    """
    _authorise(name, "disable")
    _edit_disabled(name, disable=True, target=_target(config_file, user))


# -- reload and health -----------------------------------------------------------------------
@plugin.command(short_help="Reload a plugin from its files and check its health.")
@click.argument("name")
def reload(name: str) -> None:
    """Load NAME again from its files, start it and check its health (in this process).

    Useful to check that a changed plugin loads. Long-running hosts do this by themselves: with
    plugins.watch on they reload a plugin whose files change, swapping the new version in only
    once it is healthy. A failure exits 4 (3 for invalid plugin configuration) with the reason.
    """
    _authorise(name, "reload")
    manager = get_app().plugins.manager()
    try:
        before: str | None = manager.status(name).version
    except BcceError:
        before = None  # reload() raises the precise reason, or loads it for the first time
    fresh = manager.reload(name)
    checked = fresh.health()
    old = f"{before} -> " if before is not None else ""
    click.echo(f"reloaded {name}: {old}{fresh.version} (generation {fresh.generation})")
    click.echo(f"  isolation: {_isolation_text(fresh.runtime.isolation())}")
    click.echo(f"  health:    {_health_text(checked)}")


@plugin.command(short_help="Run health checks; exit 4 if a plugin is unhealthy.")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def health(name: str | None, as_json: bool) -> None:
    """Start plugins (or NAME) and run their health checks; exit 4 if any is unhealthy."""
    manager = get_app().plugins.manager()
    try:
        reports = manager.health(name)
    except BcceError as error:
        # A plugin that was found but failed to load is unhealthy; an unknown name is an error.
        if name is None or manager.report.get(name) is None:
            raise
        reports = {name: {"ok": False, "error": error.message}}
    rows = [{"name": key, **reports[key]} for key in sorted(reports)]
    healthy = all(row.get("ok") for row in rows)
    if as_json:
        echo_json({"ok": healthy, "plugins": rows})
    elif not rows:
        click.echo("no plugins")
    else:
        _table(
            ["NAME", "OK", "MS", "ERROR"],
            [
                [
                    row["name"],
                    "yes" if row.get("ok") else "no",
                    str(row.get("ms", "-")),
                    str(row.get("error") or ""),
                ]
                for row in rows
            ],
        )
    if not healthy:
        if not as_json:
            unhealthy = sum(1 for row in rows if not row.get("ok"))
            click.echo(f"{unhealthy} of {len(rows)} plugin(s) unhealthy", err=True)
        sys.exit(int(ExitCode.PLUGIN))


# -- signing ---------------------------------------------------------------------------------
@plugin.command(short_help="Create an Ed25519 key pair for signing plugins.")
@click.option(
    "--out",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write the key pair (default: the keys/ folder beside the user config file).",
)
@click.option(
    "--name", default=DEFAULT_KEY_NAME, show_default=True, help="The key files' base name."
)
def keygen(directory: Path | None, name: str) -> None:
    """Create an Ed25519 key pair for signing plugins (NAME.key, NAME.pub); never overwrites."""
    from bcce.plugin.signing import key_id, write_keypair
    from bcce.settings.layers import user_config_file

    folder = directory if directory is not None else user_config_file(os.environ).parent / "keys"
    private_path, public_path = write_keypair(folder, name)
    public = public_path.read_bytes()
    line = _openssh_line(public)
    click.echo(f"private key: {private_path}  (keep it secret; sign with it)")
    click.echo(f"public key:  {public_path}")
    click.echo(f"key id:      {key_id(public)}")
    click.echo("trust plugins signed with it by adding the public key to plugins.trusted_keys:")
    click.echo(f'  plugins:\n    trusted_keys:\n      - "{line}"')


@plugin.command(short_help="Sign a plugin directory (writes bcce.plugin.sig).")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="The private key file (from `bcce plugin keygen`).",
)
def sign(directory: Path, key_file: Path) -> None:
    """Sign every file of a plugin directory: writes DIRECTORY/bcce.plugin.sig."""
    from bcce.plugin.manifest import check_schemas, load_manifest
    from bcce.plugin.signing import sign_plugin, verify_plugin

    manifest = load_manifest(directory)  # signing a broken plugin helps nobody
    check_schemas(manifest)
    private = _read_key(key_file)
    written = sign_plugin(directory, private)
    verified = verify_plugin(directory, [_public_of(private)])
    click.echo(
        f"signed {manifest.name} {manifest.version} with key {verified.key_id}: "
        f"{len(verified.files)} files listed in {written}"
    )


@plugin.command(short_help="Verify a plugin's signature, listing every changed file.")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A public key file to trust besides plugins.trusted_keys (repeatable).",
)
def verify(directory: Path, key_files: tuple[Path, ...]) -> None:
    """Check a plugin's signature against plugins.trusted_keys and the given keys.

    On a mismatch every added, removed, renamed or changed file is listed; exit 4.
    """
    from bcce.plugin.signing import verify_plugin

    trusted: list[str | bytes] = [
        *get_app().settings().plugins.trusted_keys,
        *(_read_key(f) for f in key_files),
    ]
    try:
        verified = verify_plugin(directory, trusted)
    except BcceError as error:
        _print_changes(error)
        raise
    click.echo(
        f"verified: {directory} is signed by trusted key {verified.key_id} "
        f"({len(verified.files)} files, none changed)"
    )


# -- helpers: list and info ------------------------------------------------------------------
def _problem(problem: DiscoveryProblem) -> dict[str, Any]:
    return {
        "kind": problem.kind,
        "plugin": problem.plugin,
        "file": problem.file,
        "field": problem.field,
        "message": problem.message,
        "hint": problem.hint,
        "source": str(problem.source),
    }


def _shadowed(entry: ShadowedPlugin) -> dict[str, Any]:
    return {
        "name": entry.manifest.name,
        "version": entry.manifest.version,
        "source": str(entry.manifest.source),
        "winner": {"version": entry.winner.version, "source": str(entry.winner.source)},
    }


def _status_and_manifest(manager: PluginManager, name: str) -> tuple[PluginStatus, Manifest]:
    """The status and manifest of ``name``, disabled ones included; else the manager's error."""
    report: DiscoveryReport = manager.report
    disabled = next((m for m in report.disabled if m.name == name), None)
    if disabled is not None:
        status = next(s for s in manager.statuses() if s.name == name)
        return status, disabled
    try:
        status = manager.status(name)  # raises, naming the plugins found, for an unknown name
    except PluginError:
        # A manifest that could not be read has no name yet: match its directory instead.
        unreadable = next(
            (
                p
                for p in report.problems
                if p.kind == "invalid" and p.plugin is None and p.source.directory.name == name
            ),
            None,
        )
        if unreadable is None:
            raise
        raise PluginError(
            f"plugin {name!r} cannot be used: {unreadable.message}",
            location=unreadable.file,
            key=unreadable.field,
            hint=unreadable.hint,
        ) from None
    return status, manager.manifest(name)


def _would_get(manifest: Manifest, settings: PluginsSettings) -> list[str | dict[str, object]]:
    """The effective permissions (declared ∩ granted) of a plugin that is not loaded."""
    from bcce.plugin.permissions import PermissionSet, effective, parse_permissions

    grants = settings.grants.get(manifest.name, [])
    try:
        granted = parse_permissions(grants, key=f"plugins.grants.{manifest.name}")
    except PluginError:
        return []  # the plugin's error (its state) names the bad grant
    return effective(PermissionSet(manifest.permissions), granted).to_list()


def _isolation_preview(manifest: Manifest, settings: PluginsSettings) -> dict[str, object]:
    """The isolation tier a plugin that is not loaded would run at, chosen as the worker would."""
    from bcce.plugin.permissions import PermissionSet
    from bcce.plugin.worker import PluginWorker

    first_party = manifest.source is not None and manifest.source.kind == "first-party"
    if manifest.name in settings.in_process and first_party:
        return {"tier": "in-process", "mechanism": "none", "reason": "plugins.in_process"}
    # Constructing a worker only chooses its tier; nothing starts until start().
    worker = PluginWorker(manifest.root or Path(), "plugin:Plugin", PermissionSet(), strict=False)
    preview = worker.isolation()
    preview.pop("permissions", None)
    if preview["tier"] == "C" and settings.strict:
        preview["refused"] = "plugins.strict refuses tier C"
    return preview


def _signature(
    manifest: Manifest, status: PluginStatus, settings: PluginsSettings
) -> dict[str, Any]:
    """``{"state": "verified" | "unsigned" | "invalid", "key_id", "error"}``."""
    from bcce.plugin.signing import SIGNATURE_FILE, verify_plugin

    if status.state in LOADED_STATES:
        if status.signature is None:
            return {"state": "unsigned", "key_id": None, "error": None}
        return {"state": "verified", "key_id": status.signature, "error": None}
    root = manifest.root
    if root is None or not (root / SIGNATURE_FILE).exists():
        return {"state": "unsigned", "key_id": None, "error": None}
    try:
        verified = verify_plugin(root, settings.trusted_keys)
    except PluginError as error:
        return {"state": "invalid", "key_id": None, "error": error.message}
    return {"state": "verified", "key_id": verified.key_id, "error": None}


def _parameters(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A step schema's top-level parameters: name, type, whether required, description."""
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    out = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        kind = spec.get("type")
        out.append(
            {
                "name": name,
                "type": "|".join(kind) if isinstance(kind, list) else kind,
                "required": name in required,
                "description": spec.get("description"),
            }
        )
    return out


# -- helpers: validate -----------------------------------------------------------------------
def _validate(directory: Path) -> tuple[Manifest, dict[str, Any]]:
    from bcce.plugin.discovery import incompatibility
    from bcce.plugin.manifest import check_schemas, load_manifest
    from bcce.plugin.signing import SIGNATURE_FILE, verify_plugin

    manifest = load_manifest(directory)
    check_schemas(manifest)
    problem = incompatibility(manifest)
    if problem is not None:
        raise PluginError(
            problem.message, location=problem.file, key=problem.field, hint=problem.hint
        )
    _check_entry_module(manifest, directory)
    if not (directory / SIGNATURE_FILE).exists():
        return manifest, {"state": "unsigned", "key_id": None, "error": None}
    verified = verify_plugin(directory, get_app().settings().plugins.trusted_keys)
    return manifest, {"state": "verified", "key_id": verified.key_id, "error": None}


def _check_entry_module(manifest: Manifest, directory: Path) -> None:
    """The entry point's module must be a file in the plugin (a ``.py`` path was checked)."""
    if manifest.entry_kind == "path":
        return  # load_manifest checked that the file exists inside the plugin
    module = manifest.entry_point.partition(":")[0]
    base = directory.joinpath(*module.split("."))
    candidates = [base.with_name(base.name + ".py"), base / "__init__.py"]
    if not any(path.is_file() for path in candidates):
        shown = candidates[0].relative_to(directory)
        raise PluginError(
            f"the entry point's module {module!r} is not in the plugin directory",
            location=str(manifest.path),
            key="entryPoint",
            hint=f"create {shown} (or {candidates[1].relative_to(directory)}) in {directory}",
        )


def _error_dict(error: BcceError) -> dict[str, Any]:
    data = error.to_dict()
    changes = getattr(error, "changes", ())
    if changes:
        data["changes"] = [change.describe() for change in changes]
    return data


def _print_changes(error: BcceError) -> None:
    """Every file that differs from a signature (the error message shows only the first few)."""
    changes = getattr(error, "changes", ())
    if changes:
        click.echo(f"files changed since the plugin was signed ({len(changes)}):", err=True)
        for change in changes:
            click.echo(f"  {change.describe()}", err=True)


# -- helpers: authorisation ------------------------------------------------------------------
def _authorise(name: str, operation: str) -> None:
    """May the user running bcce manage plugins (``plugin.manage``)? Exit 6 if not."""
    app = get_app()
    authoriser = app.auth.authoriser(bus=app.events.bus())
    authoriser.check(authoriser.authenticate(), "plugin.manage", name, operation=operation)


# -- helpers: enable and disable -------------------------------------------------------------
def _target(config_file: Path | None, user: bool) -> Path:
    from bcce.settings.layers import user_config_file

    if config_file is not None and user:
        raise click.UsageError("--config and --user exclude each other")
    if user:
        return user_config_file(os.environ)
    return config_file if config_file is not None else Path("bcce.yaml")


def _layer_options() -> LayerOptions:
    """The layers a fresh ``bcce`` with the same global options would read."""
    from bcce.settings.layers import LayerOptions

    root = click.get_current_context().find_root().params
    return LayerOptions(
        config_files=tuple(Path(f) for f in root.get("config_files") or ()),
        env_name=root.get("env_name"),
    )


def _edit_disabled(name: str, *, disable: bool, target: Path) -> None:
    """Add ``name`` to (or remove it from) ``plugins.disabled`` in ``target``, then check that
    a fresh ``bcce`` would see the change."""
    from bcce.core.durable import atomic_write_bytes
    from bcce.plugin.discovery import discover
    from bcce.settings.layers import load_settings

    options = _layer_options()
    # An invalid configuration is reported (exit 3) before anything is changed.
    before = after = load_settings(options)
    original = _read_config(target)
    document, names = _load_disabled(target, original)
    if (name in names) == disable:
        click.echo(f"{name} is {'already' if disable else 'not'} disabled in {target}")
    else:
        if disable:
            names.append(name)
            known = _known_names(discover(before.plugins))
            if name not in known:
                found = ", ".join(sorted(known)) or "none"
                _warn(f"no plugin named {name!r} was found (plugins found: {found})")
        else:
            while name in names:
                names.remove(name)
        # Write through a symbolic link (a config file kept in a dotfiles repository).
        real = target.resolve()
        real.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(real, _dump(document, original))
        try:
            after = load_settings(options)
        except ConfigError:
            _restore(real, original)
            raise
        click.echo(f"{'disabled' if disable else 'enabled'} {name} in {target}")
        _warn_replaced(before, after, name, target)
    _warn_overridden(after, options, name, disable=disable, target=target)


def _read_config(target: Path) -> bytes | None:
    if not target.exists():
        return None
    try:
        return target.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration file: {exc.strerror or exc}",
            location=str(target),
            hint="check the path and its permissions",
        ) from exc


def _load_disabled(target: Path, original: bytes | None) -> tuple[Any, list[Any]]:
    """``target`` as a round-trip document and its ``plugins.disabled`` list (created if
    missing): edit the list in place, then :func:`_dump` the document."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from bcce.core.strict_yaml import load_yaml

    strict: YamlDocument | None = None
    document: Any = None
    if original is not None:
        # The strict loader first: size, depth, aliases and duplicate keys, with file:line:col.
        strict = load_yaml(original, source=str(target))
        document = _round_trip().load(original)
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ConfigError(
            "the top level of a configuration file must be a mapping of sections",
            location=_mark(strict, (), target),
        )
    plugins = document.get("plugins")
    if plugins is None:
        plugins = document["plugins"] = CommentedMap()
    elif not isinstance(plugins, CommentedMap):
        raise ConfigError(
            "plugins must be a mapping",
            key="plugins",
            location=_mark(strict, ("plugins",), target),
        )
    disabled = plugins.get("disabled")
    if disabled is None:
        disabled = plugins["disabled"] = CommentedSeq()
    elif not isinstance(disabled, CommentedSeq):
        raise ConfigError(
            "plugins.disabled must be a list of plugin names",
            key="plugins.disabled",
            location=_mark(strict, ("plugins", "disabled"), target),
        )
    return document, disabled


def _dump(document: Any, original: bytes | None) -> bytes:
    """The document as YAML, block lists indented as the original file indents them."""
    import io

    from ruamel.yaml.util import load_yaml_guess_indent

    sequence, offset = 4, 2  # "key:\n  - item" for a new file
    header = b""
    if original is not None:
        loaded, guessed, block = load_yaml_guess_indent(original.decode("utf-8"))
        if guessed is not None and block is not None:
            sequence, offset = guessed, block
        if loaded is None:  # only comments: nothing holds them, so keep them as they are
            header = original.rstrip(b"\n") + b"\n" if original.strip() else b""
    yaml = _round_trip()
    yaml.indent(mapping=2, sequence=sequence, offset=offset)
    out = io.BytesIO()
    yaml.dump(document, out)
    return header + out.getvalue()


def _round_trip() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the user's long lines
    return yaml


def _mark(strict: YamlDocument | None, path: tuple[str, ...], target: Path) -> str:
    mark = strict.mark_of(path) if strict is not None else None
    return str(mark) if mark is not None else str(target)


def _restore(target: Path, original: bytes | None) -> None:
    from bcce.core.durable import atomic_write_bytes

    if original is None:
        target.unlink(missing_ok=True)
    else:
        atomic_write_bytes(target, original)


def _known_names(report: DiscoveryReport) -> set[str]:
    """Every plugin name discovery saw: chosen, disabled, shadowed or unusable."""
    names = {m.name for m in (*report.plugins, *report.disabled)}
    names |= {s.manifest.name for s in report.shadowed}
    names |= {p.plugin for p in report.problems if p.plugin}
    return names


def _warn_replaced(before: BcceSettings, after: BcceSettings, name: str, target: Path) -> None:
    """Lists replace each other across layers: say which other names the edit changed."""
    was = set(before.plugins.disabled) - {name}
    now = set(after.plugins.disabled) - {name}
    if was == now:
        return
    changes = []
    if was - now:
        changes.append(f"no longer disabled: {', '.join(sorted(was - now))}")
    if now - was:
        changes.append(f"now disabled: {', '.join(sorted(now - was))}")
    origin = before.provenance.origin_of(("plugins", "disabled"))
    _warn(
        f"lists are not merged across configuration layers: plugins.disabled in {target} "
        f"replaces the one from {origin}, so {'; '.join(changes)}"
    )


def _warn_overridden(
    settings: BcceSettings, options: LayerOptions, name: str, *, disable: bool, target: Path
) -> None:
    """Warn when the effective ``plugins.disabled`` does not say what ``target`` now says."""
    from bcce.settings.layers import LayerStack

    read = {path.resolve() for path, _ in LayerStack(options).config_files()}
    if target.resolve() not in read:
        _warn(
            f"bcce does not read {target} unless told to: pass it with `bcce --config {target} ...`"
        )
        return
    if (name in settings.plugins.disabled) == disable:
        return
    origin = settings.provenance.origin_of(("plugins", "disabled"))
    _warn(
        f"{name} is {'not' if disable else 'still'} disabled: plugins.disabled is set by "
        f"{origin or 'a higher layer'}, which takes precedence over {target}"
    )


def _warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow", bold=True) + message, err=True)


# -- helpers: keys ---------------------------------------------------------------------------
def _read_key(path: Path) -> bytes:
    from bcce.plugin.signing import CODE_BAD_KEY

    try:
        return path.read_bytes()
    except OSError as exc:
        raise PluginError(
            f"cannot read the key file: {exc.strerror or exc}",
            location=str(path),
            hint="check the path and its permissions",
            code=CODE_BAD_KEY,
        ) from exc


def _public_of(private_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(private_pem, password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _openssh_line(public_pem: bytes) -> str:
    """The public key as one OpenSSH line, easy to paste into plugins.trusted_keys."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(public_pem)
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


# -- helpers: text ---------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    for row in (headers, *rows):
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _indent(text: str, columns: int) -> str:
    return text.replace("\n", "\n" + " " * columns)


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _permissions_text(permissions: Sequence[str | Mapping[str, Any]] | None) -> str:
    parts = []
    for permission in permissions or []:
        if isinstance(permission, str):
            parts.append(permission)
        else:
            scope = ", ".join(str(s) for s in permission.get("scope", []))
            parts.append(f"{permission['permission']} [{scope}]")
    return ", ".join(parts) or "none"


def _effective_text(permissions: Sequence[str | Mapping[str, Any]] | None, name: str) -> str:
    return f"{_permissions_text(permissions)}  (declared ∩ plugins.grants.{name})"


def _isolation_text(isolation: Mapping[str, Any] | None) -> str:
    if not isolation:
        return "-"
    text = f"tier {isolation['tier']} ({isolation['mechanism']})"
    if isolation.get("refused"):
        text += f"; would be refused: {isolation['refused']}"
    return text


def _signature_text(signature: Mapping[str, Any]) -> str:
    if signature["state"] == "verified":
        return f"signed by key {signature['key_id']} (verified)"
    if signature["state"] == "invalid":
        return f"invalid: {signature['error']}"
    return "unsigned"


def _parameters_text(parameters: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for parameter in parameters:
        notes = [n for n in (parameter["type"], "required" if parameter["required"] else "") if n]
        parts.append(f"{parameter['name']} ({', '.join(notes)})" if notes else parameter["name"])
    return ", ".join(parts) or "(no parameters)"


def _health_text(report: Mapping[str, Any]) -> str:
    took = f" ({report['ms']} ms)" if "ms" in report else ""
    if report.get("ok"):
        return f"ok{took}"
    return f"unhealthy: {report.get('error') or 'no reason given'}{took}"
