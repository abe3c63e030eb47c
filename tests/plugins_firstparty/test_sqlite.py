from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from .conftest import Plugin, PluginFactory, manifest_of


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    directory = tmp_path / "ws"
    (directory / "migrations").mkdir(parents=True)
    return directory


@pytest.fixture
def db(workspace: Path) -> Path:
    """A database with five users."""
    path = workspace / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, avatar BLOB)")
        connection.executemany(
            "INSERT INTO users (name, avatar) VALUES (?, ?)",
            [("ada", b"\x00\x01"), ("bob", None), ("cy", None), ("dee", None), ("eve", None)],
        )
    connection.close()
    return path


def grant(kind: str, workspace: Path) -> list[dict[str, Any]]:
    return [{"permission": kind, "scope": [f"{workspace}/**"]}]


@pytest.fixture
def sqlite_rw(plugin: PluginFactory, workspace: Path) -> Plugin:
    return plugin("sqlite", grant("filesystem:write", workspace))


def count_users(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("SELECT count(*) FROM users").fetchone()[0])
    finally:
        connection.close()


def write_migration(workspace: Path, name: str, sql: str) -> Path:
    path = workspace / "migrations" / name
    path.write_text(sql)
    return path


def recorded(path: Path) -> list[tuple[int, str, str]]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT version, name, sha256 FROM _bcce_migrations ORDER BY 1")
        return [(int(v), str(n), str(s)) for v, n, s in rows]
    finally:
        connection.close()


def test_manifest_loads_and_its_schemas_check_params() -> None:
    manifest = manifest_of("sqlite")
    assert manifest.type == "step"
    assert manifest.provides == ("db:query", "db:migrate", "db:backup")
    assert {p.kind for p in manifest.permissions} == {"filesystem:read", "filesystem:write"}
    examples = {
        "db:query": (
            {"database": "app.db", "sql": "SELECT * FROM t WHERE id = ?", "params": [1]},
            {"database": "app.db", "sql": "SELECT 1", "max_rows": -1},
        ),
        "db:migrate": ({"database": "app.db", "migrations": "db/migrations"}, {"database": "a"}),
        "db:backup": (
            {"database": "app.db", "destination": "backups/app.db"},
            {"database": "app.db", "destination": "b.db", "overwrite": True},
        ),
    }
    for step_type, (valid, bad) in examples.items():
        validator = Draft202012Validator(manifest.step_schemas[step_type])
        assert validator.is_valid(valid), step_type
        assert not validator.is_valid(bad), step_type


def test_query_returns_limited_rows_and_all_in_the_artifact(
    sqlite_rw: Plugin, db: Path, workspace: Path
) -> None:
    params = {"database": "app.db", "sql": "SELECT id, name, avatar FROM users ORDER BY id"}
    result = sqlite_rw.execute("db:query", {**params, "max_rows": 2}, workspace=workspace)
    assert result["status"] == "succeeded", result.get("error")
    outputs = result["outputs"]
    assert outputs["columns"] == ["id", "name", "avatar"]
    assert outputs["rows"] == [
        {"id": 1, "name": "ada", "avatar": {"base64": "AAE="}},
        {"id": 2, "name": "bob", "avatar": None},
    ]
    assert outputs["rowcount"] == 5
    assert outputs["truncated"] is True
    saved = json.loads(result["artifacts"]["rows.json"])
    assert [row["name"] for row in saved] == ["ada", "bob", "cy", "dee", "eve"]


def test_query_binds_named_params(sqlite_rw: Plugin, db: Path, workspace: Path) -> None:
    params = {
        "database": str(db),  # an absolute path works as well as a relative one
        "sql": "SELECT name FROM users WHERE id > :low ORDER BY id",
        "params": {"low": 3},
    }
    result = sqlite_rw.execute("db:query", params, workspace=workspace)
    assert result["outputs"]["rows"] == [{"name": "dee"}, {"name": "eve"}]


def test_write_query_commits(sqlite_rw: Plugin, db: Path, workspace: Path) -> None:
    params = {"database": "app.db", "sql": "DELETE FROM users WHERE id <= ?", "params": [2]}
    result = sqlite_rw.execute("db:query", params, workspace=workspace)
    assert result["status"] == "succeeded", result.get("error")
    assert result["outputs"]["rowcount"] == 2
    assert count_users(db) == 3


def test_failing_statement_changes_nothing(sqlite_rw: Plugin, db: Path, workspace: Path) -> None:
    params = {"database": "app.db", "sql": "INSERT INTO users (id, name) VALUES (1, 'dup')"}
    result = sqlite_rw.execute("db:query", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "UNIQUE constraint failed" in result["error"]
    assert count_users(db) == 5


def test_readonly_query_refuses_writes(sqlite_rw: Plugin, db: Path, workspace: Path) -> None:
    params = {"database": "app.db", "sql": "DELETE FROM users", "readonly": True}
    result = sqlite_rw.execute("db:query", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "readonly" in result["error"]
    assert count_users(db) == 5


def test_readonly_query_needs_only_a_read_grant(
    plugin: PluginFactory, db: Path, workspace: Path
) -> None:
    reader = plugin("sqlite", grant("filesystem:read", workspace))
    params = {"database": "app.db", "sql": "SELECT count(*) AS n FROM users", "readonly": True}
    result = reader.execute("db:query", params, workspace=workspace)
    assert result["status"] == "succeeded", result.get("error")
    assert result["outputs"]["rows"] == [{"n": 5}]


def test_write_is_denied_without_a_filesystem_write_grant(
    plugin: PluginFactory, db: Path, workspace: Path
) -> None:
    reader = plugin("sqlite", grant("filesystem:read", workspace))
    params = {"database": "app.db", "sql": "DELETE FROM users"}
    result = reader.execute("db:query", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "permission denied" in result["error"]
    assert "'filesystem:write'" in result["error"]
    assert str(db) in result["error"]
    assert count_users(db) == 5


def test_sandbox_refuses_writes_even_when_the_context_claims_a_grant(
    plugin: PluginFactory, db: Path, workspace: Path
) -> None:
    reader = plugin("sqlite", grant("filesystem:read", workspace))
    params = {"database": "app.db", "sql": "DELETE FROM users"}
    result = reader.execute(
        "db:query", params, workspace=workspace, permissions=["filesystem:write"]
    )
    assert result["status"] == "failed"
    assert "read-only" in result["error"]
    assert count_users(db) == 5


def test_database_outside_the_grant_is_refused(
    plugin: PluginFactory, db: Path, workspace: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    scoped = plugin("sqlite", grant("filesystem:write", other))
    params = {"database": str(db), "sql": "SELECT 1", "readonly": True}
    result = scoped.execute("db:query", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "'filesystem:read'" in result["error"]


def test_migrate_applies_files_in_numeric_order_and_records_them(
    sqlite_rw: Plugin, workspace: Path
) -> None:
    first = write_migration(workspace, "1_users.sql", "CREATE TABLE users (id INTEGER);")
    write_migration(workspace, "10_seed.sql", "INSERT INTO users VALUES (2, 'c');\n")
    write_migration(
        workspace,
        "2_more.sql",
        "-- a comment; with a semicolon\nALTER TABLE users ADD COLUMN name TEXT;\n"
        "INSERT INTO users VALUES (1, 'a;b');",
    )
    (workspace / "migrations" / "README.md").write_text("not a migration")
    params = {"database": "app.db", "migrations": "migrations"}
    result = sqlite_rw.execute("db:migrate", params, workspace=workspace)
    assert result["status"] == "succeeded", result.get("error")
    assert result["outputs"] == {"applied": ["1_users", "2_more", "10_seed"], "current": 10}
    rows = recorded(workspace / "app.db")
    assert [(version, name) for version, name, _ in rows] == [
        (1, "1_users"),
        (2, "2_more"),
        (10, "10_seed"),
    ]
    assert rows[0][2] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert count_users(workspace / "app.db") == 2


def test_migrate_applies_only_pending_migrations(sqlite_rw: Plugin, workspace: Path) -> None:
    params = {"database": "app.db", "migrations": "migrations"}
    write_migration(workspace, "001_users.sql", "CREATE TABLE users (id INTEGER);")
    assert sqlite_rw.execute("db:migrate", params, workspace=workspace)["outputs"]["applied"] == [
        "001_users"
    ]
    write_migration(workspace, "002_seed.sql", "INSERT INTO users VALUES (1);")
    result = sqlite_rw.execute("db:migrate", params, workspace=workspace)
    assert result["outputs"] == {"applied": ["002_seed"], "current": 2}
    again = sqlite_rw.execute("db:migrate", params, workspace=workspace)
    assert again["outputs"] == {"applied": [], "current": 2}
    assert count_users(workspace / "app.db") == 1


def test_migrate_detects_a_changed_migration(sqlite_rw: Plugin, workspace: Path) -> None:
    params = {"database": "app.db", "migrations": "migrations"}
    write_migration(workspace, "001_users.sql", "CREATE TABLE users (id INTEGER);")
    sqlite_rw.execute("db:migrate", params, workspace=workspace)
    write_migration(workspace, "001_users.sql", "CREATE TABLE users (id INTEGER, name TEXT);")
    write_migration(workspace, "002_seed.sql", "INSERT INTO users VALUES (1);")
    result = sqlite_rw.execute("db:migrate", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "migration 001_users changed after it was applied" in result["error"]
    assert [name for _, name, _ in recorded(workspace / "app.db")] == ["001_users"]
    assert count_users(workspace / "app.db") == 0


def test_failed_migration_is_rolled_back(sqlite_rw: Plugin, workspace: Path) -> None:
    params = {"database": "app.db", "migrations": "migrations"}
    write_migration(workspace, "001_users.sql", "CREATE TABLE users (id INTEGER);")
    write_migration(
        workspace,
        "002_broken.sql",
        "CREATE TABLE audit (id INTEGER);\nINSERT INTO nowhere VALUES (1);",
    )
    result = sqlite_rw.execute("db:migrate", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "migration 002_broken failed and was rolled back" in result["error"]
    assert "no such table: nowhere" in result["error"]
    assert result["outputs"] == {"applied": ["001_users"], "current": 1}
    connection = sqlite3.connect(workspace / "app.db")
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert "audit" not in tables
    assert [name for _, name, _ in recorded(workspace / "app.db")] == ["001_users"]


def test_migrate_needs_a_write_grant(plugin: PluginFactory, workspace: Path) -> None:
    write_migration(workspace, "001_users.sql", "CREATE TABLE users (id INTEGER);")
    reader = plugin("sqlite", grant("filesystem:read", workspace))
    params = {"database": "app.db", "migrations": "migrations"}
    result = reader.execute("db:migrate", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "'filesystem:write'" in result["error"]
    assert not (workspace / "app.db").exists()


def test_backup_writes_a_complete_copy(sqlite_rw: Plugin, db: Path, workspace: Path) -> None:
    params = {"database": "app.db", "destination": "backups/app-1.db"}
    result = sqlite_rw.execute("db:backup", params, workspace=workspace)
    assert result["status"] == "succeeded", result.get("error")
    copy = workspace / "backups" / "app-1.db"
    assert result["outputs"] == {"path": str(copy), "bytes": copy.stat().st_size}
    assert count_users(copy) == 5
    assert [p.name for p in copy.parent.iterdir()] == ["app-1.db"]  # no temporary file left


def test_backup_replaces_an_existing_destination(
    sqlite_rw: Plugin, db: Path, workspace: Path
) -> None:
    old = workspace / "app-backup.db"
    old.write_bytes(b"an older, unrelated file")
    params = {"database": "app.db", "destination": "app-backup.db"}
    result = sqlite_rw.execute("db:backup", params, workspace=workspace)
    assert result["status"] == "succeeded", result.get("error")
    assert count_users(old) == 5


def test_backup_needs_write_access_to_the_destination(
    plugin: PluginFactory, db: Path, workspace: Path, tmp_path: Path
) -> None:
    reader = plugin("sqlite", grant("filesystem:read", workspace))
    target = tmp_path / "backups" / "app.db"
    params = {"database": "app.db", "destination": str(target)}
    result = reader.execute("db:backup", params, workspace=workspace)
    assert result["status"] == "failed"
    assert "'filesystem:write'" in result["error"]
    assert not target.exists()


def test_a_dir_glob_grant_covers_the_migrations_directory_itself(
    plugin: PluginFactory, workspace: Path
) -> None:
    write_migration(workspace, "001_users.sql", "CREATE TABLE users (id INTEGER);")
    grants = [
        {"permission": "filesystem:read", "scope": [f"{workspace}/migrations/**"]},
        {"permission": "filesystem:write", "scope": [f"{workspace}/app.db*"]},
    ]
    scoped = plugin("sqlite", grants)
    params = {"database": "app.db", "migrations": "migrations"}
    result = scoped.execute("db:migrate", params, workspace=workspace)
    assert result["status"] == "succeeded", result.get("error")
    assert result["outputs"] == {"applied": ["001_users"], "current": 1}
