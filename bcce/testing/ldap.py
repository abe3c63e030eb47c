"""A real OpenLDAP server for tests: ``slapd`` on 127.0.0.1 with a small directory.

    with SlapdServer() as server:
        ...  # point an LDAP client (the ldap plugin's url) at server.url
        assert server.binds() == ["uid=alice,ou=people,dc=example,dc=org"]

:class:`SlapdServer` writes a ``slapd.conf`` (the ``mdb`` backend) into a temporary directory,
loads the directory with ``slapadd`` and starts ``slapd -d stats`` on a free port, in the
foreground, as a child of the test process; :meth:`~SlapdServer.start` returns once the server
answers an LDAP bind (bounded by ``start_timeout``) and :meth:`~SlapdServer.stop` ends it with
SIGTERM. The default directory under ``dc=example,dc=org``:

- ``ou=people``: ``uid=alice`` (password ``alice-password``) and ``uid=bob``
  (``bob-password``), ``inetOrgPerson`` entries with salted SHA-1 (``{SSHA}``) password hashes;
- ``ou=groups``: ``groupOfNames`` ``cn=developers`` (alice, bob) and ``cn=operators`` (alice),
  and the ``posixGroup`` ``cn=deployers`` (``memberUid: bob``).

Pass ``users`` and ``groups`` for another directory. ``tls=True`` also makes a private CA and a
certificate for 127.0.0.1 (``ca_file``), and serves ``ldaps://`` (:attr:`~SlapdServer.ldaps_url`)
beside StartTLS on ``ldap://``. The server's stats log tells what clients did
(:meth:`~SlapdServer.binds`, :meth:`~SlapdServer.connections`), not counting the readiness probe.

It needs Debian's ``slapd`` package (``/usr/sbin/slapd``, ``/usr/sbin/slapadd`` and the
``back_mdb`` module); :func:`slapd_missing` says what is missing, so a test can skip. As root,
slapd runs as root (no ``-u``/``-g``: its files are the test's, in the temporary directory).
``python -m bcce.testing.ldap`` runs one until interrupted.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

HOST: Final = "127.0.0.1"
SLAPD: Final = "/usr/sbin/slapd"
SLAPADD: Final = "/usr/sbin/slapadd"
MODULE_DIR: Final = "/usr/lib/ldap"
SCHEMA_DIR: Final = "/etc/ldap/schema"
DEFAULT_BASE_DN: Final = "dc=example,dc=org"
_SCHEMAS: Final = ("core", "cosine", "inetorgperson", "nis")
_PORT_ATTEMPTS: Final = 3
_STOP_TIMEOUT: Final = 10.0
# An LDAPv3 anonymous simple bind, message id 1: what the readiness probe sends.
_ANONYMOUS_BIND: Final = bytes.fromhex("300c020101600702010304008000")
_CONN: Final = re.compile(r"\bconn=(\d+)\b")
_BIND: Final = re.compile(r'\bBIND dn="([^"]*)" method=128\b')


@dataclass(frozen=True)
class LdapUser:
    """A person entry: ``uid=UID,<parent>,<base>``, an ``inetOrgPerson`` with a hashed password.

    ``parent`` is relative to the base DN (its ``ou=`` entries are created as needed).
    """

    uid: str
    password: str
    cn: str | None = None
    mail: str | None = None
    parent: str = "ou=people"


@dataclass(frozen=True)
class LdapGroup:
    """A group under ``ou=groups``: ``groupOfNames`` (``member``: the members' DNs) or
    ``posixGroup`` (``memberUid``: their uids). ``members`` are uids of :class:`LdapUser` s."""

    cn: str
    members: tuple[str, ...]
    kind: Literal["groupOfNames", "posixGroup"] = "groupOfNames"
    gid_number: int = 10000


DEFAULT_USERS: Final = (
    LdapUser("alice", "alice-password", cn="Alice Liddell", mail="alice@example.org"),
    LdapUser("bob", "bob-password", cn="Bob Builder", mail="bob@example.org"),
)
DEFAULT_GROUPS: Final = (
    LdapGroup("developers", ("alice", "bob")),
    LdapGroup("operators", ("alice",)),
    LdapGroup("deployers", ("bob",), kind="posixGroup", gid_number=10001),
)


class SlapdError(RuntimeError):
    """slapd could not be set up or did not start; the message ends with its log."""


def slapd_missing() -> str | None:
    """Why slapd cannot run here (naming Debian's ``slapd`` package), or None."""
    for program in (SLAPD, SLAPADD):
        if not os.access(program, os.X_OK):
            return f"{program} is not installed (Debian package: slapd)"
    if not any(Path(MODULE_DIR).glob("back_mdb*.so*")):
        return f"slapd's mdb backend is missing from {MODULE_DIR} (Debian package: slapd)"
    missing = [name for name in _SCHEMAS if not (Path(SCHEMA_DIR) / f"{name}.schema").is_file()]
    if missing:
        return f"slapd's schemas {', '.join(missing)} are missing (Debian package: slapd)"
    return None


def ssha(password: str, salt: bytes | None = None) -> str:
    """``{SSHA}`` hash of ``password``: base64(SHA-1(password + salt) + salt), as slapd checks."""
    salt = secrets.token_bytes(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


class SlapdServer:
    """slapd serving a small directory on 127.0.0.1; a context manager that starts and stops it.

    ``directory``: where its configuration, data and log go (default: a new temporary directory,
    removed by :meth:`stop`). ``port`` 0 picks a free port (``ldaps_port`` likewise, with
    ``tls``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        users: Sequence[LdapUser] = DEFAULT_USERS,
        groups: Sequence[LdapGroup] = DEFAULT_GROUPS,
        base_dn: str = DEFAULT_BASE_DN,
        admin_password: str = "admin-password",  # noqa: S107 - a test directory's
        tls: bool = False,
        port: int = 0,
        ldaps_port: int = 0,
        start_timeout: float = 15.0,
    ) -> None:
        self.users = tuple(users)
        self.groups = tuple(groups)
        self.base_dn = base_dn
        self.admin_password = admin_password
        self.tls = tls
        self.start_timeout = start_timeout
        self._requested = (port, ldaps_port)
        self.port = port
        self.ldaps_port = ldaps_port
        self._own_directory = directory is None
        self._directory = None if directory is None else Path(directory)
        self._process: subprocess.Popen[bytes] | None = None
        self._probe_connections: set[str] = set()
        known = {user.uid for user in self.users}
        for group in self.groups:
            unknown = [uid for uid in group.members if uid not in known]
            if unknown:
                raise ValueError(f"group {group.cn!r} names unknown users: {', '.join(unknown)}")
            if group.kind == "groupOfNames" and not group.members:
                raise ValueError(f"groupOfNames {group.cn!r} needs at least one member")

    # -- where things are ----------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        """The server's directory (configuration, data, log, certificates)."""
        if self._directory is None:
            raise RuntimeError("the slapd server is not running; call start() first")
        return self._directory

    @property
    def url(self) -> str:
        """``ldap://127.0.0.1:PORT`` (StartTLS is offered there too when ``tls``)."""
        return f"ldap://{HOST}:{self._running_port(self.port)}"

    @property
    def ldaps_url(self) -> str:
        """``ldaps://127.0.0.1:PORT`` (only with ``tls=True``)."""
        if not self.tls:
            raise RuntimeError("ldaps:// is served only with tls=True")
        return f"ldaps://{HOST}:{self._running_port(self.ldaps_port)}"

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the server's certificate (``tls=True``)."""
        if not self.tls:
            raise RuntimeError("the server has no certificate without tls=True")
        return self.directory / "ca.pem"

    @property
    def people_dn(self) -> str:
        return f"ou=people,{self.base_dn}"

    @property
    def groups_dn(self) -> str:
        return f"ou=groups,{self.base_dn}"

    @property
    def admin_dn(self) -> str:
        """The directory manager (``rootdn``), whose password is :attr:`admin_password`."""
        return f"cn=admin,{self.base_dn}"

    def user_dn(self, uid: str) -> str:
        """The DN of the user ``uid``."""
        for user in self.users:
            if user.uid == uid:
                return f"uid={user.uid},{user.parent},{self.base_dn}"
        raise KeyError(f"no user {uid!r} in the directory")

    def password(self, uid: str) -> str:
        """The password of the user ``uid``."""
        for user in self.users:
            if user.uid == uid:
                return user.password
        raise KeyError(f"no user {uid!r} in the directory")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- what clients did ----------------------------------------------------------------------
    def log(self) -> str:
        """slapd's stats log (connections, operations, results), readiness probes left out."""
        path = self.directory / "slapd.log"
        try:
            text = path.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "".join(
            line
            for line in text.splitlines(keepends=True)
            if not ((found := _CONN.search(line)) and found.group(1) in self._probe_connections)
        )

    def connections(self) -> int:
        """How many client connections slapd accepted."""
        return sum(1 for line in self.log().splitlines() if " ACCEPT from " in line)

    def binds(self) -> list[str]:
        """The DNs of the simple binds clients asked for, in order (``""``: anonymous)."""
        return [found.group(1) for found in _BIND.finditer(self.log())]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> SlapdServer:
        """Write the configuration, load the directory and start slapd; return once it answers.

        Raises :class:`SlapdError` (with slapd's log) if it cannot, and ``FileNotFoundError``
        naming Debian's ``slapd`` package if slapd is not installed.
        """
        if self.running:
            return self
        missing = slapd_missing()
        if missing is not None:
            raise FileNotFoundError(missing)
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="bcce-slapd-"))
        try:
            self._prepare()
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                if self._launch(last=attempt == _PORT_ATTEMPTS):
                    return self
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover - _launch raises on the last try

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL after 10 s); remove its directory if it made it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_directory and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def stop_process(self) -> None:
        """Stop slapd but keep its directory (a test of a server that went down)."""
        own, self._own_directory = self._own_directory, False
        try:
            self.stop()
        finally:
            self._own_directory = own

    def __enter__(self) -> SlapdServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------
    def _running_port(self, port: int) -> int:
        if not self.running:
            raise RuntimeError("the slapd server is not running; call start() first")
        return port

    def _prepare(self) -> None:
        root = self.directory
        data = root / "data"
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        if self.tls:
            _write_certificates(root)
        (root / "slapd.conf").write_text(self._config(), "utf-8")
        (root / "directory.ldif").write_text(self._ldif(), "utf-8")
        command = [SLAPADD, "-q", "-f", str(root / "slapd.conf"), "-b", self.base_dn]
        loaded = subprocess.run(
            [*command, "-l", str(root / "directory.ldif")],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if loaded.returncode != 0:
            raise SlapdError(f"slapadd failed (exit {loaded.returncode}):\n{loaded.stderr.strip()}")

    def _launch(self, *, last: bool) -> bool:
        """Start slapd on free ports; False when a port was taken meanwhile (try again)."""
        port = self._requested[0] or _free_port()
        ldaps_port = (self._requested[1] or _free_port()) if self.tls else 0
        listeners = [f"ldap://{HOST}:{port}/"]
        if self.tls:
            listeners.append(f"ldaps://{HOST}:{ldaps_port}/")
        log_path = self.directory / "slapd.log"
        with open(log_path, "wb") as log:
            # -d keeps slapd in the foreground, our child; "stats" logs connections and binds.
            config = str(self.directory / "slapd.conf")
            self._process = subprocess.Popen(
                [SLAPD, "-h", " ".join(listeners), "-f", config, "-d", "stats"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.port, self.ldaps_port = port, ldaps_port
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if _answers(port):
                self._probe_connections = set(_CONN.findall(_read(log_path)))
                return True
            try:
                # Waiting on the process doubles as the pause between probes.
                code = self._process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            text = _read(log_path)
            self._process = None
            if "Address already in use" in text and not last and not any(self._requested):
                return False
            raise SlapdError(f"slapd exited with status {code} while starting:\n{_tail(text)}")
        text = _read(log_path)
        self.stop_process()
        raise SlapdError(
            f"slapd did not answer on {HOST}:{port} within {self.start_timeout:g} s:\n{_tail(text)}"
        )

    def _config(self) -> str:
        root = self.directory
        lines = [*(f"include {SCHEMA_DIR}/{name}.schema" for name in _SCHEMAS)]
        lines += [
            f"pidfile {root / 'slapd.pid'}",
            f"argsfile {root / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
        ]
        if self.tls:
            lines += [
                f"TLSCACertificateFile {root / 'ca.pem'}",
                f"TLSCertificateFile {root / 'server.pem'}",
                f"TLSCertificateKeyFile {root / 'server.key'}",
            ]
        lines += [
            "database mdb",
            "maxsize 10485760",
            f'suffix "{self.base_dn}"',
            f'rootdn "{self.admin_dn}"',
            f"rootpw {ssha(self.admin_password)}",
            f"directory {root / 'data'}",
            # Passwords: usable to bind, never readable; everything else readable by anyone.
            "access to attrs=userPassword by self =xw by anonymous auth by * none",
            "access to * by * read",
        ]
        return "\n".join(lines) + "\n"

    def _ldif(self) -> str:
        first = self.base_dn.split(",")[0]
        attribute, _, value = first.partition("=")
        if attribute.lower() != "dc":
            raise ValueError(f"base_dn must start with dc=...: {self.base_dn!r}")
        entries = [
            [f"dn: {self.base_dn}", "objectClass: dcObject", "objectClass: organization",
             f"dc: {value}", f"o: {value}"],
        ]  # fmt: skip
        units = ["ou=people", "ou=groups", *(user.parent for user in self.users)]
        for unit in _units_top_down(units):
            name = unit.split(",")[0].partition("=")[2]
            entries.append(
                [f"dn: {unit},{self.base_dn}", "objectClass: organizationalUnit", f"ou: {name}"]
            )
        for user in self.users:
            cn = user.cn or user.uid
            entry = [
                f"dn: {self.user_dn(user.uid)}",
                "objectClass: inetOrgPerson",
                _attribute("uid", user.uid),
                _attribute("cn", cn),
                _attribute("sn", cn.split()[-1] if cn.split() else cn),
                _attribute("userPassword", ssha(user.password)),
            ]
            if user.mail:
                entry.append(_attribute("mail", user.mail))
            entries.append(entry)
        for group in self.groups:
            entry = [f"dn: cn={group.cn},{self.groups_dn}", _attribute("cn", group.cn)]
            if group.kind == "groupOfNames":
                entry.append("objectClass: groupOfNames")
                entry += [_attribute("member", self.user_dn(uid)) for uid in group.members]
            else:
                entry += ["objectClass: posixGroup", f"gidNumber: {group.gid_number}"]
                entry += [_attribute("memberUid", uid) for uid in group.members]
            entries.append(entry)
        return "\n\n".join("\n".join(entry) for entry in entries) + "\n"


def _attribute(name: str, value: str) -> str:
    """An LDIF line; base64 (``name::``) for values LDIF cannot carry as they are."""
    safe = value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<"))
    if safe and not value.endswith(" "):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def _units_top_down(units: Iterable[str]) -> list[str]:
    """Every organizational unit the relative DNs ``units`` need, parents first."""
    needed: dict[str, None] = {}
    for unit in units:
        parts = [part.strip() for part in unit.split(",") if part.strip()]
        for depth in range(len(parts) - 1, -1, -1):
            needed[",".join(parts[depth:])] = None
    return sorted(needed, key=lambda unit: unit.count(","))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    """Whether an LDAP server on ``port`` answers an anonymous bind with success."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as connection:
            connection.sendall(_ANONYMOUS_BIND)
            reply = connection.recv(64)
    except OSError:
        return False
    # A BindResponse (application tag 0x61) whose resultCode (an ENUMERATED, 0x0a 0x01) is 0.
    return reply[:1] == b"\x30" and b"\x61" in reply and b"\x0a\x01\x00" in reply


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _write_certificates(root: Path) -> None:
    """A private CA and a server certificate for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bcce test LDAP CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file = root / "server.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


__all__ = [
    "DEFAULT_BASE_DN",
    "DEFAULT_GROUPS",
    "DEFAULT_USERS",
    "LdapGroup",
    "LdapUser",
    "SlapdError",
    "SlapdServer",
    "slapd_missing",
    "ssha",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bcce.testing.ldap [--tls]``: serve the default directory until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bcce.testing.ldap",
        description="Serve a small test directory with a real slapd on 127.0.0.1 until "
        "interrupted (Ctrl-C or SIGTERM stop slapd too).",
    )
    parser.add_argument("--tls", action="store_true", help="also serve ldaps:// and StartTLS")
    args = parser.parse_args(argv)
    # SIGTERM ends the server like Ctrl-C, so that slapd is stopped with it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with SlapdServer(tls=args.tls) as server:
        print(f"slapd serving {server.base_dn} at {server.url}", flush=True)
        if server.tls:
            print(f"  ldaps: {server.ldaps_url}  CA: {server.ca_file}", flush=True)
        for user in server.users:
            print(f"  {server.user_dn(user.uid)}  password: {user.password}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
