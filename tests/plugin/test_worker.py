from __future__ import annotations

import socketserver
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bcce.errors import PluginError
from bcce.plugin.confine import Confinement, probe_confinement
from bcce.plugin.permissions import PermissionSet, parse_permissions
from bcce.plugin.worker import IsolationTier, PluginWorker
from bcce.policy.sandbox import SandboxTier, probe_sandbox

PLUGIN_SOURCE = textwrap.dedent(
    """
    import os, socket, subprocess, sys, time

    class Probe:
        def echo(self, value):
            return value

        def fail(self):
            raise ValueError("bad input")

        def exit(self, code):
            sys.exit(code)

        def abort(self):
            os.abort()

        def segfault(self):
            import ctypes
            ctypes.string_at(0)

        def hang(self):
            time.sleep(3600)

        def hog(self, mb):
            return len(bytearray(mb * 1024 * 1024))

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

        def exists(self, path):
            return os.path.exists(path)

        def env(self, name):
            return os.environ.get(name)

        def spawn(self):
            done = subprocess.run(["sh", "-c", "echo spawned"], capture_output=True, text=True)
            return done.stdout
    """
)

TIER_A = probe_sandbox()
TIER_B = probe_confinement()
NO_BWRAP = SandboxTier("none", "bubblewrap made unavailable by the test")
NO_LANDLOCK = Confinement(False, "Landlock made unavailable by the test")
needs_bwrap = pytest.mark.skipif(TIER_A.name != "bubblewrap", reason=TIER_A.reason)
needs_landlock = pytest.mark.skipif(not TIER_B.available, reason=TIER_B.reason)
TIERS = [
    pytest.param("A", id="A", marks=needs_bwrap),
    pytest.param("B", id="B", marks=needs_landlock),
    pytest.param("C", id="C"),
]

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

    def make(
        permissions: list[Any] | None = None, *, tier: IsolationTier = "A", **options: Any
    ) -> PluginWorker:
        options.setdefault("timeout", 20.0)
        worker = PluginWorker(
            plugin_dir,
            "probe:Probe",
            parse_permissions(permissions or []),
            tier=tier,
            strict=tier != "C",
            **options,
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


@pytest.mark.parametrize("tier", TIERS)
def test_call_echoes_params(make_worker: Factory, tier: IsolationTier) -> None:
    worker = make_worker(tier=tier)
    assert worker.call("echo", {"value": {"a": [1, "b"]}}) == {"a": [1, "b"]}


@pytest.mark.parametrize("tier", TIERS)
def test_a_worker_outlives_the_thread_that_started_it(
    make_worker: Factory, tier: IsolationTier
) -> None:
    # A step of a parallel block may be the first to use a plugin; its thread then ends.
    # bubblewrap's --die-with-parent fires when the forking *thread* exits: the worker must
    # not have been forked by this one.
    started: list[PluginWorker] = []
    thread = threading.Thread(target=lambda: started.append(make_worker(tier=tier)))
    thread.start()
    thread.join(timeout=60)
    task = Path(f"/proc/self/task/{thread.native_id}")
    deadline = time.monotonic() + 10
    while task.exists() and time.monotonic() < deadline:  # the OS thread is gone: signals sent
        time.sleep(0.01)
    (worker,) = started
    process = worker._process
    assert process is not None
    with pytest.raises(subprocess.TimeoutExpired):  # a killed worker exits within milliseconds
        process.wait(timeout=1.0)
    assert worker.call("echo", {"value": "still here"}, timeout=10) == "still here"


@pytest.mark.parametrize("tier", TIERS)
def test_tier_is_recorded(make_worker: Factory, tier: IsolationTier) -> None:
    isolation = make_worker(tier=tier).isolation()
    assert (isolation["tier"], isolation["requested"]) == (tier, tier)


@needs_bwrap
def test_describe_lists_public_methods(make_worker: Factory) -> None:
    assert "echo" in make_worker().describe()["methods"]


@needs_bwrap
def test_health_answers_ok(make_worker: Factory) -> None:
    assert make_worker().health() == {"ok": True}


@needs_bwrap
def test_plugin_exception_is_a_plugin_error_and_worker_survives(make_worker: Factory) -> None:
    worker = make_worker()
    with pytest.raises(PluginError, match="ValueError: bad input"):
        worker.call("fail")
    assert worker.call("echo", {"value": 1}) == 1


@needs_bwrap
def test_private_method_is_refused(make_worker: Factory) -> None:
    with pytest.raises(PluginError, match="no public method"):
        make_worker().call("__init__")


@pytest.mark.parametrize("tier", TIERS)
def test_sys_exit_is_reported_with_status(make_worker: Factory, tier: IsolationTier) -> None:
    worker = make_worker(tier=tier)
    with pytest.raises(PluginError, match="exited with status 3"):
        worker.call("exit", {"code": 3})
    assert not worker.running


@pytest.mark.parametrize("tier", TIERS)
def test_abort_is_reported_with_signal(make_worker: Factory, tier: IsolationTier) -> None:
    with pytest.raises(PluginError, match="SIGABRT"):
        make_worker(tier=tier).call("abort")


@pytest.mark.parametrize("tier", TIERS)
def test_segfault_is_reported_with_signal(make_worker: Factory, tier: IsolationTier) -> None:
    with pytest.raises(PluginError, match="SIGSEGV"):
        make_worker(tier=tier).call("segfault")


@pytest.mark.parametrize("tier", TIERS)
def test_hung_call_kills_worker(make_worker: Factory, tier: IsolationTier) -> None:
    worker = make_worker(tier=tier)
    with pytest.raises(PluginError, match="did not answer 'hang'"):
        worker.call("hang", timeout=0.5)
    assert not worker.running


@pytest.mark.parametrize("tier", TIERS)
def test_memory_hog_is_reported(make_worker: Factory, tier: IsolationTier) -> None:
    worker = make_worker(tier=tier, memory_mb=256)
    with pytest.raises(PluginError, match=r"ran out of memory .*\(limit 256 MiB\)"):
        worker.call("hog", {"mb": 1024})


@needs_bwrap
def test_call_after_death_is_a_plugin_error(make_worker: Factory) -> None:
    worker = make_worker()
    with pytest.raises(PluginError):
        worker.call("exit", {"code": 1})
    with pytest.raises(PluginError, match="not running"):
        worker.call("echo", {"value": 1})


@needs_bwrap
def test_bad_entry_point_fails_at_start(plugin_dir: Path) -> None:
    worker = PluginWorker(plugin_dir, "missing:Thing", PermissionSet(), tier="A")
    with pytest.raises(PluginError) as caught:
        worker.start()
    worker.close()
    assert "ModuleNotFoundError" in (caught.value.hint or "")


def test_strict_mode_refuses_tier_c(plugin_dir: Path) -> None:
    with pytest.raises(PluginError, match="tier C") as caught:
        PluginWorker(plugin_dir, "probe:Probe", PermissionSet(), tier="C", strict=True)
    assert caught.value.exit_code == 4


def test_strict_mode_refuses_when_no_sandbox_is_available(plugin_dir: Path) -> None:
    with pytest.raises(PluginError, match="tier C") as caught:
        PluginWorker(
            plugin_dir, "probe:Probe", PermissionSet(), sandbox=NO_BWRAP, confinement=NO_LANDLOCK
        )
    assert "Landlock made unavailable" in caught.value.message


def test_without_bubblewrap_tier_b_is_chosen(plugin_dir: Path) -> None:
    available = Confinement(True, "confinement available in the test", 7)
    worker = PluginWorker(
        plugin_dir, "probe:Probe", PermissionSet(), sandbox=NO_BWRAP, confinement=available
    )
    isolation = worker.isolation()
    assert (isolation["tier"], isolation["mechanism"]) == ("B", "landlock+seccomp")
    assert (isolation["requested"], isolation["landlock_abi"]) == (None, 7)
    assert "bubblewrap made unavailable" in str(isolation["reason"])


def test_requested_tier_that_is_unavailable_is_refused_in_strict_mode(plugin_dir: Path) -> None:
    with pytest.raises(PluginError, match="tier B was requested") as caught:
        PluginWorker(plugin_dir, "probe:Probe", PermissionSet(), tier="B", confinement=NO_LANDLOCK)
    assert "Landlock made unavailable" in caught.value.message


def test_requested_tier_that_is_unavailable_falls_back_to_c_on_record(plugin_dir: Path) -> None:
    worker = PluginWorker(
        plugin_dir,
        "probe:Probe",
        PermissionSet(),
        tier="B",
        confinement=NO_LANDLOCK,
        strict=False,
    )
    isolation = worker.isolation()
    assert (isolation["tier"], isolation["mechanism"], isolation["requested"]) == (
        "C",
        "rlimits",
        "B",
    )
    assert "tier B was requested but is unavailable" in str(isolation["reason"])
    assert "Landlock made unavailable" in str(isolation["reason"])


def test_entry_point_without_attr_is_refused(plugin_dir: Path) -> None:
    with pytest.raises(PluginError, match="module:attr"):
        PluginWorker(plugin_dir, "probe", PermissionSet(), tier="C", strict=False)


@pytest.mark.parametrize("tier", TIERS)
def test_should_stop_cancels_the_call_and_kills_the_worker(
    make_worker: Factory, tier: IsolationTier
) -> None:
    worker = make_worker(tier=tier)
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) >= 3  # polled while the call waits, not just once

    with pytest.raises(PluginError, match="'hang' was cancelled"):
        worker.call("hang", should_stop=should_stop)
    assert len(polls) == 3
    assert not worker.running
    with pytest.raises(PluginError, match="not running"):
        worker.call("echo", {"value": 1})


def test_should_stop_false_lets_the_call_answer(make_worker: Factory) -> None:
    worker = make_worker(tier="C")
    assert worker.call("echo", {"value": 2}, should_stop=lambda: False) == 2


def test_hung_call_still_times_out_while_should_stop_is_polled(make_worker: Factory) -> None:
    worker = make_worker(tier="C")
    with pytest.raises(PluginError, match=r"did not answer .hang. within 0\.3 s"):
        worker.call("hang", timeout=0.3, should_stop=lambda: False)
    assert not worker.running


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "secret.txt"
    path.write_text("s3cret")
    return path


@needs_bwrap
def test_read_outside_scope_fails(make_worker: Factory, secret_file: Path) -> None:
    with pytest.raises(PluginError, match="FileNotFoundError"):
        make_worker().call("read", {"path": str(secret_file)})


@needs_bwrap
def test_read_with_grant_works(make_worker: Factory, secret_file: Path) -> None:
    grant = {"permission": "filesystem:read", "scope": [f"{secret_file.parent}/**"]}
    assert make_worker([grant]).call("read", {"path": str(secret_file)}) == "s3cret"


@needs_bwrap
def test_write_outside_scope_fails(make_worker: Factory, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "result.txt"
    with pytest.raises(PluginError):
        make_worker().call("write", {"path": str(target), "text": "x"})
    assert not target.exists()


@needs_bwrap
def test_write_with_read_only_grant_fails(make_worker: Factory, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "result.txt"
    grant = {"permission": "filesystem:read", "scope": [f"{tmp_path / 'out'}/**"]}
    with pytest.raises(PluginError, match="Read-only file system"):
        make_worker([grant]).call("write", {"path": str(target), "text": "x"})
    assert not target.exists()


@needs_bwrap
def test_write_with_grant_works(make_worker: Factory, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "result.txt"
    grant = {"permission": "filesystem:write", "scope": [f"{tmp_path / 'out'}/**"]}
    make_worker([grant]).call("write", {"path": str(target), "text": "done"})
    assert target.read_text() == "done"


@needs_bwrap
def test_plugin_dir_is_read_only(make_worker: Factory, plugin_dir: Path) -> None:
    with pytest.raises(PluginError):
        make_worker().call("write", {"path": str(plugin_dir / "probe.py"), "text": "x"})
    assert "class Probe" in (plugin_dir / "probe.py").read_text()


@needs_bwrap
def test_network_without_grant_fails(make_worker: Factory, listener: int) -> None:
    with pytest.raises(PluginError, match="network"):
        make_worker().call("connect", {"port": listener})


@needs_bwrap
def test_network_with_grant_works(make_worker: Factory, listener: int) -> None:
    grant = {"permission": "network:http", "scope": ["127.0.0.1"]}
    assert make_worker([grant]).call("connect", {"port": listener}) == "hello"


@needs_bwrap
def test_network_grant_by_host_name_works(make_worker: Factory, listener: int) -> None:
    grant = {"permission": "network:http", "scope": ["localhost"]}
    assert make_worker([grant]).call("connect", {"port": listener, "host": "localhost"}) == "hello"


@needs_bwrap
def test_network_outside_host_scope_is_denied(make_worker: Factory, listener: int) -> None:
    grant = {"permission": "network:https", "scope": ["api.example.com"]}
    with pytest.raises(PluginError, match="network:https"):
        make_worker([grant]).call("connect", {"port": listener})


@pytest.mark.parametrize("tier", TIERS)
def test_env_hidden_without_grant(
    make_worker: Factory, tier: IsolationTier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BCCE_PLUGIN_TEST_TOKEN", "t0ken")
    assert make_worker(tier=tier).call("env", {"name": "BCCE_PLUGIN_TEST_TOKEN"}) is None


@pytest.mark.parametrize("tier", TIERS)
def test_env_visible_with_grant(
    make_worker: Factory, tier: IsolationTier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BCCE_PLUGIN_TEST_TOKEN", "t0ken")
    grant = {"permission": "env:read", "scope": ["BCCE_PLUGIN_TEST_TOKEN"]}
    worker = make_worker([grant], tier=tier)
    assert worker.call("env", {"name": "BCCE_PLUGIN_TEST_TOKEN"}) == "t0ken"


@needs_bwrap
def test_spawn_without_grant_fails_naming_permission(make_worker: Factory) -> None:
    with pytest.raises(PluginError, match="process:spawn"):
        make_worker().call("spawn")


@needs_bwrap
def test_shell_is_not_mounted_without_spawn_grant(make_worker: Factory) -> None:
    # The OS layer under the audit hook: no executables besides the interpreter.
    assert make_worker().call("exists", {"path": "/usr/bin/sh"}) is False


@needs_bwrap
def test_spawn_with_grant_works(make_worker: Factory) -> None:
    assert make_worker(["process:spawn"]).call("spawn") == "spawned\n"


@needs_bwrap
def test_a_write_outside_the_grants_fails_rather_than_vanishing_in_tier_a(
    make_worker: Factory, tmp_path: Path
) -> None:
    worker = make_worker(tier="A")
    with pytest.raises(PluginError, match=r"Read-only file system|Permission denied|No such file"):
        worker.call("write", {"path": "/outside.txt", "text": "lost?"})
