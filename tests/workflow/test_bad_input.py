"""Hostile and broken workflow files: exit code 3, a located message, no crash, no hang."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcce.errors import BcceError
from bcce.workflow.loader import LoadOptions, load_workflow

_STEP = "steps:\n  - id: a\n    type: cmd\n    command: echo\n"
_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9 if prev else ['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)

#: name -> file content. Every one must fail validation with exit code 3 and a file:line:col.
CORPUS: dict[str, str] = {
    "malformed_yaml": "version: 1\nworkflow: x\nsteps:\n  - id: a\n    command: [unclosed\n",
    "tab_indentation": "version: 1\nworkflow: x\nsteps:\n\t- id: a\n",
    "billion_laughs": _LAUGHS,
    "deep_flow_sequences": "version: 1\nworkflow: x\nsteps: " + "[" * 10_000 + "]" * 10_000,
    "deep_flow_mappings": "version: 1\nworkflow: x\nsteps: " + "{a: " * 10_000 + "1" + "}" * 10_000,
    "duplicate_keys": "version: 1\nworkflow: x\n" + _STEP + "    command: echo again\n",
    "unknown_field": "version: 1\nworkflow: x\n" + _STEP + "    bogus: 1\n",
    "unknown_top_level_field": "version: 1\nworkflow: x\nextra: 1\n" + _STEP,
    "wrong_type": "version: 1\nworkflow: x\n" + _STEP + "    timeout_seconds: soon\n",
    "wrong_version": "version: '1'\nworkflow: x\n" + _STEP,
    "steps_not_a_list": "version: 1\nworkflow: x\nsteps: {a: 1}\n",
    "cycle": (
        "version: 1\nworkflow: x\nsteps:\n"
        "  - {id: a, type: cmd, command: echo, needs: [b]}\n"
        "  - {id: b, type: cmd, command: echo, needs: [a]}\n"
    ),
    "undefined_variable": (
        "version: 1\nworkflow: x\nsteps:\n  - {id: a, type: cmd, command: 'echo ${NOPE}'}\n"
    ),
    "python_tag": "version: 1\nworkflow: !!python/object/apply:os.system ['touch pwned']\n" + _STEP,
    "non_string_key": "version: 1\nworkflow: x\n" + _STEP + "    [1, 2]: x\n",
    "bad_expression": "version: 1\nworkflow: x\n" + _STEP + '    if: "success() ||| x"\n',
}


def located(output: str, name: str) -> bool:
    return re.search(rf"{re.escape(name)}:\d+:\d+", output) is not None


def assert_cleanly_rejected(result: Result, name: str) -> None:
    assert result.exit_code == 3, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert located(result.stderr, name), result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def corpus_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(case: str) -> Path:
        path = tmp_path / f"{case}.yml"
        path.write_text(CORPUS[case], encoding="utf-8")
        return path

    return write


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_validate_rejects_bad_input_with_a_located_message(
    case: str, corpus_file: Callable[[str], Path], bcce: Callable[..., Result]
) -> None:
    path = corpus_file(case)

    assert_cleanly_rejected(bcce("workflow", "validate", path), path.name)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_run_rejects_bad_input_with_a_located_message_and_runs_nothing(
    case: str, corpus_file: Callable[[str], Path], bcce: Callable[..., Result], runs_dir: Path
) -> None:
    path = corpus_file(case)

    assert_cleanly_rejected(bcce("workflow", "run", path), path.name)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    assert not (path.parent / "pwned").exists()


@pytest.mark.timeout(60)
def test_a_real_process_rejects_the_whole_corpus_without_a_traceback(
    corpus_file: Callable[[str], Path], tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    paths = [corpus_file(case) for case in sorted(CORPUS)]

    done = subprocess.run(
        [sys.executable, "-m", "bcce", "workflow", "validate", "--json", *map(str, paths)],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=50,
    )

    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert [f["valid"] for f in report["files"]] == [False] * len(paths)
    for path, entry in zip(paths, report["files"], strict=True):
        assert entry["error"]["exit_code"] == 3
        assert located(entry["error"]["location"], path.name), entry


@pytest.mark.timeout(30)
def test_a_real_run_of_a_billion_laughs_file_exits_3_quickly(
    corpus_file: Callable[[str], Path], tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    path = corpus_file("billion_laughs")

    done = subprocess.run(
        [sys.executable, "-m", "bcce", "workflow", "run", str(path)],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=25,
    )

    assert done.returncode == 3
    assert "alias expansion limit" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_oversized_file_is_rejected_naming_it(
    tmp_path: Path, bcce: Callable[..., Result]
) -> None:
    path = tmp_path / "big.yml"
    path.write_text("version: 1\nworkflow: x\n# " + "a" * 3_000_000 + "\n" + _STEP)

    result = bcce("workflow", "validate", path)

    assert result.exit_code == 3
    assert f"{path}: workflow file is larger than" in result.stderr


def test_a_file_that_is_not_utf8_is_rejected_naming_it(
    tmp_path: Path, bcce: Callable[..., Result]
) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"version: 1\nworkflow: caf\xe9\n" + _STEP.encode())

    result = bcce("workflow", "validate", path)

    assert result.exit_code == 3
    assert f"{path}: file is not valid UTF-8" in result.stderr


# --- property tests -----------------------------------------------------------------------------

_FRAGMENTS = [
    *"abc:-[]{}&*!|>'\"#%@`,? \n\t$\\019",
    "version: 1\n",
    "workflow: w\n",
    "steps:\n",
    "  - id: a\n",
    "    type: cmd\n",
    "    command: echo\n",
    "    needs: [a]\n",
    "    if: ",
    "${X}",
    "$${X}",
    "${{",
    "}}",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!python/object:os.system ",
    "!!binary ",
    "---\n",
    "...\n",
    "\u2028",
    "\x00",
    "\ufeff",
    "\udc80",
]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=8), max_size=50).map("".join))
def test_arbitrary_yaml_text_raises_only_bcce_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))

    with contextlib.suppress(BcceError):
        load_workflow(path, LoadOptions(environ={}, step_types=["cmd"]))


_KEYS = st.sampled_from(
    [
        "version",
        "workflow",
        "steps",
        "id",
        "type",
        "command",
        "needs",
        "if",
        "env",
        "retry",
        "max_attempts",
        "timeout_seconds",
        "on_error",
        "outputs",
        "then",
        "else",
        "condition",
        "failure_strategy",
        "max_parallel",
        "policy",
        "prompt_file",
        "max_runtime_seconds",
    ]
) | st.text(max_size=6)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            *("cmd", "composite", "parallel", "conditional", "prompt", "a", "b", "${X}"),
            *("$${X}", "${{ steps.a.outputs.x }}", "success()", "always(", "fail", "abort"),
        ]
    )
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=12,
)


def _step(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    children = st.lists(st.deferred(lambda: _step(depth - 1)), max_size=3) if depth else st.just([])
    return st.fixed_dictionaries(
        {
            "id": st.sampled_from(["a", "b", "c"]),
            "type": st.sampled_from(["cmd", "composite", "parallel", "conditional", "prompt"]),
        },
        optional={
            "command": _SCALARS,
            "needs": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3) | _SCALARS,
            "if": _SCALARS,
            "condition": _SCALARS,
            "steps": children,
            "then": children,
            "else": children,
            "retry": st.dictionaries(_KEYS, _SCALARS, max_size=3),
            "on_error": _SCALARS,
            "outputs": st.dictionaries(st.sampled_from(["x", "y"]), _SCALARS, max_size=2),
            "prompt_file": _SCALARS,
            "extra": _VALUES,
        },
    )


_DOCUMENTS = (
    st.fixed_dictionaries(
        {
            "version": st.sampled_from([1, 1.0, "1", True, None]),
            "steps": st.lists(_step(2), max_size=4),
        },
        optional={"workflow": _VALUES, "env": st.dictionaries(_KEYS, _VALUES, max_size=4)},
    )
    | _VALUES
)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(_DOCUMENTS)
def test_arbitrary_json_like_documents_raise_only_bcce_errors(
    tmp_path: Path, document: Any
) -> None:
    path = tmp_path / "fuzz.yml"
    path.write_text(json.dumps(document), encoding="utf-8")

    with contextlib.suppress(BcceError):
        load_workflow(path, LoadOptions(environ={}, step_types=["cmd", "prompt"]))
