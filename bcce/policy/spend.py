"""Spend budgets of agent and prompt steps: per step, per run, per team per UTC day.

- **step**: the step's ``max_budget_usd``, else ``policy.budgets.step_usd``; what the step spent
  over all its attempts (and runs of it before a resume) counts.
- **run**: the workflow's ``max_budget_usd``, else ``policy.budgets.run_usd``; every step's
  spend journaled in the run's state counts, so a resumed run keeps what it spent before.
- **team**: ``policy.budgets.team_daily_usd[core.team]``, summed over the cost ledger of the
  state directory (every run) for the current UTC day.

Before a step's session starts, :meth:`StepBudget.start` works out its allowance, the smallest
of what is left; nothing left refuses the step. The allowance goes to Claude Code as its
``max_budget_usd``, and :meth:`StepBudget.charge` checks the session's real cost afterwards:
it appends the ledger record, journals the step's spend and says whether a budget is exceeded.
Enforcement reads the journal and the ledger, never the event bus.

Parallel steps (and concurrent runs of one team) each get what is left when they start, so
together they may overshoot a shared budget by what their sessions cost; the overshoot fails
those steps and refuses every later one.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bcce.events.cost import CostLedger, CostRecord, utc_now

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings
    from bcce.workflow.model import Step, Workflow

Scope = Literal["step", "run", "team"]
#: Claude Code's result subtype when it stopped a session at its max_budget_usd.
BUDGET_SUBTYPE = "error_max_budget_usd"
#: A millionth of a dollar: float noise in summed costs, not spend.
EPSILON = 1e-6


@dataclass(frozen=True)
class BudgetLimit:
    """One budget that applies to a step, and what was spent against it."""

    scope: Scope
    limit_usd: float
    spent_usd: float
    source: str  # the setting it comes from, as the user wrote it
    team: str | None = None

    @property
    def remaining_usd(self) -> float:
        return max(0.0, round(self.limit_usd - self.spent_usd, 6))

    @property
    def exhausted(self) -> bool:
        return self.spent_usd >= self.limit_usd - EPSILON

    @property
    def over(self) -> bool:
        return self.spent_usd > self.limit_usd + EPSILON

    def name(self) -> str:
        if self.scope == "team":
            return f"the daily budget of team {self.team} ({self.source})"
        return f"the {self.scope} budget ({self.source})"

    def payload(self, step: str) -> dict[str, Any]:
        """The ``budget.exceeded`` event's payload."""
        payload: dict[str, Any] = {
            "step": step,
            "scope": self.scope,
            "limit_usd": self.limit_usd,
            "spent_usd": round(self.spent_usd, 6),
        }
        if self.scope == "team":
            payload["team"] = self.team
        return payload

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "source": self.source,
            "limit_usd": self.limit_usd,
            "spent_usd": round(self.spent_usd, 6),
            **({"team": self.team} if self.team else {}),
        }


def usd(amount: float) -> str:
    """Dollars as people read them: at least cents, at most six decimals (``$0.0018``)."""
    whole, _, cents = f"{amount:.6f}".partition(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"


class RunBudgets:
    """The budget bookkeeping of one run; hands each step attempt its :class:`StepBudget`.

    ``steps`` is the run state's step table (it holds each step's ``spent_usd``), ``journal``
    records a step's new cumulative spend in the run's journal, ``publish`` publishes an event
    of the run; ``lock`` guards the step table (the runner's lock).
    """

    def __init__(
        self,
        *,
        settings: BcceSettings,
        workflow: Workflow,
        run_id: str,
        ledger: CostLedger,
        steps: Mapping[str, Mapping[str, Any]],
        journal: Callable[[str, float], None],
        publish: Callable[[str, Mapping[str, Any]], None],
        lock: threading.RLock | None = None,
        now: Callable[[], datetime.datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.workflow = workflow
        self.run_id = run_id
        self.ledger = ledger
        self.steps = steps
        self.journal = journal
        self.publish = publish
        self.lock = lock or threading.RLock()
        self.now = now
        budgets = settings.policy.budgets
        self.team = settings.core.team
        declared = workflow.raw.get("max_budget_usd")
        self.run_limit: tuple[float, str] | None = None
        if declared is not None:
            self.run_limit = (float(declared), "workflow max_budget_usd")
        elif budgets.run_usd is not None:
            self.run_limit = (float(budgets.run_usd), "policy.budgets.run_usd")
        self.team_limit: float | None = None
        if self.team is not None and self.team in budgets.team_daily_usd:
            self.team_limit = float(budgets.team_daily_usd[self.team])

    def for_step(self, step: Step, attempt: int) -> StepBudget:
        return StepBudget(self, step, attempt)

    def step_spent(self, step_id: str) -> float:
        with self.lock:
            return float(self.steps.get(step_id, {}).get("spent_usd") or 0.0)

    def run_spent(self) -> float:
        with self.lock:
            return sum(float(info.get("spent_usd") or 0.0) for info in self.steps.values())

    def limits(self, step: Step) -> list[BudgetLimit]:
        """Every budget that applies to ``step``, with what was spent against it so far."""
        found: list[BudgetLimit] = []
        declared = step.raw.get("max_budget_usd")
        default = self.settings.policy.budgets.step_usd
        if declared is not None:
            found.append(
                BudgetLimit(
                    "step",
                    float(declared),
                    self.step_spent(step.id),
                    f"max_budget_usd of step {step.id}",
                )
            )
        elif default is not None:
            found.append(
                BudgetLimit(
                    "step", float(default), self.step_spent(step.id), "policy.budgets.step_usd"
                )
            )
        if self.run_limit is not None:
            limit, source = self.run_limit
            found.append(BudgetLimit("run", limit, self.run_spent(), source))
        if self.team_limit is not None:
            day = self.now().date().isoformat()
            spent = self.ledger.spent(day=day, team=self.team)
            found.append(
                BudgetLimit(
                    "team",
                    self.team_limit,
                    spent,
                    f"policy.budgets.team_daily_usd, UTC day {day}",
                    team=self.team,
                )
            )
        return found

    def record(self, step: Step, record: CostRecord) -> float:
        """Journal the step's new cumulative spend, then append ``record`` to the ledger."""
        # The run's journal first: a resume must count this spend even if the ledger fails.
        with self.lock:
            spent = self.step_spent(step.id) + record.cost
            self.journal(step.id, spent)
        self.ledger.append(record)
        return spent


class StepBudget:
    """The budgets of one step attempt: its allowance before, its verdict after."""

    def __init__(self, budgets: RunBudgets, step: Step, attempt: int) -> None:
        self.budgets = budgets
        self.step = step
        self.attempt = attempt
        self.allowance_usd: float | None = None
        self.binding: BudgetLimit | None = None  # the budget the allowance comes from

    def start(self) -> BudgetLimit | None:
        """Work out the allowance; a budget with nothing left is returned (and published as
        ``budget.exceeded``): the step must not start."""
        limits = self.budgets.limits(self.step)
        for limit in limits:
            if limit.exhausted:
                self.budgets.publish("budget.exceeded", limit.payload(self.step.id))
                return limit
        if limits:
            self.binding = min(limits, key=lambda limit: limit.remaining_usd)
            self.allowance_usd = self.binding.remaining_usd
        return None

    def refusal(self, limit: BudgetLimit) -> str:
        return (
            f"budget exhausted, the agent was not started: {limit.name()} is "
            f"{usd(limit.limit_usd)} and {usd(limit.spent_usd)} is spent"
        )

    def charge(self, record: CostRecord) -> BudgetLimit | None:
        """Record the attempt's usage (ledger, run journal, ``cost.recorded``); return the budget
        the session exceeded, if any (``budget.exceeded`` is published for it)."""
        self.budgets.record(self.step, record)
        self.budgets.publish("cost.recorded", record.event_payload())
        if self.allowance_usd is None:
            return None
        limits = self.budgets.limits(self.step)
        exceeded = next((limit for limit in limits if limit.over), None)
        if exceeded is None and (
            record.subtype == BUDGET_SUBTYPE or record.cost > self.allowance_usd + EPSILON
        ):
            # Claude Code stopped at the allowance (or went past it) without a budget being
            # over yet: the binding budget is the one that stopped it.
            exceeded = next(
                (limit for limit in limits if self.binding and limit.scope == self.binding.scope),
                self.binding,
            )
        if exceeded is not None:
            self.budgets.publish("budget.exceeded", exceeded.payload(self.step.id))
        return exceeded

    def exceeded(self, limit: BudgetLimit, record: CostRecord) -> str:
        allowance = usd(self.allowance_usd or 0.0)
        return (
            f"budget exceeded: the session cost {usd(record.cost)} against an allowance of "
            f"{allowance}; {limit.name()} is {usd(limit.limit_usd)} and {usd(limit.spent_usd)} "
            "is spent; the step's changes were discarded"
        )


__all__ = ["BUDGET_SUBTYPE", "BudgetLimit", "RunBudgets", "StepBudget", "usd"]
