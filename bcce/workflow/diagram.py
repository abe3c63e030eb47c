"""The step graph as Mermaid or Graphviz dot text."""

from __future__ import annotations

from bcce.workflow.model import Step, Workflow
from bcce.workflow.planner import BlockPlan, plan_block, plan_children


def _label(step: Step) -> str:
    text = f"{step.id}<br/>{step.type}" if step.name == step.id else f"{step.name}<br/>{step.type}"
    return text.replace('"', "'")


def to_mermaid(workflow: Workflow) -> str:
    lines = ["flowchart TD"]

    def block(plan: BlockPlan, indent: str) -> None:
        for step in plan.steps:
            if step.children or step.else_children:
                lines.append(f'{indent}subgraph {step.id}["{_label(step)}"]')
                if step.type == "conditional":
                    lines.append(f"{indent}  direction TB")
                    block(plan_block(step.children), indent + "  ")
                    block(plan_block(step.else_children), indent + "  ")
                else:
                    block(plan_children(step), indent + "  ")
                lines.append(f"{indent}end")
            else:
                lines.append(f'{indent}{step.id}["{_label(step)}"]')
            for dep in plan.waits_for[step.id]:
                label = (step.condition or "").replace('"', "#quot;")
                condition = f'|"{label}"|' if step.condition else ""
                lines.append(f"{indent}{dep} -->{condition} {step.id}")

    block(plan_block(workflow.steps), "  ")
    return "\n".join(lines)


def to_dot(workflow: Workflow) -> str:
    lines = [f'digraph "{workflow.name}" {{', "  rankdir=TB;", "  node [shape=box];"]

    def block(plan: BlockPlan, indent: str) -> None:
        for step in plan.steps:
            label = _label(step).replace("<br/>", "\\n")
            if step.children or step.else_children:
                lines.append(f'{indent}subgraph "cluster_{step.id}" {{ label="{label}";')
                lines.append(f'{indent}  "{step.id}" [shape=point];')
                block(
                    plan_children(step)
                    if step.type != "conditional"
                    else plan_block(step.children),
                    indent + "  ",
                )
                if step.else_children:
                    block(plan_block(step.else_children), indent + "  ")
                lines.append(f"{indent}}}")
            else:
                lines.append(f'{indent}"{step.id}" [label="{label}"];')
            for dep in plan.waits_for[step.id]:
                attrs = f' [label="{step.condition}"]' if step.condition else ""
                lines.append(f'{indent}"{dep}" -> "{step.id}"{attrs};')

    block(plan_block(workflow.steps), "  ")
    lines.append("}")
    return "\n".join(lines)
