"""Planning: which step waits for which.

A step without ``needs`` waits for the step before it (the BCCE v1 rule: steps run in order). A
step with ``needs`` waits for exactly those steps, so independent branches can run concurrently.
Children of a ``parallel`` step wait only for their own ``needs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bcce.workflow.model import Step, Workflow


@dataclass(frozen=True)
class BlockPlan:
    """The steps of one block with the ids each waits for, in a deterministic order."""

    steps: tuple[Step, ...]
    waits_for: Mapping[str, tuple[str, ...]]

    def order(self) -> list[Step]:
        """A topological order that keeps file order among steps that are ready together."""
        done: set[str] = set()
        remaining = list(self.steps)
        ordered: list[Step] = []
        while remaining:
            for step in remaining:
                if all(dep in done for dep in self.waits_for[step.id]):
                    ordered.append(step)
                    done.add(step.id)
                    remaining.remove(step)
                    break
            else:  # pragma: no cover - the loader rejects cycles
                raise ValueError("cycle in step dependencies")
        return ordered


def plan_block(steps: Sequence[Step], *, concurrent: bool = False) -> BlockPlan:
    waits: dict[str, tuple[str, ...]] = {}
    previous: str | None = None
    for step in steps:
        if step.explicit_needs or concurrent:
            waits[step.id] = step.needs
        else:
            waits[step.id] = (previous,) if previous else ()
        previous = step.id
    return BlockPlan(tuple(steps), waits)


def plan_children(step: Step) -> BlockPlan:
    return plan_block(step.children, concurrent=step.type == "parallel")


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    depth: int
    waits_for: tuple[str, ...]
    branch: str | None = None  # "then" / "else" for conditional children


def plan_workflow(workflow: Workflow) -> list[PlannedStep]:
    """Every step, nested ones included, in execution order (for --dry-run and diagrams)."""
    out: list[PlannedStep] = []

    def visit(block: BlockPlan, depth: int, branch: str | None = None) -> None:
        for step in block.order():
            out.append(PlannedStep(step, depth, block.waits_for[step.id], branch))
            if step.type == "conditional":
                visit(plan_block(step.children), depth + 1, "then")
                visit(plan_block(step.else_children), depth + 1, "else")
            elif step.children:
                visit(plan_children(step), depth + 1)

    visit(plan_block(workflow.steps), 0)
    return out
