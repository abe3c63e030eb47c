"""The ``db:query``, ``db:migrate`` and ``db:backup`` steps on SQLite database files.

The plugin runs in the plugin sandbox, so it uses the standard library and
:mod:`bcce.plugin.api` only. The sandbox mounts only the granted paths; the plugin also checks
its grant (``context["permissions"]``) before it opens a file, so a path outside it fails the
step with the missing permission named instead of SQLite's "unable to open database file".

Writes are atomic: a query runs in one transaction, each migration in its own, and a backup is
written to a temporary file that is renamed over the destination only once it is complete.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bcce.plugin.api import binary, step_result

STEP_TYPES: Final = ("db:query", "db:migrate", "db:backup")
DEFAULT_MAX_ROWS: Final = 1000
#: The rows kept in ``rows.json``, by count and by JSON size (the reply to the host is bounded).
ARTIFACT_MAX_ROWS: Final = 100_000
ARTIFACT_MAX_BYTES: Final = 6 * 1024 * 1024
#: The rows kept in the ``rows`` output, which is stored with the run's state.
OUTPUT_MAX_BYTES: Final = 1024 * 1024
ROWS_ARTIFACT: Final = "rows.json"
MIGRATIONS_TABLE: Final = "_bcce_migrations"

_MIGRATION_FILE: Final = re.compile(r"(\d+)_([A-Za-z0-9][A-Za-z0-9_-]*)\.sql\Z")
_FETCH: Final = 500
_BACKUP_PAGES: Final = 256
_BUSY_SECONDS: Final = 30.0


class StepFailure(Exception):
    """Why the step fails: the message becomes the step's error, with outputs so far."""

    def __init__(self, message: str, outputs: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.outputs = dict(outputs or {})


@dataclass(frozen=True)
class _Context:
    workspace: Path | None
    permissions: list[Any]
    deadline: float | None
    timeout: float | None

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> _Context:
        workspace = context.get("workspace")
        left = context.get("timeout_seconds")
        timeout: float | None = None
        if isinstance(left, int | float) and not isinstance(left, bool) and left > 0:
            # Keep a little of the step's time to report the timeout before the host's own
            # call timeout kills the worker.
            timeout = max(float(left) - min(1.0, float(left) * 0.1), 0.001)
        permissions = context.get("permissions")
        return cls(
            workspace=Path(workspace) if isinstance(workspace, str) and workspace else None,
            permissions=permissions if isinstance(permissions, list) else [],
            deadline=None if timeout is None else time.monotonic() + timeout,
            timeout=timeout,
        )

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass(frozen=True)
class _Migration:
    version: int
    name: str
    path: Path
    sha256: str
    sql: str = field(repr=False)


class SqlitePlugin:
    """The sqlite plugin: provides the ``db:query``, ``db:migrate`` and ``db:backup`` steps."""

    def execute(self, type: str, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """Run one step of a type this plugin provides; see the plugin's README for the keys."""
        handlers: dict[str, Callable[[Mapping[str, Any], _Context], dict[str, Any]]] = {
            "db:query": _query,
            "db:migrate": _migrate,
            "db:backup": _backup,
        }
        handler = handlers.get(type)
        if handler is None:
            raise ValueError(f"unsupported step type {type!r}; this plugin provides {STEP_TYPES}")
        try:
            return handler(params, _Context.of(context))
        except StepFailure as exc:
            return step_result("failed", outputs=exc.outputs, error=str(exc))


# -- db:query ------------------------------------------------------------------------------
def _query(params: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    database = _path(params.get("database"), "database", ctx)
    sql = params.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise StepFailure("sql: an SQL statement is required")
    bind = params.get("params", [])
    if not isinstance(bind, list | Mapping):
        raise StepFailure("params: expected a list (for ? placeholders) or an object (for :name)")
    max_rows = _integer(params.get("max_rows", DEFAULT_MAX_ROWS), "max_rows")
    if max_rows < 0:
        raise StepFailure("max_rows: must be 0 or more")
    readonly = params.get("readonly", False)
    if not isinstance(readonly, bool):
        raise StepFailure("readonly: expected true or false")
    _require(ctx, "filesystem:read" if readonly else "filesystem:write", database, "database")
    if readonly and not database.is_file():
        raise StepFailure(f"database: {database} does not exist (a readonly query creates nothing)")
    connection = _connect(database, ctx, readonly=readonly)
    try:
        if readonly:
            connection.execute("PRAGMA query_only = ON")
        else:
            connection.execute("BEGIN")
        cursor = connection.execute(sql, bind)
        columns = [str(column[0]) for column in cursor.description or ()]
        rows, saved, total = _collect(cursor, columns, max_rows) if columns else ([], [], 0)
        if connection.in_transaction:
            connection.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(connection)
        raise StepFailure(_explain(exc, database, ctx, writing=not readonly)) from None
    finally:
        connection.close()
    outputs = {
        "rows": rows,
        "rowcount": total if columns else cursor.rowcount,
        "columns": columns,
        "truncated": len(rows) < total,
    }
    artifacts = {ROWS_ARTIFACT: json.dumps(saved, ensure_ascii=False, indent=1) + "\n"}
    return step_result("succeeded", outputs=outputs, artifacts=artifacts)


def _collect(
    cursor: sqlite3.Cursor, columns: list[str], max_rows: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The rows for the output, the rows for the artifact (each capped) and the total count."""
    rows: list[dict[str, Any]] = []
    saved: list[dict[str, Any]] = []
    output_bytes = saved_bytes = total = 0
    output_full = max_rows == 0
    saved_full = False
    while batch := cursor.fetchmany(_FETCH):
        total += len(batch)
        if saved_full:
            continue  # counted only: rowcount is the statement's, not the cap's
        for values in batch:
            row = {name: _json_value(value) for name, value in zip(columns, values, strict=True)}
            size = len(json.dumps(row)) + 2
            if saved_bytes + size > ARTIFACT_MAX_BYTES or len(saved) >= ARTIFACT_MAX_ROWS:
                saved_full = output_full = True
                break
            saved.append(row)
            saved_bytes += size
            if not output_full:
                if len(rows) >= max_rows or output_bytes + size > OUTPUT_MAX_BYTES:
                    output_full = True
                else:
                    rows.append(row)
                    output_bytes += size
    return rows, saved, total


def _json_value(value: object) -> Any:
    if isinstance(value, bytes):
        return binary(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no infinity
    return value


# -- db:migrate ----------------------------------------------------------------------------
def _migrate(params: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    database = _path(params.get("database"), "database", ctx)
    directory = _path(params.get("migrations"), "migrations", ctx)
    _require(ctx, "filesystem:write", database, "database")
    _require(ctx, "filesystem:read", directory, "migrations")
    migrations = _migration_files(directory)
    applied: list[str] = []
    connection = _connect(database, ctx, readonly=False)
    try:
        recorded = _recorded(connection, database, ctx)
        _verify(recorded, migrations, directory)
        versions = set(recorded)
        for migration in migrations:
            if migration.version in versions:
                continue
            try:
                _apply(connection, migration, database, ctx)
            except StepFailure as exc:
                exc.outputs = {"applied": applied, "current": max(versions, default=0)}
                raise
            applied.append(migration.name)
            versions.add(migration.version)
    finally:
        connection.close()
    return step_result(
        "succeeded", outputs={"applied": applied, "current": max(versions, default=0)}
    )


def _migration_files(directory: Path) -> list[_Migration]:
    if not directory.is_dir():
        raise StepFailure(f"migrations: {directory} is not a directory")
    found: dict[int, _Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise StepFailure(
                f"migrations: {path.name} is not named NNN_name.sql (e.g. 001_create_users.sql)"
            )
        raw = path.read_bytes()
        try:
            sql = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StepFailure(f"migration {path.stem} is not UTF-8 text") from None
        version = int(match.group(1))
        if version in found:
            raise StepFailure(
                f"migrations {found[version].path.name} and {path.name} share version {version}"
            )
        found[version] = _Migration(version, path.stem, path, hashlib.sha256(raw).hexdigest(), sql)
    return [found[version] for version in sorted(found)]


def _recorded(
    connection: sqlite3.Connection, database: Path, ctx: _Context
) -> dict[int, tuple[str, str]]:
    try:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, "
            "applied_at TEXT NOT NULL)"
        )
        rows = connection.execute(f"SELECT version, name, sha256 FROM {MIGRATIONS_TABLE}")  # noqa: S608 - a constant
        return {int(version): (str(name), str(sha)) for version, name, sha in rows}
    except sqlite3.Error as exc:
        raise StepFailure(_explain(exc, database, ctx, writing=True)) from None


def _verify(
    recorded: Mapping[int, tuple[str, str]], migrations: list[_Migration], directory: Path
) -> None:
    """Every applied migration is still there, unchanged: history is not rewritten."""
    by_version = {migration.version: migration for migration in migrations}
    for version, (name, sha) in sorted(recorded.items()):
        migration = by_version.get(version)
        if migration is None:
            raise StepFailure(
                f"migration {name} (version {version}) was applied but its file is missing "
                f"from {directory}; restore it"
            )
        if migration.sha256 != sha:
            raise StepFailure(
                f"migration {migration.name} changed after it was applied (sha256 {sha[:12]}... "
                f"recorded, {migration.sha256[:12]}... now); restore it and put the change in "
                "a new migration"
            )


def _apply(
    connection: sqlite3.Connection,
    migration: _Migration,
    database: Path,
    ctx: _Context,
) -> None:
    try:
        # One script in one transaction: executescript runs the statements as written, and
        # the transaction it opens stays open until the record of the migration is committed.
        connection.executescript(f"BEGIN IMMEDIATE;\n{migration.sql}")
        if not connection.in_transaction:
            raise StepFailure(
                f"migration {migration.name} ends the transaction itself (COMMIT, END or "
                "ROLLBACK); remove those statements: each migration runs in its own transaction"
            )
        connection.execute(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, sha256, applied_at) "  # noqa: S608 - a constant
            "VALUES (?, ?, ?, ?)",
            (
                migration.version,
                migration.name,
                migration.sha256,
                datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            ),
        )
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(connection)
        reason = _explain(exc, database, ctx, writing=True)
        raise StepFailure(
            f"migration {migration.name} failed and was rolled back: {reason}"
        ) from None


# -- db:backup -----------------------------------------------------------------------------
def _backup(params: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    database = _path(params.get("database"), "database", ctx)
    destination = _path(params.get("destination"), "destination", ctx)
    if destination == database:
        raise StepFailure("destination: a backup cannot overwrite the database it copies")
    _require(ctx, "filesystem:read", database, "database")
    _require(ctx, "filesystem:write", destination, "destination")
    if not database.is_file():
        raise StepFailure(f"database: {database} does not exist")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
        )
        os.close(handle)
    except OSError as exc:
        raise StepFailure(f"destination: cannot write in {destination.parent}: {exc}") from None
    temporary = Path(name)
    try:
        _copy(database, temporary, ctx)
        _fsync(temporary)
        temporary.replace(destination)
        _fsync(destination.parent)
    except sqlite3.Error as exc:
        raise StepFailure(_explain(exc, database, ctx, writing=False)) from None
    except OSError as exc:
        raise StepFailure(f"backup to {destination} failed: {exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return step_result(
        "succeeded", outputs={"path": str(destination), "bytes": destination.stat().st_size}
    )


def _copy(database: Path, target: Path, ctx: _Context) -> None:
    """SQLite's online backup: a consistent copy even while others write to the database."""

    def progress(status: int, remaining: int, total: int) -> None:
        if ctx.expired():
            # Raising here makes sqlite3 abort the backup.
            raise sqlite3.OperationalError("interrupted")

    source = _connect(database, ctx, readonly=True)
    try:
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            source.backup(copy, pages=_BACKUP_PAGES, progress=progress)
        finally:
            copy.close()
    finally:
        source.close()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- shared --------------------------------------------------------------------------------
def _path(value: object, key: str, ctx: _Context) -> Path:
    """A path parameter, absolute; a relative one is in the workspace."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise StepFailure(f"{key}: a file path is required")
    path = Path(value)
    if not path.is_absolute():
        if ctx.workspace is None:
            raise StepFailure(f"{key}: {value!r} is relative and the step has no workspace")
        path = ctx.workspace / path
    return Path(os.path.realpath(path))


def _connect(database: Path, ctx: _Context, *, readonly: bool) -> sqlite3.Connection:
    mode = "ro" if readonly else "rwc"
    busy = _BUSY_SECONDS if ctx.timeout is None else min(_BUSY_SECONDS, ctx.timeout)
    try:
        connection = sqlite3.connect(
            f"{database.as_uri()}?mode={mode}", uri=True, isolation_level=None, timeout=busy
        )
    except sqlite3.Error as exc:
        raise StepFailure(_explain(exc, database, ctx, writing=not readonly)) from None
    if ctx.deadline is not None:
        # SQLite calls this every N virtual-machine steps; non-zero interrupts the statement.
        connection.set_progress_handler(lambda: int(ctx.expired()), 10_000)
    return connection


def _rollback(connection: sqlite3.Connection) -> None:
    # On an error here the connection is closed next, which rolls back as well.
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _explain(exc: sqlite3.Error, database: Path, ctx: _Context, *, writing: bool) -> str:
    message = str(exc).rstrip(".")
    if "interrupted" in message and ctx.expired():
        return f"{database.name}: timed out after {ctx.timeout:g} s (the step's time)"
    if "readonly database" in message and not writing:
        return f"{database}: {message} (the step has readonly: true)"
    if "readonly database" in message:
        return (
            f"{database} is read-only here: {message}; writing needs the filesystem:write "
            "grant for it and its directory"
        )
    if "unable to open database file" in message:
        return (
            f"cannot open {database}: {message} (does its directory exist, and does the "
            "plugin's filesystem grant cover the directory, e.g. 'DIR/**'?)"
        )
    if "one statement at a time" in message:
        return f"{message}: a db:query step runs one statement; use db:migrate for scripts"
    return f"{database.name}: {message}"


def _integer(value: object, key: str) -> int:
    """An integer parameter; a rendered expression arrives as its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise StepFailure(f"{key}: expected an integer, got {value!r}")


# -- permissions ---------------------------------------------------------------------------
def _require(ctx: _Context, kind: str, path: Path, key: str) -> None:
    """Fail unless the grant covers ``path``; reading is allowed by a read or a write grant."""
    kinds = ("filesystem:read", "filesystem:write") if kind == "filesystem:read" else (kind,)
    if any(_allowed(ctx.permissions, each, str(path)) for each in kinds):
        return
    raise StepFailure(
        f"permission denied: {key} {path} needs {kind!r}, which the sqlite plugin was not "
        "granted for that path; grant it in plugins.grants.sqlite, e.g. "
        f'{{"permission": "{kind}", "scope": ["{path.parent}/**"]}}'
    )


def _allowed(permissions: list[Any], kind: str, target: str) -> bool:
    """Whether the grant list (the host's ``PermissionSet.to_list()``) covers ``target``.

    The same rule as the host: a scope is absolute path globs (``**`` any depth, ``*`` and
    ``?`` within a name, dot files included), and a pattern also covers its own root.
    """
    for entry in permissions:
        if entry == kind:
            return True
        if isinstance(entry, Mapping) and entry.get("permission") == kind:
            scope = entry.get("scope")
            if scope is None:
                return True
            patterns = [scope] if isinstance(scope, str) else scope
            for pattern in patterns:
                if not isinstance(pattern, str):
                    continue
                if target == (pattern.rstrip("/") or "/") or _glob(pattern).match(target):
                    return True
    return False


def _glob(pattern: str) -> re.Pattern[str]:
    parts = pattern.split("/")
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**" and last:
            # DIR/** covers DIR itself too, as it does for the host.
            regex = regex[:-1] + "(?:/.*)?" if regex.endswith("/") and index > 1 else regex + ".*"
        elif part == "**":
            regex += "(?:[^/]*/)*"
        else:
            regex += _glob_name(part) + ("" if last else "/")
    return re.compile(regex + r"\Z", re.DOTALL)


def _glob_name(part: str) -> str:
    out = ""
    index = 0
    while index < len(part):
        char = part[index]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and (end := part.find("]", index + 2)) != -1:
            body = part[index + 1 : end]
            negate = body[:1] in ("!", "^")
            body = re.sub(r"([\\\]^])", r"\\\1", body[1:] if negate else body)
            out += f"[^/{body}]" if negate else f"[{body}]"
            index = end
        else:
            out += re.escape(char)
        index += 1
    return out


__all__ = ["STEP_TYPES", "SqlitePlugin"]
