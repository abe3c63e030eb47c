"""The first-party ldap auth plugin against a real slapd, through the real machinery.

Each test starts its own slapd (``bcce.testing.ldap.SlapdServer``) with a small directory, and
builds an application as a host does: discovery finds the shipped ``ldap`` plugin, its
permissions are the manifest's intersected with ``plugins.grants.ldap``, ``auth.provider: ldap``
chooses it in the ``auth.authenticator`` Selector, and its code runs in the sandboxed worker at
tier A. The user name and password reach the worker through the environment, as for a user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bcce.containers.application import Application
from bcce.errors import AuthenticationFailed, ExitCode, PluginError
from bcce.events.audit import search
from bcce.plugin.host import PluginAuthProvider
from bcce.policy.sandbox import SandboxTier
from bcce.testing.ldap import LdapGroup, LdapUser, SlapdServer, slapd_missing, ssha
from bcce.testing.plugins import PluginHarness
from bcce.workflow.runner import RunOptions

from .conftest import FIRST_PARTY, manifest_of

LDAP_DIR = FIRST_PARTY / "ldap"
BASE = "dc=example,dc=org"
USER_DN = f"uid={{user}},ou=people,{BASE}"
NETWORK = {"permission": "network:ldap", "scope": ["127.0.0.1"]}
ENV = {"permission": "env:read", "scope": ["BCCE_LDAP_*"]}
GRANTS: list[Any] = [NETWORK, ENV]
INVALID = "invalid user name or password"

HarnessFactory = Callable[..., PluginHarness]


@pytest.fixture
def slapd(bcce_slapd: Callable[..., SlapdServer], tier_a: SandboxTier) -> SlapdServer:
    """slapd with the default directory (alice, bob; developers, operators, deployers)."""
    return bcce_slapd()


@pytest.fixture
def login(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None, str | None], None]:
    """Set (or, with None, unset) BCCE_LDAP_USER and BCCE_LDAP_PASSWORD for the worker."""

    def set_login(user: str | None, password: str | None) -> None:
        for name, value in (("BCCE_LDAP_USER", user), ("BCCE_LDAP_PASSWORD", password)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_login


def dn_config(server: SlapdServer, **extra: Any) -> dict[str, Any]:
    """A configuration binding with the ``user_dn`` template, groups from ``ou=groups``."""
    return {"url": server.url, "user_dn": USER_DN, "group_search_base": server.groups_dn, **extra}


def search_config(server: SlapdServer, **extra: Any) -> dict[str, Any]:
    """A configuration that finds the user with a search under ``ou=people``."""
    return {
        "url": server.url,
        "user_search_base": server.people_dn,
        "user_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
        "group_search_base": server.groups_dn,
        **extra,
    }


def ldap_auth(
    bcce_plugin_harness: HarnessFactory, config: dict[str, Any], grants: list[Any] | None = None
) -> PluginAuthProvider:
    """The application's ``auth.authenticator``: the ldap plugin chosen by ``auth.provider``."""
    harness = bcce_plugin_harness(
        LDAP_DIR,
        config=config,
        grants=GRANTS if grants is None else grants,
        # No audit subscriber: it would authenticate too, adding binds to the server's log.
        events={"subscribers": []},
    )
    assert harness.app.settings().auth.provider == "ldap"
    provider = harness.auth()
    assert isinstance(provider, PluginAuthProvider)
    return provider


def refusal(provider: PluginAuthProvider) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        provider.authenticate()
    return caught.value


# -- the manifest ------------------------------------------------------------------------------
def test_the_manifest_provides_the_ldap_auth_provider_and_declares_what_it_needs() -> None:
    manifest = manifest_of("ldap")
    assert (manifest.name, manifest.type, manifest.provides) == ("ldap", "auth", ("ldap",))
    declared = {p.kind: p.scope for p in manifest.permissions}
    assert declared == {
        "network:ldap": None,
        "env:read": ("BCCE_LDAP_*",),
        "filesystem:read": None,
    }


def test_the_configuration_schema_takes_ldap_urls_and_variables_named_bcce_ldap() -> None:
    schema = manifest_of("ldap").config_schema
    assert schema is not None
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"url": "ldaps://ldap.example.org:6360", "user_dn": USER_DN})
    assert not validator.is_valid({"url": "http://ldap.example.org"})
    assert not validator.is_valid({"url": "ldap://user:pw@ldap.example.org"})
    assert not validator.is_valid({"user_dn": "ou=people,dc=example,dc=org"})  # no {user}
    assert not validator.is_valid({"password_env": "HOME"})


# -- authentication ----------------------------------------------------------------------------
def test_the_right_password_gives_the_user_and_the_mapped_groups(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    mapping = {"Operators": "ops", "developers": ["dev", "builders"]}
    provider = ldap_auth(bcce_plugin_harness, dn_config(slapd, group_mapping=mapping))

    found = provider.authenticate()

    assert (found.user, found.groups, found.provider) == (
        "alice",
        ("builders", "dev", "ops"),
        "ldap",
    )
    assert found.attributes["dn"] == f"uid=alice,ou=people,{BASE}"
    assert slapd.binds() == [f"uid=alice,ou=people,{BASE}"]


def test_groups_without_a_mapping_keep_their_ldap_names(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    provider = ldap_auth(bcce_plugin_harness, dn_config(slapd))

    assert provider.authenticate().groups == ("developers", "operators")


def test_unmapped_groups_are_dropped_when_keep_unmapped_groups_is_off(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    config = dn_config(slapd, group_mapping={"operators": "ops"}, keep_unmapped_groups=False)

    assert ldap_auth(bcce_plugin_harness, config).authenticate().groups == ("ops",)


def test_a_user_found_by_a_service_account_search_gets_member_uid_groups(
    bcce_plugin_harness: HarnessFactory,
    slapd: SlapdServer,
    login: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    login("bob", "bob-password")
    monkeypatch.setenv("BCCE_LDAP_BIND_PASSWORD", slapd.admin_password)
    config = search_config(
        slapd,
        bind_dn=slapd.admin_dn,
        group_filter="(&(objectClass=posixGroup)(memberUid={user}))",
    )

    found = ldap_auth(bcce_plugin_harness, config).authenticate()

    assert (found.user, found.groups) == ("bob", ("deployers",))
    assert slapd.binds() == [slapd.admin_dn, f"uid=bob,ou=people,{BASE}"]


def test_the_identity_names_the_user_as_the_directory_spells_it(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("ALICE", "alice-password")  # uid matching ignores case; the identity uses the entry's

    found = ldap_auth(bcce_plugin_harness, search_config(slapd)).authenticate()

    assert found.user == "alice"


def test_the_plugin_runs_sandboxed_at_tier_a(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    harness = bcce_plugin_harness(LDAP_DIR, config=dn_config(slapd), grants=GRANTS)

    harness.auth().authenticate()

    [started] = [e.payload for e in harness.events if e.type == "plugin.started"]
    assert started["name"] == "ldap"
    assert started["isolation"]["tier"] == "A"
    assert started["isolation"]["permissions"] == [NETWORK, ENV]


def test_without_the_user_variable_the_configured_user_is_used(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login(None, "bob-password")

    found = ldap_auth(bcce_plugin_harness, dn_config(slapd, user="bob")).authenticate()

    assert found.user == "bob"


def test_without_a_user_name_configured_the_os_user_is_used(
    bcce_plugin_harness: HarnessFactory,
    bcce_slapd: Callable[..., SlapdServer],
    tier_a: SandboxTier,
    login: Any,
) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name  # the worker's environment has no USER
    login(None, "my-password")
    server = bcce_slapd(users=[LdapUser(me, "my-password")], groups=())

    found = ldap_auth(bcce_plugin_harness, dn_config(server)).authenticate()

    assert (found.user, found.groups) == (me, ())


def test_the_health_check_reports_ldap3_without_contacting_the_server(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer
) -> None:
    harness = bcce_plugin_harness(LDAP_DIR, config=dn_config(slapd), grants=GRANTS)

    report = harness.health()

    assert report["ok"] is True
    assert report["configured"] is True and report["ldap3"]
    assert slapd.connections() == 0


# -- refusals ----------------------------------------------------------------------------------
def test_a_wrong_password_is_refused_with_exit_code_6(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "not-alices-password")

    error = refusal(ldap_auth(bcce_plugin_harness, dn_config(slapd)))

    assert f"LDAP authentication of 'alice' failed: {INVALID}" in error.message
    assert error.exit_code == ExitCode.NOT_AUTHORISED == 6
    assert "not-alices-password" not in error.render()


@pytest.mark.parametrize("configure", [dn_config, search_config], ids=["user_dn", "search"])
def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(
    bcce_plugin_harness: HarnessFactory,
    slapd: SlapdServer,
    login: Any,
    configure: Callable[..., dict[str, Any]],
) -> None:
    # The worker reads the environment when it starts: one application per login.
    login("mallory", "guess")
    unknown = refusal(ldap_auth(bcce_plugin_harness, configure(slapd))).message
    login("alice", "guess")
    wrong = refusal(ldap_auth(bcce_plugin_harness, configure(slapd))).message

    assert f"'mallory' failed: {INVALID}" in unknown
    assert unknown.replace("mallory", "alice") == wrong


def test_an_empty_password_is_refused_before_the_server_is_contacted(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "")

    error = refusal(ldap_auth(bcce_plugin_harness, dn_config(slapd)))

    assert "no password for LDAP user 'alice': set the BCCE_LDAP_PASSWORD" in error.message
    assert "unauthenticated bind" in error.message
    assert slapd.connections() == 0


def test_a_missing_password_variable_is_refused_too(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", None)

    error = refusal(ldap_auth(bcce_plugin_harness, dn_config(slapd)))

    assert "set the BCCE_LDAP_PASSWORD environment variable" in error.message
    assert slapd.connections() == 0


def test_filter_metacharacters_in_the_user_name_cannot_match_another_user(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    # Unescaped, (uid=al*) would find alice, and her password would log "al*" in as her.
    login("al*", "alice-password")

    error = refusal(ldap_auth(bcce_plugin_harness, search_config(slapd)))

    assert INVALID in error.message
    assert slapd.binds() == [""]  # the anonymous search only: nobody was found to bind as
    assert "(uid=al\\2a)" in slapd.log().lower()  # searched for the literal name


def test_dn_metacharacters_in_the_user_name_cannot_reach_another_entry(
    bcce_plugin_harness: HarnessFactory,
    bcce_slapd: Callable[..., SlapdServer],
    tier_a: SandboxTier,
    login: Any,
) -> None:
    service = LdapUser("svc", "svc-password", parent="ou=apps,ou=people")
    users = (LdapUser("alice", "alice-password"), service)
    groups = (LdapGroup("robots", ("svc",)),)
    # Unescaped, uid={user},ou=people with "svc,ou=apps" is svc's DN one level down.
    login("svc,ou=apps", "svc-password")
    server = bcce_slapd(users=users, groups=groups)

    error = refusal(ldap_auth(bcce_plugin_harness, dn_config(server)))

    assert INVALID in error.message
    # slapd logs the escaped "," and "=" in hex: one value, not svc's DN.
    assert server.binds() == [f"uid=svc\\2Cou\\3Dapps,ou=people,{BASE}"]


def test_a_user_name_with_control_characters_is_refused_before_the_server_is_contacted(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice\n", "alice-password")

    error = refusal(ldap_auth(bcce_plugin_harness, dn_config(slapd)))

    assert "holds control characters" in error.message
    assert slapd.connections() == 0


def test_a_server_that_is_down_is_a_clear_error(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    provider = ldap_auth(bcce_plugin_harness, dn_config(slapd))
    url = slapd.url
    slapd.stop_process()

    error = refusal(provider)

    assert f"cannot reach the LDAP server {url}: connection refused" in error.message


def test_without_the_network_ldap_grant_the_connection_is_denied_naming_it(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    provider = ldap_auth(bcce_plugin_harness, dn_config(slapd), grants=[ENV])

    error = refusal(provider)

    assert "permission denied" in error.message
    assert "needs 'network:ldap' for '127.0.0.1'" in error.message
    assert 'plugins.grants.ldap, e.g. {"permission": "network:ldap"' in error.message
    assert slapd.connections() == 0


def test_a_network_ldap_grant_for_another_host_denies_the_connection(
    bcce_plugin_harness: HarnessFactory, slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    elsewhere = {"permission": "network:ldap", "scope": ["ldap.example.org"]}
    provider = ldap_auth(bcce_plugin_harness, dn_config(slapd), grants=[elsewhere, ENV])

    error = refusal(provider)

    assert "needs 'network:ldap' for '127.0.0.1'" in error.message
    assert slapd.connections() == 0


def test_a_password_in_clear_text_to_another_host_is_refused(
    bcce_plugin_harness: HarnessFactory, login: Any
) -> None:
    login("alice", "alice-password")
    config = {"url": "ldap://ldap.example.org", "user_dn": USER_DN}
    grants = [{"permission": "network:ldap", "scope": ["ldap.example.org"]}, ENV]

    error = refusal(ldap_auth(bcce_plugin_harness, config, grants))

    assert "refusing to send a password in clear text to ldap://ldap.example.org" in error.message


def test_a_configuration_without_a_url_names_the_setting(
    bcce_plugin_harness: HarnessFactory, login: Any
) -> None:
    login("alice", "alice-password")

    error = refusal(ldap_auth(bcce_plugin_harness, {"user_dn": USER_DN}))

    assert "set plugins.config.ldap.url" in error.message


# -- TLS ---------------------------------------------------------------------------------------
@pytest.fixture
def tls_slapd(bcce_slapd: Callable[..., SlapdServer], tier_a: SandboxTier) -> SlapdServer:
    """slapd with a certificate from its own CA: ldaps:// and StartTLS."""
    return bcce_slapd(tls=True)


def ca_grant(server: SlapdServer) -> dict[str, Any]:
    return {"permission": "filesystem:read", "scope": [str(server.ca_file)]}


def test_ldaps_with_the_servers_ca_authenticates(
    bcce_plugin_harness: HarnessFactory, tls_slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    config = dn_config(tls_slapd, url=tls_slapd.ldaps_url, ca_file=str(tls_slapd.ca_file))

    found = ldap_auth(bcce_plugin_harness, config, [*GRANTS, ca_grant(tls_slapd)]).authenticate()

    assert found.user == "alice"
    assert "TLS established" in tls_slapd.log()


def test_start_tls_with_the_servers_ca_authenticates_over_tls(
    bcce_plugin_harness: HarnessFactory, tls_slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    config = dn_config(tls_slapd, start_tls=True, ca_file=str(tls_slapd.ca_file))

    found = ldap_auth(bcce_plugin_harness, config, [*GRANTS, ca_grant(tls_slapd)]).authenticate()

    assert found.groups == ("developers", "operators")
    log = tls_slapd.log()
    assert "STARTTLS" in log and "TLS established" in log


def test_a_certificate_from_an_untrusted_ca_fails_tls_naming_ca_file(
    bcce_plugin_harness: HarnessFactory, tls_slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    config = dn_config(tls_slapd, url=tls_slapd.ldaps_url)

    error = refusal(ldap_auth(bcce_plugin_harness, config))

    assert f"TLS with the LDAP server {tls_slapd.ldaps_url} failed" in error.message
    assert "certificate" in error.message and "ca_file" in error.message
    assert tls_slapd.binds() == []


def test_a_ca_file_outside_the_grants_is_named_with_the_grant_it_needs(
    bcce_plugin_harness: HarnessFactory, tls_slapd: SlapdServer, login: Any
) -> None:
    login("alice", "alice-password")
    config = dn_config(tls_slapd, url=tls_slapd.ldaps_url, ca_file=str(tls_slapd.ca_file))

    error = refusal(ldap_auth(bcce_plugin_harness, config))  # no filesystem:read grant

    assert f"cannot read ca_file {tls_slapd.ca_file}" in error.message
    assert '"permission": "filesystem:read"' in error.message


# -- the audit trail ---------------------------------------------------------------------------
def test_the_ldap_identity_is_the_actor_of_a_runs_audit_records(
    bcce_make_app: Callable[..., Application], slapd: SlapdServer, login: Any, tmp_path: Path
) -> None:
    login("alice", "alice-password")
    trail = tmp_path / "audit.jsonl"
    app = bcce_make_app(
        auth={"provider": "ldap"},
        plugins={
            "config": {"ldap": dn_config(slapd, group_mapping={"operators": "ops"})},
            "grants": {"ldap": GRANTS},
        },
        events={"subscribers": ["audit"], "audit": {"file": str(trail)}},
    )
    workflow = tmp_path / "wf.yaml"
    steps = [{"id": "hello", "type": "cmd", "command": "echo hello"}]
    workflow.write_text(json.dumps({"version": 1, "workflow": "audited", "steps": steps}))
    (tmp_path / "ws").mkdir()

    result = app.workflow.runner().run(workflow, RunOptions(run_id="r-ldap", workspace=tmp_path))

    assert result.ok, result.state.steps
    records = search(trail, run_id="r-ldap")
    assert {r["type"] for r in records} >= {"workflow.started", "step.completed"}
    actors = {json.dumps(r["actor"], sort_keys=True) for r in records}
    assert [json.loads(actor) for actor in actors] == [
        {
            "user": "alice",
            "groups": ["developers", "ops"],
            "provider": "ldap",
            "via": "auth provider",
        }
    ]


# -- ldap3 missing -----------------------------------------------------------------------------
def test_without_ldap3_the_plugin_fails_to_load_with_the_install_hint(
    bcce_plugin_harness: HarnessFactory, tmp_path: Path, tier_a: SandboxTier
) -> None:
    # A copy under another name (the name ldap is reserved for the shipped plugin) whose
    # directory, first on the worker's import path, hides ldap3.
    plugin_dir = tmp_path / "ldap-copy"
    shutil.copytree(LDAP_DIR, plugin_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (plugin_dir / "ldap3.py").write_text("raise ImportError(\"No module named 'ldap3'\")\n")
    manifest = json.loads((plugin_dir / "bcce.plugin.json").read_text())
    manifest.update(name="ldap-copy", provides={"authProvider": "ldap-copy"})
    (plugin_dir / "bcce.plugin.json").write_text(json.dumps(manifest))
    harness = bcce_plugin_harness(plugin_dir, grants=[ENV], events={"subscribers": []})

    with pytest.raises(PluginError) as caught:
        harness.plugin  # noqa: B018 - loading is what is tested

    assert "LdapUnavailable" in caught.value.message
    assert "pip install 'bcce[ldap]'" in caught.value.message


# -- the test server ---------------------------------------------------------------------------
def test_slapd_server_checks_ssha_hashes_it_wrote_and_stops(tmp_path: Path) -> None:
    missing = slapd_missing()
    if missing is not None:
        pytest.skip(missing)
    server = SlapdServer()
    with server:
        directory = server.directory
        ldif = (directory / "directory.ldif").read_text()
        assert "alice-password" not in ldif and "userPassword: {SSHA}" in ldif
        assert server.running
    assert not server.running
    assert not directory.exists()


def test_ssha_is_salted_sha1_with_the_salt_appended() -> None:
    assert ssha("secret", salt=b"12345678") == "{SSHA}tCNGqyJLk/uvKpCa4vga5GB2gWoxMjM0NTY3OA=="
