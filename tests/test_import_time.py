"""Importing bcce and ``bcce --help`` stay cheap: heavy dependencies load only when used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"boto3", "botocore", "claude_agent_sdk", "pydantic", "dependency_injector"}
NEVER_FOR_HELP = {"boto3", "botocore", "claude_agent_sdk"}


def _imported(tmp_path: Path, *args: str) -> set[str]:
    """Top-level packages a fresh interpreter imports to run ``python -X importtime ARGS``."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    modules = set()
    for line in completed.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            modules.add(name.split(".")[0])
    assert "bcce" in modules, "importtime output was not parsed"
    return modules


def test_import_bcce_imports_no_heavy_dependency(tmp_path: Path) -> None:
    assert _imported(tmp_path, "-c", "import bcce") & HEAVY == set()


def test_import_bcce_cli_main_imports_no_heavy_dependency(tmp_path: Path) -> None:
    assert _imported(tmp_path, "-c", "import bcce.cli.main") & HEAVY == set()


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["config", "--help"]], ids=" ".join)
def test_bcce_help_imports_neither_boto3_nor_the_agent_sdk(args: list[str], tmp_path: Path) -> None:
    assert _imported(tmp_path, "-m", "bcce", *args) & NEVER_FOR_HELP == set()


def test_the_parser_sees_heavy_imports_when_they_happen(tmp_path: Path) -> None:
    # Guards the tests above against passing because nothing was parsed.
    assert "boto3" in _imported(tmp_path, "-c", "import bcce, boto3")
