"""Shared test set-up: every test runs isolated from the developer's environment.

No ``BCCE_*`` variable, ``./bcce.yaml``, user config file or AWS profile of the machine running
the tests can change a result, and nothing can reach AWS: the working directory is a fresh
temporary directory, the AWS credential chain finds nothing, and the instance metadata service
is switched off. The fixtures for tests themselves come from bcce's pytest plugin
(``bcce.testing.pytest_plugin``): ``bcce_app``, ``bcce_cli``, ``aws_env``...
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bcce.testing.aws import MotoServer


@pytest.fixture(autouse=True)
def _isolated_from_the_developer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("BCCE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws" / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws" / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_claude(tmp_path: Path) -> Callable[..., Path]:
    """Write an executable stand-in for Claude Code that prints ``VERSION (Claude Code)``."""

    def make(version: str = "2.0.0", name: str = "claude") -> Path:
        path = tmp_path / "fake-bin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\necho "{version} (Claude Code)"\n')
        path.chmod(0o755)
        return path

    return make


@pytest.fixture
def ssm(aws_env: MotoServer) -> Any:
    """A boto3 SSM client on the moto server (empty at the start of each test)."""
    import boto3

    return boto3.client("ssm", endpoint_url=aws_env.url, region_name="us-east-1")
