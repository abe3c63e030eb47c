"""The OS sandbox for an agent step's subprocesses: probing the tier, building bubblewrap commands.

Tiers, probed at run time and never assumed (the tier used is recorded by the caller):

- ``bubblewrap``: ``bwrap`` is installed *and* actually runs here with every namespace (Docker
  without user namespaces, Ubuntu's AppArmor userns restriction and old kernels make it fail);
- ``none``: no OS sandbox. Only the hook, the copy and the post-run audit stand between Bash and
  the filesystem, so ``policy.strict`` refuses this tier (:func:`require_sandbox`).

Two ways to use the tier (see docs/security-model.md):

- :func:`claude_code_sandbox_settings` gives the value for ``ClaudeAgentOptions(sandbox=...)``:
  Claude Code then runs each Bash command in its own bubblewrap sandbox (writes only to its cwd
  and a private temp dir, no network) while the CLI itself still reaches the model endpoint. It
  also needs ``socat``; without ``failIfUnavailable`` it silently runs Bash unconfined when
  ``bwrap`` or ``socat`` is missing, so the settings always set it;
- :func:`bwrap_argv` / :func:`wrap_command` confine any program (a cmd step, a plugin worker, or
  the whole CLI with ``network="host"`` so it can reach a 127.0.0.1 model server).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from bcce.errors import PolicyDenied

TierName = Literal["bubblewrap", "none"]
Network = Literal["none", "host"]

INSTALL_HINT: Final = (
    "install the `bubblewrap` package (and `socat` for Claude Code's own sandbox), "
    "e.g. `apt-get install bubblewrap socat`, and make sure unprivileged user namespaces are "
    "allowed; or set policy.strict: false to run agent steps without an OS sandbox"
)
PROTECTED_IN_COPY: Final = (".git", ".claude", ".mcp.json")
"""Kept read-only inside the copy even when a broader path is writable."""

_PROBE_TIMEOUT: Final = 15.0
_GLOB_CHARS: Final = frozenset("*?[{!")


@dataclass(frozen=True)
class SandboxTier:
    """The isolation tier available for an agent's subprocesses, and why."""

    name: TierName
    reason: str
    bwrap: str | None = None
    socat: str | None = None

    @property
    def claude_code_ready(self) -> bool:
        """Whether Claude Code's own sandbox can start here (it needs bwrap and socat)."""
        return self.name == "bubblewrap" and self.socat is not None

    def to_dict(self) -> dict[str, object]:
        """The tier as recorded in ``policy.json`` and audit events."""
        return {
            "tier": self.name,
            "reason": self.reason,
            "bwrap": self.bwrap,
            "socat": self.socat,
            "claude_code_ready": self.claude_code_ready,
        }


def probe_sandbox(*, bwrap: str | None = None) -> SandboxTier:
    """Find out whether bubblewrap really runs here, by running it with every namespace."""
    binary = bwrap or shutil.which("bwrap")
    socat = shutil.which("socat")
    if binary is None:
        return SandboxTier("none", "bwrap is not installed (package `bubblewrap`)", None, socat)
    argv = [
        binary,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",  # noqa: S108 - a private tmpfs inside the sandbox
        "true",
    ]
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxTier("none", f"bwrap could not be started: {exc}", binary, socat)
    if completed.returncode != 0:
        detail = completed.stderr.strip() or f"exit {completed.returncode}"
        return SandboxTier(
            "none",
            f"bwrap is installed but cannot create a sandbox here: {detail}",
            binary,
            socat,
        )
    return SandboxTier("bubblewrap", "bwrap runs with all namespaces", binary, socat)


def require_sandbox(tier: SandboxTier, *, strict: bool, claude_code: bool = False) -> None:
    """Refuse to go on without an OS sandbox when ``strict`` (exit 5).

    With ``claude_code``, Claude Code's own sandbox is what will be used, so socat is needed too.
    """
    if not strict:
        return
    if tier.name == "none":
        raise PolicyDenied(
            f"policy.strict requires an OS sandbox for agent steps: {tier.reason}",
            hint=INSTALL_HINT,
            key="policy.strict",
        )
    if claude_code and not tier.claude_code_ready:
        raise PolicyDenied(
            "policy.strict requires Claude Code's sandbox, which needs socat: it is not installed",
            hint=INSTALL_HINT,
            key="policy.strict",
        )


def writable_paths(workspace: Path, allowed: Sequence[str]) -> list[Path]:
    """The directories or files to make writable for ``allowed`` glob patterns.

    A pattern's literal leading directories are used (``src/**`` -> ``src``, ``tests/*.py`` ->
    ``tests``, ``README.md`` -> that file). This over-approximates the globs; the post-run audit
    checks the exact patterns. Paths that do not exist yet are left out: Bash cannot create them
    (a bind mount needs an existing source), while the Edit and Write tools, which the hook
    checks, still can.
    """
    root = Path(os.path.realpath(workspace))
    found: list[Path] = []
    for pattern in allowed:
        parts: list[str] = []
        for part in pattern.split("/"):
            if part in ("", ".") or any(char in _GLOB_CHARS for char in part):
                break
            parts.append(part)
        candidate = root.joinpath(*parts)
        if candidate.is_file() and "/".join(parts) != pattern.strip("/"):
            candidate = candidate.parent
        if not candidate.exists():
            continue
        real = Path(os.path.realpath(candidate))
        if os.path.commonpath([real, root]) != str(root):
            continue  # a symlink out of the workspace is never made writable
        found.append(real)
    unique = sorted(set(found), key=lambda path: (len(path.parts), str(path)))
    return [p for p in unique if not any(q != p and q in p.parents for q in unique)]


def bwrap_argv(
    workspace: Path,
    writable: Iterable[Path],
    network: Network = "none",
    extra_ro: Iterable[Path] = (),
    *,
    bwrap: str = "bwrap",
    extra_rw: Iterable[Path] = (),
) -> list[str]:
    """The bubblewrap command line (without the program) confining a process to ``workspace``.

    All namespaces are unshared (the network one kept only for ``network="host"``); the root
    filesystem is read-only; ``/tmp`` is a private tmpfs; ``workspace`` is visible read-only
    and only ``writable`` paths inside it are writable, except :data:`PROTECTED_IN_COPY`.
    ``extra_rw`` paths outside the workspace (a HOME for the CLI) are writable too. The
    environment is passed through: give the process a clean one.
    """
    root = Path(os.path.realpath(workspace))
    argv = [bwrap, "--unshare-all"]
    if network == "host":
        argv.append("--share-net")
    elif network != "none":
        raise ValueError(f"network must be 'none' or 'host', not {network!r}")
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]  # noqa: S108
    # Order matters: later mounts cover earlier ones (the tmpfs would hide a copy under /tmp).
    argv += ["--ro-bind", str(root), str(root)]
    for path in writable:
        real = Path(os.path.realpath(path))
        if os.path.commonpath([real, root]) != str(root):
            raise ValueError(f"writable path {str(path)!r} is outside the workspace")
        argv += ["--bind", str(real), str(real)]
    for path in extra_rw:
        argv += ["--bind", str(path), str(path)]
    for name in PROTECTED_IN_COPY:
        protected = root / name
        if protected.exists() or protected.is_symlink():
            argv += ["--ro-bind", str(protected), str(protected)]
    for path in extra_ro:
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--chdir", str(root)]
    return argv


def wrap_command(
    program: Sequence[str],
    workspace: Path,
    writable: Iterable[Path],
    network: Network = "none",
    extra_ro: Iterable[Path] = (),
    *,
    bwrap: str = "bwrap",
    extra_rw: Iterable[Path] = (),
) -> list[str]:
    """``program`` run inside :func:`bwrap_argv`'s sandbox."""
    if not program:
        raise ValueError("no program to wrap")
    return [
        *bwrap_argv(workspace, writable, network, extra_ro, bwrap=bwrap, extra_rw=extra_rw),
        "--",
        *program,
    ]


def claude_code_sandbox_settings(
    *,
    deny_write: Iterable[Path] = (),
    nested: bool = False,
) -> dict[str, Any]:
    """The ``sandbox`` value for ``ClaudeAgentOptions`` (merged by the SDK into ``--settings``).

    Every Bash command then runs in bubblewrap: writable are the CLI's cwd (the copy) and a
    private temp dir, minus ``deny_write`` (absolute paths); Bash gets no network. Claude Code
    refuses to start if the sandbox cannot (``failIfUnavailable``) instead of running Bash
    unconfined, and ignores ``dangerouslyDisableSandbox``. ``nested`` is needed when the CLI
    itself runs inside bubblewrap (its inner sandbox then keeps the outer /proc).
    """
    settings: dict[str, Any] = {
        "enabled": True,
        "failIfUnavailable": True,
        "allowUnsandboxedCommands": False,
        "autoAllowBashIfSandboxed": False,
        "excludedCommands": [],
        "network": {"allowedDomains": []},
    }
    denied = [os.path.abspath(path) for path in deny_write]  # noqa: PTH100
    if denied:
        settings["filesystem"] = {"denyWrite": denied}
    if nested:
        settings["enableWeakerNestedSandbox"] = True
    return settings


__all__ = [
    "INSTALL_HINT",
    "PROTECTED_IN_COPY",
    "Network",
    "SandboxTier",
    "TierName",
    "bwrap_argv",
    "claude_code_sandbox_settings",
    "probe_sandbox",
    "require_sandbox",
    "wrap_command",
    "writable_paths",
]
