"""``create_application``: settings in, a checked container tree out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from dependency_injector import providers

import bcce
from bcce.application import create_application, selector_points
from bcce.auth.provider import Identity, LocalAuthProvider
from bcce.containers.application import Application
from bcce.errors import ConfigError
from bcce.events.bus import InProcessEventBus
from bcce.settings import BcceSettings, LayerOptions, load_settings
from bcce.settings.provenance import Origin
from bcce.storage.backend import LocalStorageBackend

CONTAINERS = ["core", "aws", "events", "auth", "storage", "policy", "plugins", "agent", "workflow"]


def test_create_application_is_exported_lazily_by_the_package() -> None:
    assert bcce.create_application is create_application
    assert bcce.Application is Application


def test_there_is_one_container_per_settings_section(bcce_app: Application) -> None:
    sections = set(BcceSettings.SECTIONS) - {"ssm"}  # ssm only configures a settings layer

    assert sections == set(CONTAINERS)
    for name in CONTAINERS:
        assert isinstance(getattr(bcce_app, name), providers.Container), name


def test_the_application_holds_the_settings_it_was_built_from(
    bcce_settings: BcceSettings,
) -> None:
    app = create_application(bcce_settings)
    try:
        assert app.settings() is bcce_settings
        assert app.config.storage.root() == bcce_settings.storage.root
    finally:
        app.shutdown_resources()


def test_overrides_are_the_highest_layer(bcce_make_app: Callable[..., Application]) -> None:
    (Path.cwd() / "bcce.yaml").write_text("core:\n  team: from-file\n")

    app = bcce_make_app(core={"team": "from-override"})

    settings = app.settings()
    assert settings.core.team == "from-override"
    assert settings.provenance.origin_of(("core", "team")) == Origin(
        "override", "explicit override"
    )


def test_overrides_on_loaded_settings_are_validated_and_recorded(
    bcce_settings: BcceSettings,
) -> None:
    app = create_application(bcce_settings, workflow={"max_parallel": 8})
    try:
        settings = app.settings()
        assert settings.workflow.max_parallel == 8
        assert settings.provenance.origin_of(("workflow", "max_parallel")) == Origin(
            "override", "explicit override"
        )
        assert bcce_settings.workflow.max_parallel == 4  # the given settings are not changed
    finally:
        app.shutdown_resources()


def test_an_invalid_override_on_loaded_settings_names_the_key(
    bcce_settings: BcceSettings,
) -> None:
    with pytest.raises(ConfigError) as caught:
        create_application(bcce_settings, workflow={"max_parallel": 0})

    assert caught.value.key == "workflow.max_parallel"


def test_an_unknown_selector_choice_fails_at_start_up_with_the_allowed_values(
    tmp_path: Path, bcce_layer_options: LayerOptions
) -> None:
    path = tmp_path / "given.yaml"
    path.write_text("storage:\n  backend: gcs\n")

    with pytest.raises(ConfigError) as caught:
        create_application(options=replace(bcce_layer_options, config_files=[path]))

    assert caught.value.key == "storage.backend"
    assert caught.value.location == f"{path}:2:12"
    assert caught.value.hint == "allowed values: local, s3"


def test_selector_points_name_every_selector_in_the_tree(bcce_app: Application) -> None:
    in_tree = {id(p) for p in bcce_app.traverse(types=[providers.Selector])}

    assert {id(p) for p in selector_points(bcce_app).values()} == in_tree


def test_every_selector_point_refuses_an_unknown_choice_at_start_up(
    bcce_app: Application, bcce_layer_options: LayerOptions
) -> None:
    for key in selector_points(bcce_app):
        section, name = key.split(".")
        with pytest.raises(ConfigError, match="unknown choice 'nonexistent'") as caught:
            create_application(options=bcce_layer_options, **{section: {name: "nonexistent"}})
        assert caught.value.key == key


def test_selector_points_are_keyed_by_real_settings(bcce_app: Application) -> None:
    settings = bcce_app.settings()

    for key in selector_points(bcce_app):
        section, name = key.split(".")
        assert isinstance(getattr(getattr(settings, section), name), str), key


def test_the_default_components_are_the_simplest_real_ones(bcce_app: Application) -> None:
    assert isinstance(bcce_app.storage.backend(), LocalStorageBackend)
    assert isinstance(bcce_app.auth.authenticator(), LocalAuthProvider)
    assert isinstance(bcce_app.events.bus(), InProcessEventBus)


def test_the_local_auth_provider_identifies_the_os_user(bcce_app: Application) -> None:
    identity = bcce_app.auth.authenticator().authenticate()

    assert isinstance(identity, Identity)
    assert identity.provider == "local"
    assert identity.user


def test_the_storage_root_defaults_to_under_tmp_path_in_tests(
    bcce_app: Application, tmp_path: Path
) -> None:
    assert bcce_app.settings().storage.root == tmp_path / ".bcce_runs"


def test_a_singleton_is_shared_by_the_containers_that_use_it(bcce_app: Application) -> None:
    assert bcce_app.workflow.events.bus() is bcce_app.events.bus()
    assert bcce_app.workflow.storage.backend() is bcce_app.storage.backend()


def test_nothing_touches_aws_until_asked(bcce_app: Application) -> None:
    initialised = [
        provider
        for provider in bcce_app.aws.traverse(types=[providers.Singleton])
        if getattr(provider, "initialized", False)
    ]

    assert initialised == []


def test_the_aws_client_factories_use_the_configured_endpoint(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(
        aws={
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:1",
            "endpoint_urls": {"sts": "http://127.0.0.1:2"},
        }
    )

    assert app.aws.ssm().meta.endpoint_url == "http://127.0.0.1:1"
    assert app.aws.sts().meta.endpoint_url == "http://127.0.0.1:2"
    assert app.aws.ssm().meta.region_name == "eu-west-1"


def test_load_settings_without_options_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BCCE_CORE__TEAM", "from-process")

    assert load_settings().core.team == "from-process"
    assert BcceSettings().core.team == "from-process"
