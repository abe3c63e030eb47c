"""Authentication against an LDAP directory: a simple bind as the user, groups from a search.

The plugin runs in the plugin sandbox and uses ``ldap3`` (bcce's ``ldap`` extra). The user name
comes from the environment (``user_env``, default ``BCCE_LDAP_USER``), else the configured
``user``, else the operating-system user; the password only from the environment
(``password_env``, default ``BCCE_LDAP_PASSWORD``). :meth:`LdapPlugin.authenticate`:

1. refuses an empty password before anything reaches the server: a simple bind with a DN and
   no password is an *unauthenticated* bind, which LDAP servers answer with success;
2. finds the user's DN: the ``user_dn`` template with the name escaped as a DN value
   (RFC 4514), or a search under ``user_search_base`` with ``user_filter``, the name escaped as
   a filter value (RFC 4515), bound as ``bind_dn`` (password from ``bind_password_env``) or
   anonymously; the search must find exactly one entry;
3. binds as that DN with the password, then, bound as the user, reads the user's name
   attribute and searches ``group_search_base`` with ``group_filter`` (``{dn}`` and
   ``{user}`` escaped) for the group names, mapped by ``group_mapping``.

A wrong password and an unknown user fail with the same message, so the answer does not tell
who exists. Every failure is an :class:`LdapError` whose message names the cause and never the
password; the host turns it into ``AuthenticationFailed`` (exit 6).
"""

from __future__ import annotations

import getpass
import ipaddress
import math
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bcce.plugin.api import identity

INSTALL_HINT: Final = "pip install 'bcce[ldap]'"
DEFAULT_USER_ENV: Final = "BCCE_LDAP_USER"
DEFAULT_PASSWORD_ENV: Final = "BCCE_LDAP_PASSWORD"  # noqa: S105 - a variable's name
DEFAULT_BIND_PASSWORD_ENV: Final = "BCCE_LDAP_BIND_PASSWORD"  # noqa: S105 - a variable's name
DEFAULT_USER_FILTER: Final = "(uid={user})"
DEFAULT_GROUP_FILTER: Final = "(&(objectClass=groupOfNames)(member={dn}))"
DEFAULT_TIMEOUT: Final = 10.0
MAX_USER_LENGTH: Final = 256
MAX_GROUPS: Final = 1000
#: The one answer to a wrong password and to an unknown user alike.
INVALID_CREDENTIALS: Final = "invalid user name or password"
_INVALID_CREDENTIALS_CODE: Final = 49
_DEFAULT_PORTS: Final = {"ldap": 389, "ldaps": 636}
_GRANT_HINT: Final = (
    'grant it in plugins.grants.ldap, e.g. {{"permission": "network:ldap", "scope": ["{host}"]}}'
)


class LdapError(Exception):
    """Authentication could not be done or was refused; the message says why."""


class LdapUnavailable(LdapError):
    """The ``ldap3`` package is not installed where the plugin runs."""


@dataclass(frozen=True)
class _Settings:
    url: str
    scheme: str
    host: str
    port: int
    user_dn: str | None
    user_search_base: str | None
    user_filter: str
    bind_dn: str | None
    bind_password_env: str
    user_name_attribute: str
    group_search_base: str | None
    group_filter: str
    group_name_attribute: str
    group_mapping: dict[str, tuple[str, ...]]
    keep_unmapped_groups: bool
    user: str | None
    user_env: str
    password_env: str
    start_tls: bool
    ca_file: str | None
    allow_insecure: bool
    timeout: float


class LdapPlugin:
    """The ldap plugin: provides the ``ldap`` authentication provider."""

    def __init__(self) -> None:
        self._config: dict[str, Any] = {}

    def configure(self, config: dict[str, Any]) -> None:
        """Check that ``ldap3`` is importable and keep the configuration.

        The configuration is checked when :meth:`authenticate` runs, so a project that does not
        use the plugin is not troubled by its settings.
        """
        _ldap3()
        self._config = dict(config)

    def health(self) -> dict[str, Any]:
        """ldap3's version and whether a server is configured; the server is not contacted."""
        ldap3 = _ldap3()
        return {"ok": True, "ldap3": ldap3.__version__, "configured": bool(self._config.get("url"))}

    def authenticate(self) -> dict[str, Any]:
        """Bind as the user and find their groups: ``{"user", "groups", "attributes"}``."""
        ldap3 = _ldap3()
        settings = _settings(self._config)
        user = _user_name(settings)
        password = os.environ.get(settings.password_env, "")
        if not password:
            # An empty password makes a simple bind unauthenticated: servers accept it.
            raise LdapError(
                f"no password for LDAP user {user!r}: set the {settings.password_env} "
                "environment variable (an empty password is refused: LDAP servers accept a bind "
                "without one as an anonymous, unauthenticated bind)"
            )
        secrets = (password, os.environ.get(settings.bind_password_env, ""))
        try:
            return _authenticate(ldap3, settings, user, password)
        except LdapError as exc:
            raise LdapError(_scrub(str(exc), secrets)) from None
        except Exception as exc:  # noqa: BLE001 - whatever ldap3 raises becomes a clear failure
            raise LdapError(_scrub(_explain(exc, settings), secrets)) from None


# -- configuration -------------------------------------------------------------------------
def _ldap3() -> Any:
    try:
        import ldap3  # type: ignore[import-untyped]
    except ImportError as exc:
        raise LdapUnavailable(
            f"the ldap plugin needs the ldap3 package, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return ldap3


def _settings(config: Mapping[str, Any]) -> _Settings:
    url = config.get("url")
    if not isinstance(url, str) or not url:
        raise LdapError(
            "no LDAP server configured: set plugins.config.ldap.url (ldap://HOST or ldaps://HOST)"
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise LdapError(f"plugins.config.ldap.url must be ldap://HOST or ldaps://HOST, not {url!r}")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise LdapError("plugins.config.ldap.url takes a scheme, a host and a port only")
    user_dn = _text(config, "user_dn")
    search_base = _text(config, "user_search_base")
    if (user_dn is None) == (search_base is None):
        raise LdapError(
            "set one of plugins.config.ldap.user_dn (a DN template such as "
            "uid={user},ou=people,dc=example,dc=org) and plugins.config.ldap.user_search_base "
            "(with user_filter)" + (", not both" if user_dn is not None else "")
        )
    if user_dn is not None and "{user}" not in user_dn:
        raise LdapError("plugins.config.ldap.user_dn must contain {user}")
    user_filter = _text(config, "user_filter") or DEFAULT_USER_FILTER
    if "{user}" not in user_filter:
        raise LdapError("plugins.config.ldap.user_filter must contain {user}")
    timeout = config.get("timeout_seconds", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise LdapError("plugins.config.ldap.timeout_seconds must be a number of seconds above 0")
    mapping: dict[str, tuple[str, ...]] = {}
    for name, target in dict(config.get("group_mapping") or {}).items():
        targets = (target,) if isinstance(target, str) else tuple(str(t) for t in target)
        mapping[str(name).lower()] = targets
    return _Settings(
        url=url.rstrip("/"),
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[parts.scheme],
        user_dn=user_dn,
        user_search_base=search_base,
        user_filter=user_filter,
        bind_dn=_text(config, "bind_dn"),
        bind_password_env=_text(config, "bind_password_env") or DEFAULT_BIND_PASSWORD_ENV,
        user_name_attribute=_text(config, "user_name_attribute") or "uid",
        group_search_base=_text(config, "group_search_base"),
        group_filter=_text(config, "group_filter") or DEFAULT_GROUP_FILTER,
        group_name_attribute=_text(config, "group_name_attribute") or "cn",
        group_mapping=mapping,
        keep_unmapped_groups=config.get("keep_unmapped_groups", True) is not False,
        user=_text(config, "user"),
        user_env=_text(config, "user_env") or DEFAULT_USER_ENV,
        password_env=_text(config, "password_env") or DEFAULT_PASSWORD_ENV,
        start_tls=config.get("start_tls") is True,
        ca_file=_text(config, "ca_file"),
        allow_insecure=config.get("allow_insecure") is True,
        timeout=float(timeout),
    )


def _text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LdapError(f"plugins.config.ldap.{key} must be a string")
    return value


def _user_name(settings: _Settings) -> str:
    user = os.environ.get(settings.user_env) or settings.user or getpass.getuser()
    if len(user) > MAX_USER_LENGTH:
        raise LdapError(f"the LDAP user name is longer than {MAX_USER_LENGTH} characters")
    if not user.strip() or not user.isprintable():
        raise LdapError(f"the LDAP user name {user!r} is empty or holds control characters")
    return user


# -- the exchange --------------------------------------------------------------------------
def _authenticate(ldap3: Any, settings: _Settings, user: str, password: str) -> dict[str, Any]:
    from ldap3.utils.conv import escape_filter_chars  # type: ignore[import-untyped]
    from ldap3.utils.dn import escape_rdn  # type: ignore[import-untyped]

    _refuse_clear_text(settings)
    server = _server(ldap3, settings)
    canonical: str | None = None
    if settings.user_dn is not None:
        dn = settings.user_dn.replace("{user}", escape_rdn(user))
    else:
        dn, canonical = _find_user(ldap3, server, settings, escape_filter_chars(user), user)
    connection = _connect(ldap3, server, settings, dn, password)
    try:
        if not connection.bind():
            _refuse_bind(connection.result, user, settings)
        if canonical is None:
            canonical = _read_name(ldap3, connection, dn, settings) or user
        groups = _groups(ldap3, connection, settings, dn, canonical, escape_filter_chars)
    finally:
        connection.unbind()
    return identity(canonical, _map_groups(groups, settings), {"dn": dn, "server": settings.url})


def _refuse_clear_text(settings: _Settings) -> None:
    if settings.scheme == "ldaps" or settings.start_tls or settings.allow_insecure:
        return
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host.lower() == "localhost"
    if not loopback:
        raise LdapError(
            f"refusing to send a password in clear text to {settings.url}: use ldaps://, or "
            "start_tls: true (or allow_insecure: true, on a network you trust)"
        )


def _server(ldap3: Any, settings: _Settings) -> Any:
    tls = None
    if settings.scheme == "ldaps" or settings.start_tls:
        if settings.ca_file is not None and not Path(settings.ca_file).is_file():
            raise LdapError(
                f"cannot read ca_file {settings.ca_file}: no such file in the plugin's sandbox; "
                "a file outside /etc/ssl needs a filesystem:read grant, e.g. "
                f'{{"permission": "filesystem:read", "scope": ["{settings.ca_file}"]}}'
            )
        try:
            is_ip = bool(ipaddress.ip_address(settings.host))
        except ValueError:
            is_ip = False
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=settings.ca_file,
            sni=None if is_ip else settings.host,
        )
    return ldap3.Server(
        settings.host,
        port=settings.port,
        use_ssl=settings.scheme == "ldaps",
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=settings.timeout,
    )


def _connect(ldap3: Any, server: Any, settings: _Settings, dn: str | None, password: str) -> Any:
    """An open (and, with start_tls, encrypted) connection, not yet bound."""
    connection = ldap3.Connection(
        server,
        user=dn,
        password=password if dn is not None else None,
        authentication=ldap3.SIMPLE if dn is not None else ldap3.ANONYMOUS,
        auto_bind=ldap3.AUTO_BIND_NONE,
        read_only=True,
        # ldap3 packs it into SO_RCVTIMEO as whole seconds: it must be an int.
        receive_timeout=max(1, math.ceil(settings.timeout)),
        raise_exceptions=False,
    )
    connection.open()
    if settings.start_tls and not connection.start_tls():
        raise LdapError(f"StartTLS with {settings.url} failed: {_describe(connection.result)}")
    return connection


def _find_user(
    ldap3: Any, server: Any, settings: _Settings, escaped: str, user: str
) -> tuple[str, str | None]:
    """The DN of the one entry ``user_filter`` finds, and its name attribute."""
    assert settings.user_search_base is not None
    service_password = None
    if settings.bind_dn is not None:
        service_password = os.environ.get(settings.bind_password_env, "")
        if not service_password:
            raise LdapError(
                f"no password for the service account {settings.bind_dn!r}: set the "
                f"{settings.bind_password_env} environment variable"
            )
    connection = _connect(ldap3, server, settings, settings.bind_dn, service_password or "")
    try:
        if not connection.bind():
            raise LdapError(
                f"the service account {settings.bind_dn or '(anonymous)'!r} could not bind to "
                f"{settings.url}: {_describe(connection.result)}"
            )
        search = settings.user_filter.replace("{user}", escaped)
        connection.search(
            settings.user_search_base,
            search,
            search_scope=ldap3.SUBTREE,
            attributes=[settings.user_name_attribute],
            size_limit=2,
        )
        _check_search(connection.result, f"the user search under {settings.user_search_base!r}")
        entries = [e for e in connection.response or () if e.get("type") == "searchResEntry"]
    finally:
        connection.unbind()
    if not entries:
        raise LdapError(f"LDAP authentication of {user!r} failed: {INVALID_CREDENTIALS}")
    if len(entries) > 1:
        raise LdapError(
            f"user_filter finds more than one entry for {user!r} under "
            f"{settings.user_search_base!r}: make it match one user only"
        )
    entry = entries[0]
    return str(entry["dn"]), _first(entry.get("attributes"), settings.user_name_attribute)


def _read_name(ldap3: Any, connection: Any, dn: str, settings: _Settings) -> str | None:
    connection.search(
        dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[settings.user_name_attribute]
    )
    for entry in connection.response or ():
        if entry.get("type") == "searchResEntry":
            return _first(entry.get("attributes"), settings.user_name_attribute)
    return None


def _groups(
    ldap3: Any, connection: Any, settings: _Settings, dn: str, user: str, escape: Any
) -> list[str]:
    if settings.group_search_base is None:
        return []
    search = settings.group_filter.replace("{dn}", escape(dn)).replace("{user}", escape(user))
    connection.search(
        settings.group_search_base,
        search,
        search_scope=ldap3.SUBTREE,
        attributes=[settings.group_name_attribute],
        size_limit=MAX_GROUPS,
    )
    _check_search(connection.result, f"the group search under {settings.group_search_base!r}")
    names = [
        _first(entry.get("attributes"), settings.group_name_attribute)
        for entry in connection.response or ()
        if entry.get("type") == "searchResEntry"
    ]
    return [name for name in names if name]


def _map_groups(groups: list[str], settings: _Settings) -> list[str]:
    mapped: list[str] = []
    for group in groups:
        targets = settings.group_mapping.get(group.lower())
        if targets is not None:
            mapped.extend(targets)
        elif settings.keep_unmapped_groups:
            mapped.append(group)
    return sorted(set(mapped))


def _first(attributes: object, name: str) -> str | None:
    if not isinstance(attributes, Mapping):
        return None
    for key, value in attributes.items():
        if str(key).lower() != name.lower():
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            if text:
                return text
    return None


# -- failures ------------------------------------------------------------------------------
def _refuse_bind(result: Mapping[str, Any] | None, user: str, settings: _Settings) -> None:
    code = (result or {}).get("result")
    if code == _INVALID_CREDENTIALS_CODE:
        raise LdapError(f"LDAP authentication of {user!r} failed: {INVALID_CREDENTIALS}")
    raise LdapError(
        f"LDAP authentication of {user!r} failed: {settings.url} refused the bind: "
        f"{_describe(result)}"
    )


def _check_search(result: Mapping[str, Any] | None, what: str) -> None:
    code = (result or {}).get("result")
    # 4: sizeLimitExceeded still returns the entries found so far.
    if code not in (0, 4, None):
        raise LdapError(f"{what} failed: {_describe(result)}")


def _describe(result: Mapping[str, Any] | None) -> str:
    result = result or {}
    text = str(result.get("description") or f"result {result.get('result')}")
    message = str(result.get("message") or "").strip()
    return f"{text} ({message})" if message else text


def _explain(exc: Exception, settings: _Settings) -> str:
    """A message for what ldap3 (or the sandbox beneath it) raised."""
    text = " ".join(str(exc).split())
    where = f"the LDAP server {settings.url}"
    if "permission denied" in text and "network" in text:
        return (
            f"permission denied: connecting to {where} needs 'network:ldap' for "
            f"{settings.host!r}, which the ldap plugin was not granted; "
            + _GRANT_HINT.format(host=settings.host)
        )
    name = type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "Certificate" in name or "StartTLS" in name:
        cause = _between(text, "certificate verify failed: ", " (") or text
        return (
            f"TLS with {where} failed: {cause}; set plugins.config.ldap.ca_file to the CA "
            "certificate that signed the server's certificate, or check the host name in url"
        )
    if "SSL" in text or "TLS" in name:
        return f"TLS with {where} failed: {text}"
    if "Timeout" in name or "timed out" in text:
        return f"{where} did not answer within {settings.timeout:g} s"
    if "invalid server address" in text:
        return f"cannot reach {where}: the host name does not resolve ({text})"
    if "refused" in text.lower():
        return f"cannot reach {where}: connection refused (is the server running?)"
    if "SocketOpen" in name or "socket" in text.lower():
        return f"cannot reach {where}: {text}"
    return f"LDAP authentication against {where} failed: {name}: {text}"


def _between(text: str, start: str, end: str) -> str | None:
    if start not in text:
        return None
    rest = text.split(start, 1)[1]
    return rest.split(end, 1)[0] if end in rest else rest


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    # Defensive: messages are built without passwords, but ldap3's own might echo a request.
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


__all__ = ["INSTALL_HINT", "INVALID_CREDENTIALS", "LdapError", "LdapPlugin", "LdapUnavailable"]
