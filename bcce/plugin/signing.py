"""Plugin signing: Ed25519 signatures over a canonical listing of every file in a plugin.

The listing has one line per regular file, sorted by POSIX relative path:
``path<TAB>sha256<TAB>size``; ``__pycache__`` folders are left out (and so never staged). The
manifest ``bcce.plugin.json`` is one of the listed files, so the permissions a plugin declares
are covered by its signature. The signature lives beside the files in
``bcce.plugin.sig`` (JSON) and carries the signed listing, so a mismatch can be reported file by
file. ``stage_verified_copy`` gives the loader a read-only copy that was verified after copying,
so what is loaded is what was verified.

Error codes (all :class:`~bcce.errors.PluginError`, exit 4)::

    BCCE420  unsigned plugin               BCCE424  files differ from the signed listing
    BCCE421  signature file malformed      BCCE425  unsafe entry in the plugin directory
    BCCE422  signed by an unknown key      BCCE426  unusable key or key file
    BCCE423  signature does not verify     BCCE427  staging the verified copy failed
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bcce.errors import ConfigError, PluginError
from bcce.plugin.schema import SIGNATURE_FILE

#: Python's bytecode caches (left by running a plugin's tests) are not part of a plugin.
BYTECODE_CACHE = "__pycache__"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 16 * 1024 * 1024

CODE_UNSIGNED = "BCCE420"
CODE_MALFORMED = "BCCE421"
CODE_UNKNOWN_KEY = "BCCE422"
CODE_BAD_SIGNATURE = "BCCE423"
CODE_CONTENT_MISMATCH = "BCCE424"
CODE_UNSAFE_ENTRY = "BCCE425"
CODE_BAD_KEY = "BCCE426"
CODE_STAGING = "BCCE427"

PublicKeyData = bytes | str
TrustedKeys = Mapping[str, PublicKeyData] | Sequence[PublicKeyData]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_CHUNK = 1024 * 1024
# Control, format (bidi) and line/paragraph separator characters can forge or hide listing lines.
_CONTROL = frozenset({"Cc", "Cf", "Zl", "Zp"})
_RESIGN_HINT = (
    "if the change is intended, re-sign with `bcce plugin sign`; "
    "otherwise reinstall the plugin from a trusted source"
)


class ListingEntry(NamedTuple):
    """One line of the canonical listing."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class FileChange:
    """One difference between a plugin's files and its signed listing."""

    kind: str  # "tampered" | "added" | "removed" | "renamed"
    path: str
    renamed_from: str | None = None

    def describe(self) -> str:
        if self.kind == "renamed":
            return (
                f"renamed {self.renamed_from} -> {self.path} (removed and added with same content)"
            )
        return f"{self.kind} {self.path}"


class SignatureError(PluginError):
    """A plugin's signature is missing, unusable or does not match its files."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        code: str,
        changes: Sequence[FileChange] = (),
        hint: str | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, location=location, code=code)
        self.reason = reason
        self.changes = tuple(changes)


@dataclass(frozen=True)
class VerifiedSignature:
    """The outcome of a successful verification."""

    plugin_dir: Path
    key_id: str
    listing_sha256: str
    files: tuple[ListingEntry, ...]


# --- keys ---------------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (PKCS#8 PEM private key, SubjectPublicKeyInfo PEM public key)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def write_keypair(directory: Path | str, name: str) -> tuple[Path, Path]:
    """Generate a key pair and write ``NAME.key`` (mode 0600) and ``NAME.pub`` in ``directory``.

    Existing files are never overwritten. Returns (private key path, public key path).
    """
    if not _KEY_NAME.fullmatch(name):
        raise PluginError(
            f"invalid key name {name!r}",
            hint="use letters, digits, '.', '_' and '-', not starting with '.'",
            code=CODE_BAD_KEY,
        )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise PluginError(
                f"refusing to overwrite existing key file {path}",
                hint="choose another name or remove the old key pair first",
                location=str(path),
                code=CODE_BAD_KEY,
            )
    private_pem, public_pem = generate_keypair()
    # Created 0600 from the start, so the private key is never readable by others, even briefly.
    _write_new_file(private_path, private_pem, 0o600)
    _write_new_file(public_path, public_pem, 0o644)
    return private_path, public_path


def key_id(public_key: PublicKeyData) -> str:
    """The key's id: the first 16 hex digits of the sha256 of the raw 32-byte public key."""
    raw = _load_public_key(public_key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_public_key(data: PublicKeyData) -> Ed25519PublicKey:
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    stripped = raw.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            key: object = serialization.load_pem_public_key(stripped)
        elif stripped.startswith(b"ssh-ed25519 "):
            key = serialization.load_ssh_public_key(stripped)
        elif len(raw) == 32:
            key = Ed25519PublicKey.from_public_bytes(raw)
        else:
            raise ValueError("not a PEM, OpenSSH or raw 32-byte public key")
    except (ValueError, TypeError) as exc:
        raise PluginError(
            f"unusable public key: {exc}",
            hint="give an Ed25519 public key as PEM, OpenSSH or 32 raw bytes",
            code=CODE_BAD_KEY,
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise PluginError(
            f"public key is {type(key).__name__}, not Ed25519",
            hint="plugin signatures use Ed25519 keys (`bcce plugin keygen`)",
            code=CODE_BAD_KEY,
        )
    return key


def _load_private_key(data: bytes | str) -> Ed25519PrivateKey:
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise PluginError(
            f"unusable private key: {exc}",
            hint="give an unencrypted PKCS#8 PEM Ed25519 key (`bcce plugin keygen`)",
            code=CODE_BAD_KEY,
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PluginError(
            f"private key is {type(key).__name__}, not Ed25519",
            hint="plugin signatures use Ed25519 keys (`bcce plugin keygen`)",
            code=CODE_BAD_KEY,
        )
    return key


def _trusted_by_id(trusted_keys: TrustedKeys) -> dict[str, Ed25519PublicKey]:
    if isinstance(trusted_keys, str | bytes):
        raise TypeError("trusted_keys must be a mapping or a sequence of keys, not one key")
    trusted: dict[str, Ed25519PublicKey] = {}
    if isinstance(trusted_keys, Mapping):
        for claimed, data in trusted_keys.items():
            actual = key_id(data)
            if claimed != actual:
                raise ConfigError(
                    f"trusted key listed as {claimed!r} has key id {actual!r}",
                    hint="list each trusted key under its own id (`bcce plugin keygen` prints it)",
                    key=f"plugins.trusted_keys.{claimed}",
                )
            trusted[actual] = _load_public_key(data)
    else:
        for data in trusted_keys:
            trusted[key_id(data)] = _load_public_key(data)
    return trusted


# --- canonical listing --------------------------------------------------------------------------


def canonical_listing(plugin_dir: Path | str) -> bytes:
    """The canonical listing of ``plugin_dir``: UTF-8, one ``path\\tsha256\\tsize\\n`` per file.

    Raises PluginError (BCCE425) naming the entry for a symlink, a special file, or a path that is
    not valid, NFC-normalised UTF-8 free of control characters.
    """
    return _render_listing(_listing_entries(Path(plugin_dir)))


def _render_listing(entries: Sequence[ListingEntry]) -> bytes:
    return "".join(f"{e.path}\t{e.sha256}\t{e.size}\n" for e in entries).encode("utf-8")


def _listing_entries(plugin_dir: Path) -> list[ListingEntry]:
    if not plugin_dir.is_dir():
        raise PluginError(
            f"plugin directory {plugin_dir} does not exist or is not a directory",
            location=str(plugin_dir),
            code=CODE_UNSAFE_ENTRY,
        )
    entries = [
        ListingEntry(relative, *_hash_file(plugin_dir, relative))
        for relative in _walk(plugin_dir, "")
        if relative != SIGNATURE_FILE
    ]
    # Code-point order is UTF-8 byte order, so the listing does not depend on the locale.
    entries.sort(key=lambda entry: entry.path)
    return entries


def _walk(root: Path, prefix: str) -> Iterator[str]:
    with os.scandir(root / prefix if prefix else root) as scan:
        children = list(scan)
    for child in children:
        relative = f"{prefix}/{child.name}" if prefix else child.name
        if child.name == BYTECODE_CACHE and child.is_dir(follow_symlinks=False):
            continue  # never signed, never staged: the staged copy cannot load stale bytecode
        _check_name(root, relative, child.name)
        if child.is_symlink():
            raise _unsafe(root, relative, "is a symbolic link; plugins may not contain links")
        if child.is_dir(follow_symlinks=False):
            yield from _walk(root, relative)
        elif child.is_file(follow_symlinks=False):
            yield relative
        else:
            raise _unsafe(root, relative, "is not a regular file or directory")


def _check_name(root: Path, relative: str, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _unsafe(root, relative, "has a name that is not valid UTF-8") from None
    if name in ("", ".", ".."):
        raise _unsafe(root, relative, "has a '.' or '..' path component")
    if "/" in name or "\\" in name:
        raise _unsafe(root, relative, "has a path separator in a file name")
    if any(unicodedata.category(char) in _CONTROL for char in name):
        raise _unsafe(root, relative, "has a control or format character in its name")
    if not unicodedata.is_normalized("NFC", name):
        raise _unsafe(root, relative, "has a name that is not NFC-normalised unicode")


def _unsafe(root: Path, relative: str, why: str) -> PluginError:
    return SignatureError(
        f"plugin entry {relative!r} {why}",
        reason="unsafe-entry",
        code=CODE_UNSAFE_ENTRY,
        hint="remove or replace the entry; plugin directories hold only regular files and folders",
        location=str(root / relative),
    )


def _hash_file(root: Path, relative: str) -> tuple[str, int]:
    path = root / relative
    # O_NOFOLLOW, O_NONBLOCK, fstat: an entry swapped for a link or FIFO after the scan is refused.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise _unsafe(root, relative, f"cannot be opened safely ({exc.strerror})") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _unsafe(root, relative, "is not a regular file")
        digest, size = hashlib.sha256(), 0
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size
    finally:
        os.close(fd)


def _parse_listing(text: str, plugin_dir: Path) -> list[ListingEntry]:
    if text and not text.endswith("\n"):
        raise _malformed(plugin_dir, "has a listing that does not end with a newline")
    entries: list[ListingEntry] = []
    for number, line in enumerate(text[:-1].split("\n") if text else [], start=1):
        parts = line.split("\t")
        if (
            len(parts) != 3
            or not _HEX64.fullmatch(parts[1])
            or not parts[2].isdigit()
            or not parts[2].isascii()
        ):
            raise _malformed(plugin_dir, f"listing line {number} is not 'path<TAB>sha256<TAB>size'")
        path = parts[0]
        if path.startswith("/") or any(
            part in ("", ".", "..") or any(unicodedata.category(c) in _CONTROL for c in part)
            for part in path.split("/")
        ):
            raise _malformed(plugin_dir, f"listing line {number} has an unsafe path {path!r}")
        entries.append(ListingEntry(path, parts[1], int(parts[2])))
    return entries


# --- signing and verification -------------------------------------------------------------------


def sign_plugin(plugin_dir: Path | str, private_key_pem: bytes | str) -> Path:
    """Sign every file of ``plugin_dir`` and write ``bcce.plugin.sig``; returns its path."""
    folder = Path(plugin_dir)
    private = _load_private_key(private_key_pem)
    listing = canonical_listing(folder)
    public_raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    document = {
        "version": SIGNATURE_VERSION,
        "algorithm": ALGORITHM,
        "key_id": hashlib.sha256(public_raw).hexdigest()[:16],
        "listing_sha256": hashlib.sha256(listing).hexdigest(),
        "signature": base64.b64encode(private.sign(listing)).decode("ascii"),
        "listing": listing.decode("utf-8"),
    }
    target = folder / SIGNATURE_FILE
    # Written beside the target and renamed over it, so a reader never sees half a signature.
    fd, temporary = tempfile.mkstemp(prefix=".bcce.plugin.sig.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        Path(temporary).chmod(0o644)
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def verify_plugin(plugin_dir: Path | str, trusted_keys: TrustedKeys) -> VerifiedSignature:
    """Verify ``plugin_dir`` against its ``bcce.plugin.sig`` and the trusted public keys.

    ``trusted_keys`` maps key ids to public keys, or is a sequence of public keys (PEM, OpenSSH or
    raw). Raises :class:`SignatureError` (a PluginError, exit 4) saying exactly what is wrong.
    """
    folder = Path(plugin_dir)
    trusted = _trusted_by_id(trusted_keys)
    document = _read_signature(folder)
    signer = trusted.get(document["key_id"])
    if signer is None:
        raise SignatureError(
            f"plugin {folder} is signed by unknown key {document['key_id']}",
            reason="unknown-key",
            code=CODE_UNKNOWN_KEY,
            hint="add the signer's public key to plugins.trusted_keys if you trust it",
            location=str(folder / SIGNATURE_FILE),
        )
    signed = document["listing"].encode("utf-8")
    claimed_digest = document["listing_sha256"].encode("ascii")
    actual_digest = hashlib.sha256(signed).hexdigest().encode("ascii")
    try:
        if not hmac.compare_digest(claimed_digest, actual_digest):
            raise InvalidSignature
        signer.verify(document["signature"], signed)
    except InvalidSignature:
        raise SignatureError(
            f"the signature of plugin {folder} does not verify with key {document['key_id']}",
            reason="bad-signature",
            code=CODE_BAD_SIGNATURE,
            hint="the signature file was altered or made with another key; re-sign the plugin",
            location=str(folder / SIGNATURE_FILE),
        ) from None
    expected = _parse_listing(document["listing"], folder)
    entries = _listing_entries(folder)
    if not hmac.compare_digest(signed, _render_listing(entries)):
        changes = _differences(expected, entries)
        shown = "; ".join(change.describe() for change in changes[:10])
        more = f"; and {len(changes) - 10} more" if len(changes) > 10 else ""
        raise SignatureError(
            f"plugin {folder} does not match its signature: {shown}{more}",
            reason="content-mismatch",
            code=CODE_CONTENT_MISMATCH,
            changes=changes,
            hint=_RESIGN_HINT,
            location=str(folder / changes[0].path) if changes else str(folder),
        )
    return VerifiedSignature(
        plugin_dir=folder,
        key_id=document["key_id"],
        listing_sha256=actual_digest.decode("ascii"),
        files=tuple(entries),
    )


def _read_signature(folder: Path) -> dict[str, Any]:
    path = folder / SIGNATURE_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SignatureError(
            f"plugin {folder} is not signed (no {SIGNATURE_FILE})",
            reason="unsigned",
            code=CODE_UNSIGNED,
            hint="sign it with `bcce plugin sign DIR --key KEY`, or allow unsigned plugins",
            location=str(folder),
        ) from None
    except OSError as exc:
        raise _malformed(folder, f"cannot be opened safely ({exc.strerror})") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _malformed(folder, "is not a regular file")
        raw = os.read(fd, MAX_SIGNATURE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise _malformed(folder, f"is larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _malformed(folder, f"is not UTF-8 JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise _malformed(folder, "is not a JSON object")
    if document.get("version") != SIGNATURE_VERSION:
        raise _malformed(folder, f"has unsupported version {document.get('version')!r}")
    if document.get("algorithm") != ALGORITHM:
        raise _malformed(folder, f"has unsupported algorithm {document.get('algorithm')!r}")
    for field, pattern in (("key_id", _KEY_ID), ("listing_sha256", _HEX64)):
        value = document.get(field)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _malformed(folder, f"has an invalid {field}")
    if not isinstance(document.get("listing"), str):
        raise _malformed(folder, "has no listing")
    try:
        signature = base64.b64decode(str(document.get("signature")), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise _malformed(folder, "has a signature that is not 64 base64-encoded bytes")
    document["signature"] = signature
    return document


def _malformed(folder: Path, why: str) -> SignatureError:
    return SignatureError(
        f"signature file of plugin {folder} {why}",
        reason="malformed",
        code=CODE_MALFORMED,
        hint="re-sign the plugin with `bcce plugin sign`",
        location=str(folder / SIGNATURE_FILE),
    )


def _differences(
    expected: Sequence[ListingEntry], actual: Sequence[ListingEntry]
) -> list[FileChange]:
    signed = {entry.path: entry for entry in expected}
    present = {entry.path: entry for entry in actual}
    changes = [
        FileChange("tampered", path)
        for path in sorted(signed.keys() & present.keys())
        if signed[path] != present[path]
    ]
    removed = sorted(signed.keys() - present.keys())
    added = sorted(present.keys() - signed.keys())
    # A removed and an added file with the same content is reported as one rename.
    for old in list(removed):
        content = (signed[old].sha256, signed[old].size)
        new = next((p for p in added if (present[p].sha256, present[p].size) == content), None)
        if new is not None:
            removed.remove(old)
            added.remove(new)
            changes.append(FileChange("renamed", new, renamed_from=old))
    changes += [FileChange("removed", path) for path in removed]
    changes += [FileChange("added", path) for path in added]
    return changes


# --- staging ------------------------------------------------------------------------------------


def stage_verified_copy(
    plugin_dir: Path | str, destination: Path | str, trusted_keys: TrustedKeys
) -> Path:
    """Verify ``plugin_dir``, copy it to ``destination`` (which must not exist), make the copy
    read-only (files 0444, folders 0555) and verify the copy; returns ``destination``.

    Load the plugin from the returned path: it is the copy that was verified, after it was
    frozen, so a change to the source after verification cannot reach the loader.
    """
    source, target = Path(plugin_dir), Path(destination)
    verified = verify_plugin(source, trusted_keys)
    if target.exists() or target.is_symlink():
        raise PluginError(
            f"staging destination {target} already exists",
            hint="stage into a fresh directory",
            location=str(target),
            code=CODE_STAGING,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.mkdir(mode=0o700)
        for relative in [*(entry.path for entry in verified.files), SIGNATURE_FILE]:
            _copy_file(source / relative, target / relative)
        _make_read_only(target)
        verify_plugin(target, trusted_keys)
    except BaseException:
        _remove_tree(target)
        raise
    return target


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise PluginError(
            f"cannot copy {source}: {exc.strerror}",
            hint="the plugin changed while it was being staged; try again",
            location=str(source),
            code=CODE_STAGING,
        ) from exc
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while chunk := os.read(src, _CHUNK):
                os.write(dst, chunk)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _make_read_only(root: Path) -> None:
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            (Path(folder) / name).chmod(0o444)
        # Readable by all on purpose: the worker may run as another user; nothing here is secret.
        Path(folder).chmod(0o555)


def _remove_tree(root: Path) -> None:
    if not root.exists():
        return
    for folder, _dirs, _files in os.walk(root):
        Path(folder).chmod(0o700)
    shutil.rmtree(root, ignore_errors=True)


__all__ = [
    "ALGORITHM",
    "SIGNATURE_FILE",
    "SIGNATURE_VERSION",
    "FileChange",
    "ListingEntry",
    "SignatureError",
    "VerifiedSignature",
    "canonical_listing",
    "generate_keypair",
    "key_id",
    "sign_plugin",
    "stage_verified_copy",
    "verify_plugin",
    "write_keypair",
]
