"""``bcce.testing.aws``: a moto server on the loopback interface, and the aws_env fixture."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from bcce.testing.aws import MotoServer


def test_the_session_server_listens_on_loopback_on_a_chosen_port(moto_server: MotoServer) -> None:
    url = urlsplit(moto_server.url)

    assert url.scheme == "http"
    assert url.hostname == "127.0.0.1"
    assert url.port is not None
    assert url.port > 0


def test_reset_forgets_what_was_created(aws_env: MotoServer, ssm: Any) -> None:
    ssm.put_parameter(Name="/reset/me", Value="x", Type="String")

    aws_env.reset()

    assert ssm.get_parameters_by_path(Path="/reset", Recursive=True)["Parameters"] == []


def test_each_test_starts_with_empty_moto_state_part_one(ssm: Any) -> None:
    assert ssm.describe_parameters()["Parameters"] == []
    ssm.put_parameter(Name="/left/over", Value="x", Type="String")


def test_each_test_starts_with_empty_moto_state_part_two(ssm: Any) -> None:
    assert ssm.describe_parameters()["Parameters"] == []
    ssm.put_parameter(Name="/left/over", Value="x", Type="String")


def test_aws_env_sets_dummy_credentials_and_a_region(aws_env: MotoServer) -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert os.environ["AWS_REGION"] == os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert not os.path.exists(os.environ["AWS_CONFIG_FILE"])
    assert not os.path.exists(os.environ["AWS_SHARED_CREDENTIALS_FILE"])


def test_aws_env_removes_the_developers_profile(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "production-admin")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "real-token")

    request.getfixturevalue("aws_env")

    assert "AWS_PROFILE" not in os.environ
    assert "AWS_SESSION_TOKEN" not in os.environ


def test_boto3_reaches_moto_through_the_environment(aws_env: MotoServer) -> None:
    import boto3

    identity = boto3.client("sts", endpoint_url=aws_env.url).get_caller_identity()

    assert identity["Account"] == "123456789012"


def test_a_server_of_its_own_stops_when_the_block_ends() -> None:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with MotoServer() as server:
        url = f"{server.url}/moto-api/data.json"
        with direct.open(url, timeout=10) as response:
            assert response.status == 200

    with pytest.raises(urllib.error.URLError):
        direct.open(url, timeout=10)


def test_the_url_of_a_server_not_started_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = MotoServer().url
