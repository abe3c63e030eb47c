"""The check registry.

Checks are registered through the ``bcce.doctor`` entry-point group (bcce's own and any installed
package's), so adding a check never means editing a list here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from bcce.core.log import get_logger
from bcce.errors import BcceError, ConfigError

if TYPE_CHECKING:
    from bcce.containers.application import Application

log = get_logger("doctor")

ENTRY_POINT_GROUP = "bcce.doctor"


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    status: Status
    message: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, message: str, **details: Any) -> CheckResult:
        return cls(Status.OK, message, details=details)

    @classmethod
    def fail(cls, message: str, fix: str, **details: Any) -> CheckResult:
        return cls(Status.FAIL, message, fix, details=details)

    @classmethod
    def warn(cls, message: str, fix: str, **details: Any) -> CheckResult:
        return cls(Status.WARN, message, fix, details=details)

    @classmethod
    def skip(cls, message: str) -> CheckResult:
        return cls(Status.SKIP, message)


@dataclass
class DoctorContext:
    """What checks look at: the application, or why it could not be built."""

    app: Application | None
    config_error: ConfigError | None = None


@dataclass(frozen=True)
class Check:
    """One check. ``required`` decides whether a failure fails ``bcce doctor`` (else it warns)."""

    name: str
    title: str
    run: Callable[[DoctorContext], CheckResult]
    order: int = 100
    required: Callable[[DoctorContext], bool] = lambda _ctx: True
    needs_app: bool = True


@dataclass(frozen=True)
class Outcome:
    check: Check
    result: CheckResult
    required: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.check.name,
            "title": self.check.title,
            "status": str(self.result.status),
            "required": self.required,
            "message": self.result.message,
            "fix": self.result.fix,
            "details": self.result.details,
        }


class CheckRegistry:
    def __init__(self, checks: list[Check] | None = None) -> None:
        self._checks: dict[str, Check] = {}
        for check in checks or ():
            self.register(check)

    def register(self, check: Check) -> None:
        self._checks[check.name] = check

    def __iter__(self) -> Iterator[Check]:
        return iter(sorted(self._checks.values(), key=lambda c: (c.order, c.name)))

    def names(self) -> list[str]:
        return [c.name for c in self]

    def run(self, context: DoctorContext, only: set[str] | None = None) -> list[Outcome]:
        outcomes = []
        for check in self:
            if only and check.name not in only:
                continue
            outcomes.append(_run_one(check, context))
        return outcomes


def _run_one(check: Check, context: DoctorContext) -> Outcome:
    if check.needs_app and context.app is None:
        return Outcome(check, CheckResult.skip("skipped: the configuration is invalid"), False)
    try:
        required = check.required(context)
        result = check.run(context)
    except BcceError as exc:
        required = True
        result = CheckResult.fail(exc.message, exc.hint or "see the message")
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed check, never a crash
        log.opt(exception=True).debug("doctor check {} raised", check.name)
        required = True
        result = CheckResult.fail(
            f"the check itself failed: {type(exc).__name__}: {exc}",
            "report this as a bug with `bcce doctor --json` output",
        )
    if result.status is Status.FAIL and not required:
        result = CheckResult(Status.WARN, result.message, result.fix, result.details)
    log.debug("check {}: {} (required: {})", check.name, result.status, required)
    return Outcome(check, result, required)


def load_checks() -> CheckRegistry:
    """Every check registered under the ``bcce.doctor`` entry-point group."""
    registry = CheckRegistry()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            check = entry.load()
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            registry.register(_broken(entry.name, exc))
            continue
        if isinstance(check, Check):
            registry.register(check)
        else:
            registry.register(_broken(entry.name, TypeError(f"{entry.value} is not a Check")))
    return registry


def _broken(name: str, exc: Exception) -> Check:
    def run(_ctx: DoctorContext) -> CheckResult:
        return CheckResult.fail(
            f"check could not be loaded: {exc}",
            f"fix or uninstall the package providing the '{name}' doctor check",
        )

    return Check(name=name, title=f"{name} (not loadable)", run=run, order=999, needs_app=False)
