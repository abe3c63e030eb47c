"""The error tree: codes, exit codes and how an error reads."""

from __future__ import annotations

import re

import pytest

from bcce import errors
from bcce.errors import BcceError, ConfigError, ExitCode, NotAuthorised, RunFailed


def test_render_is_code_location_key_message_then_a_hint_line() -> None:
    error = ConfigError("unknown key", location="a.yaml:2:3", key="storage.x", hint="remove it")

    assert error.render() == "[BCCE100] a.yaml:2:3: storage.x: unknown key\n  hint: remove it"


def test_render_without_location_key_or_hint_is_code_and_message() -> None:
    assert BcceError("it broke").render() == "[BCCE000] it broke"


def test_render_with_only_a_key() -> None:
    assert ConfigError("bad", key="core.team").render() == "[BCCE100] core.team: bad"


def test_str_is_the_rendering() -> None:
    error = NotAuthorised("no", hint="ask an admin")

    assert str(error) == error.render()


def test_a_code_can_be_given_per_instance() -> None:
    error = ConfigError("x", code="BCCE123")

    assert error.code == "BCCE123"
    assert ConfigError("y").code == "BCCE100"


def test_to_dict_is_json_ready() -> None:
    error = RunFailed("step s failed", hint="see the log", location="wf.yml:3:1", key="steps[0]")

    assert error.to_dict() == {
        "code": "BCCE210",
        "error": "RunFailed",
        "message": "step s failed",
        "hint": "see the log",
        "location": "wf.yml:3:1",
        "key": "steps[0]",
        "exit_code": 1,
    }


def test_exit_codes_are_the_documented_numbers() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "RUN_FAILED": 1,
        "USAGE": 2,
        "INVALID": 3,
        "PLUGIN": 4,
        "POLICY_DENIED": 5,
        "NOT_AUTHORISED": 6,
        "INTERRUPTED": 130,
    }


ERROR_CLASSES = [
    cls
    for cls in (getattr(errors, name) for name in errors.__all__)
    if isinstance(cls, type) and issubclass(cls, BcceError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_has_a_unique_code(cls: type[BcceError]) -> None:
    others = {other.code for other in ERROR_CLASSES if other is not cls}

    assert cls.code not in others
    assert re.fullmatch(r"BCCE\d{3}", cls.code)
