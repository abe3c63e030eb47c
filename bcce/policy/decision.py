"""The outcome of one policy check: allowed or denied, by which rule, and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """One allow or deny answer from a policy layer.

    ``rule`` is a short stable id (``cmd.metachar``, ``path.outside_workspace`` ...) that tests,
    audit records and docs refer to; ``reason`` is the human sentence shown to the agent or user.
    """

    allowed: bool
    reason: str
    rule: str
    layer: str = "policy"

    @classmethod
    def allow(cls, rule: str, reason: str, *, layer: str = "policy") -> Decision:
        """An allow decision."""
        return cls(allowed=True, reason=reason, rule=rule, layer=layer)

    @classmethod
    def deny(cls, rule: str, reason: str, *, layer: str = "policy") -> Decision:
        """A deny decision."""
        return cls(allowed=False, reason=reason, rule=rule, layer=layer)


__all__ = ["Decision"]
