"""Isolated copies of a workspace: git worktrees carrying uncommitted changes, plain copies, the
baseline commit, hardening against the user's git configuration, cleanup."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bcce.errors import WorkflowError
from bcce.policy.isolation import IsolatedWorkspace, Workspace, watch_candidates

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


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


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "repo",
        {"README.md": "readme\n", "src/app.py": "print('v1')\n", "src/old.py": "old\n"},
    )


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    source = tmp_path / "plain"
    (source / "src").mkdir(parents=True)
    (source / "src" / "app.py").write_text("print('v1')\n")
    (source / "notes.txt").write_text("notes\n")
    return source


def isolate(source: Path, tmp_path: Path, step: str = "fix") -> IsolatedWorkspace:
    return Workspace().isolate(source, tmp_path / "runs" / "r1", step)


def copy_status(isolated: IsolatedWorkspace) -> str:
    return isolated.git("status", "--porcelain").decode()


def test_git_source_is_isolated_as_a_worktree(repo: Path, tmp_path: Path) -> None:
    with isolate(repo, tmp_path) as isolated:
        assert isolated.mode == "git-worktree"
        assert (isolated.path / "src" / "app.py").read_text() == "print('v1')\n"
        assert isolated.root != repo


def test_worktree_carries_unstaged_modifications(repo: Path, tmp_path: Path) -> None:
    (repo / "src" / "app.py").write_text("print('work in progress')\n")
    with isolate(repo, tmp_path) as isolated:
        assert (isolated.path / "src" / "app.py").read_text() == "print('work in progress')\n"


def test_worktree_carries_staged_changes(repo: Path, tmp_path: Path) -> None:
    (repo / "README.md").write_text("staged\n")
    git(repo, "add", "README.md")
    with isolate(repo, tmp_path) as isolated:
        assert (isolated.path / "README.md").read_text() == "staged\n"


def test_worktree_carries_deletions(repo: Path, tmp_path: Path) -> None:
    (repo / "src" / "old.py").unlink()
    with isolate(repo, tmp_path) as isolated:
        assert not (isolated.path / "src" / "old.py").exists()


def test_worktree_carries_untracked_files_but_not_ignored_ones(repo: Path, tmp_path: Path) -> None:
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "new.py").write_text("new\n")
    (repo / "debug.log").write_text("noise\n")
    with isolate(repo, tmp_path) as isolated:
        assert (isolated.path / "new.py").read_text() == "new\n"
        assert not (isolated.path / "debug.log").exists()


def test_worktree_carries_untracked_symlinks_as_symlinks(repo: Path, tmp_path: Path) -> None:
    (repo / "link").symlink_to("README.md")
    with isolate(repo, tmp_path) as isolated:
        assert (isolated.path / "link").is_symlink()
        assert os.readlink(isolated.path / "link") == "README.md"
        assert isolated.initial_symlinks == {"link": "README.md"}


def test_worktree_carries_executable_bits(repo: Path, tmp_path: Path) -> None:
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    with isolate(repo, tmp_path) as isolated:
        assert os.access(isolated.path / "run.sh", os.X_OK)


def test_baseline_includes_the_uncommitted_state(repo: Path, tmp_path: Path) -> None:
    (repo / "src" / "app.py").write_text("changed\n")
    (repo / "new.py").write_text("new\n")
    with isolate(repo, tmp_path) as isolated:
        assert copy_status(isolated) == ""
        assert isolated.git("rev-parse", "HEAD").decode().strip() == isolated.baseline


def test_baseline_has_a_fixed_author(repo: Path, tmp_path: Path) -> None:
    with isolate(repo, tmp_path) as isolated:
        author = isolated.git("log", "-1", "--format=%an <%ae> %aI", isolated.baseline).decode()
        assert author.strip() == "bcce <bcce@localhost> 2000-01-01T00:00:00+00:00"


def test_isolating_leaves_the_users_repository_as_it_was(repo: Path, tmp_path: Path) -> None:
    (repo / "src" / "app.py").write_text("changed\n")
    (repo / "README.md").write_text("staged\n")
    git(repo, "add", "README.md")
    status, head = git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD")
    with isolate(repo, tmp_path):
        assert git(repo, "status", "--porcelain") == status
        assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "stash", "list") == ""


def test_run_directory_inside_the_source_is_not_copied(repo: Path) -> None:
    (repo / ".bcce_runs" / "old-run").mkdir(parents=True)
    (repo / ".bcce_runs" / "old-run" / "run.json").write_text("{}")
    with Workspace().isolate(repo, repo / ".bcce_runs" / "r1", "fix") as isolated:
        assert not (isolated.path / ".bcce_runs").exists()
        assert isolated.notes == ()


def test_subdirectory_of_a_repository_is_isolated_with_its_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "mono", {"svc/app.py": "app\n", "lib/util.py": "util\n"})
    with isolate(repo / "svc", tmp_path) as isolated:
        assert isolated.subdir == "svc"
        assert isolated.path == isolated.root / "svc"
        assert (isolated.root / "lib" / "util.py").exists()


def test_repository_without_commits_is_copied(tmp_path: Path) -> None:
    source = tmp_path / "fresh"
    source.mkdir()
    git(source, "init", "-q")
    (source / "a.txt").write_text("a\n")
    with isolate(source, tmp_path) as isolated:
        assert isolated.mode == "copy"
        assert (isolated.path / "a.txt").read_text() == "a\n"


def test_checkout_hooks_of_the_users_repository_do_not_run(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    with isolate(repo, tmp_path):
        assert not marker.exists()


def test_user_global_git_config_cannot_run_hooks_in_the_copy(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    marker = tmp_path / "hook-ran"
    (hooks / "post-commit").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (hooks / "post-commit").chmod(0o755)
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n")
    monkeypatch.setenv("HOME", str(home))
    with isolate(plain, tmp_path):
        assert not marker.exists()


def test_cleanup_removes_the_worktree_and_unregisters_it(repo: Path, tmp_path: Path) -> None:
    isolated = isolate(repo, tmp_path)
    isolated.cleanup()
    assert not isolated.root.exists()
    assert str(isolated.root) not in git(repo, "worktree", "list", "--porcelain")


def test_cleanup_is_idempotent(plain: Path, tmp_path: Path) -> None:
    isolated = isolate(plain, tmp_path)
    isolated.cleanup()
    isolated.cleanup()
    assert not isolated.root.exists()


def test_plain_directory_is_isolated_as_a_copy(plain: Path, tmp_path: Path) -> None:
    with isolate(plain, tmp_path) as isolated:
        assert isolated.mode == "copy"
        assert (isolated.path / "src" / "app.py").read_text() == "print('v1')\n"
        assert copy_status(isolated) == ""


def test_copy_keeps_its_git_directory_outside_the_copy(plain: Path, tmp_path: Path) -> None:
    with isolate(plain, tmp_path) as isolated:
        assert (isolated.root / ".git").is_file()
        assert isolated.root not in isolated.git_dir.parents


def test_copy_preserves_symlinks_as_symlinks(plain: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.txt").write_text("outside\n")
    (plain / "out").symlink_to(tmp_path / "elsewhere.txt")
    with isolate(plain, tmp_path) as isolated:
        assert (isolated.path / "out").is_symlink()
        assert os.readlink(isolated.path / "out") == str(tmp_path / "elsewhere.txt")


def test_copy_skips_git_and_run_directories(plain: Path, tmp_path: Path) -> None:
    (plain / "vendor" / "lib" / ".git").mkdir(parents=True)
    (plain / "vendor" / "lib" / ".git" / "config").write_text("[core]\n")
    (plain / ".bcce_runs" / "r0").mkdir(parents=True)
    with isolate(plain, tmp_path) as isolated:
        assert not (isolated.path / "vendor" / "lib" / ".git").exists()
        assert not (isolated.path / ".bcce_runs").exists()


def test_copy_skips_the_run_directory_when_it_is_inside_the_source(plain: Path) -> None:
    with Workspace().isolate(plain, plain / "runs" / "r1", "fix") as isolated:
        assert not (isolated.path / "runs" / "r1").exists()


def test_copy_skips_special_files_with_a_note(plain: Path, tmp_path: Path) -> None:
    os.mkfifo(plain / "pipe")
    with isolate(plain, tmp_path) as isolated:
        assert not (isolated.path / "pipe").exists()
        assert any("pipe" in note for note in isolated.notes)


def test_copy_larger_than_the_cap_is_refused_and_removed(plain: Path, tmp_path: Path) -> None:
    (plain / "big.bin").write_bytes(b"x" * 1000)
    with pytest.raises(WorkflowError, match="larger than 100 bytes"):
        Workspace(max_copy_bytes=100).isolate(plain, tmp_path / "runs" / "r1", "fix")
    assert list((tmp_path / "runs" / "r1" / "workspaces").iterdir()) == []


def test_uncommitted_changes_larger_than_the_cap_are_refused(repo: Path, tmp_path: Path) -> None:
    (repo / "big.bin").write_bytes(b"x" * 1000)
    with pytest.raises(WorkflowError, match="larger than 100 bytes"):
        Workspace(max_copy_bytes=100).isolate(repo, tmp_path / "runs" / "r1", "fix")
    assert "runs" not in git(repo, "worktree", "list")


def test_step_id_is_made_safe_for_a_directory_name(plain: Path, tmp_path: Path) -> None:
    with isolate(plain, tmp_path, step="../evil step") as isolated:
        assert isolated.root.parent == tmp_path / "runs" / "r1" / "workspaces"
        assert isolated.step_id == "../evil step"


def test_watch_candidates_cover_the_source_and_git_control_files(
    repo: Path, tmp_path: Path
) -> None:
    with isolate(repo, tmp_path) as isolated:
        watched = watch_candidates(isolated)
    assert repo in watched
    assert repo / ".git" / "config" in watched
    assert repo / ".git" / "hooks" in watched


def test_step_ids_that_look_alike_get_different_copies(plain: Path, tmp_path: Path) -> None:
    with (
        isolate(plain, tmp_path, step="a/b") as first,
        isolate(plain, tmp_path, step="a_b") as second,
    ):
        assert first.root != second.root


def test_step_id_of_dots_stays_inside_the_run_directory(plain: Path, tmp_path: Path) -> None:
    with isolate(plain, tmp_path, step="..") as isolated:
        assert isolated.root.parent == tmp_path / "runs" / "r1" / "workspaces"


def test_copy_left_by_a_crashed_run_is_replaced(repo: Path, tmp_path: Path) -> None:
    crashed = isolate(repo, tmp_path)
    (crashed.path / "leftover.txt").write_text("from the crashed run\n")
    with isolate(repo, tmp_path) as isolated:
        assert isolated.root == crashed.root
        assert not (isolated.path / "leftover.txt").exists()


def test_cleanup_unregisters_a_worktree_the_agent_broke(repo: Path, tmp_path: Path) -> None:
    isolated = isolate(repo, tmp_path)
    (isolated.root / ".git").unlink()
    isolated.cleanup()
    assert not isolated.git_dir.exists()
    assert str(isolated.root) not in git(repo, "worktree", "list", "--porcelain")
