"""The post-run audit of an agent step's change set (layer 4 of policy in depth).

After the agent has finished, the change set is computed by git in the copy, never from what the
agent reported: every file of the copy is staged into a throwaway index read from the baseline
(so index tricks such as ``skip-worktree`` cannot hide a change) and diffed against the baseline
commit. A violation fails the step; its changes are discarded. Rules (ids in brackets):

- every changed path (added, modified, deleted) is in the workspace and in scope for writing:
  allowed, not denied, not protected (:class:`~bcce.policy.paths.PathScope`) [``audit.path``];
- no symlink is added or retargeted, whether git sees it or it lies in an ignored path
  [``audit.symlink``];
- no file becomes executable (mode 100755) [``audit.mode``];
- no changed file has more than one hard link [``audit.hardlink``]; no device, FIFO or socket
  exists in the copy [``audit.device``]; no nested repository or submodule appears
  [``audit.submodule``];
- the step's edit calls are within ``max_edits`` and the changed files within ``max_files``
  [``audit.budget``];
- nothing changed in the watched paths outside the copy (:class:`OutsideWatch`) [``audit.outside``].

Limits: files matched by the repository's ignore rules are not part of the change set, so they are
never applied (and not audited, except for symlinks and special files). The outside watch sees
only the paths it is given, compares metadata (type, mode, size, mtime, ctime, inode), skips
``.git`` and ``.bcce_runs`` directories inside a watched tree and stops recording after
``max_entries``; anything else writing there during the step (the user, a parallel cmd step)
is reported as well. Writes elsewhere on the machine are the OS sandbox's to stop.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bcce.errors import BcceError
from bcce.policy.isolation import SKIPPED_NAMES, IsolatedWorkspace, split_z
from bcce.policy.paths import DEFAULT_PROTECTED, PathScope

RULE_PATH: Final = "audit.path"
RULE_SYMLINK: Final = "audit.symlink"
RULE_MODE: Final = "audit.mode"
RULE_HARDLINK: Final = "audit.hardlink"
RULE_DEVICE: Final = "audit.device"
RULE_SUBMODULE: Final = "audit.submodule"
RULE_BUDGET: Final = "audit.budget"
RULE_OUTSIDE: Final = "audit.outside"
RULE_ERROR: Final = "audit.error"

MODE_NONE: Final = 0
MODE_FILE: Final = 0o100644
MODE_EXECUTABLE: Final = 0o100755
MODE_SYMLINK: Final = 0o120000
MODE_GITLINK: Final = 0o160000

# A PathScope denial that names a more specific audit rule.
_SCOPE_RULES: Final = {"path.hardlink": RULE_HARDLINK, "path.device": RULE_DEVICE}


@dataclass(frozen=True)
class AuditViolation:
    """One reason a change set is refused."""

    rule: str
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class ChangedFile:
    """One file of a change set; ``path`` is relative to the workspace, in POSIX form.

    ``status`` is git's: ``A`` added, ``M`` modified, ``D`` deleted, ``T`` type changed.
    ``added``/``deleted`` line counts are None for binary files.
    """

    path: str
    status: str
    old_mode: int
    new_mode: int
    added: int | None = None
    deleted: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "status": self.status,
            "old_mode": f"{self.old_mode:06o}",
            "new_mode": f"{self.new_mode:06o}",
            "added": self.added,
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class AuditPolicy:
    """What a change set must satisfy: the step's path scope and budgets (None: no limit)."""

    allowed_paths: Sequence[str] = ("**",)
    denied_paths: Sequence[str] = ()
    protected_paths: Sequence[str] = DEFAULT_PROTECTED
    max_edits: int | None = None
    max_files: int | None = None

    @classmethod
    def from_mapping(cls, policy: Mapping[str, Any] | Any) -> AuditPolicy:
        """From a step policy mapping or settings object (``allowed_paths``, ``max_edits`` ...)."""
        if not isinstance(policy, Mapping):
            policy = policy.model_dump() if hasattr(policy, "model_dump") else vars(policy)
        allowed = policy.get("allowed_paths")
        return cls(
            allowed_paths=tuple(allowed) if allowed is not None else ("**",),
            denied_paths=tuple(policy.get("denied_paths") or ()),
            protected_paths=tuple(policy.get("protected_paths") or DEFAULT_PROTECTED),
            max_edits=policy.get("max_edits"),
            max_files=policy.get("max_files"),
        )

    def scope(self, workspace: Path) -> PathScope:
        """The path scope of this policy on ``workspace``."""
        return PathScope(
            workspace, self.allowed_paths, self.denied_paths, protected=self.protected_paths
        )


@dataclass(frozen=True)
class AuditResult:
    """The audited change set: the patch, the files, and any violations (``ok`` when none)."""

    ok: bool
    violations: tuple[AuditViolation, ...]
    patch: bytes
    files: tuple[ChangedFile, ...]
    edit_count: int
    summary: str = ""
    notes: tuple[str, ...] = ()

    @property
    def reasons(self) -> list[str]:
        """``rule: path: reason`` for every violation."""
        return [f"{v.rule}: {v.path}: {v.reason}" for v in self.violations]

    @property
    def rules(self) -> set[str]:
        return {violation.rule for violation in self.violations}

    def write_patch(self, path: Path) -> Path:
        """Write the patch (``changes.patch``) as the exact bytes git produced."""
        path.write_bytes(self.patch)
        return path

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "violations": [violation.to_dict() for violation in self.violations],
            "files": [changed.to_dict() for changed in self.files],
            "edit_count": self.edit_count,
            "notes": list(self.notes),
        }


def mode_violations(
    path: str, old_mode: int, new_mode: int, *, content_changed: bool = True
) -> list[AuditViolation]:
    """The symlink, executable and submodule rules for one file going from one mode to another.

    Shared by the audit and ``apply``, so both refuse exactly the same changes.
    """
    found: list[AuditViolation] = []
    if new_mode == MODE_SYMLINK and (old_mode != MODE_SYMLINK or content_changed):
        verb = "retargets" if old_mode == MODE_SYMLINK else "adds"
        found.append(AuditViolation(RULE_SYMLINK, path, f"the change set {verb} a symlink"))
    elif new_mode == MODE_GITLINK and (old_mode != MODE_GITLINK or content_changed):
        found.append(AuditViolation(RULE_SUBMODULE, path, "the change set adds a submodule"))
    elif new_mode == MODE_EXECUTABLE and old_mode != MODE_EXECUTABLE:
        was = "a new file" if old_mode == MODE_NONE else f"mode {old_mode:06o}"
        found.append(AuditViolation(RULE_MODE, path, f"{was} becomes executable (100755)"))
    elif new_mode not in (MODE_NONE, MODE_FILE, MODE_EXECUTABLE, MODE_SYMLINK, MODE_GITLINK):
        found.append(AuditViolation(RULE_MODE, path, f"unexpected mode {new_mode:06o}"))
    return found


def scope_violations(scope: PathScope, paths: Iterable[str]) -> list[AuditViolation]:
    """Every path of a change set that ``scope`` would not let be written."""
    found: list[AuditViolation] = []
    for path in paths:
        decision = scope.check(path, for_write=True)
        if not decision.allowed:
            rule = _SCOPE_RULES.get(decision.rule, RULE_PATH)
            found.append(AuditViolation(rule, path, f"{decision.reason} [{decision.rule}]"))
    return found


def budget_violations(
    policy: AuditPolicy, *, edit_count: int, file_count: int
) -> list[AuditViolation]:
    """Edits beyond ``max_edits`` and changed files beyond ``max_files``."""
    found: list[AuditViolation] = []
    if policy.max_edits is not None and edit_count > policy.max_edits:
        found.append(
            AuditViolation(
                RULE_BUDGET, "", f"{edit_count} edit calls exceed max_edits={policy.max_edits}"
            )
        )
    if policy.max_files is not None and file_count > policy.max_files:
        found.append(
            AuditViolation(
                RULE_BUDGET,
                "",
                f"{file_count} changed files exceed max_files={policy.max_files}",
            )
        )
    return found


Signature = tuple[object, ...]


@dataclass
class OutsideWatch:
    """A metadata snapshot of paths outside the copy, to detect writes there during a step.

    Take it with :meth:`start` after :meth:`~bcce.policy.isolation.Workspace.isolate` and before
    the agent runs; :meth:`changes` lists what differs afterwards.
    """

    roots: tuple[Path, ...]
    exclude: tuple[Path, ...]
    max_entries: int
    before: dict[str, Signature] = field(default_factory=dict)
    truncated: bool = False

    @classmethod
    def start(
        cls,
        paths: Iterable[Path],
        *,
        exclude: Iterable[Path] = (),
        max_entries: int = 200_000,
    ) -> OutsideWatch:
        """Snapshot ``paths`` (files or trees), skipping anything under ``exclude``."""
        watch = cls(
            roots=tuple(Path(os.path.abspath(p)) for p in paths),  # noqa: PTH100
            exclude=tuple(Path(os.path.realpath(p)) for p in exclude),
            max_entries=max_entries,
        )
        watch.before, watch.truncated = watch._scan()
        return watch

    def changes(self) -> list[str]:
        """Paths added, removed or changed since :meth:`start` (sorted)."""
        after, _ = self._scan()
        keys = set(self.before) | set(after)
        return sorted(key for key in keys if self.before.get(key) != after.get(key))

    def _excluded(self, path: str) -> bool:
        return any(
            os.path.commonpath([path, excluded]) == str(excluded) for excluded in self.exclude
        )

    def _scan(self) -> tuple[dict[str, Signature], bool]:
        seen: dict[str, Signature] = {}
        pending = [str(root) for root in self.roots]
        while pending:
            path = pending.pop()
            if self._excluded(path):
                continue
            if len(seen) >= self.max_entries:
                return seen, True
            signature = _signature(path)
            seen[path] = signature
            if signature[0] == "d":
                pending += [
                    os.path.join(path, name)  # noqa: PTH118
                    for name in sorted(_list(path), reverse=True)
                    if name not in SKIPPED_NAMES
                ]
        return seen, False


def _list(path: str) -> list[str]:
    try:
        return [entry.name for entry in Path(path).iterdir()]
    except OSError:
        return []


def _signature(path: str) -> Signature:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return ("absent",)
    except OSError as exc:
        return ("error", exc.errno)
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return ("d", stat.S_IMODE(mode))
    if stat.S_ISLNK(mode):
        return ("l", str(Path(path).readlink()), info.st_ctime_ns)
    return ("f", mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def audit_changes(
    workspace: IsolatedWorkspace,
    policy: AuditPolicy | Mapping[str, Any],
    edit_count: int,
    *,
    watch: OutsideWatch | None = None,
) -> AuditResult:
    """Compute the change set of ``workspace`` against its baseline and check it against policy.

    Fails closed: if the change set cannot be computed, the result is not ok (``audit.error``).
    """
    if not isinstance(policy, AuditPolicy):
        policy = AuditPolicy.from_mapping(policy)
    try:
        return _audit(workspace, policy, edit_count, watch)
    except (BcceError, OSError, ValueError) as exc:
        violation = AuditViolation(RULE_ERROR, "", f"the change set could not be audited: {exc}")
        return AuditResult(False, (violation,), b"", (), edit_count)


def _audit(
    workspace: IsolatedWorkspace,
    policy: AuditPolicy,
    edit_count: int,
    watch: OutsideWatch | None,
) -> AuditResult:
    violations: list[AuditViolation] = []
    notes: list[str] = []
    nested = _scan_copy(workspace, violations)
    excludes = [f":(exclude,literal){path}" for path in nested]
    baseline = workspace.baseline
    with tempfile.TemporaryDirectory(prefix="bcce-audit-") as scratch:
        index = Path(scratch) / "index"
        workspace.git("read-tree", baseline, index_file=index)
        workspace.git("add", "-A", "--", ".", *excludes, index_file=index)
        diff = ("diff", "--cached", "--no-renames", "--no-ext-diff", "--no-textconv", "--no-color")
        raw = workspace.git(*diff, "--raw", "-z", "--abbrev=40", baseline, index_file=index)
        numstat = workspace.git(*diff, "--numstat", "-z", baseline, index_file=index)
        summary = workspace.git(*diff, "--stat=100", "--summary", baseline, index_file=index)
        relative = (f"--relative={workspace.subdir}",) if workspace.subdir else ()
        patch = workspace.git(
            *diff,
            "--binary",
            "--full-index",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            *relative,
            baseline,
            index_file=index,
        )
    counts = _numstat(numstat)
    scope = policy.scope(workspace.path)
    files: list[ChangedFile] = []
    for old_mode, new_mode, status, top_path in _raw(raw):
        path = _in_workspace(top_path, workspace.subdir)
        if path is None:
            violations.append(
                AuditViolation(RULE_PATH, top_path, "the change is outside the workspace")
            )
            continue
        added, deleted = counts.get(top_path, (None, None))
        files.append(ChangedFile(path, status, old_mode, new_mode, added, deleted))
        violations += mode_violations(path, old_mode, new_mode)
        absolute = workspace.root / top_path
        if new_mode in (MODE_FILE, MODE_EXECUTABLE) and absolute.lstat().st_nlink > 1:
            violations.append(AuditViolation(RULE_HARDLINK, path, "the file has hard links"))
    violations += scope_violations(scope, [changed.path for changed in files])
    violations += budget_violations(policy, edit_count=edit_count, file_count=len(files))
    if watch is not None:
        violations += [
            AuditViolation(RULE_OUTSIDE, path, "changed outside the copy during the step")
            for path in watch.changes()
        ]
        if watch.truncated:
            notes.append(f"the outside watch stopped after {watch.max_entries} entries")
    # One violation per rule and path: several checks can see the same symlink or hard link.
    unique = tuple({(v.rule, v.path): v for v in reversed(violations)}.values())[::-1]
    return AuditResult(
        ok=not unique,
        violations=unique,
        patch=patch,
        files=tuple(files),
        edit_count=edit_count,
        summary=summary.decode("utf-8", "replace"),
        notes=tuple(notes),
    )


def _scan_copy(workspace: IsolatedWorkspace, violations: list[AuditViolation]) -> list[str]:
    """Walk the copy for new symlinks, special files and nested repositories; return the latter."""
    nested: list[str] = []
    root = workspace.root
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        for name in (*dirnames, *filenames):
            entry = base / name
            relative = entry.relative_to(root).as_posix()
            if name == ".git" and base != root:
                nested.append(base.relative_to(root).as_posix())
                violations.append(
                    AuditViolation(
                        RULE_SUBMODULE,
                        _display(relative, workspace.subdir),
                        "a nested git repository appeared in the copy",
                    )
                )
                continue
            if name == ".git":
                continue
            info = entry.lstat()
            if stat.S_ISLNK(info.st_mode):
                if workspace.initial_symlinks.get(relative) != str(entry.readlink()):
                    violations.append(
                        AuditViolation(
                            RULE_SYMLINK,
                            _display(relative, workspace.subdir),
                            "a symlink was added or retargeted",
                        )
                    )
            elif not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                violations.append(
                    AuditViolation(
                        RULE_DEVICE,
                        _display(relative, workspace.subdir),
                        "a device, FIFO or socket exists in the copy",
                    )
                )
        dirnames[:] = [name for name in dirnames if name != ".git"]
    return nested


def _display(top_path: str, subdir: str) -> str:
    inside = _in_workspace(top_path, subdir)
    return inside if inside is not None else top_path


def _in_workspace(top_path: str, subdir: str) -> str | None:
    if not subdir:
        return top_path
    prefix = subdir + "/"
    return top_path[len(prefix) :] if top_path.startswith(prefix) else None


def _raw(output: bytes) -> list[tuple[int, int, str, str]]:
    """Parse ``git diff --raw -z --no-renames``: ``:old new sha sha status NUL path NUL``."""
    items = split_z(output)
    entries: list[tuple[int, int, str, str]] = []
    for meta, path in zip(items[::2], items[1::2], strict=True):
        old_mode, new_mode, _old_sha, _new_sha, status = meta.lstrip(":").split(" ")
        entries.append((int(old_mode, 8), int(new_mode, 8), status[:1], path))
    return entries


def _numstat(output: bytes) -> dict[str, tuple[int | None, int | None]]:
    counts: dict[str, tuple[int | None, int | None]] = {}
    for item in split_z(output):
        added, deleted, path = item.split("\t", 2)
        counts[path] = (
            None if added == "-" else int(added),
            None if deleted == "-" else int(deleted),
        )
    return counts


__all__ = [
    "MODE_EXECUTABLE",
    "MODE_FILE",
    "MODE_GITLINK",
    "MODE_NONE",
    "MODE_SYMLINK",
    "RULE_BUDGET",
    "RULE_DEVICE",
    "RULE_ERROR",
    "RULE_HARDLINK",
    "RULE_MODE",
    "RULE_OUTSIDE",
    "RULE_PATH",
    "RULE_SUBMODULE",
    "RULE_SYMLINK",
    "AuditPolicy",
    "AuditResult",
    "AuditViolation",
    "ChangedFile",
    "OutsideWatch",
    "audit_changes",
    "budget_violations",
    "mode_violations",
    "scope_violations",
]
