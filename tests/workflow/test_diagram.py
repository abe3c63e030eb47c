"""The step graph as Mermaid and Graphviz dot."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bcce.workflow.diagram import to_dot, to_mermaid
from bcce.workflow.loader import LoadOptions, load_workflow
from bcce.workflow.model import Workflow

DIAGRAM = """
version: 1
workflow: diag
steps:
  - {id: build, type: cmd, command: echo}
  - {id: lint, type: cmd, command: echo, needs: []}
  - {id: test, type: cmd, command: echo, needs: [build, lint], if: "success()"}
  - id: grp
    name: 'The "group"'
    type: composite
    steps:
      - {id: c1, type: cmd, command: echo}
      - {id: c2, type: cmd, command: echo}
  - id: gate
    type: conditional
    condition: "steps.test.outcome == 'success'"
    then:
      - {id: t1, type: cmd, command: echo}
    else:
      - {id: e1, type: cmd, command: echo}
  - id: par
    type: parallel
    steps:
      - {id: p1, type: cmd, command: echo}
      - {id: p2, type: cmd, command: echo}
"""


@pytest.fixture
def workflow(write_workflow: Callable[..., Path]) -> Workflow:
    return load_workflow(write_workflow(DIAGRAM), LoadOptions(environ={}))


def test_mermaid_is_a_top_down_flowchart(workflow: Workflow) -> None:
    assert to_mermaid(workflow).splitlines()[0] == "flowchart TD"


def test_mermaid_has_a_node_per_step_with_its_type(workflow: Workflow) -> None:
    text = to_mermaid(workflow)

    for step_id in ("build", "lint", "test", "c1", "c2", "t1", "e1", "p1", "p2"):
        assert f'{step_id}["{step_id}<br/>cmd"]' in text


def test_mermaid_draws_an_edge_per_dependency(workflow: Workflow) -> None:
    lines = [line.strip() for line in to_mermaid(workflow).splitlines()]

    assert 'build -->|"success()"| test' in lines
    assert 'lint -->|"success()"| test' in lines
    assert "c1 --> c2" in lines
    assert "test --> grp" in lines
    assert not any(line.startswith("build --> lint") for line in lines)


def test_mermaid_draws_control_steps_as_subgraphs(workflow: Workflow) -> None:
    text = to_mermaid(workflow)

    assert "subgraph grp[\"The 'group'<br/>composite\"]" in text
    assert 'subgraph gate["gate<br/>conditional"]' in text
    assert 'subgraph par["par<br/>parallel"]' in text
    assert text.count("\n  end") == 3
    between = text.split('subgraph par["par<br/>parallel"]')[1].split("end")[0]
    assert "p1" in between and "p2" in between and "-->" not in between


def test_mermaid_labels_never_contain_a_double_quote(workflow: Workflow) -> None:
    for line in to_mermaid(workflow).splitlines():
        assert line.count('"') % 2 == 0, line


def test_mermaid_edge_labels_with_pipes_stay_one_label(write_workflow: Callable[..., Path]) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: pipes
        steps:
          - {id: a, type: cmd, command: echo}
          - {id: b, type: cmd, command: echo, if: "failure() || always()"}
        """
    )
    text = to_mermaid(load_workflow(path, LoadOptions(environ={})))

    edge = next(line.strip() for line in text.splitlines() if line.strip().startswith("a -->"))
    match = re.fullmatch(r"a -->\|(.*)\| b", edge)
    assert match is not None, edge
    label = match.group(1)
    assert "|" not in label or (label.startswith('"') and label.endswith('"')), edge


def test_dot_is_a_digraph_named_for_the_workflow(workflow: Workflow) -> None:
    text = to_dot(workflow)

    assert text.startswith('digraph "diag" {')
    assert text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")


def test_dot_has_a_node_per_step_and_an_edge_per_dependency(workflow: Workflow) -> None:
    lines = [line.strip() for line in to_dot(workflow).splitlines()]

    assert '"build" [label="build\\ncmd"];' in lines
    assert '"build" -> "test" [label="success()"];' in lines
    assert '"lint" -> "test" [label="success()"];' in lines
    assert '"c1" -> "c2";' in lines
    assert '"gate" -> "par";' in lines


def test_dot_draws_control_steps_as_clusters(workflow: Workflow) -> None:
    text = to_dot(workflow)

    assert 'subgraph "cluster_grp" { label="The \'group\'\\ncomposite";' in text
    assert 'subgraph "cluster_gate" { label="gate\\nconditional";' in text
    cluster = text.split('subgraph "cluster_gate"')[1].split("}")[0]
    assert '"t1"' in cluster and '"e1"' in cluster
