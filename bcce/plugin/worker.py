"""The host side of a sandboxed plugin worker: start it by isolation tier, talk JSON lines to it.

Tiers (see docs/security-model.md), probed with :func:`bcce.policy.sandbox.probe_sandbox`:

- ``A``: bubblewrap. Only the interpreter, its libraries, bcce, the plugin directory (read-only)
  and the granted paths are mounted; a private tmpfs work dir; no network namespace unless a
  network permission is granted; no executables other than the interpreter unless
  ``process:spawn`` is granted; a clean environment; rlimits on top;
- ``B``: Landlock + seccomp + no capabilities (:mod:`bcce.plugin.confine`, probed with
  :func:`~bcce.plugin.confine.probe_confinement`), applied by the child to itself before it
  imports the plugin: it may read the same paths tier A mounts, write only its private work
  dir and the granted paths, use IP sockets only with a network permission and start
  processes only with ``process:spawn``; rlimits on top;
- ``C``: rlimits, a clean environment, a private cwd and the call timeout. Not a security
  boundary, so ``strict`` refuses it.

The first available of A, B, C is used unless a tier is requested; a requested tier that is
not available is refused in strict mode and otherwise becomes C, which the isolation record
says. The plugin's entry point is imported only in the child. A hung or cancelled call kills
the worker's process group; a crash, a kill or memory exhaustion becomes a
:class:`PluginError` naming the cause.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, TypeVar, cast

from bcce.errors import PluginError
from bcce.plugin.confine import (
    Confinement,
    ConfinementPlan,
    confinement_limits,
    probe_confinement,
)
from bcce.plugin.permissions import NETWORK_KINDS, PermissionSet
from bcce.policy.sandbox import SandboxTier, probe_sandbox

_T = TypeVar("_T")

IsolationTier = Literal["A", "B", "C"]

_WORK_DIR: Final = "/tmp/work"  # noqa: S108 - inside the sandbox's private tmpfs
_STDERR_TAIL: Final = 4096
_MAX_REPLY: Final = 16 * 1024 * 1024
_GLOB_CHARS: Final = frozenset("*?[{!")
_POLL_SECONDS: Final = 0.05
_MECHANISMS: Final[dict[IsolationTier, str]] = {
    "A": "bubblewrap",
    "B": "landlock+seccomp",
    "C": "rlimits",
}
_LIB_DIRS: Final = ("/usr/lib", "/usr/lib64", "/usr/local/lib")
_DEVICES_READ: Final = ("/dev/zero", "/dev/random", "/dev/urandom")
_ETC_FILES: Final = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group")
_ETC_NETWORK: Final = (
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
)
_SPAWN_DIRS: Final = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/libexec")
STRICT_HINT: Final = (
    "install bubblewrap (`apt-get install bubblewrap`) and allow unprivileged user namespaces, "
    "or use a kernel with Landlock enabled (Linux 5.13+) and libseccomp (`libseccomp2`), "
    "or set plugins.strict: false to run plugins with resource limits only (not a boundary)"
)


@functools.cache
def _probe() -> SandboxTier:
    return probe_sandbox()


@functools.cache
def _probe_confinement() -> Confinement:
    return probe_confinement()


class _Launcher:
    """Starts worker processes from one thread that lives as long as the bcce process.

    bubblewrap's ``--die-with-parent`` (``PR_SET_PDEATHSIG``) fires when the *thread* that
    forked it exits, not the process: a worker first used by a step of a ``parallel`` block
    would die when that step's thread ends, and the next call would find it gone. Forking from
    this thread ties every worker's life to the process instead. After a ``fork`` the child
    starts a launcher of its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run(self, start: Callable[[], _T]) -> _T:
        """Call ``start`` on the launcher thread and return what it returns (or raise)."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._requests = queue.Queue()
                self._thread = threading.Thread(
                    target=self._serve,
                    args=(self._requests,),
                    name="bcce-plugin-launcher",
                    daemon=True,
                )
                self._pid = os.getpid()
                self._thread.start()
            requests = self._requests
        answer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        requests.put((start, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return cast("_T", value)

    @staticmethod
    def _serve(requests: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]]]) -> None:
        while True:
            start, answer = requests.get()
            try:
                answer.put((True, start()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                answer.put((False, exc))


_LAUNCHER: Final = _Launcher()


class PluginWorker:
    """A plugin running in a sandboxed child process, called over JSON lines.

    ``entry_point`` is ``"module:attr"`` relative to ``plugin_dir``; a class is instantiated
    with no arguments. ``tier`` requests an isolation tier instead of the best available one.
    ``sandbox`` and ``confinement`` replace the probes of tiers A and B (a ``SandboxTier``
    named ``"none"`` makes A unavailable). Use as a context manager, or call :meth:`start` and
    :meth:`close`.
    """

    def __init__(
        self,
        plugin_dir: Path | str,
        entry_point: str,
        permissions: PermissionSet,
        *,
        timeout: float = 30.0,
        memory_mb: int = 512,
        strict: bool = True,
        sandbox: SandboxTier | None = None,
        tier: IsolationTier | None = None,
        confinement: Confinement | None = None,
        start_timeout: float = 30.0,
        cpu_seconds: int = 600,
        max_open_files: int = 256,
    ) -> None:
        if ":" not in entry_point:
            raise PluginError(f"entry point {entry_point!r} is not 'module:attr'", key="entryPoint")
        self.plugin_dir = Path(os.path.realpath(plugin_dir))
        self.entry_point = entry_point
        self.permissions = permissions
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.start_timeout = start_timeout
        self.cpu_seconds = cpu_seconds
        self.max_open_files = max_open_files
        self.requested = tier
        self.sandbox: SandboxTier | None = None
        self.confinement: Confinement | None = None
        self.tier, self.reason = self._choose_tier(tier, sandbox, confinement)
        if self.tier == "C" and strict:
            if tier not in (None, "C"):
                raise PluginError(
                    f"strict mode refuses to fall back to tier C: {self.reason}",
                    hint=STRICT_HINT,
                    key="plugins.strict",
                )
            raise PluginError(
                "strict mode refuses to run plugin code without an OS sandbox (tier C): "
                f"{self.reason}",
                hint=STRICT_HINT,
                key="plugins.strict",
            )
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: collections.deque[bytes] = collections.deque()
        self._next_id = 0
        self._private_dir: str | None = None
        self._lock = threading.Lock()

    def isolation(self) -> dict[str, object]:
        """The tier used and why, as recorded in the audit trail.

        ``requested`` is the tier asked for (None: the best available); ``landlock_abi`` is set
        for tier B, whose record also lists ``limits``: what the kernel leaves uncovered.
        """
        record: dict[str, object] = {
            "tier": self.tier,
            "mechanism": _MECHANISMS[self.tier],
            "reason": self.reason,
            "requested": self.requested,
            "landlock_abi": None,
            "permissions": self.permissions.to_list(),
        }
        if self.tier == "B" and self.confinement is not None:
            abi = self.confinement.landlock_abi
            record["landlock_abi"] = abi
            record["limits"] = confinement_limits(abi, network=self._network)
        return record

    @property
    def _network(self) -> bool:
        return any(kind in self.permissions for kind in NETWORK_KINDS)

    def _choose_tier(
        self,
        requested: IsolationTier | None,
        sandbox: SandboxTier | None,
        confinement: Confinement | None,
    ) -> tuple[IsolationTier, str]:
        """The tier to use and why; probes only the tiers that are candidates."""
        if requested == "C":
            return "C", "tier C was requested"
        missing: dict[IsolationTier, str] = {}
        if requested in (None, "A"):
            self.sandbox = sandbox if sandbox is not None else _probe()
            if self.sandbox.name == "bubblewrap":
                return "A", self.sandbox.reason
            missing["A"] = self.sandbox.reason
        if requested in (None, "B"):
            self.confinement = confinement if confinement is not None else _probe_confinement()
            if self.confinement.available:
                why_not_a = [f"tier A unavailable: {reason}" for reason in missing.values()]
                return "B", "; ".join([*why_not_a, self.confinement.reason])
            missing["B"] = self.confinement.reason
        if requested is not None:
            return "C", f"tier {requested} was requested but is unavailable: {missing[requested]}"
        return "C", "; ".join(f"tier {name} unavailable: {why}" for name, why in missing.items())

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the child and wait until the plugin is imported and healthy."""
        if self.running:
            return
        argv, env, cwd = self._command()
        self._replies = queue.Queue()
        self._stderr.clear()
        limits = self._limits()
        self._process = _LAUNCHER.run(
            lambda: subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=limits,  # only setrlimit: safe with threads
            )
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        threading.Thread(
            target=self._read_replies, args=(self._process.stdout,), daemon=True
        ).start()
        threading.Thread(
            target=self._read_stderr, args=(self._process.stderr,), daemon=True
        ).start()
        # Ready once the plugin is imported and answers; its own health() may need configure().
        self.request("describe", timeout=self.start_timeout)

    def describe(self) -> dict[str, Any]:
        """What the plugin offers: its entry point and public methods."""
        result: dict[str, Any] = self.request("describe")
        return result

    def health(self) -> Any:
        """The plugin's own health check, or ``{"ok": true}``."""
        return self.request("health")

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any:
        """Call the plugin object's ``method`` with ``params`` as keyword arguments."""
        return self.request(
            "call",
            {"method": method, "params": params or {}},
            timeout=timeout,
            should_stop=should_stop,
        )

    def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any:
        """Send one protocol request and wait for its reply, at most ``timeout`` seconds.

        ``should_stop`` is polled while waiting; once it returns True the worker is killed and
        the call fails as cancelled (the next request finds the worker not running).
        """
        # Messages name what the plugin was asked to do, not the protocol verb.
        named = str((params or {}).get("method", method)) if method == "call" else method
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None or process.stdin is None:
                raise PluginError(f"plugin worker {self.entry_point!r} is not running")
            self._next_id += 1
            request_id = self._next_id
            line = json.dumps({"id": request_id, "method": method, "params": params or {}})
            try:
                process.stdin.write(line.encode() + b"\n")
                process.stdin.flush()
            except OSError:
                raise self._died(named) from None
            reply = self._await_reply(
                named, self.timeout if timeout is None else timeout, should_stop
            )
            if reply is None:
                raise self._died(named)
            if reply.get("id") != request_id:
                self._kill()
                raise PluginError(f"plugin {self.entry_point!r} broke the protocol: {reply!r}")
            if "error" in reply:
                error = reply["error"] if isinstance(reply["error"], dict) else {}
                kind = error.get("type", "Error")
                if kind == "MemoryError":
                    raise PluginError(
                        f"plugin {self.entry_point!r} ran out of memory in {named!r} "
                        f"(limit {self.memory_mb} MiB)",
                        hint="raise plugins.memory_mb or make the plugin use less memory",
                    )
                raise PluginError(
                    f"plugin {self.entry_point!r} failed in {named!r}: "
                    f"{kind}: {error.get('message', '')}"
                )
            return reply.get("result")

    def _await_reply(
        self, method: str, limit: float, should_stop: Callable[[], bool] | None
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + limit
        while (remaining := deadline - time.monotonic()) > 0:
            wait = remaining if should_stop is None else min(remaining, _POLL_SECONDS)
            try:
                return self._replies.get(timeout=wait)
            except queue.Empty:
                pass
            if should_stop is not None and should_stop():
                self._kill()
                raise PluginError(
                    f"plugin {self.entry_point!r}: {method!r} was cancelled; the worker was killed"
                )
        self._kill()
        raise PluginError(
            f"plugin {self.entry_point!r} did not answer {method!r} within {limit:g} s; "
            "the worker was killed",
            hint="raise the plugin's timeout or fix the hanging call",
        )

    def close(self) -> None:
        """Ask the worker to shut down; kill it if it does not. Safe to call twice."""
        process = self._process
        if process is not None and process.poll() is None:
            try:
                self.request("shutdown", timeout=min(self.timeout, 5.0))
                process.wait(timeout=5.0)
            except (PluginError, subprocess.TimeoutExpired):
                pass
        self._kill()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def __enter__(self) -> PluginWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _command(self) -> tuple[list[str], dict[str, str], str]:
        worker = [
            sys.executable,
            "-I",
            "-m",
            "bcce.plugin._worker_main",
            "--plugin-dir",
            str(self.plugin_dir),
            "--entry-point",
            self.entry_point,
            "--permissions",
            json.dumps(self.permissions.to_list()),
        ]
        # Values go through the process environment, not argv, so `ps` does not show them.
        env = {"PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
        env_grant = self.permissions.get("env:read")
        if env_grant is not None:
            # Scopes are variable names or patterns (ACME_*), as permissions match them.
            env.update(
                {n: v for n, v in os.environ.items() if self.permissions.allows("env:read", n)}
            )
        if self.tier == "A":
            env["HOME"] = _WORK_DIR
            return [*self._bwrap_argv(), "--", *worker], env, "/"
        self._private_dir = tempfile.mkdtemp(prefix="bcce-plugin-")
        env["HOME"] = env["TMPDIR"] = self._private_dir
        if self.tier == "B":
            worker += ["--confine", self._confinement_plan(self._private_dir).to_json()]
        return worker, env, self._private_dir

    def _confinement_plan(self, private_dir: str) -> ConfinementPlan:
        """Tier B's paths: what tier A mounts, the private dir writable instead of a tmpfs."""
        spawn = "process:spawn" in self.permissions
        read = self.permissions.get("filesystem:read")
        write = self.permissions.get("filesystem:write")
        # /lib and /lib64 are symlinks into /usr on merged-/usr systems, real dirs elsewhere.
        libraries = (*_LIB_DIRS, "/lib", "/lib64")
        interpreter = os.path.realpath(sys.executable)
        return ConfinementPlan(
            read=(
                *self._interpreter_paths(),
                *libraries,
                *_ETC_FILES,
                *(_ETC_NETWORK if self._network else ()),
                *_DEVICES_READ,
                "/proc/self",  # opened by the child: its own /proc/<pid>
                str(self.plugin_dir),
                *(_scope_roots(read.scope) if read is not None else ()),
            ),
            write=(
                private_dir,
                "/dev/null",
                *(_scope_roots(write.scope) if write is not None else ()),
            ),
            # With spawn the loader (in the library dirs) is executed too.
            execute=(interpreter, *((*_SPAWN_DIRS, *libraries) if spawn else ())),
            network=self._network,
            spawn=spawn,
        )

    def _bwrap_argv(self) -> list[str]:
        spawn = "process:spawn" in self.permissions
        network = self._network
        bwrap = self.sandbox.bwrap if self.sandbox is not None else None
        argv = [bwrap or "bwrap", "--unshare-all"]
        if network:
            argv.append("--share-net")
        argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        read = self.permissions.get("filesystem:read")
        write = self.permissions.get("filesystem:write")
        read_roots = _scope_roots(read.scope) if read is not None else []
        write_roots = _scope_roots(write.scope) if write is not None else []
        # A whole-root grant goes first: later mounts cover earlier ones.
        if "/" in read_roots:
            argv += ["--ro-bind", "/", "/"]
        if "/" in write_roots:
            argv += ["--bind", "/", "/"]
        argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--dir", _WORK_DIR]  # noqa: S108
        for lib in _LIB_DIRS:
            argv += ["--ro-bind-try", lib, lib]
        argv += ["--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"]
        if spawn:
            for directory in _SPAWN_DIRS:
                argv += ["--ro-bind-try", directory, directory]
            argv += ["--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin"]
        for path in (*_ETC_FILES, *(_ETC_NETWORK if network else ())):
            argv += ["--ro-bind-try", path, path]
        for path in self._interpreter_paths():
            argv += ["--ro-bind-try", path, path]
        argv += [arg for root in read_roots if root != "/" for arg in ("--ro-bind-try", root, root)]
        argv += [arg for root in write_roots if root != "/" for arg in ("--bind-try", root, root)]
        argv += ["--ro-bind", str(self.plugin_dir), str(self.plugin_dir), "--chdir", _WORK_DIR]
        if "/" not in write_roots:
            # The sandbox's own root is a scratch tmpfs: read-only, a write outside the grants
            # fails (EROFS) instead of vanishing with the sandbox. The work dir is its own tmpfs.
            argv += ["--remount-ro", "/"]
        return argv

    @staticmethod
    def _interpreter_paths() -> list[str]:
        import bcce

        paths = sysconfig.get_paths()
        found = [
            sys.executable,
            str(Path(sys.prefix) / "pyvenv.cfg"),
            paths["stdlib"],
            paths["platstdlib"],
            paths["purelib"],
            paths["platlib"],
            str(sysconfig.get_config_var("LIBDIR") or paths["stdlib"]),
            str(Path(bcce.__file__).resolve().parent),
        ]
        return list(dict.fromkeys(found))

    def _limits(self) -> Callable[[], None]:
        memory = self.memory_mb * 1024 * 1024
        cpu, files = self.cpu_seconds, self.max_open_files

        # No RLIMIT_NPROC: the kernel ignores it for uid 0. Tier B denies creating processes
        # without process:spawn through seccomp instead.
        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

        return apply

    def _read_replies(self, stream: IO[bytes]) -> None:
        while line := stream.readline(_MAX_REPLY):
            if len(line) >= _MAX_REPLY and not line.endswith(b"\n"):
                # A reply this large is refused rather than buffered without bound.
                error = {"type": "ProtocolError", "message": f"reply over {_MAX_REPLY} bytes"}
                self._replies.put({"id": None, "error": error})
                break
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # not a protocol line; the child keeps stdout for replies only
            if isinstance(reply, dict):
                self._replies.put(reply)
        self._replies.put(None)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        size = 0
        for chunk in stream:
            self._stderr.append(chunk)
            size += len(chunk)
            while size > _STDERR_TAIL and len(self._stderr) > 1:
                size -= len(self._stderr.popleft())

    def _died(self, method: str) -> PluginError:
        process = self._process
        code: int | None = None
        if process is not None:
            # It may have closed its protocol stream yet live on: then it is killed below.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=5.0)
        tail = b"".join(self._stderr).decode(errors="replace").strip()
        if self.tier == "A" and code is not None and code > 128:
            code = 128 - code  # bwrap reports a child killed by signal N as 128 + N
        cause = _describe_exit(code, tail)
        self._kill()
        return PluginError(
            f"plugin {self.entry_point!r} worker died during {method!r}: {cause}",
            hint=f"its stderr ended with: {tail[-800:]}" if tail else None,
        )

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _describe_exit(code: int | None, stderr: str) -> str:
    if "MemoryError" in stderr:
        return f"memory exhausted (limit reached), exit {code}"
    if code is None:
        return "unknown exit"
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (CPU time limit)" if name == "SIGXCPU" else "")
    return f"exited with status {code}"


def _scope_roots(scope: Iterable[str] | None) -> list[str]:
    """The literal leading directories of path globs (``/data/**`` -> ``/data``); all for None."""
    if scope is None:
        return ["/"]
    roots: list[str] = []
    for pattern in scope:
        parts: list[str] = []
        for part in pattern.split("/"):
            if any(char in _GLOB_CHARS for char in part):
                break
            parts.append(part)
        root = os.path.realpath("/".join(parts) or "/")
        roots.append(root)
    return sorted(set(roots))


__all__ = ["STRICT_HINT", "IsolationTier", "PluginWorker"]
