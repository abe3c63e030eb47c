"""Decision: the shared allow/deny answer of the policy layers."""

from __future__ import annotations

import dataclasses

import pytest

from bcce.policy.decision import Decision


def test_allow_builds_an_allowed_decision_of_the_policy_layer() -> None:
    assert Decision.allow("cmd.allowlisted", "ok") == Decision(True, "ok", "cmd.allowlisted")


def test_deny_builds_a_denied_decision_for_the_given_layer() -> None:
    decision = Decision.deny("path.device", "a FIFO", layer="hook")

    assert (decision.allowed, decision.rule, decision.reason, decision.layer) == (
        False,
        "path.device",
        "a FIFO",
        "hook",
    )


def test_a_decision_cannot_be_changed_after_it_is_made() -> None:
    decision = Decision.deny("cmd.metachar", "no")

    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.allowed = True  # type: ignore[misc]
