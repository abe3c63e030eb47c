"""The identity-center provider against the moto server: callers from STS, groups from the
configured mapping and from the Identity Store API."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.stub import Stubber

from bcce.auth.identity_center import IdentityCenterProvider, parse_caller
from bcce.containers.application import Application
from bcce.errors import AuthenticationFailed, ExitCode

if TYPE_CHECKING:
    from bcce.testing.aws import MotoServer

ACCOUNT = "123456789012"
SSO_ROLE = "AWSReservedSSO_Platform_Admins_0123456789abcdef"
SSO_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/{SSO_ROLE}"
STORE = "d-1234567890"
USER = "ana@example.com"


def client(service: str, server: MotoServer | None = None, region: str = "us-east-1") -> Any:
    """A client from a new session: boto3's default session would keep the first credentials
    it found, and these tests change them."""
    url = server.url if server is not None else None
    return boto3.session.Session().client(service, endpoint_url=url, region_name=region)


def assume(server: MotoServer, monkeypatch: pytest.MonkeyPatch, role_arn: str, session: str) -> str:
    """Put temporary credentials of ``role_arn`` in the environment, as the AWS CLI would after
    a sign-in; returns the assumed-role ARN."""
    reply = client("sts", server).assume_role(RoleArn=role_arn, RoleSessionName=session)
    credentials = reply["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    return str(reply["AssumedRoleUser"]["Arn"])


@pytest.fixture
def sso_user(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The caller is Ana, signed in through IAM Identity Center with the Platform_Admins
    permission set; returns the caller's ARN."""
    return assume(aws_env, monkeypatch, SSO_ROLE_ARN, USER)


@pytest.fixture
def ic_app(bcce_make_app: Callable[..., Application], aws_env: MotoServer) -> Callable[..., Any]:
    """``ic_app(**identity_center)``: the identity-center provider of an app on the moto server."""

    def make(**identity_center: Any) -> IdentityCenterProvider:
        app = bcce_make_app(
            aws={"endpoint_url": aws_env.url, "region": "us-east-1", "max_attempts": 1},
            auth={"provider": "identity-center", "identity_center": identity_center},
        )
        provider = app.auth.authenticator()
        assert isinstance(provider, IdentityCenterProvider)
        return provider

    return make


def store_client(server: MotoServer, region: str = "us-east-1") -> Any:
    return client("identitystore", server, region)


def add_user(client: Any, user: str = USER, groups: tuple[str, ...] = ()) -> str:
    user_id = str(
        client.create_user(
            IdentityStoreId=STORE,
            UserName=user,
            DisplayName=user,
            Name={"GivenName": "Ana", "FamilyName": "Lopes"},
        )["UserId"]
    )
    for name in groups:
        group_id = client.create_group(IdentityStoreId=STORE, DisplayName=name)["GroupId"]
        client.create_group_membership(
            IdentityStoreId=STORE, GroupId=group_id, MemberId={"UserId": user_id}
        )
    return user_id


# -- who the caller is -----------------------------------------------------------------------
def test_an_sso_session_is_the_user_with_the_permission_set_and_its_mapped_groups(
    ic_app: Callable[..., IdentityCenterProvider], sso_user: str
) -> None:
    provider = ic_app(group_mapping={"Platform_Admins": ["admins", "dev"], "Other": ["x"]})

    identity = provider.authenticate()

    assert (identity.user, identity.groups, identity.provider) == (
        USER,
        ("admins", "dev"),
        "identity-center",
    )
    assert identity.attributes == {
        "account": ACCOUNT,
        "arn": sso_user,
        "role": SSO_ROLE,
        "permission_set": "Platform_Admins",
    }


def test_another_assumed_role_is_the_role_and_session_with_the_roles_mapped_groups(
    ic_app: Callable[..., IdentityCenterProvider],
    aws_env: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assume(aws_env, monkeypatch, f"arn:aws:iam::{ACCOUNT}:role/ci-deployer", "build-42")
    provider = ic_app(group_mapping={"ci-deployer": ["ci"]}, identity_store_id=STORE)

    identity = provider.authenticate()

    # The session name is whatever the role's user chose: it never stands alone as the user.
    assert (identity.user, identity.groups) == ("ci-deployer/build-42", ("ci",))
    assert "permission_set" not in identity.attributes


def test_an_iam_user_is_refused_as_long_lived_credentials(
    aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = client("iam", aws_env)
    iam.create_user(UserName="bob")
    key = iam.create_access_key(UserName="bob")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])  # bob's own access key
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    provider = IdentityCenterProvider(sts=lambda: client("sts", aws_env))

    with pytest.raises(AuthenticationFailed) as caught:
        provider.authenticate()

    assert caught.value.message.startswith(
        f"the AWS caller is the IAM user bob (arn:aws:iam::{ACCOUNT}:user/bob): "
        "its credentials are long-lived access keys"
    )
    assert caught.value.exit_code == ExitCode.NOT_AUTHORISED
    assert "aws sso login --profile" in (caught.value.hint or "")


def test_the_dummy_credentials_iam_user_of_moto_is_refused_too(
    ic_app: Callable[..., IdentityCenterProvider],
) -> None:
    with pytest.raises(AuthenticationFailed, match="the IAM user moto"):
        ic_app().authenticate()


def test_no_credentials_is_an_authentication_failure_with_the_sign_in_hint(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(  # no credentials anywhere (tests/conftest.py), nothing is sent
        aws={"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9"},
        auth={"provider": "identity-center"},
    )

    with pytest.raises(AuthenticationFailed) as caught:
        app.auth.authenticator().authenticate()

    assert caught.value.message == "no AWS credentials found"
    assert "`aws sso login --profile <profile>`" in (caught.value.hint or "")


def test_an_expired_session_is_an_authentication_failure_naming_the_profile(
    sso_user: str,
) -> None:
    sts = client("sts")
    stubber = Stubber(sts)
    stubber.add_client_error(
        "get_caller_identity",
        service_error_code="ExpiredToken",
        service_message="The security token included in the request is expired",
        http_status_code=403,
    )
    stubber.activate()
    provider = IdentityCenterProvider(sts=lambda: sts, profile="dev")

    with pytest.raises(AuthenticationFailed) as caught:
        provider.authenticate()

    assert caught.value.message == (
        "STS refused the AWS credentials (ExpiredToken: "
        "The security token included in the request is expired)"
    )
    assert "`aws sso login --profile dev`" in (caught.value.hint or "")


def test_the_caller_is_asked_once_and_only_when_first_needed(
    aws_env: MotoServer, sso_user: str
) -> None:
    calls: list[str] = []

    def sts() -> Any:
        calls.append("sts")
        return client("sts", aws_env)

    provider = IdentityCenterProvider(sts=sts)
    assert calls == []

    first, second = provider.authenticate(), provider.authenticate()

    assert first == second
    assert calls == ["sts"]


# -- groups from the Identity Store ----------------------------------------------------------
def test_groups_come_from_the_identity_store_with_the_mapped_ones(
    ic_app: Callable[..., IdentityCenterProvider], aws_env: MotoServer, sso_user: str
) -> None:
    user_id = add_user(store_client(aws_env), groups=("Developers", "Release Managers"))
    provider = ic_app(identity_store_id=STORE, group_mapping={"Platform_Admins": ["admins"]})

    identity = provider.authenticate()

    assert identity.groups == ("Developers", "Release Managers", "admins")
    assert identity.attributes["identity_store_user_id"] == user_id


def test_every_page_of_group_memberships_is_read(aws_env: MotoServer, sso_user: str) -> None:
    names = tuple(f"team-{n}" for n in range(5))
    add_user(store_client(aws_env), groups=names)
    provider = IdentityCenterProvider(
        sts=lambda: client("sts", aws_env),
        identitystore=lambda: store_client(aws_env),
        identity_store_id=STORE,
        page_size=2,
    )

    assert provider.authenticate().groups == names


def test_an_sso_user_missing_from_the_identity_store_is_refused(
    ic_app: Callable[..., IdentityCenterProvider], aws_env: MotoServer, sso_user: str
) -> None:
    add_user(store_client(aws_env), user="someone-else@example.com")

    with pytest.raises(AuthenticationFailed) as caught:
        ic_app(identity_store_id=STORE).authenticate()

    assert caught.value.message == f"the SSO user {USER!r} is not in the Identity Store {STORE}"
    assert "auth.identity_center.identity_store_id" in (caught.value.hint or "")


def test_an_identity_store_in_another_region_is_asked_there(
    ic_app: Callable[..., IdentityCenterProvider], aws_env: MotoServer, sso_user: str
) -> None:
    add_user(store_client(aws_env, "eu-west-1"), groups=("Developers",))

    provider = ic_app(identity_store_id=STORE, region="eu-west-1")

    assert provider.authenticate().groups == ("Developers",)


def test_no_permission_to_read_the_identity_store_is_refused_with_the_actions_to_allow(
    aws_env: MotoServer, sso_user: str
) -> None:
    store = client("identitystore")
    stubber = Stubber(store)
    stubber.add_client_error(
        "get_user_id", service_error_code="AccessDeniedException", service_message="denied."
    )
    stubber.activate()
    provider = IdentityCenterProvider(
        sts=lambda: client("sts", aws_env),
        identitystore=lambda: store,
        identity_store_id=STORE,
    )

    with pytest.raises(AuthenticationFailed) as caught:
        provider.authenticate()

    assert caught.value.message == (
        f"the Identity Store {STORE} cannot be read (AccessDeniedException: denied)"
    )
    assert "identitystore:ListGroupMembershipsForMember" in (caught.value.hint or "")


# -- caller ARNs -----------------------------------------------------------------------------
def test_a_permission_set_name_with_underscores_is_parsed_whole() -> None:
    caller = parse_caller(
        "arn:aws-us-gov:sts::123456789012:assumed-role/AWSReservedSSO_read_only_ab12cd34ef56ab78/ana",
        profile_hint="p",
    )

    assert (caller.permission_set, caller.user, caller.account) == ("read_only", "ana", ACCOUNT)


@pytest.mark.parametrize(
    ("arn", "reason"),
    [
        (f"arn:aws:iam::{ACCOUNT}:root", "the root user of account"),
        (f"arn:aws:iam::{ACCOUNT}:user/ops/carol", "the IAM user carol"),
        (f"arn:aws:sts::{ACCOUNT}:federated-user/dave", "is not an assumed role"),
        ("not-an-arn", "a caller ARN bcce does not understand"),
    ],
)
def test_callers_other_than_assumed_roles_are_refused(arn: str, reason: str) -> None:
    with pytest.raises(AuthenticationFailed, match=reason):
        parse_caller(arn, profile_hint="p")
