"""Isolation tier B for plugin workers: a process confines itself with Landlock and seccomp.

The host asks :func:`probe_confinement` whether tier B works here and builds a
:class:`ConfinementPlan`; the worker child calls :func:`apply_confinement` on itself before it
imports the plugin. Everything applied is irreversible and inherited by the child's children:

- ``no_new_privs`` and an empty capability set. The worker may run as root, and root without
  capabilities still owns the system files, so the seccomp filter also denies ``chmod``;
- Landlock: every filesystem right the kernel's ABI knows is handled, and only the plan's
  paths get some (read, read-write, execute). On ABI >= 4 binding TCP ports is denied, and so
  is connecting unless the plan allows the network: the permission model names hosts, not
  ports, and Landlock cannot filter by host, so the worker's audit hook checks hosts. On
  ABI >= 6 signals and abstract Unix sockets are scoped to the worker and its children;
- seccomp (libseccomp through ``pyseccomp``; default allow, EPERM for what follows): Landlock
  does not cover UDP or connecting to a path Unix socket, so ``socket()`` is denied for every
  family but IPv4/IPv6 (raw and packet types denied), and for those too without the network;
  ``socketpair()`` gives only Unix stream pairs; io_uring, ptrace and cross-process memory
  access, mounts, namespaces (``unshare``, ``setns``, namespace flags of ``clone``), keyrings,
  BPF, perf, userfaultfd, kernel modules, kexec, reboot, swap, handle-based opens, ``chmod``
  and leaving the process group (``setsid``, ``setpgid``, so killing the group reaches every
  descendant) are denied; ``clone3`` fails with ENOSYS so the C library falls back to
  ``clone``, whose flags can be checked. Without ``spawn``, ``execve`` and creating processes
  are denied too (threads, ``clone`` with ``CLONE_THREAD``, are allowed).

``RLIMIT_NPROC`` is not used: the kernel ignores it for uid 0. What tier B does not cover on
the running kernel is listed by :func:`confinement_limits` and recorded with the tier.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import stat
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any, Final

# Landlock's system calls were added after the numbering was unified across architectures;
# only alpha, ia64 and mips number them differently, and tier B is not offered there.
_UNIFIED_MACHINES: Final = frozenset(
    {"x86_64", "aarch64", "arm64", "armv7l", "armv8l", "i686", "i386", "riscv64", "ppc64le",
     "ppc64", "s390x", "loongarch64"}
)  # fmt: skip
_SYS_LANDLOCK_CREATE_RULESET: Final = 444
_SYS_LANDLOCK_ADD_RULE: Final = 445
_SYS_LANDLOCK_RESTRICT_SELF: Final = 446
_LANDLOCK_CREATE_RULESET_VERSION: Final = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH: Final = 1

_FS_EXECUTE: Final = 1 << 0
_FS_WRITE_FILE: Final = 1 << 1
_FS_READ_FILE: Final = 1 << 2
_FS_READ_DIR: Final = 1 << 3
_FS_REMOVE_DIR: Final = 1 << 4
_FS_REMOVE_FILE: Final = 1 << 5
_FS_MAKE_DIR: Final = 1 << 7
_FS_MAKE_REG: Final = 1 << 8
_FS_MAKE_FIFO: Final = 1 << 10
_FS_MAKE_SYM: Final = 1 << 12
_FS_REFER: Final = 1 << 13  # ABI 2
_FS_TRUNCATE: Final = 1 << 14  # ABI 3
_FS_IOCTL_DEV: Final = 1 << 15  # ABI 5
_FS_READ: Final = _FS_READ_FILE | _FS_READ_DIR
# Never granted: making device nodes and sockets (AF_UNIX sockets are denied anyway).
_FS_WRITE: Final = (
    _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE_DIR | _FS_MAKE_REG
    | _FS_MAKE_FIFO | _FS_MAKE_SYM | _FS_REFER | _FS_TRUNCATE
)  # fmt: skip
# The rights a rule on a file (not a directory) may carry.
_FS_FILE_ONLY: Final = (
    _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
)  # fmt: skip
_NET_BIND_TCP: Final = 1 << 0  # ABI 4
_NET_CONNECT_TCP: Final = 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
_SCOPE_SIGNAL: Final = 1 << 1  # ABI 6

_PR_SET_NO_NEW_PRIVS: Final = 38
_CAPABILITY_VERSION_3: Final = 0x20080522

_CLONE_THREAD: Final = 0x00010000
_CLONE_NAMESPACES: Final = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
_SOCK_TYPE_MASK: Final = 0xF
_SOCK_RAW: Final = 3
_SOCK_PACKET: Final = 10
_DENIED: Final = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr", "unshare", "setns",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
    "open_by_handle_at", "name_to_handle_at",
    "chmod", "fchmod", "fchmodat", "fchmodat2",
    "setsid", "setpgid",
)  # fmt: skip
_DENIED_WITHOUT_SPAWN: Final = ("execve", "execveat", "fork", "vfork")
# Numbers of newer calls an older libseccomp may not know (the same on every architecture
# tier B is offered on; a rule for a call the kernel lacks is harmless).
_UNIFIED_NUMBERS: Final = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442, "fchmodat2": 452,
}  # fmt: skip
_PROBE_TIMEOUT: Final = 15.0
_SELF_TEST: Final = "from bcce.plugin.confine import _self_test; _self_test()"


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class Confinement:
    """Whether tier B is available here, why (not), and the kernel's Landlock ABI (0: none)."""

    available: bool
    reason: str
    landlock_abi: int = 0


@dataclass(frozen=True)
class ConfinementPlan:
    """What a confined worker may do: paths it may read, read and write, and execute (each path
    with what is beneath it; missing paths are skipped), and whether it may use the network
    and start processes."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    execute: tuple[str, ...] = ()
    network: bool = False
    spawn: bool = False

    def to_json(self) -> str:
        """The plan as passed to the worker on its command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ConfinementPlan:
        """The plan :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            read=tuple(str(path) for path in data["read"]),
            write=tuple(str(path) for path in data["write"]),
            execute=tuple(str(path) for path in data["execute"]),
            network=bool(data["network"]),
            spawn=bool(data["spawn"]),
        )


def landlock_abi() -> tuple[int, str]:
    """The running kernel's Landlock ABI version (0 when unusable) and, for 0, why."""
    if platform.machine() not in _UNIFIED_MACHINES:
        return 0, f"tier B does not support the {platform.machine()} architecture"
    version = _libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
        ctypes.c_void_p(None),
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    if version > 0:
        return int(version), ""
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        return 0, "the kernel has no Landlock (Linux 5.13 or later built with it is needed)"
    if code == errno.EOPNOTSUPP:
        return 0, "Landlock is disabled at boot (add landlock to the kernel's lsm= list)"
    return 0, f"Landlock cannot be used here: {os.strerror(code)}"


def probe_confinement() -> Confinement:
    """Find out whether tier B works here: check the parts, then confine a child and test it.

    Nothing is applied to the calling process.
    """
    abi, why = landlock_abi()
    if abi == 0:
        return Confinement(False, why)
    try:
        _seccomp()
    except ImportError:
        return Confinement(False, "pyseccomp is not installed", abi)
    except (OSError, RuntimeError) as exc:
        return Confinement(False, f"libseccomp cannot be loaded (package libseccomp2): {exc}", abi)
    try:
        completed = subprocess.run(
            [sys.executable, "-I", "-c", _SELF_TEST],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Confinement(False, f"the tier B self-test could not run: {exc}", abi)
    if completed.returncode != 0 or completed.stdout.strip() != "ok":
        lines = (completed.stdout + completed.stderr).strip().splitlines()
        detail = lines[-1] if lines else f"exit {completed.returncode}"
        return Confinement(False, f"the tier B self-test failed: {detail}", abi)
    return Confinement(True, f"Landlock ABI {abi} and seccomp confine a test process", abi)


def apply_confinement(plan: ConfinementPlan) -> int:
    """Confine the calling process (single-threaded) for good; return the Landlock ABI used.

    Raises :class:`OSError` naming the step that failed; the process is then not to be used.
    """
    if threading.active_count() != 1:
        # Landlock confines the calling thread only (and its future children).
        raise OSError(errno.EBUSY, "confine before starting threads")
    abi, why = landlock_abi()
    if abi == 0:
        raise OSError(errno.ENOSYS, why)
    seccomp = _seccomp()  # load libseccomp before Landlock hides it
    no_new_privs = (ctypes.c_ulong(value) for value in (1, 0, 0, 0))
    if _libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), *no_new_privs) != 0:
        raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
    _drop_capabilities()
    _restrict_self(plan, abi)
    _syscall_filter(seccomp, plan).load()
    return abi


def confinement_limits(abi: int, *, network: bool) -> list[str]:
    """What tier B leaves uncovered with Landlock ``abi``, for the isolation record."""
    limits = [
        "metadata changes other than chmod (timestamps, extended attributes) are not restricted"
    ]
    if abi < 4:
        limits.append(
            f"Landlock ABI {abi} cannot restrict TCP: only seccomp's socket denial stands "
            "without a network permission"
        )
    if abi < 6:
        limits.append(
            f"Landlock ABI {abi} cannot scope signals or abstract Unix sockets: processes of "
            "the same uid can be signalled"
        )
    if network:
        limits.append(
            "with a network permission every host and port is reachable at the OS level (TCP "
            "and UDP); granted hosts are checked inside the worker only"
        )
    if os.geteuid() == 0:
        limits.append("runs as uid 0 without capabilities; RLIMIT_NPROC does not apply to uid 0")
    return limits


def _seccomp() -> Any:
    # Imported late: it raises RuntimeError at import when libseccomp is missing.
    import pyseccomp  # type: ignore[import-untyped]

    return pyseccomp


def _error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what} failed: {os.strerror(code)}")


def _drop_capabilities() -> None:
    # With no_new_privs, execve cannot gain capabilities, so the bounding set may stay.
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise _error("capset")
    if _libc.capget(ctypes.byref(header), data) != 0:
        raise _error("capget")
    if any(part.effective or part.permitted or part.inheritable for part in data):
        raise OSError(errno.EPERM, "capabilities are still held after capset")


def _handled_fs(abi: int) -> int:
    if abi >= 5:
        return (_FS_IOCTL_DEV << 1) - 1
    if abi >= 3:
        return (_FS_TRUNCATE << 1) - 1
    if abi >= 2:
        return (_FS_REFER << 1) - 1
    return _FS_REFER - 1


def _restrict_self(plan: ConfinementPlan, abi: int) -> None:
    handled_fs = _handled_fs(abi)
    attr = _RulesetAttr(handled_fs, 0, 0)
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | (0 if plan.network else _NET_CONNECT_TCP)
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
    ruleset = _libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        raise _error("landlock_create_ruleset")
    try:
        access: dict[str, int] = {}
        for paths, rights in (
            (plan.read, _FS_READ),
            (plan.write, _FS_READ | _FS_WRITE),
            (plan.execute, _FS_READ | _FS_EXECUTE),
        ):
            for path in paths:
                access[path] = access.get(path, 0) | rights
        for path, rights in access.items():
            _add_path_rule(int(ruleset), path, rights & handled_fs)
        if _libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)
        ):
            raise _error("landlock_restrict_self")
    finally:
        os.close(ruleset)


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        # Missing, or out of reach without capabilities: like bubblewrap's --ro-bind-try.
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FS_FILE_ONLY
        attr = _PathBeneathAttr(rights, fd)
        if _libc.syscall(
            ctypes.c_long(_SYS_LANDLOCK_ADD_RULE),
            ctypes.c_int(ruleset),
            ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_uint32(0),
        ):
            raise _error(f"landlock_add_rule for {path!r}")
    finally:
        os.close(fd)


def _syscall_filter(seccomp: Any, plan: ConfinementPlan) -> Any:
    deny = seccomp.ERRNO(errno.EPERM)
    masked, equal, greater = seccomp.MASKED_EQ, seccomp.EQ, seccomp.GT
    syscalls = seccomp.SyscallFilter(seccomp.ALLOW)
    # A 32-bit (x86 int 0x80) call would not meet these rules: kill the process instead.
    syscalls.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)

    def rule(action: int, name: str, *args: Any) -> None:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        if number == -1:  # libseccomp does not know it
            if name not in _UNIFIED_NUMBERS:
                raise OSError(errno.EINVAL, f"libseccomp does not know the system call {name!r}")
            number = _UNIFIED_NUMBERS[name]
        syscalls.add_rule(action, number, *args)

    for name in _DENIED:
        rule(deny, name)
    rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in _CLONE_NAMESPACES:
        rule(deny, "clone", seccomp.Arg(0, masked, flag, flag))
    if not plan.spawn:
        for name in _DENIED_WITHOUT_SPAWN:
            rule(deny, name)
        rule(deny, "clone", seccomp.Arg(0, masked, _CLONE_THREAD, 0))
    if plan.network:
        # Every family but AF_INET (2) and AF_INET6 (10); "greater" also catches high bits.
        for family in (0, 1, *range(3, 10)):
            rule(deny, "socket", seccomp.Arg(0, equal, family))
        rule(deny, "socket", seccomp.Arg(0, greater, 10))
        for kind in (_SOCK_RAW, _SOCK_PACKET):
            rule(deny, "socket", seccomp.Arg(1, masked, _SOCK_TYPE_MASK, kind))
    else:
        rule(deny, "socket")
    # A connected Unix stream pair cannot be pointed at a path; a datagram one can.
    rule(deny, "socketpair", seccomp.Arg(0, seccomp.NE, 1))
    rule(deny, "socketpair", seccomp.Arg(1, masked, _SOCK_TYPE_MASK, 2))
    return syscalls


def _self_test() -> None:
    """Run by :func:`probe_confinement` in a child: confine with an empty plan, check denials."""
    import socket
    from pathlib import Path

    apply_confinement(ConfinementPlan())
    failures: list[str] = []
    try:
        list(Path("/").iterdir())
        failures.append("Landlock did not deny reading /")
    except PermissionError:
        pass
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()
        failures.append("seccomp did not deny a netlink socket")
    except PermissionError:
        pass
    print("; ".join(failures) or "ok")


__all__ = [
    "Confinement",
    "ConfinementPlan",
    "apply_confinement",
    "confinement_limits",
    "landlock_abi",
    "probe_confinement",
]
