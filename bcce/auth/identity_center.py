"""The ``identity-center`` provider: who the AWS credentials belong to, per STS, and their groups.

The caller comes from STS ``GetCallerIdentity``. Only temporary credentials of an assumed role
are accepted:

* an IAM Identity Center (SSO) session,
  ``arn:aws:sts::ACCOUNT:assumed-role/AWSReservedSSO_<PermissionSet>_<hash>/<user>``: the user is
  the session name (Identity Center sets it to the user's sign-in name) and the permission set is
  parsed from the role name;
* any other assumed role: the user is ``<role>/<session>``, because whoever assumes a role picks
  its session name, so the name alone proves nothing;
* an IAM user or the root user is refused: their credentials are long-lived access keys.

Groups come from ``auth.identity_center.group_mapping`` (permission set or role name -> groups)
and, for SSO sessions when ``identity_store_id`` is set, from the Identity Store API as well:
``GetUserId`` by user name, ``ListGroupMembershipsForMember`` and ``DescribeGroup``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bcce.auth.provider import Identity
from bcce.errors import AuthenticationFailed

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings

_CALLER_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>sts|iam)::(?P<account>\d{12}):(?P<resource>.+)$"
)
_ASSUMED_ROLE = re.compile(r"^assumed-role/(?P<role>[^/]+)/(?P<session>[^/]+)$")
_SSO_ROLE = re.compile(r"^AWSReservedSSO_(?P<permission_set>.+)_(?P<hash>[0-9a-f]+)$")

#: STS and Identity Store error codes that mean "these credentials are no good (any more)".
_BAD_CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "AccessDenied",
    }
)


@dataclass(frozen=True)
class Caller:
    """The parts of an assumed-role caller ARN that bcce uses."""

    arn: str
    account: str
    role: str
    session: str
    permission_set: str | None

    @property
    def is_sso(self) -> bool:
        return self.permission_set is not None

    @property
    def user(self) -> str:
        return self.session if self.is_sso else f"{self.role}/{self.session}"


def parse_caller(arn: str, *, profile_hint: str) -> Caller:
    """The caller behind ``arn``; an IAM user, the root user or anything else is refused."""
    match = _CALLER_ARN.match(arn)
    if match is None:
        raise AuthenticationFailed(
            f"STS returned a caller ARN bcce does not understand: {arn}",
            hint="report this with `bcce doctor --json` output",
        )
    account, resource = match["account"], match["resource"]
    role_match = _ASSUMED_ROLE.match(resource)
    if role_match is not None:
        role, session = role_match["role"], role_match["session"]
        sso = _SSO_ROLE.match(role)
        return Caller(arn, account, role, session, sso["permission_set"] if sso else None)
    if resource == "root":
        what = "the root user of account " + account
    elif resource.startswith("user/"):
        what = f"the IAM user {resource.rsplit('/', 1)[-1]}"
    else:
        raise AuthenticationFailed(
            f"the AWS caller {arn} is not an assumed role: identity-center accepts only "
            "IAM Identity Center (SSO) sessions and assumed roles",
            hint=_sign_in_hint(profile_hint),
        )
    raise AuthenticationFailed(
        f"the AWS caller is {what} ({arn}): its credentials are long-lived access keys, "
        "which identity-center does not accept",
        hint=_sign_in_hint(profile_hint),
    )


class IdentityCenterProvider:
    """The AWS caller (an Identity Center session or an assumed role) as a bcce identity.

    ``sts`` and ``identitystore`` return boto3 clients; each is called on first use only. The
    identity is resolved once and kept for the provider's lifetime.
    """

    name = "identity-center"

    def __init__(
        self,
        *,
        sts: Callable[[], Any],
        identitystore: Callable[[], Any] | None = None,
        identity_store_id: str | None = None,
        group_mapping: Mapping[str, Sequence[str]] | None = None,
        profile: str | None = None,
        page_size: int = 100,
    ) -> None:
        self._sts = sts
        self._identitystore = identitystore
        self.identity_store_id = identity_store_id
        self.group_mapping = {k: tuple(v) for k, v in (group_mapping or {}).items()}
        self.profile = profile
        self.page_size = page_size
        self._identity: Identity | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: BcceSettings,
        *,
        sts: Callable[[], Any],
        identitystore: Callable[[], Any],
    ) -> IdentityCenterProvider:
        """The provider ``auth.identity_center`` configures, using these client factories."""
        section = settings.auth.identity_center
        return cls(
            sts=sts,
            identitystore=identitystore,
            identity_store_id=section.identity_store_id,
            group_mapping=section.group_mapping,
            profile=settings.aws.profile,
        )

    def authenticate(self) -> Identity:
        with self._lock:
            if self._identity is None:
                self._identity = self._resolve()
            return self._identity

    # -- resolving ----------------------------------------------------------------------------
    def _resolve(self) -> Identity:
        caller = parse_caller(self._caller_arn(), profile_hint=self._profile_hint())
        groups = set(self.group_mapping.get(caller.role, ()))
        attributes = {"account": caller.account, "arn": caller.arn, "role": caller.role}
        if caller.permission_set is not None:
            attributes["permission_set"] = caller.permission_set
            groups.update(self.group_mapping.get(caller.permission_set, ()))
            if self.identity_store_id:
                user_id, store_groups = self._store_groups(caller.session)
                attributes["identity_store_user_id"] = user_id
                groups.update(store_groups)
        return Identity(
            user=caller.user,
            groups=tuple(sorted(groups)),
            provider=self.name,
            attributes=attributes,
        )

    def _caller_arn(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        hint = _sign_in_hint(self._profile_hint())
        try:
            reply = self._sts().get_caller_identity()
        except NoCredentialsError:
            raise AuthenticationFailed("no AWS credentials found", hint=hint) from None
        except ClientError as exc:
            code, message = _client_error(exc)
            if code in _BAD_CREDENTIALS:
                raise AuthenticationFailed(
                    f"STS refused the AWS credentials ({code}: {message})", hint=hint
                ) from None
            raise AuthenticationFailed(
                f"STS GetCallerIdentity failed ({code}: {message})", hint=hint
            ) from None
        except BotoCoreError as exc:
            # Expired or missing SSO sessions, unknown profiles, unreachable endpoints.
            raise AuthenticationFailed(
                f"cannot ask STS who the caller is: {exc}", hint=hint
            ) from None
        return str(reply["Arn"])

    def _store_groups(self, user_name: str) -> tuple[str, list[str]]:
        """The user's Identity Store id and the display names of their groups."""
        from botocore.exceptions import BotoCoreError, ClientError

        store = self.identity_store_id
        assert store is not None and self._identitystore is not None
        try:
            client = self._identitystore()
            user_id = self._user_id(client, user_name)
            names = [
                name
                for group_id in self._group_ids(client, user_id)
                if (name := self._group_name(client, group_id)) is not None
            ]
        except ClientError as exc:
            code, message = _client_error(exc)
            hint = (
                "allow identitystore:GetUserId, identitystore:ListGroupMembershipsForMember and "
                "identitystore:DescribeGroup to the role, or use auth.identity_center."
                "group_mapping instead of identity_store_id"
                if code in ("AccessDeniedException", "AccessDenied")
                else f"check auth.identity_center.identity_store_id ({store}) and region"
            )
            raise AuthenticationFailed(
                f"the Identity Store {store} cannot be read ({code}: {message})", hint=hint
            ) from None
        except BotoCoreError as exc:
            raise AuthenticationFailed(
                f"the Identity Store {store} cannot be reached: {exc}",
                hint="check auth.identity_center.region and network access to the "
                "Identity Store API",
            ) from None
        return user_id, names

    def _user_id(self, client: Any, user_name: str) -> str:
        from botocore.exceptions import ClientError

        store = self.identity_store_id
        try:
            reply = client.get_user_id(
                IdentityStoreId=store,
                AlternateIdentifier={
                    "UniqueAttribute": {"AttributePath": "userName", "AttributeValue": user_name}
                },
            )
        except ClientError as exc:
            if _client_error(exc)[0] != "ResourceNotFoundException":
                raise
            raise AuthenticationFailed(
                f"the SSO user {user_name!r} is not in the Identity Store {store}",
                hint="check auth.identity_center.identity_store_id: it must be the store of the "
                "Identity Center instance that issued the SSO session",
            ) from None
        return str(reply["UserId"])

    def _group_ids(self, client: Any, user_id: str) -> Iterator[str]:
        token: str | None = None
        while True:
            request: dict[str, Any] = {
                "IdentityStoreId": self.identity_store_id,
                "MemberId": {"UserId": user_id},
                "MaxResults": self.page_size,
            }
            if token:
                request["NextToken"] = token
            reply = client.list_group_memberships_for_member(**request)
            for membership in reply.get("GroupMemberships", ()):
                yield str(membership["GroupId"])
            token = reply.get("NextToken")
            if not token:
                return

    def _group_name(self, client: Any, group_id: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            reply = client.describe_group(IdentityStoreId=self.identity_store_id, GroupId=group_id)
        except ClientError as exc:
            if _client_error(exc)[0] == "ResourceNotFoundException":
                return None  # deleted since the membership was listed: not a group any more
            raise
        return str(reply.get("DisplayName") or group_id)

    def _profile_hint(self) -> str:
        return self.profile or os.environ.get("AWS_PROFILE") or "<profile>"


def _sign_in_hint(profile: str) -> str:
    return (
        f"sign in with IAM Identity Center: `aws sso login --profile {profile}` and set "
        "aws.profile (BCCE_AWS__PROFILE), or run under an assumed role; long-lived IAM user "
        "keys are not accepted"
    )


def _client_error(exc: Any) -> tuple[str, str]:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "Unknown")), str(error.get("Message", "")).rstrip(".")


__all__ = ["Caller", "IdentityCenterProvider", "parse_caller"]
