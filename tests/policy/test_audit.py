"""The post-run audit: the change set computed by git in the copy, and every violation kind."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcce.policy.audit import (
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_NONE,
    MODE_SYMLINK,
    AuditPolicy,
    OutsideWatch,
    audit_changes,
    mode_violations,
)
from bcce.policy.isolation import IsolatedWorkspace, Workspace
from bcce.settings.model import StepPolicySettings

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
SRC_ONLY = AuditPolicy(allowed_paths=("src/**",))


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


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "src" / "app.py").write_text("print('v1')\n")
    (root / "src" / "run.sh").write_text("#!/bin/sh\n")
    (root / "docs" / "guide.md").write_text("guide\n")
    (root / "src" / "alias").symlink_to("app.py")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture
def copy(source: Path, tmp_path: Path) -> Iterator[IsolatedWorkspace]:
    with Workspace().isolate(source, tmp_path / "runs" / "r1", "agent") as isolated:
        yield isolated


def rules(result: object) -> set[str]:
    return {v.rule for v in result.violations}  # type: ignore[attr-defined]


def test_untouched_copy_has_an_empty_change_set(copy: IsolatedWorkspace) -> None:
    result = audit_changes(copy, SRC_ONLY, edit_count=0)
    assert (result.ok, result.files, result.patch) == (True, (), b"")


def test_allowed_edit_passes_and_is_in_the_patch(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "app.py").write_text("print('v2')\n")
    result = audit_changes(copy, SRC_ONLY, edit_count=1)
    assert result.ok, result.reasons
    assert b"+print('v2')" in result.patch
    (changed,) = result.files
    assert (changed.path, changed.status, changed.added, changed.deleted) == (
        "src/app.py",
        "M",
        1,
        1,
    )


def test_new_and_deleted_files_are_in_the_change_set(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "new.py").write_text("new\n")
    (copy.path / "src" / "app.py").unlink()
    result = audit_changes(copy, SRC_ONLY, edit_count=2)
    assert {(f.path, f.status) for f in result.files} == {("src/new.py", "A"), ("src/app.py", "D")}


def test_binary_changes_are_in_the_patch(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "blob.bin").write_bytes(bytes(range(256)))
    result = audit_changes(copy, SRC_ONLY, edit_count=1)
    assert b"GIT binary patch" in result.patch
    assert result.files[0].added is None


def test_write_out_of_scope_is_an_audit_path_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "docs" / "guide.md").write_text("rewritten\n")
    result = audit_changes(copy, SRC_ONLY, edit_count=1)
    assert not result.ok
    assert rules(result) == {"audit.path"}
    assert result.violations[0].path == "docs/guide.md"


def test_deleting_a_file_out_of_scope_is_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "docs" / "guide.md").unlink()
    assert rules(audit_changes(copy, SRC_ONLY, edit_count=1)) == {"audit.path"}


def test_writing_a_protected_path_is_a_violation_even_when_allowed(
    copy: IsolatedWorkspace,
) -> None:
    (copy.path / ".claude").mkdir()
    (copy.path / ".claude" / "settings.json").write_text("{}")
    result = audit_changes(copy, AuditPolicy(allowed_paths=("**",)), edit_count=1)
    assert "path.protected" in result.violations[0].reason


def test_denied_pattern_is_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "secrets.env").write_text("KEY=1\n")
    policy = AuditPolicy(allowed_paths=("src/**",), denied_paths=("**/*.env",))
    assert rules(audit_changes(copy, policy, edit_count=1)) == {"audit.path"}


def test_added_symlink_is_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "link.py").symlink_to("app.py")
    result = audit_changes(copy, SRC_ONLY, edit_count=0)
    assert rules(result) == {"audit.symlink"}


def test_symlink_pointing_out_is_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "passwd").symlink_to("/etc/passwd")
    assert "audit.symlink" in rules(audit_changes(copy, SRC_ONLY, edit_count=0))


def test_retargeted_symlink_is_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "alias").unlink()
    (copy.path / "src" / "alias").symlink_to("run.sh")
    assert rules(audit_changes(copy, SRC_ONLY, edit_count=0)) == {"audit.symlink"}


def test_symlink_in_an_ignored_path_is_still_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / ".gitignore").write_text("build/\n")
    (copy.path / "build").mkdir()
    (copy.path / "build" / "escape").symlink_to("/etc")
    policy = AuditPolicy(allowed_paths=("**",))
    result = audit_changes(copy, policy, edit_count=1)
    assert [(v.rule, v.path) for v in result.violations] == [("audit.symlink", "build/escape")]


def test_deleting_a_symlink_is_allowed(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "alias").unlink()
    assert audit_changes(copy, SRC_ONLY, edit_count=1).ok


def test_making_a_file_executable_is_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "run.sh").chmod(0o755)
    result = audit_changes(copy, SRC_ONLY, edit_count=0)
    assert rules(result) == {"audit.mode"}


def test_new_executable_file_is_a_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "tool.sh").write_text("#!/bin/sh\n")
    (copy.path / "src" / "tool.sh").chmod(0o755)
    assert rules(audit_changes(copy, SRC_ONLY, edit_count=1)) == {"audit.mode"}


def test_hard_link_to_a_file_outside_is_a_violation(
    copy: IsolatedWorkspace, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    os.link(outside, copy.path / "src" / "copy.txt")
    assert "audit.hardlink" in rules(audit_changes(copy, SRC_ONLY, edit_count=0))


def test_fifo_in_the_copy_is_a_violation(copy: IsolatedWorkspace) -> None:
    os.mkfifo(copy.path / "src" / "pipe")
    assert rules(audit_changes(copy, SRC_ONLY, edit_count=0)) == {"audit.device"}


def test_nested_repository_is_a_violation_and_other_changes_still_listed(
    copy: IsolatedWorkspace,
) -> None:
    nested = copy.path / "src" / "vendored"
    nested.mkdir()
    git(nested, "init", "-q")
    (copy.path / "src" / "app.py").write_text("print('v2')\n")
    result = audit_changes(copy, SRC_ONLY, edit_count=1)
    assert rules(result) == {"audit.submodule"}
    assert [f.path for f in result.files] == ["src/app.py"]


def test_edits_beyond_max_edits_are_a_budget_violation(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "app.py").write_text("print('v2')\n")
    policy = AuditPolicy(allowed_paths=("src/**",), max_edits=2)
    assert rules(audit_changes(copy, policy, edit_count=3)) == {"audit.budget"}


def test_edits_within_max_edits_pass(copy: IsolatedWorkspace) -> None:
    (copy.path / "src" / "app.py").write_text("print('v2')\n")
    policy = AuditPolicy(allowed_paths=("src/**",), max_edits=2)
    assert audit_changes(copy, policy, edit_count=2).ok


def test_more_changed_files_than_max_files_is_a_budget_violation(
    copy: IsolatedWorkspace,
) -> None:
    for name in ("a", "b", "c"):
        (copy.path / "src" / f"{name}.py").write_text(name)
    policy = AuditPolicy(allowed_paths=("src/**",), max_files=2)
    result = audit_changes(copy, policy, edit_count=0)
    assert rules(result) == {"audit.budget"}
    assert "max_files=2" in result.violations[0].reason


def test_skip_worktree_bit_cannot_hide_a_change(source: Path, copy: IsolatedWorkspace) -> None:
    git(copy.root, "update-index", "--skip-worktree", "docs/guide.md")
    (copy.path / "docs" / "guide.md").write_text("hidden?\n")
    assert rules(audit_changes(copy, SRC_ONLY, edit_count=0)) == {"audit.path"}


def test_agent_commit_in_the_copy_does_not_hide_its_changes(copy: IsolatedWorkspace) -> None:
    (copy.path / "docs" / "guide.md").write_text("committed\n")
    git(copy.root, "commit", "-q", "-am", "sneaky")
    assert rules(audit_changes(copy, SRC_ONLY, edit_count=0)) == {"audit.path"}


def test_audit_does_not_trust_the_copys_git_file(copy: IsolatedWorkspace, tmp_path: Path) -> None:
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    git(decoy, "init", "-q")
    (copy.root / ".git").write_text(f"gitdir: {decoy / '.git'}\n")
    (copy.path / "docs" / "guide.md").write_text("rewritten\n")
    assert rules(audit_changes(copy, SRC_ONLY, edit_count=1)) == {"audit.path"}


def test_write_in_a_watched_path_outside_the_copy_is_a_violation(
    source: Path, copy: IsolatedWorkspace
) -> None:
    watch = OutsideWatch.start([source])
    (source / "src" / "app.py").write_text("changed in the user's tree\n")
    result = audit_changes(copy, SRC_ONLY, edit_count=0, watch=watch)
    assert [(v.rule, v.path) for v in result.violations] == [
        ("audit.outside", str(source / "src" / "app.py"))
    ]


def test_outside_watch_sees_new_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "old").write_text("old")
    watch = OutsideWatch.start([tmp_path / "tree"])
    (tmp_path / "tree" / "old").unlink()
    (tmp_path / "tree" / "new").write_text("new")
    assert watch.changes() == [str(tmp_path / "tree" / "new"), str(tmp_path / "tree" / "old")]


def test_outside_watch_sees_a_content_change_with_the_mtime_put_back(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("aaaa")
    info = target.stat()
    watch = OutsideWatch.start([target])
    target.write_text("bbbb")
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert watch.changes() == [str(target)]


def test_outside_watch_ignores_excluded_paths_and_run_directories(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "runs").mkdir(parents=True)
    (tree / ".bcce_runs").mkdir()
    watch = OutsideWatch.start([tree], exclude=[tree / "runs"])
    (tree / "runs" / "state.json").write_text("{}")
    (tree / ".bcce_runs" / "journal.jsonl").write_text("{}")
    assert watch.changes() == []


def test_outside_watch_reports_when_it_was_truncated(tmp_path: Path) -> None:
    for index in range(5):
        (tmp_path / f"f{index}").write_text("x")
    assert OutsideWatch.start([tmp_path], max_entries=3).truncated


def test_change_outside_a_subdirectory_workspace_is_a_violation(tmp_path: Path) -> None:
    repo = tmp_path / "mono"
    (repo / "svc").mkdir(parents=True)
    (repo / "lib").mkdir()
    (repo / "svc" / "app.py").write_text("app\n")
    (repo / "lib" / "util.py").write_text("util\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    with Workspace().isolate(repo / "svc", tmp_path / "runs", "agent") as isolated:
        (isolated.root / "lib" / "util.py").write_text("changed\n")
        (isolated.path / "app.py").write_text("changed\n")
        result = audit_changes(isolated, AuditPolicy(), edit_count=2)
    assert [(v.rule, v.path) for v in result.violations] == [("audit.path", "lib/util.py")]
    assert b"a/app.py" in result.patch
    assert b"svc/" not in result.patch


def test_plain_copy_is_audited_like_a_worktree(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("a\n")
    with Workspace().isolate(plain, tmp_path / "runs", "agent") as isolated:
        (isolated.path / "notes.txt").write_text("b\n")
        result = audit_changes(isolated, AuditPolicy(allowed_paths=("*.txt",)), edit_count=1)
    assert result.ok
    assert [f.path for f in result.files] == ["notes.txt"]


def test_audit_fails_closed_when_the_change_set_cannot_be_computed(
    copy: IsolatedWorkspace,
) -> None:
    broken = dataclasses.replace(copy, baseline="0" * 40)
    result = audit_changes(broken, SRC_ONLY, edit_count=0)
    assert not result.ok
    assert rules(result) == {"audit.error"}


def test_policy_is_read_from_step_policy_settings() -> None:
    settings = StepPolicySettings(allowed_paths=["src/**"], max_edits=3, max_files=4)
    policy = AuditPolicy.from_mapping(settings)
    assert (policy.allowed_paths, policy.max_edits, policy.max_files) == (("src/**",), 3, 4)


def test_policy_mapping_is_accepted_by_audit_changes(copy: IsolatedWorkspace) -> None:
    (copy.path / "docs" / "guide.md").write_text("x\n")
    result = audit_changes(copy, {"allowed_paths": ["src/**"], "max_edits": 5}, edit_count=1)
    assert rules(result) == {"audit.path"}


def test_patch_is_written_as_exact_bytes(copy: IsolatedWorkspace, tmp_path: Path) -> None:
    (copy.path / "src" / "app.py").write_bytes(b"caf\xe9\n")
    result = audit_changes(copy, SRC_ONLY, edit_count=1)
    written = result.write_patch(tmp_path / "changes.patch")
    assert written.read_bytes() == result.patch
    assert b"caf\xe9" in result.patch


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        (MODE_NONE, MODE_SYMLINK, "audit.symlink"),
        (MODE_FILE, MODE_SYMLINK, "audit.symlink"),
        (MODE_FILE, MODE_EXECUTABLE, "audit.mode"),
        (MODE_NONE, MODE_EXECUTABLE, "audit.mode"),
        (MODE_NONE, 0o160000, "audit.submodule"),
    ],
)
def test_mode_transitions_that_are_refused(old: int, new: int, rule: str) -> None:
    assert [v.rule for v in mode_violations("x", old, new)] == [rule]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (MODE_NONE, MODE_FILE),
        (MODE_FILE, MODE_NONE),
        (MODE_EXECUTABLE, MODE_EXECUTABLE),
        (MODE_EXECUTABLE, MODE_FILE),
        (MODE_SYMLINK, MODE_NONE),
        (MODE_SYMLINK, MODE_FILE),
    ],
)
def test_mode_transitions_that_are_allowed(old: int, new: int) -> None:
    assert mode_violations("x", old, new) == []
