"""Path scopes: is a path inside the workspace, of a safe kind, and allowed by the step's globs?

A path is checked in this order, the first failure deciding (rule ids in brackets):

1. the string itself: empty, NUL, control or invisible characters, a backslash or a character that
   looks like a slash, or longer than :data:`MAX_PATH_LENGTH` [``path.invalid``];
2. lexical containment: the path, made absolute against the workspace and normalised, must lie in
   the workspace (as given or as resolved). This stops ``..`` escapes and absolute paths outside,
   including ``/proc/self/root/...`` and ``/proc/self/cwd/...`` [``path.outside_workspace``];
3. resolved containment: ``os.path.realpath`` follows every symlink (a symlinked file, a
   symlinked parent directory, ``link/..``); for a file that does not exist yet the nearest
   existing parent is resolved and the rest appended. Containment is checked with
   ``os.path.commonpath``, never ``startswith`` (``/ws-evil`` is not in ``/ws``)
   [``path.symlink_escape``];
4. the file, when it exists: a device, FIFO or socket is denied [``path.device``]; a regular file
   with more than one hard link is denied for writes, since writing it changes a file elsewhere
   [``path.hardlink``];
5. globs, matched on both the lexical and the resolved workspace-relative POSIX path with
   ``wcmatch.glob.globmatch`` (GLOBSTAR, DOTGLOB, FORCEUNIX; an existing directory is matched
   with a trailing ``/``): for writes, the ``protected`` patterns deny [``path.protected``]; the
   ``denied`` patterns deny [``path.denied``]; the path must match an ``allowed`` pattern
   [``path.not_allowed``]. Glob matching never sees ``..``: ``src/**`` cannot match
   ``src/../etc/passwd`` because that path is ``etc/passwd`` by the time it is matched.

Case and Unicode: instead of probing whether the filesystem folds case (a probe answers for one
directory, while a workspace can span mounts), ``denied`` and ``protected`` patterns always match
case-insensitively and after NFC normalisation, and ``allowed`` patterns always match exactly.
That is correct on both kinds of filesystem: on a case-insensitive one ``SECRETS/key`` is still
denied by ``secrets/**``; on a case-sensitive one ``.GIT/config`` is still refused, since the
change set may be applied on a machine where it is ``.git/config``.

Checks are point-in-time: a file swapped for a symlink after the check is the sandbox's and the
change-set audit's business.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import Final

from wcmatch import glob

from bcce.errors import ConfigError
from bcce.policy.decision import Decision

GLOB_FLAGS: Final = glob.GLOBSTAR | glob.DOTGLOB | glob.FORCEUNIX
MAX_PATH_LENGTH: Final = 4096

DEFAULT_PROTECTED: Final = ("**/.git", "**/.git/**", "**/.claude/**", ".mcp.json")
"""Never writable, whatever ``allowed`` says: git configuration and hooks, and Claude Code's own
settings and MCP servers, all run commands the allowlist never sees."""

_SLASH_LOOKALIKES: Final = frozenset("\\\u2044\u2215\u29f8\u29f9\uff0f\uff3c")
_INVISIBLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})

PathLike = str | os.PathLike[str]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # mixed absolute and relative paths
        return False


def _string_problem(raw: str) -> str | None:
    if not raw:
        return "the path is empty"
    if len(raw) > MAX_PATH_LENGTH:
        return f"the path is longer than {MAX_PATH_LENGTH} characters"
    for char in raw:
        if char == "\0":
            return "the path contains a NUL byte"
        if char in _SLASH_LOOKALIKES:
            return f"the path contains U+{ord(char):04X}, which is or looks like a separator"
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return f"the path contains the control or invisible character U+{ord(char):04X}"
    return None


def _pattern(pattern: str, key: str) -> str:
    problem = _string_problem(pattern) if isinstance(pattern, str) else "not a string"
    if problem is None:
        while pattern.startswith("./"):
            pattern = pattern[2:]
        if pattern.startswith("/"):
            problem = "it is absolute; patterns are relative to the workspace"
        elif ".." in pattern.split("/"):
            problem = "it contains `..`"
        elif not pattern:
            problem = "it is empty"
    if problem is not None:
        raise ConfigError(
            f"path pattern {pattern!r} is invalid: {problem}",
            key=key,
            hint="write globs relative to the workspace, such as `src/**` or `docs/*.md`",
        )
    return pattern


class PathScope:
    """Decides whether a path may be read or written by a step confined to a workspace."""

    def __init__(
        self,
        workspace: PathLike,
        allowed: Sequence[str],
        denied: Sequence[str] = (),
        *,
        protected: Sequence[str] = DEFAULT_PROTECTED,
    ) -> None:
        # The workspace as given (lexically absolute) and as resolved: tool calls may use either.
        given = os.path.abspath(os.fspath(workspace))  # noqa: PTH100
        root = os.path.realpath(given)
        if not Path(root).is_dir():
            raise ConfigError(f"workspace {given!r} is not a directory", key="workspace")
        self._given = given
        self._root = root
        self._allowed = tuple(_pattern(item, "allowed_paths") for item in allowed)
        self._denied = tuple(_fold(_pattern(item, "denied_paths")) for item in denied)
        self._protected = tuple(_fold(_pattern(item, "protected_paths")) for item in protected)

    @property
    def workspace(self) -> str:
        """The workspace directory, resolved."""
        return self._root

    def check(self, path: PathLike, *, for_write: bool) -> Decision:
        """Allow or deny access to ``path`` (relative paths are relative to the workspace).

        Never raises: an unexpected error is a deny (``path.internal_error``).
        """
        try:
            return self._check(path, for_write=for_write)
        except Exception as exc:  # noqa: BLE001 - fail closed: a checker bug must deny
            return Decision.deny(
                "path.internal_error", f"the path could not be checked ({type(exc).__name__})"
            )

    def check_many(self, paths: Iterable[PathLike], *, for_write: bool) -> Decision:
        """The first deny among ``paths``, or one allow when every path is in scope."""
        count = 0
        for path in paths:
            decision = self.check(path, for_write=for_write)
            if not decision.allowed:
                return decision
            count += 1
        return Decision.allow("path.allowed", f"all {count} paths are in scope")

    def _check(self, path: PathLike, *, for_write: bool) -> Decision:
        raw: object = os.fspath(path)
        if not isinstance(raw, str):
            return Decision.deny("path.invalid", "the path is not text")
        problem = _string_problem(raw)
        if problem is not None:
            return Decision.deny("path.invalid", problem)

        # os.path on strings: normpath and realpath must both see exactly the text passed in.
        joined = os.path.join(self._root, raw)  # noqa: PTH118
        lexical = os.path.normpath(joined)
        base = next((root for root in (self._root, self._given) if _inside(lexical, root)), None)
        if base is None:
            return Decision.deny("path.outside_workspace", f"{raw!r} is outside the workspace")
        resolved = os.path.realpath(joined)
        if not _inside(resolved, self._root):
            return Decision.deny(
                "path.symlink_escape",
                f"{raw!r} resolves through a symlink to {resolved!r}, outside the workspace",
            )

        try:
            info: os.stat_result | None = Path(resolved).stat()
        except (FileNotFoundError, NotADirectoryError):
            info = None  # a new file: its existing parents were resolved above
        except OSError as exc:
            return Decision.deny("path.invalid", f"{raw!r} cannot be inspected: {exc.strerror}")
        is_dir = info is not None and stat.S_ISDIR(info.st_mode)
        if info is not None and not (is_dir or stat.S_ISREG(info.st_mode)):
            return Decision.deny("path.device", f"{raw!r} is a device, FIFO or socket")
        if for_write and info is not None and not is_dir and info.st_nlink > 1:
            return Decision.deny(
                "path.hardlink",
                f"{raw!r} has {info.st_nlink} hard links; writing it would change another file",
            )

        for absolute, root in ((lexical, base), (resolved, self._root)):
            relative = os.path.relpath(absolute, root)
            relative = "" if relative == "." else PurePath(relative).as_posix()
            denial = self._match(
                raw, relative + "/" if is_dir and relative else relative, for_write
            )
            if denial is not None:
                return denial
        return Decision.allow("path.allowed", f"{raw!r} is in scope")

    def _match(self, raw: str, relative: str, for_write: bool) -> Decision | None:
        folded = _fold(relative)
        if for_write and glob.globmatch(folded, self._protected, flags=GLOB_FLAGS):
            return Decision.deny("path.protected", f"{raw!r} is protected from writes")
        if glob.globmatch(folded, self._denied, flags=GLOB_FLAGS):
            return Decision.deny("path.denied", f"{raw!r} matches a denied path pattern")
        if not glob.globmatch(relative, self._allowed, flags=GLOB_FLAGS):
            return Decision.deny(
                "path.not_allowed", f"{raw!r} ({relative or '.'}) is not in the allowed paths"
            )
        return None


__all__ = ["DEFAULT_PROTECTED", "GLOB_FLAGS", "MAX_PATH_LENGTH", "PathScope"]
