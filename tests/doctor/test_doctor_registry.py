"""The doctor check registry: checks come from the ``bcce.doctor`` entry-point group."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from bcce.cli.main import cli
from bcce.containers.application import Application
from bcce.doctor.checks import python_version
from bcce.doctor.registry import (
    Check,
    CheckRegistry,
    CheckResult,
    DoctorContext,
    Status,
    load_checks,
)
from bcce.errors import ConfigError, PluginError

CHECK_MODULE = "bcce_test_extra_check"
BUILTIN = ["python", "configuration", "aws", "claude-code"]

EXTRA_CHECK = f"""
from bcce.doctor.registry import Check, CheckResult

check = Check(
    name="extra",
    title="Extra check from another package",
    run=lambda ctx: CheckResult.ok("extra is fine", origin="{CHECK_MODULE}"),
    order=50,
)
not_a_check = object()
"""

ENTRY_POINTS = f"""\
[bcce.doctor]
extra = {CHECK_MODULE}:check
missing = bcce_test_module_that_does_not_exist:check
wrong-type = {CHECK_MODULE}:not_a_check
"""


@pytest.fixture
def installed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A distribution on sys.path registering doctor checks, as ``pip install`` would."""
    site = tmp_path / "site-packages"
    dist_info = site / "bcce_test_extra_check-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: bcce-test-extra-check\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / f"{CHECK_MODULE}.py").write_text(EXTRA_CHECK)
    monkeypatch.syspath_prepend(str(site))
    request.addfinalizer(lambda: sys.modules.pop(CHECK_MODULE, None))


def _ok(_ctx: DoctorContext) -> CheckResult:
    return CheckResult.ok("fine")


def test_bcce_registers_its_own_checks_through_the_entry_point_group() -> None:
    names = load_checks().names()

    assert [n for n in names if n in BUILTIN] == BUILTIN


@pytest.mark.usefixtures("installed_check")
def test_a_check_registered_by_another_package_is_loaded() -> None:
    registry = load_checks()

    assert "extra" in registry.names()
    outcome = registry.run(DoctorContext(app=None), {"extra"})[0]
    assert outcome.check.needs_app
    assert outcome.result.status is Status.SKIP  # it needs an application, and there is none


@pytest.mark.usefixtures("installed_check")
def test_a_check_registered_by_another_package_shows_up_in_doctor(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app()

    result = CliRunner().invoke(cli, ["doctor", "--json", "--check", "extra"], obj=app)

    assert result.exit_code == 0, result.output
    (extra,) = json.loads(result.stdout)["checks"]
    assert extra["title"] == "Extra check from another package"
    assert extra["details"] == {"origin": CHECK_MODULE}


@pytest.mark.usefixtures("installed_check")
def test_an_entry_point_that_cannot_be_imported_is_a_failed_check() -> None:
    registry = load_checks()

    outcome = registry.run(DoctorContext(app=None), {"missing"})[0]

    assert outcome.result.status is Status.FAIL
    assert "check could not be loaded" in outcome.result.message
    assert "'missing' doctor check" in (outcome.result.fix or "")


@pytest.mark.usefixtures("installed_check")
def test_an_entry_point_that_is_not_a_check_is_a_failed_check() -> None:
    outcome = load_checks().run(DoctorContext(app=None), {"wrong-type"})[0]

    assert outcome.result.status is Status.FAIL
    assert "is not a Check" in outcome.result.message


def test_checks_run_in_order_then_by_name() -> None:
    registry = CheckRegistry(
        [
            Check("b", "B", _ok, order=2),
            Check("a", "A", _ok, order=2),
            Check("c", "C", _ok, order=1),
        ]
    )

    assert registry.names() == ["c", "a", "b"]


def test_registering_a_check_with_a_known_name_replaces_it() -> None:
    registry = CheckRegistry([Check("a", "first", _ok)])

    registry.register(Check("a", "second", _ok))

    assert [c.title for c in registry] == ["second"]


def test_a_check_raising_is_a_required_failure_naming_the_exception() -> None:
    def explode(_ctx: DoctorContext) -> CheckResult:
        raise KeyError("missing")

    outcome = CheckRegistry([Check("x", "X", explode, needs_app=False)]).run(
        DoctorContext(app=None)
    )[0]

    assert outcome.result.status is Status.FAIL
    assert outcome.required
    assert outcome.result.message == "the check itself failed: KeyError: 'missing'"


def test_a_check_raising_a_bcce_error_fails_with_its_hint_as_the_fix() -> None:
    def refuse(_ctx: DoctorContext) -> CheckResult:
        raise PluginError("plugin x is broken", hint="reinstall x")

    outcome = CheckRegistry([Check("x", "X", refuse, needs_app=False)]).run(
        DoctorContext(app=None)
    )[0]

    assert outcome.result.status is Status.FAIL
    assert outcome.result.message == "plugin x is broken"
    assert outcome.result.fix == "reinstall x"


def test_a_check_needing_the_application_is_skipped_without_one() -> None:
    context = DoctorContext(app=None, config_error=ConfigError("bad"))

    outcome = CheckRegistry([Check("x", "X", _ok)]).run(context)[0]

    assert outcome.result.status is Status.SKIP
    assert not outcome.required


def test_the_python_check_passes_on_a_supported_python() -> None:
    result = python_version.run(DoctorContext(app=None))

    assert result.status is Status.OK
    assert result.details["version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
