"""Applying change sets to the user's workspace: checked, policed, all or nothing.

:func:`apply_patches` takes the patches of earlier agent steps, in order, and:

1. joins them into one series (``git apply`` given several files applies each on its own, so a
   failure in the second leaves the first applied; one joined input is checked as a whole);
2. lists the touched paths (``git apply --numstat``) and refuses any out of scope or beyond
   ``max_files`` — :class:`ApplyRejected`, a :class:`~bcce.errors.PolicyDenied` (exit 5);
3. checks the series against the target (``git apply --check``) — a patch that does not apply
   raises :class:`PatchDoesNotApply`; then applies it in a scratch mirror of just the touched
   files and inspects the *outcome* with the audit's own rules: no symlink added or retargeted,
   nothing made executable, no submodule, no hard link — :class:`ApplyRejected`;
4. installs the outcome into the target file by file (write a temporary file, rename over),
   after backing up every touched file; if anything fails midway, every step taken is undone, so
   the target is left exactly as it was (contents, modes, mtimes, created or removed files and
   directories).

git runs with an empty git directory of its own and the target as work tree, so the target's
own repository (its config, hooks, index) plays no part, and a target that is not a repository
or is a subdirectory of one is handled the same way; the index is never touched. Limits: a crash
(``kill -9``) during step 4 leaves the files installed so far; no lock keeps others from editing
the target meanwhile, though a file changed since the check is detected and the apply undone.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from bcce.errors import BcceError, PolicyDenied, WorkflowError
from bcce.policy.audit import (
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_NONE,
    MODE_SYMLINK,
    AuditPolicy,
    AuditViolation,
    budget_violations,
    mode_violations,
    scope_violations,
)
from bcce.policy.isolation import hardened_git_env, run_git, split_z
from bcce.policy.paths import PathScope

PatchInput = str | bytes | Path
"""A patch: its text (``str``), its bytes, or a file holding it (``Path``)."""

_APPLY_OPTIONS: Final = ("--whitespace=nowarn",)


class PatchDoesNotApply(WorkflowError):
    """The patches do not apply to the target (it changed, or they conflict with each other)."""

    def __init__(self, message: str, *, detail: str = "", hint: str | None = None) -> None:
        super().__init__(
            message,
            hint=hint
            or "the workspace changed since the agent step ran: re-run the workflow from that step",
        )
        self.detail = detail


class ApplyRejected(PolicyDenied):
    """The change set breaks the policy; nothing was applied. ``violations`` says why."""

    def __init__(self, violations: Sequence[AuditViolation]) -> None:
        reasons = "; ".join(f"{v.rule}: {v.path or '-'}: {v.reason}" for v in violations)
        super().__init__(
            f"the change set was not applied: {reasons}",
            hint="the rejected patch is kept as an artifact; fix the policy or the step",
        )
        self.violations = tuple(violations)


@dataclass(frozen=True)
class ApplyResult:
    """What was applied: workspace-relative POSIX paths, and git's summary of the series."""

    created: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    summary: str = ""
    patch: bytes = b""

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted((*self.created, *self.modified, *self.deleted)))

    @property
    def applied(self) -> bool:
        return bool(self.files)

    def to_dict(self) -> dict[str, object]:
        return {
            "created": list(self.created),
            "modified": list(self.modified),
            "deleted": list(self.deleted),
        }


Kind = Literal["absent", "file", "symlink", "dir", "other"]


@dataclass(frozen=True)
class _State:
    kind: Kind
    mode: int = MODE_NONE
    link: str | None = None

    @classmethod
    def of(cls, path: Path) -> _State:
        try:
            info = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return cls("absent")
        if stat.S_ISLNK(info.st_mode):
            return cls("symlink", MODE_SYMLINK, str(path.readlink()))
        if stat.S_ISDIR(info.st_mode):
            return cls("dir")
        if stat.S_ISREG(info.st_mode):
            executable = info.st_mode & stat.S_IXUSR
            return cls("file", MODE_EXECUTABLE if executable else MODE_FILE)
        return cls("other")


@dataclass
class _Journal:
    """What the install did so far, to undo it in reverse."""

    steps: list[tuple[str, str]] = field(default_factory=list)
    dir_modes: dict[str, int] = field(default_factory=dict)


class PatchApplier:
    """Applies a series of patches to ``target`` all or nothing (see the module docstring)."""

    def __init__(self, target: Path, scope: PathScope, *, max_files: int | None = None) -> None:
        self.target = Path(os.path.realpath(target))
        if scope.workspace != str(self.target):
            raise ValueError(f"the scope is for {scope.workspace!r}, not {str(self.target)!r}")
        self.scope = scope
        self.max_files = max_files

    def apply(self, patches: Iterable[PatchInput]) -> ApplyResult:
        """Check, police and apply ``patches`` in order; raise if any of that fails."""
        series = _join(_read(patch) for patch in patches)
        if not series:
            return ApplyResult()
        with tempfile.TemporaryDirectory(prefix="bcce-apply-") as scratch_dir:
            scratch = Path(scratch_dir)
            patch_file = scratch / "series.patch"
            patch_file.write_bytes(series)
            git_dir = scratch / "git"
            home = scratch / "home"
            home.mkdir()
            run_git(["init", "-q", "--bare", str(git_dir)], cwd=scratch, env=_env(home))
            paths, summary = self._inspect(patch_file, git_dir, home)
            self._police(paths)
            self._check(patch_file, git_dir, home)
            before = scratch / "before"
            after = scratch / "after"
            self._mirror(paths, before)
            self._mirror(paths, after)
            self._git_apply(patch_file, git_dir, home, after, check=False)
            plan = self._plan(paths, after)
            self._police_outcome(plan, after)
            self._install_all(plan, before, after)
        created = tuple(p for p, (old, new) in plan.items() if old.kind == "absent")
        deleted = tuple(p for p, (old, new) in plan.items() if new.kind == "absent")
        modified = tuple(p for p in plan if p not in created and p not in deleted)
        return ApplyResult(created, modified, deleted, summary, series)

    # -- checking ---------------------------------------------------------------------------

    def _inspect(self, patch_file: Path, git_dir: Path, home: Path) -> tuple[list[str], str]:
        env = _env(home, GIT_DIR=str(git_dir))
        try:
            numstat = run_git(["apply", "--numstat", "-z", str(patch_file)], cwd=home, env=env)
            summary = run_git(["apply", "--summary", str(patch_file)], cwd=home, env=env)
        except WorkflowError as exc:
            raise PatchDoesNotApply(
                "the patches cannot be read", detail=exc.message, hint="the patch is malformed"
            ) from exc
        paths: list[str] = []
        items = split_z(numstat)
        index = 0
        while index < len(items):
            added_deleted_path = items[index].split("\t", 2)
            if len(added_deleted_path) == 3 and added_deleted_path[2]:
                paths.append(added_deleted_path[2])
                index += 1
            else:  # a rename or copy: "added\tdeleted\t" NUL old NUL new
                paths += items[index + 1 : index + 3]
                index += 3
        return list(dict.fromkeys(paths)), summary.decode("utf-8", "replace")

    def _check(self, patch_file: Path, git_dir: Path, home: Path) -> None:
        self._git_apply(patch_file, git_dir, home, self.target, check=True)

    def _git_apply(
        self, patch_file: Path, git_dir: Path, home: Path, work_tree: Path, *, check: bool
    ) -> None:
        env = _env(home, GIT_DIR=str(git_dir), GIT_WORK_TREE=str(work_tree))
        options = ["--check"] if check else []
        try:
            run_git(
                ["apply", *options, *_APPLY_OPTIONS, str(patch_file)],
                cwd=work_tree,
                env=env,
                what="git apply",
            )
        except WorkflowError as exc:
            raise PatchDoesNotApply(
                f"the patches do not apply to {str(self.target)!r}", detail=exc.message
            ) from exc

    def _police(self, paths: Sequence[str]) -> None:
        violations = scope_violations(self.scope, paths)
        violations += budget_violations(
            AuditPolicy(max_files=self.max_files), edit_count=0, file_count=len(paths)
        )
        if violations:
            raise ApplyRejected(violations)

    def _mirror(self, paths: Iterable[str], mirror: Path) -> None:
        """Copy the touched files of the target (as they are now) into ``mirror``."""
        mirror.mkdir()
        for path in paths:
            source = self.target / path
            state = _State.of(source)
            if state.kind == "absent":
                continue
            destination = mirror / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            if state.kind == "symlink":
                destination.symlink_to(state.link or "")
            elif state.kind == "file":
                shutil.copy2(source, destination, follow_symlinks=False)
            elif state.kind == "dir":
                destination.mkdir(exist_ok=True)
            else:
                raise PatchDoesNotApply(f"{path!r} is a device, FIFO or socket in the target")

    def _plan(self, paths: Iterable[str], after: Path) -> dict[str, tuple[_State, _State]]:
        plan: dict[str, tuple[_State, _State]] = {}
        for path in paths:
            old, new = _State.of(self.target / path), _State.of(after / path)
            if old.kind == "dir" or new.kind in ("dir", "other"):
                raise PatchDoesNotApply(f"{path!r} is a directory in the target or the outcome")
            same = old == new and (
                old.kind == "absent"
                or old.kind == "symlink"
                or filecmp.cmp(self.target / path, after / path, shallow=False)
            )
            if not same:
                plan[path] = (old, new)
        deleted = {path for path, (_old, new) in plan.items() if new.kind == "absent"}
        for path, (_old, new) in plan.items():
            if new.kind == "absent":
                continue
            for parent in Path(path).parents:
                if parent == Path():
                    break
                kind = _State.of(self.target / parent).kind
                if kind not in ("absent", "dir") and parent.as_posix() not in deleted:
                    raise PatchDoesNotApply(
                        f"{path!r} cannot be created: {parent.as_posix()!r} is not a directory"
                    )
        return plan

    def _police_outcome(self, plan: dict[str, tuple[_State, _State]], after: Path) -> None:
        violations: list[AuditViolation] = []
        for path, (old, new) in plan.items():
            retargeted = old.kind == new.kind == "symlink" and old.link != new.link
            violations += mode_violations(
                path, old.mode, new.mode, content_changed=retargeted or old.kind != "symlink"
            )
            if new.kind == "file" and (after / path).lstat().st_nlink > 1:
                violations.append(AuditViolation("audit.hardlink", path, "hard-linked outcome"))
        if violations:
            raise ApplyRejected(violations)

    # -- installing -------------------------------------------------------------------------

    def _install_all(
        self, plan: dict[str, tuple[_State, _State]], before: Path, after: Path
    ) -> None:
        journal = _Journal()
        deletions = sorted((p for p, (_o, n) in plan.items() if n.kind == "absent"), reverse=True)
        writes = sorted(p for p, (_o, n) in plan.items() if n.kind != "absent")
        try:
            for path in deletions:
                self._unchanged_since_check(path, before)
                journal.steps.append(("file", path))
                self._remove(self.target / path)
                self._prune_parents(path, journal)
            for path in writes:
                self._unchanged_since_check(path, before)
                self._make_parents(path, journal)
                journal.steps.append(("file", path))
                self._install(after / path, self.target / path)
        except BaseException as exc:
            failures = self._undo(journal, before)
            if failures:
                raise WorkflowError(
                    f"applying failed midway ({exc}) and {len(failures)} change(s) could not be "
                    f"undone: {'; '.join(failures)}",
                    hint=f"check {str(self.target)!r} by hand: it may be partly changed",
                ) from exc
            if isinstance(exc, BcceError) or not isinstance(exc, Exception):
                raise
            raise WorkflowError(
                f"applying failed midway and was undone; the workspace is unchanged: {exc}",
                hint="fix the cause (disk space, permissions) and run apply_diff again",
            ) from exc

    def _unchanged_since_check(self, path: str, before: Path) -> None:
        current, original = self.target / path, before / path
        state, expected = _State.of(current), _State.of(original)
        same = state == expected and (
            state.kind != "file" or filecmp.cmp(current, original, shallow=False)
        )
        if not same:
            raise PatchDoesNotApply(f"{path!r} changed in the workspace while applying")

    def _make_parents(self, path: str, journal: _Journal) -> None:
        missing = [p for p in Path(path).parents if p != Path()]
        for parent in reversed(missing):
            directory = self.target / parent
            if not directory.is_dir():
                directory.mkdir()
                journal.steps.append(("mkdir", parent.as_posix()))

    def _prune_parents(self, path: str, journal: _Journal) -> None:
        """Remove directories a deletion left empty, as ``git apply`` does."""
        for parent in Path(path).parents:
            if parent == Path():
                return
            directory = self.target / parent
            try:
                mode = stat.S_IMODE(directory.lstat().st_mode)
                directory.rmdir()
            except OSError:
                return
            journal.dir_modes[parent.as_posix()] = mode
            journal.steps.append(("rmdir", parent.as_posix()))

    def _install(self, source: Path, destination: Path) -> None:
        """Put ``source``'s bytes and mode at ``destination`` with an atomic rename."""
        temporary = destination.parent / f".bcce-apply-{secrets.token_hex(6)}"
        try:
            shutil.copyfile(source, temporary)
            temporary.chmod(stat.S_IMODE(source.lstat().st_mode))
            _keep_owner(destination, temporary)
            temporary.replace(destination)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def _remove(self, destination: Path) -> None:
        destination.unlink()

    def _undo(self, journal: _Journal, before: Path) -> list[str]:
        failures: list[str] = []
        for kind, path in reversed(journal.steps):
            try:
                if kind == "mkdir":
                    (self.target / path).rmdir()
                elif kind == "rmdir":
                    (self.target / path).mkdir(mode=journal.dir_modes[path])
                    (self.target / path).chmod(journal.dir_modes[path])
                else:
                    self._restore(path, before)
            except OSError as exc:
                failures.append(f"{path}: {exc.strerror or exc}")
        return failures

    def _restore(self, path: str, before: Path) -> None:
        current, original = self.target / path, before / path
        state = _State.of(original)
        if state.kind == "absent":
            if current.is_symlink() or current.exists():
                current.unlink()
            return
        if state.kind == "symlink":
            if current.is_symlink() or current.exists():
                current.unlink()
            current.symlink_to(state.link or "")
            return
        self._install(original, current)
        info = original.lstat()
        os.utime(current, ns=(info.st_atime_ns, info.st_mtime_ns))


def apply_patches(
    target: Path,
    patches: Iterable[PatchInput],
    scope: PathScope,
    *,
    max_files: int | None = None,
) -> ApplyResult:
    """Apply ``patches`` to ``target`` all or nothing (see :class:`PatchApplier`).

    ``scope`` must be a :class:`PathScope` on ``target``. Raises :class:`ApplyRejected`
    (a :class:`PolicyDenied`, exit 5) for a policy violation and :class:`PatchDoesNotApply`
    (a :class:`WorkflowError`) for patches that do not apply; in both cases nothing changed.
    """
    return PatchApplier(target, scope, max_files=max_files).apply(patches)


def _read(patch: PatchInput) -> bytes:
    if isinstance(patch, Path):
        return patch.read_bytes()
    if isinstance(patch, str):
        return patch.encode("utf-8", "surrogateescape")
    return bytes(patch)


def _join(patches: Iterable[bytes]) -> bytes:
    parts = [p if p.endswith(b"\n") else p + b"\n" for p in patches if p.strip()]
    return b"".join(parts)


def _env(home: Path, **extra: str) -> dict[str, str]:
    return hardened_git_env(home, **extra)


def _keep_owner(existing: Path, replacement: Path) -> None:
    # Only root can give a file away; others' files keep their owner when root applies.
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        info = existing.lstat()
        os.chown(replacement, info.st_uid, info.st_gid, follow_symlinks=False)


__all__ = [
    "ApplyRejected",
    "ApplyResult",
    "PatchApplier",
    "PatchDoesNotApply",
    "PatchInput",
    "apply_patches",
]
