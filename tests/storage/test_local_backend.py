"""The local backend: files under a root directory; and run archives through the plain
interface, which plugin backends get too."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from bcce.errors import StorageError
from bcce.storage.archive import MANIFEST, RunManifest
from bcce.storage.backend import COPY_CHUNK, LocalStorageBackend


@pytest.fixture
def backend(tmp_path: Path) -> LocalStorageBackend:
    return LocalStorageBackend(tmp_path / "store")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run's directory, as the runner leaves it."""
    directory = tmp_path / "runs" / "r1"
    (directory / "build").mkdir(parents=True)
    (directory / "run.json").write_text(json.dumps({"run_id": "r1", "status": "failed"}))
    (directory / "journal.jsonl").write_text("")
    (directory / "build" / "output.txt").write_text("built\n")
    (directory / ".lock").write_text("")
    (directory / "workspaces" / "agent").mkdir(parents=True)
    (directory / "workspaces" / "agent" / "copy.py").write_text("print()\n")
    return directory


def test_store_then_retrieve_gives_the_bytes_back(backend: LocalStorageBackend) -> None:
    backend.store("r1/build/output.txt", b"built\n")

    assert backend.retrieve("r1/build/output.txt") == b"built\n"
    assert (backend.root / "r1" / "build" / "output.txt").read_bytes() == b"built\n"


def test_store_file_copies_the_file(backend: LocalStorageBackend, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * 300_000)

    backend.store_file("r1/s/big.bin", source)

    assert backend.retrieve("r1/s/big.bin") == source.read_bytes()


def test_retrieve_of_a_missing_key_is_a_storage_error(backend: LocalStorageBackend) -> None:
    with pytest.raises(StorageError, match="no artifact r1/missing"):
        backend.retrieve("r1/missing")


def test_retrieve_into_streams_a_file_larger_than_a_copy_chunk(
    backend: LocalStorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(COPY_CHUNK * 2 + 5)
    backend.store("r1/build/bundle.bin", data)
    # Never whole in memory: the path that reads everything at once is not taken.
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read whole: {self}"))

    with (tmp_path / "copy.bin").open("wb") as handle:
        backend.retrieve_into("r1/build/bundle.bin", handle)

    monkeypatch.undo()
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_retrieve_into_of_a_missing_key_or_a_folder_is_a_storage_error(
    backend: LocalStorageBackend,
) -> None:
    backend.store("r1/build/output.txt", b"built")
    sink = io.BytesIO()

    with pytest.raises(StorageError, match=r"no artifact r1/build/missing\.txt"):
        backend.retrieve_into("r1/build/missing.txt", sink)
    with pytest.raises(StorageError, match="r1/build is a folder, not an artifact"):
        backend.retrieve_into("r1/build", sink)

    assert sink.getvalue() == b""


def test_keys_leaving_the_root_are_refused(backend: LocalStorageBackend) -> None:
    for key in ("../escape", "/etc/passwd", "r1/../../x", ""):
        with pytest.raises(StorageError, match="invalid storage key"):
            backend.store(key, b"x")


def test_delete_removes_a_key_or_everything_under_it(backend: LocalStorageBackend) -> None:
    backend.store("r1/a/one", b"1")
    backend.store("r1/b/two", b"2")
    backend.store("r2/three", b"3")

    backend.delete("r1/a/one")
    assert backend.list() == ["r1/b/two", "r2/three"]
    backend.delete("r1")
    assert backend.list() == ["r2/three"]
    backend.delete("r1")  # gone already: nothing to do


def test_list_gives_keys_under_a_prefix_without_hidden_entries(
    backend: LocalStorageBackend,
) -> None:
    backend.store("r1/build/output.txt", b"x")
    backend.store("r10/build/output.txt", b"y")
    (backend.root / "r1" / ".lock").write_text("")
    (backend.root / ".archived" / "r9").mkdir(parents=True)
    (backend.root / ".archived" / "r9" / "run.json").write_text("{}")

    assert backend.list("r1") == ["r1/build/output.txt"]
    assert backend.list() == ["r1/build/output.txt", "r10/build/output.txt"]
    assert backend.list("r1/build/output.txt") == ["r1/build/output.txt"]
    assert backend.list_sizes("r10") == {"r10/build/output.txt": 1}
    assert backend.folders() == ["r1", "r10"]
    assert backend.list("nothing") == []


def test_exists_tells_stored_keys_from_missing_ones(backend: LocalStorageBackend) -> None:
    backend.store("r1/x", b"x")

    assert backend.exists("r1/x") and backend.exists("r1")
    assert not backend.exists("r1/y")


def test_archive_run_of_the_run_directory_itself_is_where_it_is(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "runs")

    assert backend.archive_run("r1") == str(tmp_path / "runs" / "r1")


def test_archive_copies_the_run_and_writes_its_manifest(
    backend: LocalStorageBackend, run_dir: Path
) -> None:
    result = backend.archive(run_dir, "r1")

    assert result.location == str(backend.root / "r1")
    assert result.uploaded == 3
    manifest = RunManifest.from_json((backend.root / "r1" / MANIFEST).read_bytes(), where="t")
    assert manifest.status == "failed"
    assert [(f.path, f.size) for f in manifest.files] == [
        ("build/output.txt", 6),
        ("journal.jsonl", 0),
        ("run.json", 36),
    ]
    digest = hashlib.sha256(b"built\n").hexdigest()
    assert manifest.files[0].sha256 == digest
    assert not (backend.root / "r1" / "workspaces").exists()
    assert not (backend.root / "r1" / ".lock").exists()


def test_archiving_again_copies_only_what_changed(
    backend: LocalStorageBackend, run_dir: Path
) -> None:
    backend.archive(run_dir, "r1")
    (run_dir / "build" / "output.txt").write_text("built again\n")

    result = backend.archive(run_dir, "r1")

    assert result.uploaded == 1
    assert backend.retrieve("r1/build/output.txt") == b"built again\n"


def test_archive_skips_files_the_backend_holds_already(
    backend: LocalStorageBackend, run_dir: Path
) -> None:
    backend.store_file("r1/build/output.txt", run_dir / "build" / "output.txt")  # as uploaded

    result = backend.archive(run_dir, "r1")

    assert result.uploaded == 2 and result.files == 3


def test_an_archive_of_the_storage_root_itself_is_refused(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "runs")
    (tmp_path / "runs" / "r1").mkdir(parents=True)

    with pytest.raises(StorageError, match="kept in the storage root itself"):
        backend.archive(tmp_path / "runs" / "r1", "r1")


def test_fetch_run_reads_the_archive_back_verified(
    backend: LocalStorageBackend, run_dir: Path, tmp_path: Path
) -> None:
    backend.archive(run_dir, "r1")
    into = tmp_path / "copy" / "r1"

    manifest = backend.fetch_run("r1", into)

    assert {f.path for f in manifest.files} == {"build/output.txt", "journal.jsonl", "run.json"}
    assert (into / "build" / "output.txt").read_text() == "built\n"
    assert (into / MANIFEST).is_file()


def test_fetch_run_keeps_the_previous_copy_when_a_file_was_tampered_with(
    backend: LocalStorageBackend, run_dir: Path, tmp_path: Path
) -> None:
    backend.archive(run_dir, "r1")
    into = tmp_path / "copy" / "r1"
    backend.fetch_run("r1", into)
    backend.store("r1/build/output.txt", b"forged\n")

    with pytest.raises(StorageError, match=r"build/output\.txt of run r1 does not match"):
        backend.fetch_run("r1", into)

    assert (into / "build" / "output.txt").read_text() == "built\n"
    assert sorted(p.name for p in into.parent.iterdir()) == ["r1"]


def test_a_manifest_pointing_outside_the_run_is_refused(
    backend: LocalStorageBackend, run_dir: Path, tmp_path: Path
) -> None:
    backend.archive(run_dir, "r1")
    path = backend.root / "r1" / MANIFEST
    data = json.loads(path.read_text())
    data["files"][0]["path"] = "../../outside.txt"
    path.write_text(json.dumps(data))

    with pytest.raises(StorageError, match=r"invalid path .* in a run archive"):
        backend.fetch_run("r1", tmp_path / "copy" / "r1")

    assert not (tmp_path / "outside.txt").exists()
