"""pytest plugin (pytest11 entry point ``bcce``): fixtures for bcce users and plugin authors.

    bcce_layer_options  LayerOptions that read nothing from the process (no BCCE_* variables,
                        no ./bcce.yaml, no user config file)
    bcce_settings       BcceSettings loaded from those options, storage under tmp_path
    bcce_make_app       build an Application from those options (and overrides); shut down after
    bcce_app            an Application built by bcce_make_app()
    bcce_cli            run the ``bcce`` command line against a test application
    moto_server         a moto server on 127.0.0.1 for the whole session
    aws_env             dummy AWS credentials and region, no profile, fresh moto state

For plugin authors (see :mod:`bcce.testing.plugins`):

    bcce_plugin_harness     ``bcce_plugin_harness(plugin_dir, grants=..., config=..., **settings)``:
                            a PluginHarness running that plugin through the real machinery
                            (discovery, grants, sandboxed worker); closed at teardown
    bcce_captured_events    ``bcce_captured_events(app, pattern="*")``: a list that receives the
                            app's events from now on
    bcce_scripted_model     ``bcce_scripted_model(script, placeholders=None)``: a started scripted
                            model server on 127.0.0.1 (its ``url``); stopped at teardown
    bcce_otlp_receiver      a started OTLP/HTTP receiver on 127.0.0.1 (its ``url``, ``requests``,
                            ``bodies(path)``, ``resources()``); stopped at teardown
    bcce_slapd              ``bcce_slapd(users=..., groups=..., tls=False)``: a started slapd on
                            127.0.0.1 with a small directory (:mod:`bcce.testing.ldap`); stopped
                            at teardown; skips the test when Debian's ``slapd`` is missing

This module loads in every pytest session of every project with bcce installed, so it imports
nothing from bcce (or moto, boto3, click) until a fixture runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application
    from bcce.events.bus import Event
    from bcce.settings.layers import LayerOptions
    from bcce.settings.model import BcceSettings
    from bcce.testing.aws import MotoServer
    from bcce.testing.ldap import SlapdServer
    from bcce.testing.model_server import ScriptedModelServer
    from bcce.testing.otlp import OtlpReceiver
    from bcce.testing.plugins import PluginHarness

#: Environment variables that would let a test reach real AWS or a developer's profile.
_AWS_LEAKS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
)


def _with_tmp_storage(options: LayerOptions, tmp_path: Path) -> LayerOptions:
    """``options`` plus ``storage.root`` under ``tmp_path`` as the lowest plugin-defaults layer.

    So every real configuration layer (a test's YAML file, env variable...) still wins.
    """
    from dataclasses import replace

    from bcce.settings.layers import PluginDefaults

    runs = PluginDefaults("bcce.testing", {"storage": {"root": str(tmp_path / ".bcce_runs")}})
    return replace(options, plugin_defaults=[*options.plugin_defaults, runs])


@pytest.fixture
def bcce_layer_options(tmp_path: Path) -> LayerOptions:
    """Settings layer options isolated from the process.

    ``environ`` is an empty dict (add ``BCCE_*`` entries to it before building settings), the
    working directory is ``tmp_path`` and the user config file does not exist.
    """
    from bcce.settings.layers import LayerOptions

    return LayerOptions(
        environ={},
        cwd=tmp_path,
        user_config_file=tmp_path / "no-user-config.yaml",
    )


@pytest.fixture
def bcce_settings(bcce_layer_options: LayerOptions, tmp_path: Path) -> BcceSettings:
    """Settings from ``bcce_layer_options``, ``storage.root`` defaulting to under ``tmp_path``."""
    from bcce.settings.layers import load_settings

    return load_settings(_with_tmp_storage(bcce_layer_options, tmp_path))


@pytest.fixture
def bcce_make_app(
    bcce_layer_options: LayerOptions, tmp_path: Path
) -> Iterator[Callable[..., Application]]:
    """A factory: ``bcce_make_app(settings=None, options=None, **overrides) -> Application``.

    Layers come from ``options`` (default: ``bcce_layer_options``) unless ``settings`` are given;
    ``storage.root`` defaults to a directory under ``tmp_path`` (below every configuration
    layer). Every application built is shut down (resources closed, singletons reset) when the
    test ends.
    """
    from bcce.application import create_application

    built: list[Application] = []

    def make(
        settings: BcceSettings | None = None,
        *,
        options: LayerOptions | None = None,
        **overrides: Any,
    ) -> Application:
        if settings is None:
            layers = _with_tmp_storage(options or bcce_layer_options, tmp_path)
            app = create_application(options=layers, **overrides)
        else:
            app = create_application(settings, **overrides)
        built.append(app)
        return app

    yield make
    for app in reversed(built):
        app.shutdown_resources()
        app.reset_singletons()


@pytest.fixture
def bcce_app(bcce_make_app: Callable[..., Application]) -> Application:
    """An application built from isolated layers, ``storage.root`` under ``tmp_path``."""
    return bcce_make_app()


@pytest.fixture
def bcce_cli(request: pytest.FixtureRequest) -> Callable[..., Result]:
    """Run ``bcce ARGS`` in process: ``bcce_cli(["config", "show"], app=None, **invoke_kwargs)``.

    The command line uses ``app`` (default: the ``bcce_app`` fixture) instead of building its
    own, exactly as ``CliRunner().invoke(cli, args, obj=app)``. Returns Click's ``Result``
    (``exit_code``, ``stdout``, ``stderr``, ``output``).
    """
    from click.testing import CliRunner

    from bcce.cli.main import cli

    def invoke(args: Sequence[str], *, app: Application | None = None, **kwargs: Any) -> Result:
        target = app if app is not None else request.getfixturevalue("bcce_app")
        return CliRunner().invoke(cli, list(args), obj=target, **kwargs)

    return invoke


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A moto server on 127.0.0.1 (a free port), started once per session."""
    from bcce.testing.aws import MotoServer

    with MotoServer() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_server: MotoServer) -> MotoServer:
    """Dummy credentials and ``us-east-1`` in the environment, no profile, fresh moto state.

    Returns the session's moto server: point clients at ``aws_env.url``.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in _AWS_LEAKS:
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path / "aws-missing"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing / "credentials"))
    # Without credentials botocore would ask the EC2 metadata service, off this machine.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    moto_server.reset()
    return moto_server


@pytest.fixture
def bcce_plugin_harness(tmp_path: Path) -> Iterator[Callable[..., PluginHarness]]:
    """A factory: ``bcce_plugin_harness(plugin_dir, *, grants=..., config=..., **settings)``.

    Each call builds a :class:`~bcce.testing.plugins.PluginHarness` in its own directory under
    ``tmp_path``: an isolated application that discovers ``plugin_dir`` (and the first-party
    plugins), grants the declared permissions unless ``grants`` says otherwise and runs the
    plugin in the sandboxed worker. Every harness is closed when the test ends.
    """
    from bcce.testing.plugins import PluginHarness

    built: list[PluginHarness] = []

    def make(plugin_dir: str | os.PathLike[str], **kwargs: Any) -> PluginHarness:
        kwargs.setdefault("tmp_path", tmp_path / f"bcce-harness-{len(built) + 1}")
        harness = PluginHarness(plugin_dir, **kwargs)
        built.append(harness)
        return harness

    yield make
    for harness in reversed(built):
        harness.close()


@pytest.fixture
def bcce_captured_events() -> Iterator[Callable[..., list[Event]]]:
    """A factory: ``bcce_captured_events(app, pattern="*") -> list`` of the app's events.

    The list fills as events matching ``pattern`` are published on ``app.events.bus()``, from
    the call on; the subscription ends when the test does.
    """
    subscriptions: list[tuple[Application, str, Callable[[Event], None]]] = []

    def capture(app: Application, pattern: str = "*") -> list[Event]:
        seen: list[Event] = []
        app.events.bus().subscribe(pattern, seen.append)
        subscriptions.append((app, pattern, seen.append))
        return seen

    yield capture
    for app, pattern, handler in reversed(subscriptions):
        with contextlib.suppress(ValueError):  # the app was shut down and its bus replaced
            app.events.bus().unsubscribe(pattern, handler)


@pytest.fixture
def bcce_scripted_model() -> Iterator[Callable[..., ScriptedModelServer]]:
    """A factory: ``bcce_scripted_model(script, placeholders=None) -> ScriptedModelServer``.

    ``script`` is a reply script (a mapping, or a YAML/JSON file); the server is started on
    127.0.0.1 (a free port, see ``.url``, ``.anthropic_env(home)``, ``.bedrock_env(home)``,
    ``.requests``) and stopped when the test ends.
    """
    from bcce.testing.model_server import ScriptedModelServer

    servers: list[ScriptedModelServer] = []

    def start(
        script: Mapping[str, Any] | str | os.PathLike[str],
        placeholders: Mapping[str, str] | None = None,
    ) -> ScriptedModelServer:
        server = ScriptedModelServer(script, placeholders=placeholders).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def bcce_otlp_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A started OTLP/HTTP receiver on 127.0.0.1, stopped when the test ends.

    ``NO_PROXY`` covers loopback for the test, so an exporter never sends to a proxy instead.
    """
    from bcce.testing.otlp import OtlpReceiver

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with OtlpReceiver() as receiver:
        yield receiver


# -- LDAP (the ldap plugin) -----------------------------------------------------------------------
@pytest.fixture
def bcce_slapd(tmp_path: Path) -> Iterator[Callable[..., SlapdServer]]:
    """A factory: ``bcce_slapd(**options) -> SlapdServer``, started, in a directory under
    ``tmp_path``; stopped when the test ends.

    ``options`` are :class:`~bcce.testing.ldap.SlapdServer`'s (``users``, ``groups``, ``tls``,
    ...); without them the directory holds alice and bob and three groups. The test is skipped,
    naming Debian's ``slapd`` package, when slapd is not installed.
    """
    from bcce.testing.ldap import SlapdServer, slapd_missing

    missing = slapd_missing()
    if missing is not None:
        pytest.skip(missing)
    servers: list[SlapdServer] = []

    def start(**options: Any) -> SlapdServer:
        server = SlapdServer(tmp_path / f"slapd-{len(servers) + 1}", **options)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()
