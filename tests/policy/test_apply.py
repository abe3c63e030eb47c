"""Applying change sets all or nothing: series of patches, policy rejections re-checked on the
outcome, git and non-git targets, and the target restored exactly when anything fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bcce.errors import ExitCode, PolicyDenied, WorkflowError
from bcce.policy.apply import (
    ApplyRejected,
    PatchApplier,
    PatchDoesNotApply,
    apply_patches,
)
from bcce.policy.audit import AuditPolicy, audit_changes
from bcce.policy.isolation import Workspace
from bcce.policy.paths import PathScope

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
Tree = dict[str, tuple[str, int, bytes]]


def git(cwd: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout


def snapshot(root: Path) -> Tree:
    """Every entry under ``root`` except ``.git``: kind, permission bits and content."""
    tree: Tree = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name != ".git"]
        for name in (*dirnames, *filenames):
            if name == ".git":
                continue
            path = Path(directory) / name
            info = path.lstat()
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                tree[key] = ("link", 0, os.readlink(path).encode())
            elif path.is_dir():
                tree[key] = ("dir", info.st_mode & 0o7777, b"")
            else:
                tree[key] = ("file", info.st_mode & 0o7777, path.read_bytes())
    return tree


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def diff(
    tmp_path: Path, before: dict[str, str | bytes], after: dict[str, str | bytes | None]
) -> str:
    """A ``git diff --binary`` patch taking files from ``before`` to ``after`` (None deletes)."""
    work = tmp_path / f"patch-{len(list(tmp_path.glob('patch-*')))}"
    work.mkdir()
    git(work, "init", "-q")
    write(work, before)
    git(work, "add", "-A")
    git(work, "commit", "-q", "--allow-empty", "-m", "before")
    for name, content in after.items():
        if content is None:
            (work / name).unlink()
        else:
            write(work, {name: content})
    git(work, "add", "-A")
    return git(work, "diff", "--cached", "--binary", "--no-renames")


BEFORE: dict[str, str | bytes] = {
    "src/app.py": "print('v1')\n",
    "src/gone/old.py": "old\n",
    "docs/guide.md": "guide\n",
}


@pytest.fixture
def target(tmp_path: Path) -> Path:
    root = tmp_path / "target"
    root.mkdir()
    write(root, BEFORE)
    return root


def scope(target: Path, allowed: tuple[str, ...] = ("**",)) -> PathScope:
    return PathScope(target, allowed)


def test_patch_applies_to_a_plain_directory(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, BEFORE, {"src/app.py": "print('v2')\n", "src/new.py": "new\n"})
    result = apply_patches(target, [patch], scope(target))
    assert (target / "src" / "app.py").read_text() == "print('v2')\n"
    assert (target / "src" / "new.py").read_text() == "new\n"
    assert (result.created, result.modified) == (("src/new.py",), ("src/app.py",))


def test_deletion_removes_the_file_and_its_emptied_directory(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, BEFORE, {"src/gone/old.py": None})
    result = apply_patches(target, [patch], scope(target))
    assert not (target / "src" / "gone").exists()
    assert result.deleted == ("src/gone/old.py",)


def test_patch_applies_to_a_git_repository_without_staging(target: Path, tmp_path: Path) -> None:
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "initial")
    patch = diff(tmp_path, BEFORE, {"src/app.py": "print('v2')\n"})
    apply_patches(target, [patch], scope(target))
    assert git(target, "diff", "--cached", "--name-only") == ""
    assert git(target, "diff", "--name-only") == "src/app.py\n"


def test_patch_applies_to_a_subdirectory_of_a_repository(tmp_path: Path) -> None:
    repo = tmp_path / "mono"
    write(repo, {"svc/app.py": "app\n", "app.py": "top\n"})
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    patch = diff(tmp_path, {"app.py": "app\n"}, {"app.py": "changed\n"})
    apply_patches(repo / "svc", [patch], scope(repo / "svc"))
    assert (repo / "svc" / "app.py").read_text() == "changed\n"
    assert (repo / "app.py").read_text() == "top\n"


def test_the_targets_git_config_plays_no_part(target: Path, tmp_path: Path) -> None:
    git(target, "init", "-q")
    (target / ".git" / "config").write_text("[apply]\n\twhitespace = error\n")
    patch = diff(tmp_path, BEFORE, {"src/app.py": "print('v2')   \n"})
    apply_patches(target, [patch], scope(target))
    assert (target / "src" / "app.py").read_text() == "print('v2')   \n"


def test_patches_apply_as_a_series(target: Path, tmp_path: Path) -> None:
    first = diff(tmp_path, BEFORE, {"src/new.py": "one\n"})
    second = diff(tmp_path, {**BEFORE, "src/new.py": "one\n"}, {"src/new.py": "two\n"})
    result = apply_patches(target, [first, second], scope(target))
    assert (target / "src" / "new.py").read_text() == "two\n"
    assert result.created == ("src/new.py",)


def test_patch_files_and_bytes_are_accepted(target: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.patch"
    first.write_text(diff(tmp_path, BEFORE, {"src/a.py": "a\n"}))
    second = diff(tmp_path, BEFORE, {"src/b.py": "b\n"}).encode()
    apply_patches(target, [first, second], scope(target))
    assert (target / "src" / "a.py").exists()
    assert (target / "src" / "b.py").exists()


def test_binary_patch_applies(target: Path, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 4
    apply_patches(target, [diff(tmp_path, BEFORE, {"src/blob.bin": blob})], scope(target))
    assert (target / "src" / "blob.bin").read_bytes() == blob


def test_no_patches_apply_nothing(target: Path) -> None:
    before = snapshot(target)
    result = apply_patches(target, ["", b"\n"], scope(target))
    assert not result.applied
    assert snapshot(target) == before


def test_second_patch_conflicting_leaves_the_target_byte_for_byte_unchanged(
    target: Path, tmp_path: Path
) -> None:
    first = diff(
        tmp_path,
        BEFORE,
        {"src/app.py": "print('v2')\n", "src/new/mod.py": "new\n", "src/gone/old.py": None},
    )
    conflicting = diff(tmp_path, {"docs/guide.md": "something else\n"}, {"docs/guide.md": "x\n"})
    before = snapshot(target)
    with pytest.raises(PatchDoesNotApply) as caught:
        apply_patches(target, [first, conflicting], scope(target))
    assert caught.value.exit_code == ExitCode.INVALID
    assert "docs/guide.md" in caught.value.detail
    assert snapshot(target) == before


def test_patch_for_a_file_changed_since_is_refused(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, BEFORE, {"src/app.py": "print('v2')\n"})
    (target / "src" / "app.py").write_text("edited by the user\n")
    with pytest.raises(PatchDoesNotApply):
        apply_patches(target, [patch], scope(target))
    assert (target / "src" / "app.py").read_text() == "edited by the user\n"


def test_new_file_under_an_existing_file_is_refused(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, {}, {"docs/guide.md/inner.txt": "x\n"})
    before = snapshot(target)
    with pytest.raises(PatchDoesNotApply, match="not a directory"):
        apply_patches(target, [patch], scope(target))
    assert snapshot(target) == before


def test_malformed_patch_is_refused(target: Path) -> None:
    with pytest.raises(PatchDoesNotApply):
        apply_patches(target, ["diff --git a/x b/x\n@@ nonsense\n"], scope(target))


def test_symlink_addition_is_rejected_with_exit_5(target: Path, tmp_path: Path) -> None:
    work = tmp_path / "symlink-patch"
    work.mkdir()
    git(work, "init", "-q")
    (work / "escape").symlink_to("/etc/passwd")
    git(work, "add", "-A")
    patch = git(work, "diff", "--cached")
    before = snapshot(target)
    with pytest.raises(ApplyRejected) as caught:
        apply_patches(target, [patch], scope(target))
    assert caught.value.exit_code == ExitCode.POLICY_DENIED
    assert [v.rule for v in caught.value.violations] == ["audit.symlink"]
    assert snapshot(target) == before


def test_mode_change_to_executable_is_rejected(target: Path, tmp_path: Path) -> None:
    patch = "diff --git a/src/app.py b/src/app.py\nold mode 100644\nnew mode 100755\n"
    before = snapshot(target)
    with pytest.raises(ApplyRejected) as caught:
        apply_patches(target, [patch], scope(target))
    assert [v.rule for v in caught.value.violations] == ["audit.mode"]
    assert snapshot(target) == before


def test_new_executable_file_is_rejected(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, BEFORE, {"src/tool.sh": "#!/bin/sh\n"}).replace(
        "new file mode 100644", "new file mode 100755"
    )
    with pytest.raises(ApplyRejected, match=r"audit\.mode"):
        apply_patches(target, [patch], scope(target))
    assert not (target / "src" / "tool.sh").exists()


def test_path_out_of_scope_is_rejected(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, BEFORE, {"docs/guide.md": "rewritten\n"})
    with pytest.raises(ApplyRejected) as caught:
        apply_patches(target, [patch], scope(target, ("src/**",)))
    assert [(v.rule, v.path) for v in caught.value.violations] == [("audit.path", "docs/guide.md")]
    assert (target / "docs" / "guide.md").read_text() == "guide\n"


def test_path_escaping_the_target_is_rejected(target: Path, tmp_path: Path) -> None:
    patch = (
        "diff --git a/../escape.txt b/../escape.txt\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/../escape.txt\n@@ -0,0 +1 @@\n+x\n"
    )
    with pytest.raises(PolicyDenied):
        apply_patches(target, [patch], scope(target))
    assert not (tmp_path / "escape.txt").exists()


def test_write_through_a_symlinked_directory_is_refused(target: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (target / "out").symlink_to(tmp_path / "elsewhere")
    patch = diff(tmp_path, {}, {"out/x.txt": "x\n"})
    with pytest.raises(PolicyDenied):
        apply_patches(target, [patch], scope(target))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_git_directory_is_protected(target: Path, tmp_path: Path) -> None:
    git(target, "init", "-q")
    patch = (
        "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+#!/bin/sh\n"
    )
    with pytest.raises(ApplyRejected, match=r"path\.protected"):
        apply_patches(target, [patch], scope(target))


def test_more_files_than_max_files_is_rejected(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, BEFORE, {"src/a.py": "a", "src/b.py": "b", "src/c.py": "c"})
    with pytest.raises(ApplyRejected, match="max_files=2"):
        apply_patches(target, [patch], scope(target), max_files=2)


def test_scope_must_be_for_the_target(target: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope"):
        apply_patches(target, [], PathScope(tmp_path, ["**"]))


class FailingApplier(PatchApplier):
    """Fails on the n-th file it installs, as a full disk would."""

    def __init__(self, target: Path, fail_at: int) -> None:
        super().__init__(target, scope(target))
        self.remaining = fail_at

    def _install(self, source: Path, destination: Path) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            raise OSError(28, "No space left on device")
        super()._install(source, destination)


def test_failure_midway_restores_the_target_exactly(target: Path, tmp_path: Path) -> None:
    os.utime(target / "src" / "app.py", ns=(1_000_000_000, 1_000_000_000))
    patch = diff(
        tmp_path,
        BEFORE,
        {
            "src/app.py": "print('v2')\n",
            "src/new/deep/mod.py": "new\n",
            "src/gone/old.py": None,
            "zz_last.txt": "last\n",
        },
    )
    before = snapshot(target)
    mtime = (target / "src" / "app.py").stat().st_mtime_ns
    with pytest.raises(WorkflowError, match="undone; the workspace is unchanged"):
        FailingApplier(target, fail_at=3).apply([patch])
    assert snapshot(target) == before
    assert (target / "src" / "app.py").stat().st_mtime_ns == mtime


def test_failure_midway_leaves_no_temporary_files(target: Path, tmp_path: Path) -> None:
    patch = diff(tmp_path, BEFORE, {"src/app.py": "v2\n", "src/b.py": "b\n"})
    with pytest.raises(WorkflowError):
        FailingApplier(target, fail_at=2).apply([patch])
    assert not list(target.rglob(".bcce-apply-*"))


class MeddlingApplier(PatchApplier):
    """Someone edits the second file while the first is being installed."""

    def __init__(self, target: Path) -> None:
        super().__init__(target, scope(target))
        self.meddled = False

    def _install(self, source: Path, destination: Path) -> None:
        if not self.meddled:
            self.meddled = True
            (self.target / "src" / "b.py").write_text("the user's edit\n")
        super()._install(source, destination)


def test_file_changed_during_the_install_undoes_the_apply(target: Path, tmp_path: Path) -> None:
    write(target, {"src/b.py": "b\n"})
    patch = diff(tmp_path, {**BEFORE, "src/b.py": "b\n"}, {"src/a.py": "a\n", "src/b.py": "B\n"})
    with pytest.raises(PatchDoesNotApply, match="changed in the workspace"):
        MeddlingApplier(target).apply([patch])
    assert not (target / "src" / "a.py").exists()
    assert (target / "src" / "b.py").read_text() == "the user's edit\n"


def test_audited_change_set_applies_back_to_the_source(tmp_path: Path) -> None:
    source = tmp_path / "project"
    write(source, {"src/app.py": "print('v1')\n", "src/old.py": "old\n"})
    git(source, "init", "-q")
    git(source, "add", "-A")
    git(source, "commit", "-q", "-m", "initial")
    (source / "src" / "wip.py").write_text("uncommitted\n")
    with Workspace().isolate(source, tmp_path / "runs", "agent") as isolated:
        (isolated.path / "src" / "app.py").write_text("print('v2')\n")
        (isolated.path / "src" / "old.py").unlink()
        (isolated.path / "src" / "added.py").write_text("added\n")
        audit = audit_changes(isolated, AuditPolicy(allowed_paths=("src/**",)), edit_count=3)
        expected = snapshot(isolated.path)
    assert audit.ok, audit.reasons
    apply_patches(source, [audit.patch], scope(source, ("src/**",)))
    assert snapshot(source) == expected
    shutil.rmtree(tmp_path / "runs")
