from __future__ import annotations

import pytest

from bcce.errors import PluginError
from bcce.plugin.permissions import (
    NETWORK_KINDS,
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


# -- network:ldap ------------------------------------------------------------------------------
def test_network_ldap_is_a_network_kind_scoped_by_host_patterns() -> None:
    held = parse_permissions([{"permission": "network:ldap", "scope": ["*.corp.example.org"]}])
    assert "network:ldap" in NETWORK_KINDS
    assert held.allows("network:ldap", "dc1.CORP.Example.org")
    assert not held.allows("network:ldap", "corp.example.org.evil.com")


def test_network_ldap_scope_must_be_non_empty_host_patterns() -> None:
    with pytest.raises(PluginError, match="a host pattern"):
        parse_permissions([{"permission": "network:ldap", "scope": [""]}])


def test_network_ldap_intersects_to_the_narrower_hosts() -> None:
    declared = parse_permissions(["network:ldap"])
    granted = parse_permissions([{"permission": "network:ldap", "scope": ["ldap.example.org"]}])
    result = effective(declared, granted)
    assert result.get("network:ldap") == Permission("network:ldap", ("ldap.example.org",))


def test_another_network_kind_granted_does_not_give_network_ldap() -> None:
    declared = parse_permissions(["network:ldap"])
    granted = parse_permissions(["network:https", "network:http"])
    assert len(effective(declared, granted)) == 0


def test_network_ldap_is_accepted_by_the_manifest_schema() -> None:
    from bcce.plugin.schema import is_valid_manifest, manifest_validator

    manifest = {
        "name": "acme-ldap",
        "version": "1.0.0",
        "type": "auth",
        "entryPoint": "plugin.py",
        "permissions": ["network:ldap", {"permission": "network:ldap", "scope": ["ldap.acme"]}],
    }
    assert list(manifest_validator().iter_errors(manifest)) == []
    assert is_valid_manifest(manifest)


def test_explain_denial_names_every_kind_that_would_do() -> None:
    message = explain_denial(NETWORK_KINDS, "10.0.0.7")
    assert "'network:http', 'network:https' or 'network:ldap' for '10.0.0.7'" in message
    assert "'network:ldap' for 'h'" in explain_denial(["network:ldap"], "h")
