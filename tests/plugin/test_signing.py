from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.errors import ConfigError, ExitCode, PluginError
from bcce.plugin.signing import (
    SIGNATURE_FILE,
    SignatureError,
    canonical_listing,
    generate_keypair,
    key_id,
    sign_plugin,
    stage_verified_copy,
    verify_plugin,
    write_keypair,
)

MANIFEST = {"name": "demo", "version": "1.0.0", "type": "step", "permissions": ["env:read"]}


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    folder = tmp_path / "demo"
    (folder / "pkg").mkdir(parents=True)
    (folder / "bcce.plugin.json").write_text(json.dumps(MANIFEST))
    (folder / "main.py").write_text("def run():\n    return 1\n")
    (folder / "pkg" / "helper.py").write_text("VALUE = 2\n")
    return folder


@pytest.fixture
def signed(plugin: Path, keys: tuple[bytes, bytes]) -> Path:
    sign_plugin(plugin, keys[0])
    return plugin


def rejection(folder: Path, trusted: list[bytes]) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify_plugin(folder, trusted)
    assert caught.value.exit_code == ExitCode.PLUGIN
    return caught.value


def test_signed_plugin_verifies_with_its_public_key(
    signed: Path, keys: tuple[bytes, bytes]
) -> None:
    result = verify_plugin(signed, [keys[1]])

    assert result.key_id == key_id(keys[1])
    assert [entry.path for entry in result.files] == [
        "bcce.plugin.json",
        "main.py",
        "pkg/helper.py",
    ]


def test_trusted_keys_may_be_given_by_key_id(signed: Path, keys: tuple[bytes, bytes]) -> None:
    assert verify_plugin(signed, {key_id(keys[1]): keys[1].decode()}).key_id == key_id(keys[1])


def test_trusted_key_listed_under_a_wrong_id_is_a_config_error(
    signed: Path, keys: tuple[bytes, bytes]
) -> None:
    with pytest.raises(ConfigError):
        verify_plugin(signed, {"0" * 16: keys[1]})


def test_key_id_is_the_same_for_pem_and_raw_public_key(keys: tuple[bytes, bytes]) -> None:
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(keys[1])
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    assert key_id(raw) == key_id(keys[1]) == hashlib.sha256(raw).hexdigest()[:16]


def test_listing_has_one_sorted_line_per_file_with_sha256_and_size(plugin: Path) -> None:
    helper = b"VALUE = 2\n"
    lines = canonical_listing(plugin).decode().splitlines()

    assert [line.split("\t")[0] for line in lines] == [
        "bcce.plugin.json",
        "main.py",
        "pkg/helper.py",
    ]
    assert lines[2] == f"pkg/helper.py\t{hashlib.sha256(helper).hexdigest()}\t{len(helper)}"


def test_listing_leaves_out_the_signature_file(signed: Path) -> None:
    assert SIGNATURE_FILE not in canonical_listing(signed).decode()


def test_signature_file_carries_key_id_algorithm_and_listing(
    signed: Path, keys: tuple[bytes, bytes]
) -> None:
    document = json.loads((signed / SIGNATURE_FILE).read_text())

    assert document["algorithm"] == "ed25519"
    assert document["key_id"] == key_id(keys[1])
    assert document["listing"].encode() == canonical_listing(signed)
    assert document["listing_sha256"] == hashlib.sha256(canonical_listing(signed)).hexdigest()


def test_tampered_file_is_rejected_and_named(signed: Path, keys: tuple[bytes, bytes]) -> None:
    (signed / "pkg" / "helper.py").write_text("VALUE = 3\n")

    error = rejection(signed, [keys[1]])

    assert error.reason == "content-mismatch"
    assert [(c.kind, c.path) for c in error.changes] == [("tampered", "pkg/helper.py")]
    assert "tampered pkg/helper.py" in error.message


def test_permission_escalation_in_the_manifest_is_rejected(
    signed: Path, keys: tuple[bytes, bytes]
) -> None:
    escalated = {**MANIFEST, "permissions": ["env:read", "process:spawn", "network:https"]}
    (signed / "bcce.plugin.json").write_text(json.dumps(escalated))

    error = rejection(signed, [keys[1]])

    assert [(c.kind, c.path) for c in error.changes] == [("tampered", "bcce.plugin.json")]


def test_added_file_is_rejected(signed: Path, keys: tuple[bytes, bytes]) -> None:
    (signed / "pkg" / "extra.py").write_text("import os\n")

    error = rejection(signed, [keys[1]])

    assert [(c.kind, c.path) for c in error.changes] == [("added", "pkg/extra.py")]


def test_removed_file_is_rejected(signed: Path, keys: tuple[bytes, bytes]) -> None:
    (signed / "main.py").unlink()

    error = rejection(signed, [keys[1]])

    assert [(c.kind, c.path) for c in error.changes] == [("removed", "main.py")]


def test_renamed_file_is_reported_as_a_rename(signed: Path, keys: tuple[bytes, bytes]) -> None:
    (signed / "main.py").rename(signed / "pkg" / "main.py")

    error = rejection(signed, [keys[1]])

    assert [(c.kind, c.renamed_from, c.path) for c in error.changes] == [
        ("renamed", "main.py", "pkg/main.py")
    ]
    assert "removed and added" in error.message


def test_plugin_signed_by_an_unknown_key_is_rejected(signed: Path) -> None:
    error = rejection(signed, [generate_keypair()[1]])

    assert error.reason == "unknown-key"


def test_unsigned_plugin_is_rejected(plugin: Path, keys: tuple[bytes, bytes]) -> None:
    assert rejection(plugin, [keys[1]]).reason == "unsigned"


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda doc: "not json {",
        lambda doc: json.dumps({k: v for k, v in doc.items() if k != "listing"}),
        lambda doc: json.dumps({**doc, "signature": "%%%not base64%%%"}),
        lambda doc: json.dumps({**doc, "version": 99}),
        lambda doc: json.dumps({**doc, "algorithm": "rsa"}),
        lambda doc: json.dumps([doc]),
    ],
    ids=["not-json", "no-listing", "bad-base64", "version", "algorithm", "not-object"],
)
def test_malformed_signature_file_is_rejected(
    signed: Path, keys: tuple[bytes, bytes], corrupt: Callable[[dict[str, Any]], str]
) -> None:
    path = signed / SIGNATURE_FILE
    path.write_text(corrupt(json.loads(path.read_text())))

    assert rejection(signed, [keys[1]]).reason == "malformed"


def test_listing_edited_inside_the_signature_file_fails_the_signature(
    signed: Path, keys: tuple[bytes, bytes]
) -> None:
    # An attacker who edits a file and rewrites the listing (and its digest) to match.
    (signed / "main.py").write_text("import os; os.system('id')\n")
    path = signed / SIGNATURE_FILE
    document = json.loads(path.read_text())
    listing = canonical_listing(signed)
    document.update(listing=listing.decode(), listing_sha256=hashlib.sha256(listing).hexdigest())
    path.write_text(json.dumps(document))

    assert rejection(signed, [keys[1]]).reason == "bad-signature"


def test_signature_by_another_key_claiming_a_trusted_key_id_is_rejected(
    signed: Path, keys: tuple[bytes, bytes]
) -> None:
    path = signed / SIGNATURE_FILE
    document = json.loads(path.read_text())
    sign_plugin(signed, generate_keypair()[0])
    forged = json.loads(path.read_text())
    path.write_text(json.dumps({**forged, "key_id": document["key_id"]}))

    assert rejection(signed, [keys[1]]).reason == "bad-signature"


def test_zeroed_signature_is_rejected(signed: Path, keys: tuple[bytes, bytes]) -> None:
    path = signed / SIGNATURE_FILE
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "signature": base64.b64encode(bytes(64)).decode()}))

    assert rejection(signed, [keys[1]]).reason == "bad-signature"


def test_symlink_in_the_plugin_directory_is_rejected_by_name(plugin: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    (plugin / "pkg" / "link.txt").symlink_to(tmp_path / "secret.txt")

    with pytest.raises(PluginError, match="symbolic link") as caught:
        canonical_listing(plugin)
    assert caught.value.exit_code == ExitCode.PLUGIN
    assert caught.value.location == str(plugin / "pkg" / "link.txt")


def test_symlink_added_after_signing_is_rejected(signed: Path, keys: tuple[bytes, bytes]) -> None:
    (signed / "etc").symlink_to("/etc")

    assert rejection(signed, [keys[1]]).reason == "unsafe-entry"


def test_special_file_in_the_plugin_directory_is_rejected(plugin: Path) -> None:
    os.mkfifo(plugin / "pipe")

    with pytest.raises(PluginError, match="not a regular file"):
        canonical_listing(plugin)


@pytest.mark.parametrize(
    ("name", "why"),
    [("evil\tname.py", "control"), ("caf\u0065\u0301.py", "NFC"), ("a\u202eyp.txt", "format")],
    ids=["tab", "decomposed-unicode", "bidi-override"],
)
def test_unsafe_file_name_is_rejected(plugin: Path, name: str, why: str) -> None:
    (plugin / name).write_text("x")

    with pytest.raises(PluginError, match=why):
        canonical_listing(plugin)


def test_staged_copy_equals_the_source_and_is_read_only(
    signed: Path, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    staged = stage_verified_copy(signed, tmp_path / "stage" / "demo", [keys[1]])

    assert canonical_listing(staged) == canonical_listing(signed)
    assert verify_plugin(staged, [keys[1]]).key_id == key_id(keys[1])
    modes = {
        path.relative_to(staged).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [staged, *staged.rglob("*")]
    }
    assert modes == {
        ".": 0o555,
        "bcce.plugin.json": 0o444,
        "main.py": 0o444,
        "pkg": 0o555,
        "pkg/helper.py": 0o444,
        SIGNATURE_FILE: 0o444,
    }


def test_staging_a_tampered_plugin_fails_and_leaves_no_copy(
    signed: Path, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    (signed / "main.py").write_text("tampered\n")

    with pytest.raises(SignatureError):
        stage_verified_copy(signed, tmp_path / "stage", [keys[1]])
    assert not (tmp_path / "stage").exists()


def test_staging_refuses_an_existing_destination(
    signed: Path, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    (tmp_path / "stage").mkdir()

    with pytest.raises(PluginError, match="already exists"):
        stage_verified_copy(signed, tmp_path / "stage", [keys[1]])


def test_written_private_key_is_mode_0600_and_signs_for_its_public_key(
    plugin: Path, tmp_path: Path
) -> None:
    private_path, public_path = write_keypair(tmp_path / "keys", "release")

    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    sign_plugin(plugin, private_path.read_bytes())
    assert verify_plugin(plugin, [public_path.read_bytes()]).key_id == key_id(
        public_path.read_bytes()
    )


def test_write_keypair_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    private_path, _ = write_keypair(tmp_path, "release")
    before = private_path.read_bytes()

    with pytest.raises(PluginError, match="refusing to overwrite"):
        write_keypair(tmp_path, "release")
    assert private_path.read_bytes() == before


def test_signing_with_a_non_ed25519_key_is_refused(plugin: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    with pytest.raises(PluginError, match="not Ed25519"):
        sign_plugin(plugin, pem)
    assert not (plugin / SIGNATURE_FILE).exists()


def test_bytecode_caches_are_neither_signed_nor_staged(tmp_path: Path) -> None:
    from bcce.plugin.signing import (
        generate_keypair,
        sign_plugin,
        stage_verified_copy,
        verify_plugin,
    )

    plugin = tmp_path / "p"
    (plugin / "pkg").mkdir(parents=True)
    (plugin / "bcce.plugin.json").write_text("{}", "utf-8")
    (plugin / "pkg" / "mod.py").write_text("X = 1\n", "utf-8")
    private, public = generate_keypair()
    sign_plugin(plugin, private)
    cache = plugin / "pkg" / "__pycache__"
    cache.mkdir()
    (cache / "mod.cpython-311.pyc").write_bytes(b"not what the source says")
    verify_plugin(plugin, [public])  # a test run's bytecode does not break the signature
    staged = stage_verified_copy(plugin, tmp_path / "staged", [public])
    assert not (staged / "pkg" / "__pycache__").exists()
