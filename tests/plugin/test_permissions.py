from __future__ import annotations

import pytest

from bcce.errors import PluginError
from bcce.plugin.permissions import (
    Permission,
    PermissionSet,
    effective,
    explain_denial,
    parse_permissions,
)


def test_parse_accepts_plain_kinds() -> None:
    parsed = parse_permissions(["filesystem:read", "env:read"])
    assert list(parsed) == [Permission("filesystem:read"), Permission("env:read")]


def test_parse_accepts_scoped_entries() -> None:
    parsed = parse_permissions([{"permission": "network:https", "scope": ["*.example.com"]}])
    assert parsed.get("network:https") == Permission("network:https", ("*.example.com",))


def test_parse_rejects_unknown_kind_naming_the_entry() -> None:
    with pytest.raises(PluginError) as caught:
        parse_permissions(["env:read", "kernel:load"])
    assert caught.value.key == "permissions[1]"


def test_parse_rejects_relative_filesystem_scope() -> None:
    with pytest.raises(PluginError):
        parse_permissions([{"permission": "filesystem:read", "scope": ["data/**"]}])


def test_parse_rejects_scope_on_process_spawn() -> None:
    with pytest.raises(PluginError):
        parse_permissions([{"permission": "process:spawn", "scope": ["ls"]}])


def test_parse_rejects_unknown_entry_keys() -> None:
    with pytest.raises(PluginError):
        parse_permissions([{"permission": "env:read", "scopes": ["HOME"]}])


def test_parse_rejects_a_non_list() -> None:
    with pytest.raises(PluginError):
        parse_permissions("env:read")


def test_declaration_without_grant_gives_nothing() -> None:
    declared = parse_permissions(["filesystem:read", "network:https"])
    granted = parse_permissions(["network:https"])
    assert list(effective(declared, granted)) == [Permission("network:https")]


def test_grant_without_declaration_gives_nothing() -> None:
    assert len(effective(PermissionSet(), parse_permissions(["env:read"]))) == 0


def test_broader_grant_gives_only_the_declaration() -> None:
    declared = parse_permissions([{"permission": "filesystem:read", "scope": ["/data/in/**"]}])
    granted = parse_permissions([{"permission": "filesystem:read", "scope": ["/data/**"]}])
    result = effective(declared, granted)
    assert result.get("filesystem:read") == Permission("filesystem:read", ("/data/in/**",))


def test_unscoped_grant_gives_the_declared_scope() -> None:
    declared = parse_permissions([{"permission": "env:read", "scope": ["TOKEN"]}])
    result = effective(declared, parse_permissions(["env:read"]))
    assert result.get("env:read") == Permission("env:read", ("TOKEN",))


def test_unscoped_declaration_gets_only_the_granted_scope() -> None:
    granted = parse_permissions([{"permission": "network:https", "scope": ["api.example.com"]}])
    result = effective(parse_permissions(["network:https"]), granted)
    assert result.get("network:https") == Permission("network:https", ("api.example.com",))


def test_disjoint_scopes_give_nothing() -> None:
    declared = parse_permissions([{"permission": "filesystem:write", "scope": ["/etc/**"]}])
    granted = parse_permissions([{"permission": "filesystem:write", "scope": ["/data/**"]}])
    assert "filesystem:write" not in effective(declared, granted)


def test_allows_matches_host_patterns() -> None:
    held = parse_permissions([{"permission": "network:https", "scope": ["*.example.com"]}])
    assert held.allows("network:https", "API.example.com")
    assert not held.allows("network:https", "example.org")


def test_allows_refuses_a_dotdot_escape_from_a_path_scope() -> None:
    held = parse_permissions([{"permission": "filesystem:read", "scope": ["/data/**"]}])
    assert not held.allows("filesystem:read", "/data/../etc/passwd")


def test_allows_only_listed_env_names() -> None:
    held = parse_permissions([{"permission": "env:read", "scope": ["TOKEN"]}])
    assert held.allows("env:read", "TOKEN")
    assert not held.allows("env:read", "AWS_SECRET_ACCESS_KEY")


def test_explain_denial_names_the_permission_and_target() -> None:
    message = explain_denial("filesystem:write", "/etc/passwd")
    assert "'filesystem:write'" in message
    assert "'/etc/passwd'" in message


def test_to_list_round_trips_through_parse() -> None:
    held = parse_permissions(["process:spawn", {"permission": "env:read", "scope": ["A"]}])
    assert parse_permissions(held.to_list()) == held
