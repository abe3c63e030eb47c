"""Isolation tier B (Landlock + seccomp), forced even where bubblewrap would be chosen.

Crashes, hangs, memory exhaustion, cancellation and env grants under tier B are in
test_worker.py, which runs those tests on every tier.
"""

from __future__ import annotations

import errno
import os
import socket
import socketserver
import stat
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bcce.errors import PluginError
from bcce.plugin.confine import ConfinementPlan, confinement_limits, probe_confinement
from bcce.plugin.permissions import parse_permissions
from bcce.plugin.worker import PluginWorker

PLUGIN_SOURCE = textwrap.dedent(
    """
    import asyncio, ctypes, os, socket, subprocess, tempfile, threading

    libc = ctypes.CDLL(None, use_errno=True)

    def errno_of(result):
        return ctypes.get_errno() if result == -1 else 0

    class Probe:
        def read(self, path):
            with open(path) as handle:
                return handle.read()

        def write(self, path, text):
            with open(path, "w") as handle:
                handle.write(text)
            return True

        def connect(self, port, host="127.0.0.1"):
            with socket.create_connection((host, port), timeout=10) as conn:
                return conn.recv(64).decode()

        def connect_unix(self, path):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(path)
            return True

        def bind_tcp(self):
            with socket.socket() as server:
                server.bind(("127.0.0.1", 0))
            return True

        def open_socket(self, family, kind):
            socket.socket(family, kind).close()
            return True

        def raw_inet_socket(self):
            # Through libc, so that the worker's audit hook does not see it.
            fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
            return errno_of(fd)

        def io_uring_setup(self):
            params = ctypes.create_string_buffer(120)
            return errno_of(libc.syscall(425, 8, params))

        def raw_exec(self):
            argv = (ctypes.c_char_p * 2)(b"true", None)
            return errno_of(libc.execv(b"/usr/bin/true", argv))

        def raw_fork(self):
            pid = libc.fork()
            if pid == 0:
                os._exit(0)
            if pid > 0:
                os.waitpid(pid, 0)
            return errno_of(pid)

        def spawn(self):
            done = subprocess.run(["sh", "-c", "echo spawned"], capture_output=True, text=True)
            return done.stdout

        def in_thread(self):
            box = []
            thread = threading.Thread(target=box.append, args=("threaded",))
            thread.start()
            thread.join()
            return box[0]

        def asyncio_sleep(self):
            return asyncio.run(asyncio.sleep(0, result="looped"))

        def scratch(self):
            with open("cwd.txt", "w") as handle:
                handle.write("x")
            with tempfile.NamedTemporaryFile() as handle:
                handle.write(b"x")
            return True

        def chmod(self, path):
            os.chmod(path, 0o777)
            return True

        def spawn_in_new_session(self):
            # The worker leads its session already; a child calls setsid() to escape it.
            subprocess.run(["true"], start_new_session=True, check=True)
            return True

        def signal(self, pid):
            os.kill(pid, 0)
            return True

        def capabilities(self):
            with open("/proc/self/status") as handle:
                lines = [line.split() for line in handle if line.startswith("Cap")]
            return {fields[0].rstrip(":"): fields[1] for fields in lines}
    """
)

TIER_B = probe_confinement()
needs_landlock = pytest.mark.skipif(not TIER_B.available, reason=TIER_B.reason)

Factory = Callable[..., PluginWorker]


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugin"
    directory.mkdir()
    (directory / "probe.py").write_text(PLUGIN_SOURCE)
    return directory


@pytest.fixture
def make_worker(plugin_dir: Path) -> Iterator[Factory]:
    started: list[PluginWorker] = []

    def make(permissions: list[Any] | None = None, **options: Any) -> PluginWorker:
        options.setdefault("timeout", 20.0)
        worker = PluginWorker(
            plugin_dir, "probe:Probe", parse_permissions(permissions or []), tier="B", **options
        )
        started.append(worker)
        worker.start()
        return worker

    yield make
    for worker in started:
        worker.close()


@pytest.fixture
def listener() -> Iterator[int]:
    class Hello(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"hello")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "secret.txt"
    path.write_text("s3cret")
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


NETWORK_GRANT = {"permission": "network:http", "scope": ["127.0.0.1"]}


def test_probe_reports_tier_b_available() -> None:
    # This machine has Landlock (ABI 7) and seccomp: tier B must be found, not assumed absent.
    assert TIER_B.available, TIER_B.reason
    assert TIER_B.landlock_abi >= 1


@needs_landlock
def test_isolation_records_landlock_and_seccomp(make_worker: Factory) -> None:
    isolation = make_worker().isolation()
    assert (isolation["tier"], isolation["mechanism"]) == ("B", "landlock+seccomp")
    assert isolation["landlock_abi"] == TIER_B.landlock_abi
    assert isolation["requested"] == "B"


def test_plan_survives_the_command_line() -> None:
    plan = ConfinementPlan(read=("/a",), write=("/b",), execute=("/c",), network=True)
    assert ConfinementPlan.from_json(plan.to_json()) == plan


def test_limits_name_what_an_older_abi_leaves_uncovered() -> None:
    old = " ".join(confinement_limits(3, network=False))
    new = " ".join(confinement_limits(7, network=False))
    assert "cannot restrict TCP" in old and "cannot scope signals" in old
    assert "TCP" not in new and "signals" not in new


@needs_landlock
def test_read_outside_scope_fails(make_worker: Factory, secret_file: Path) -> None:
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker().call("read", {"path": str(secret_file)})


@needs_landlock
def test_read_with_grant_works(make_worker: Factory, secret_file: Path) -> None:
    grant = {"permission": "filesystem:read", "scope": [f"{secret_file.parent}/**"]}
    assert make_worker([grant]).call("read", {"path": str(secret_file)}) == "s3cret"


@needs_landlock
def test_write_outside_scope_fails(make_worker: Factory, out_dir: Path) -> None:
    target = out_dir / "result.txt"
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker().call("write", {"path": str(target), "text": "x"})
    assert not target.exists()


@needs_landlock
def test_write_with_read_only_grant_fails(make_worker: Factory, out_dir: Path) -> None:
    target = out_dir / "result.txt"
    grant = {"permission": "filesystem:read", "scope": [f"{out_dir}/**"]}
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker([grant]).call("write", {"path": str(target), "text": "x"})
    assert not target.exists()


@needs_landlock
def test_write_with_grant_works(make_worker: Factory, out_dir: Path) -> None:
    target = out_dir / "result.txt"
    grant = {"permission": "filesystem:write", "scope": [f"{out_dir}/**"]}
    make_worker([grant]).call("write", {"path": str(target), "text": "done"})
    assert target.read_text() == "done"


@needs_landlock
def test_plugin_dir_is_read_only(make_worker: Factory, plugin_dir: Path) -> None:
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker().call("write", {"path": str(plugin_dir / "probe.py"), "text": "x"})
    assert "class Probe" in (plugin_dir / "probe.py").read_text()


@needs_landlock
def test_private_work_dir_and_tmpdir_are_writable(make_worker: Factory) -> None:
    assert make_worker().call("scratch") is True


@needs_landlock
def test_chmod_is_denied_even_where_writing_is_granted(make_worker: Factory, out_dir: Path) -> None:
    target = out_dir / "file.txt"
    target.write_text("x")
    target.chmod(0o600)
    grant = {"permission": "filesystem:write", "scope": [f"{out_dir}/**"]}
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker([grant]).call("chmod", {"path": str(target)})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@needs_landlock
def test_network_without_grant_fails(make_worker: Factory, listener: int) -> None:
    with pytest.raises(PluginError, match="network"):
        make_worker().call("connect", {"port": listener})


@needs_landlock
def test_ip_socket_without_grant_is_denied_by_the_os(make_worker: Factory) -> None:
    assert make_worker().call("raw_inet_socket") == errno.EPERM


@needs_landlock
def test_network_with_grant_works(make_worker: Factory, listener: int) -> None:
    assert make_worker([NETWORK_GRANT]).call("connect", {"port": listener}) == "hello"


@needs_landlock
def test_network_outside_host_scope_is_denied(make_worker: Factory, listener: int) -> None:
    grant = {"permission": "network:https", "scope": ["api.example.com"]}
    with pytest.raises(PluginError, match="network:https"):
        make_worker([grant]).call("connect", {"port": listener})


@needs_landlock
def test_tcp_bind_is_denied_even_with_network_grant(make_worker: Factory) -> None:
    if TIER_B.landlock_abi < 4:
        pytest.skip("Landlock ABI < 4 cannot restrict TCP bind")
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker([NETWORK_GRANT]).call("bind_tcp")


@needs_landlock
@pytest.mark.parametrize(
    ("family", "kind"),
    [
        pytest.param(socket.AF_NETLINK, socket.SOCK_RAW, id="netlink"),
        pytest.param(socket.AF_PACKET, socket.SOCK_RAW, id="packet"),
        pytest.param(socket.AF_INET, socket.SOCK_RAW, id="inet-raw"),
    ],
)
def test_other_socket_families_are_denied_even_with_network_grant(
    make_worker: Factory, family: int, kind: int
) -> None:
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker([NETWORK_GRANT]).call("open_socket", {"family": family, "kind": kind})


@needs_landlock
def test_path_unix_socket_cannot_be_reached(
    make_worker: Factory, tmp_path: Path, out_dir: Path
) -> None:
    # Landlock does not cover connecting to a path socket: seccomp's socket denial does.
    path = out_dir / "s"
    grant = {"permission": "filesystem:write", "scope": [f"{out_dir}/**"]}
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        with pytest.raises(PluginError, match="PermissionError"):
            make_worker([grant, NETWORK_GRANT]).call("connect_unix", {"path": str(path)})


@needs_landlock
def test_io_uring_is_denied(make_worker: Factory) -> None:
    assert make_worker([NETWORK_GRANT]).call("io_uring_setup") == errno.EPERM


@needs_landlock
def test_threads_and_asyncio_still_work(make_worker: Factory) -> None:
    worker = make_worker()
    assert worker.call("in_thread") == "threaded"
    assert worker.call("asyncio_sleep") == "looped"


@needs_landlock
def test_spawn_without_grant_fails_naming_permission(make_worker: Factory) -> None:
    with pytest.raises(PluginError, match="process:spawn"):
        make_worker().call("spawn")


@needs_landlock
def test_exec_and_fork_without_grant_are_denied_by_the_os(make_worker: Factory) -> None:
    worker = make_worker()
    assert worker.call("raw_exec") == errno.EPERM
    assert worker.call("raw_fork") == errno.EPERM


@needs_landlock
def test_spawn_with_grant_works(make_worker: Factory) -> None:
    assert make_worker(["process:spawn"]).call("spawn") == "spawned\n"


@needs_landlock
def test_children_cannot_leave_the_process_group(make_worker: Factory) -> None:
    # Killing the worker's process group must reach every descendant.
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker(["process:spawn"]).call("spawn_in_new_session")


@needs_landlock
def test_worker_cannot_signal_the_engine(make_worker: Factory) -> None:
    if TIER_B.landlock_abi < 6:
        pytest.skip("Landlock ABI < 6 cannot scope signals")
    with pytest.raises(PluginError, match="PermissionError"):
        make_worker().call("signal", {"pid": os.getpid()})


@needs_landlock
def test_worker_holds_no_capabilities(make_worker: Factory) -> None:
    held = make_worker().call("capabilities")
    assert (held["CapEff"], held["CapPrm"], held["CapAmb"]) == ("0" * 16,) * 3
