"""Approving changes before they reach the user's tree.

An approval comes from the workflow (``approve: true``), the command line (``--approve`` /
``--reject``), a person at the terminal, or an approval integration (a plugin such as Slack).
Without any, the step waits: it ends ``awaiting_approval`` and ``bcce workflow resume`` goes on.

With authorisation enabled (``auth.authorization``), an approval counts only when its giver may
approve (``approvals``) and, with ``four_eyes``, did not start the run; a refused approval
leaves the step waiting (:mod:`bcce.auth.authorization`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bcce.auth.provider import Identity


class Verdict(enum.StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    PENDING = "pending"


@dataclass(frozen=True)
class ApprovalRequest:
    run_id: str
    step_id: str
    workflow: str
    diff: str
    files: Sequence[str]
    requested_by: str | None = None


@dataclass(frozen=True)
class Approval:
    verdict: Verdict
    by: str
    via: str  # "workflow", "command line", "terminal", or the integration's name
    reason: str = ""
    #: Who gave it, as authenticated (the command line and the terminal set it; an integration
    #: may). None: the user ``by`` names, with no groups (see ``approver_identity``).
    identity: Identity | None = None


@runtime_checkable
class ApprovalGate(Protocol):
    """An approval integration: answers now, or PENDING if the answer comes later."""

    name: str

    def request(self, request: ApprovalRequest) -> Approval: ...


Approver = Callable[[ApprovalRequest], Approval]
