"""The bcce error tree and the process exit codes it maps to.

    BcceError                       exit 1   BCCE000
    ├── UsageError                  exit 2   BCCE002
    ├── ConfigError                 exit 3   BCCE100
    ├── WorkflowError               exit 3   BCCE200
    │   └── RunFailed               exit 1   BCCE210
    ├── PluginError                 exit 4   BCCE400
    ├── PolicyDenied                exit 5   BCCE500
    ├── NotAuthorised               exit 6   BCCE600
    │   └── AuthenticationFailed    exit 6   BCCE610
    ├── StorageError                exit 1   BCCE700
    └── AwsError                    exit 1   BCCE800

Every error carries a short reference ``code`` (stable, searchable in the docs), a one-line
message, an optional ``hint`` telling the user what to do, and optional ``location``
(``file:line:col``) and ``key`` (dotted settings or workflow path). The CLI prints these and exits
with ``exit_code``; nothing here prints or exits.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented process exit codes (docs/cli.md)."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    INVALID = 3
    PLUGIN = 4
    POLICY_DENIED = 5
    NOT_AUTHORISED = 6
    INTERRUPTED = 130


class BcceError(Exception):
    """Base of every error bcce raises on purpose."""

    code = "BCCE000"
    exit_code = ExitCode.RUN_FAILED

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: str | None = None,
        key: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location
        self.key = key
        if code is not None:
            self.code = code

    def render(self) -> str:
        """The message as the CLI prints it: ``[CODE] location: key: message`` and a hint line."""
        where = ": ".join(part for part in (self.location, self.key) if part)
        head = (
            f"[{self.code}] {where}: {self.message}" if where else f"[{self.code}] {self.message}"
        )
        return f"{head}\n  hint: {self.hint}" if self.hint else head

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "location": self.location,
            "key": self.key,
            "exit_code": int(self.exit_code),
        }

    def __str__(self) -> str:
        return self.render()


class UsageError(BcceError):
    code = "BCCE002"
    exit_code = ExitCode.USAGE


class ConfigError(BcceError):
    code = "BCCE100"
    exit_code = ExitCode.INVALID


class WorkflowError(BcceError):
    code = "BCCE200"
    exit_code = ExitCode.INVALID


class RunFailed(WorkflowError):
    code = "BCCE210"
    exit_code = ExitCode.RUN_FAILED


class PluginError(BcceError):
    code = "BCCE400"
    exit_code = ExitCode.PLUGIN


class PolicyDenied(BcceError):
    code = "BCCE500"
    exit_code = ExitCode.POLICY_DENIED


class NotAuthorised(BcceError):
    code = "BCCE600"
    exit_code = ExitCode.NOT_AUTHORISED


class AuthenticationFailed(NotAuthorised):
    code = "BCCE610"


class StorageError(BcceError):
    code = "BCCE700"


class AwsError(BcceError):
    code = "BCCE800"


__all__ = [
    "AuthenticationFailed",
    "AwsError",
    "BcceError",
    "ConfigError",
    "ExitCode",
    "NotAuthorised",
    "PluginError",
    "PolicyDenied",
    "RunFailed",
    "StorageError",
    "UsageError",
    "WorkflowError",
]
