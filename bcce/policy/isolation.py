"""Isolation: the throwaway copy of the workspace that an agent step works in.

The agent never edits the user's tree. :meth:`Workspace.isolate` makes a copy and commits a
baseline in it, so that the change set can later be computed by git and audited:

- ``git-worktree``: when the source is inside a git repository with a commit, a detached
  ``git worktree`` at ``HEAD``, then the user's uncommitted state copied over it byte for byte:
  tracked files that differ from ``HEAD`` (staged or not, deleted ones deleted) and untracked
  files that are not ignored. Copying bytes, instead of replaying ``git diff``, is exact even with
  CRLF conversion or filters. Nested repositories and submodules are not carried (noted);
- ``copy``: otherwise, a copy (symlinks kept as symlinks; ``.git``, ``.bcce_runs``, the run
  directory and special files skipped) under a size cap, made a git repository whose git
  directory lies *outside* the copy, so an agent confined to the copy cannot rewrite it.

Every git command bcce runs on a copy is hardened (:func:`hardened_git_env`,
:data:`HARDENED_GIT_CONFIG`): no system or global configuration, an empty ``HOME``, no hooks,
no fsmonitor, no external diff or text conversion, a fixed author. The user's own repository
configuration is still read in worktree mode (the worktree shares the user's git directory).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from bcce.errors import WorkflowError

IsolationMode = Literal["git-worktree", "copy"]

DEFAULT_MAX_COPY_BYTES: Final = 2 * 1024**3
SKIPPED_NAMES: Final = frozenset({".git", ".bcce_runs"})
"""Never copied into a workspace copy, at any depth."""

HARDENED_GIT_CONFIG: Final = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.symlinks=true",
    "core.quotePath=false",
    "commit.gpgSign=false",
    "diff.noprefix=false",
    "diff.mnemonicPrefix=false",
    "diff.external=",
    "diff.relative=false",
    "diff.ignoreSubmodules=none",
    "core.attributesFile=/dev/null",
    "init.defaultBranch=bcce",
    "gc.auto=0",
)
"""``-c`` settings on every git command bcce runs on a copy: none of them can run a program."""

BASELINE_IDENTITY: Final = {
    "GIT_AUTHOR_NAME": "bcce",
    "GIT_AUTHOR_EMAIL": "bcce@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "bcce",
    "GIT_COMMITTER_EMAIL": "bcce@localhost",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
_COPY_CHUNK = 1024 * 1024


def hardened_git_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment for git: no system or global config, ``home`` as an empty HOME."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
        "LC_ALL": "C",
    }
    env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    hardened: bool = True,
    what: str = "git",
) -> bytes:
    """Run git and return its stdout; a failure raises :class:`WorkflowError` with git's stderr.

    ``hardened`` prefixes :data:`HARDENED_GIT_CONFIG`; ``env`` replaces the environment.
    """
    argv = ["git"]
    if hardened:
        for item in HARDENED_GIT_CONFIG:
            argv += ["-c", item]
    argv += list(args)
    try:
        completed = subprocess.run(
            argv,
            cwd=cwd,
            env=None if env is None else dict(env),
            input=stdin,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise WorkflowError(
            "git is not installed",
            hint="install git: bcce uses it to isolate and audit agent steps",
        ) from exc
    if completed.returncode != 0:
        detail = (
            completed.stderr.decode("utf-8", "replace").strip() or f"exit {completed.returncode}"
        )
        raise WorkflowError(f"{what} failed: {detail}", hint="see the git message above")
    return completed.stdout


def split_z(output: bytes) -> list[str]:
    """Split NUL-terminated git output into paths (undecodable bytes kept as surrogates)."""
    return [os.fsdecode(item) for item in output.split(b"\0") if item]


def force_rmtree(path: Path) -> None:
    """Remove a tree even where the agent made directories unwritable; never follows symlinks."""

    def retry(function: Callable[..., object], name: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            Path(name).parent.chmod(0o700)
            if Path(name).is_dir() and not Path(name).is_symlink():
                Path(name).chmod(0o700)
        function(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=retry)


def symlinks_in(root: Path) -> dict[str, str]:
    """Every symlink under ``root`` (not descending into ``.git``), as POSIX path -> target."""
    found: dict[str, str] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name != ".git"]
        base = Path(directory)
        for name in (*dirnames, *filenames):
            entry = base / name
            if entry.is_symlink():
                found[entry.relative_to(root).as_posix()] = str(entry.readlink())
    return found


def _inside(path: Path, root: Path) -> bool:
    return os.path.commonpath([path, root]) == str(root)


@dataclass
class IsolatedWorkspace:
    """A throwaway copy of a workspace, with a baseline commit to diff the agent's changes against.

    ``path`` is where the agent works; ``root`` is the top of the copy (they differ when the source
    is a subdirectory of a git repository: ``subdir`` is then its POSIX path under ``root``).
    ``git_dir`` is the copy's git directory, outside ``root``. ``notes`` lists what was not carried.
    """

    source: Path
    path: Path
    root: Path
    git_dir: Path
    baseline: str
    mode: IsolationMode
    step_id: str
    subdir: str = ""
    initial_symlinks: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    _home: Path | None = field(default=None, repr=False)
    _cleanup_paths: tuple[Path, ...] = field(default=(), repr=False)
    _repository: Path | None = field(default=None, repr=False)
    _common_dir: Path | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def repository(self) -> Path | None:
        """The top of the user's repository in ``git-worktree`` mode, else None."""
        return self._repository

    @property
    def common_dir(self) -> Path | None:
        """The user's git directory shared with the worktree (``git-worktree`` mode), else None."""
        return self._common_dir

    def git_env(self, **extra: str) -> dict[str, str]:
        """The hardened environment for git on this copy, with ``GIT_DIR``/``GIT_WORK_TREE`` set."""
        home = self._home if self._home is not None else self.git_dir
        return hardened_git_env(
            home, GIT_DIR=str(self.git_dir), GIT_WORK_TREE=str(self.root), **extra
        )

    def git(self, *args: str, index_file: Path | None = None, stdin: bytes | None = None) -> bytes:
        """Run hardened git on the copy (explicit git dir and work tree; never discovered)."""
        extra = {"GIT_INDEX_FILE": str(index_file)} if index_file is not None else {}
        return run_git(args, cwd=self.root, env=self.git_env(**extra), stdin=stdin)

    def cleanup(self) -> None:
        """Remove the copy (and, for a worktree, unregister it from the user's repository)."""
        if self._closed:
            return
        self._closed = True
        if self._repository is not None:
            with contextlib.suppress(WorkflowError):
                run_git(
                    ["worktree", "remove", "--force", "--force", str(self.root)],
                    cwd=self._repository,
                    env=hardened_git_env(self._home or self.root.parent),
                )
        for path in (self.root, *self._cleanup_paths):
            force_rmtree(path)
        # If `worktree remove` failed (the agent broke the copy), drop just this worktree's
        # administrative directory; `git worktree prune` would touch the user's other worktrees.
        common = self._common_dir
        if common is not None and _inside(self.git_dir, common / "worktrees"):
            force_rmtree(self.git_dir)
        if self._home is not None:
            force_rmtree(self._home)

    def __enter__(self) -> IsolatedWorkspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()


class _Budget:
    """Counts the bytes copied and stops the copy at the cap."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int, what: str) -> None:
        self.used += size
        if self.limit is not None and self.used > self.limit:
            raise WorkflowError(
                f"the workspace copy is larger than {self.limit} bytes (at {what!r})",
                hint="ignore build outputs and data files (.gitignore), or raise the copy size cap",
            )


class Workspace:
    """Makes isolated copies of workspaces for agent steps."""

    def __init__(self, *, max_copy_bytes: int | None = DEFAULT_MAX_COPY_BYTES) -> None:
        self.max_copy_bytes = max_copy_bytes

    def isolate(self, source: Path, run_dir: Path, step_id: str) -> IsolatedWorkspace:
        """Copy ``source`` under ``run_dir/workspaces/`` and commit a baseline there.

        Raises :class:`WorkflowError` if git fails or the copy exceeds ``max_copy_bytes``; nothing
        is left behind then.
        """
        source = Path(os.path.realpath(source))
        if not source.is_dir():
            raise WorkflowError(f"workspace {str(source)!r} is not a directory", key="workspace")
        run_dir = Path(os.path.abspath(run_dir))  # noqa: PTH100 - lexical, like the caller's
        # Distinct step ids must never share a copy, even when they look alike once made safe.
        digest = hashlib.sha256(step_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe_id = f"{_UNSAFE_ID.sub('_', step_id).lstrip('.')[:64] or 'step'}-{digest}"
        area = run_dir / "workspaces"
        area.mkdir(parents=True, exist_ok=True)
        root = area / safe_id
        git_dir = area / f"{safe_id}.git"
        # An empty HOME for git, beside the copy so that a crashed run's is removed with it.
        home = area / f"{safe_id}.home"
        for stale in (root, git_dir, home):
            force_rmtree(stale)
        home.mkdir()
        try:
            top = _repository_top(source)
            if top is not None:
                return self._worktree(source, top, root, run_dir, step_id, home)
            return self._copy(source, root, git_dir, run_dir, step_id, home)
        except BaseException:
            force_rmtree(home)
            raise

    def _worktree(
        self, source: Path, top: Path, root: Path, run_dir: Path, step_id: str, home: Path
    ) -> IsolatedWorkspace:
        user_env = _user_git_env()
        # The user's own config applies (filters, LFS), but no hook runs on checkout.
        add = ["worktree", "add", "--force", "--detach", str(root), "HEAD"]
        run_git(
            ["-c", "core.hooksPath=/dev/null", *add],
            cwd=top,
            env=user_env,
            hardened=False,
            what="git worktree add",
        )
        subdir = source.relative_to(top).as_posix() if source != top else ""
        isolated = IsolatedWorkspace(
            source=source,
            path=root / subdir if subdir else root,
            root=root,
            git_dir=root / ".git",
            baseline="",
            mode="git-worktree",
            step_id=step_id,
            subdir=subdir,
            _home=home,
            _repository=top,
        )
        try:
            isolated.git_dir = _rev_parse_path(root, user_env, "--absolute-git-dir")
            isolated._common_dir = _rev_parse_path(
                root, user_env, "--path-format=absolute", "--git-common-dir"
            )
            notes = self._carry_uncommitted(top, root, run_dir, user_env)
            isolated.notes = tuple(notes)
            isolated.baseline = _commit_baseline(isolated, step_id)
            isolated.initial_symlinks = symlinks_in(root)
        except BaseException:
            isolated.cleanup()
            raise
        return isolated

    def _carry_uncommitted(
        self, top: Path, root: Path, run_dir: Path, env: Mapping[str, str]
    ) -> list[str]:
        changed = split_z(
            run_git(
                ["diff", "--name-only", "--no-renames", "--no-ext-diff", "-z", "HEAD", "--"],
                cwd=top,
                env=env,
            )
        )
        untracked = split_z(
            run_git(["ls-files", "--others", "--exclude-standard", "-z", "--"], cwd=top, env=env)
        )
        budget = _Budget(self.max_copy_bytes)
        notes: list[str] = []
        skip = _skipper(top, run_dir, root)
        for relative in sorted(set(changed) | set(untracked)):
            if skip(relative.rstrip("/")):
                continue
            if relative.endswith("/"):
                notes.append(f"nested repository {relative!r} not carried into the copy")
                continue
            note = _carry(top / relative, root, relative, budget)
            if note:
                notes.append(note)
        return notes

    def _copy(
        self, source: Path, root: Path, git_dir: Path, run_dir: Path, step_id: str, home: Path
    ) -> IsolatedWorkspace:
        budget = _Budget(self.max_copy_bytes)
        notes: list[str] = []
        excluded = {Path(os.path.realpath(run_dir)), Path(os.path.realpath(root.parent))}

        def ignore(directory: str, names: list[str]) -> set[str]:
            skipped: set[str] = set()
            real = Path(os.path.realpath(directory))
            for name in names:
                entry = Path(directory) / name
                if name in SKIPPED_NAMES or real / name in excluded:
                    skipped.add(name)
                    continue
                info = entry.lstat()
                if stat.S_ISREG(info.st_mode):
                    budget.take(info.st_size, str(entry.relative_to(source)))
                elif not (stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                    notes.append(f"special file {str(entry.relative_to(source))!r} not copied")
                    skipped.add(name)
            return skipped

        isolated = IsolatedWorkspace(
            source=source,
            path=root,
            root=root,
            git_dir=git_dir,
            baseline="",
            mode="copy",
            step_id=step_id,
            _home=home,
            _cleanup_paths=(git_dir,),
        )
        try:
            shutil.copytree(source, root, symlinks=True, ignore=ignore)
            run_git(
                ["init", "-q", f"--separate-git-dir={git_dir}", str(root)],
                cwd=root.parent,
                env=hardened_git_env(home),
            )
            isolated.notes = tuple(notes)
            isolated.baseline = _commit_baseline(isolated, step_id)
            isolated.initial_symlinks = symlinks_in(root)
        except BaseException:
            isolated.cleanup()
            raise
        return isolated


def _user_git_env() -> dict[str, str]:
    # The user's environment, minus variables that would point git somewhere else.
    return {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}


def _rev_parse_path(cwd: Path, env: Mapping[str, str], *options: str) -> Path:
    return Path(os.fsdecode(run_git(["rev-parse", *options], cwd=cwd, env=env).strip()))


def _repository_top(source: Path) -> Path | None:
    """The top of the git repository holding ``source`` if it has a commit, else None."""
    env = _user_git_env()
    try:
        top = run_git(["rev-parse", "--show-toplevel"], cwd=source, env=env, hardened=False)
        run_git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=source, env=env)
    except WorkflowError:
        return None
    return Path(os.path.realpath(os.fsdecode(top.strip())))


def _skipper(top: Path, run_dir: Path, root: Path) -> Callable[[str], bool]:
    excluded = [Path(os.path.realpath(run_dir)), root]

    def skip(relative: str) -> bool:
        if any(part in SKIPPED_NAMES for part in relative.split("/")):
            return True
        absolute = top / relative
        return any(_inside(absolute, path) for path in excluded)

    return skip


def _carry(source: Path, root: Path, relative: str, budget: _Budget) -> str | None:
    """Make ``root/relative`` what ``source`` is: a copy, a symlink, or absent."""
    target = root / relative
    parent = Path(os.path.realpath(target.parent))
    if not _inside(parent, Path(os.path.realpath(root))):
        return f"{relative!r} not carried: its directory resolves outside the copy"
    try:
        info: os.stat_result | None = source.lstat()
    except FileNotFoundError:
        info = None
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    elif target.is_dir() and (info is None or not stat.S_ISDIR(info.st_mode)):
        force_rmtree(target)
    if info is None:
        return None
    if stat.S_ISDIR(info.st_mode):
        target.mkdir(parents=True, exist_ok=True)
        return f"{relative!r} is a directory (submodule?): its contents were not carried"
    target.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISLNK(info.st_mode):
        target.symlink_to(source.readlink())
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"special file {relative!r} not carried"
    budget.take(info.st_size, relative)
    _copy_file(source, target, info.st_mode)
    return None


def _copy_file(source: Path, target: Path, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with source.open("rb") as reader, os.fdopen(os.open(target, flags, 0o600), "wb") as writer:
        shutil.copyfileobj(reader, writer, _COPY_CHUNK)
    target.chmod(stat.S_IMODE(mode))


def _commit_baseline(isolated: IsolatedWorkspace, step_id: str) -> str:
    isolated.git("add", "-A", "--", ".")
    env = isolated.git_env(**BASELINE_IDENTITY)
    run_git(
        ["commit", "-q", "--no-verify", "--allow-empty", "-m", f"bcce baseline for step {step_id}"],
        cwd=isolated.root,
        env=env,
        what="git commit (baseline)",
    )
    return os.fsdecode(isolated.git("rev-parse", "--verify", "HEAD^{commit}").strip())


def watch_candidates(isolated: IsolatedWorkspace) -> list[Path]:
    """Paths outside the copy worth watching for writes during the step (see ``audit``)."""
    paths: list[Path] = [isolated.repository or isolated.source]
    common = isolated._common_dir
    if common is not None:
        paths += [
            common / name for name in ("config", "hooks", "info", "HEAD", "refs", "packed-refs")
        ]
    return [path for path in paths if path.exists() or path.is_symlink()]


__all__ = [
    "BASELINE_IDENTITY",
    "DEFAULT_MAX_COPY_BYTES",
    "HARDENED_GIT_CONFIG",
    "SKIPPED_NAMES",
    "IsolatedWorkspace",
    "IsolationMode",
    "Workspace",
    "force_rmtree",
    "hardened_git_env",
    "run_git",
    "split_z",
    "symlinks_in",
    "watch_candidates",
]
