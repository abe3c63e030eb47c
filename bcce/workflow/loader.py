"""Loading a workflow file: strict YAML, JSON Schema v1, substitution, semantic checks.

Every problem is a :class:`~bcce.errors.WorkflowError` (exit code 3) pointing at
``file:line:col`` with a hint; the file is never partly accepted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bcce.core.strict_yaml import Limits, YamlDocument, dotted, load_yaml
from bcce.errors import BcceError, ConfigError, PluginError, WorkflowError
from bcce.workflow.expressions import ExpressionError, parse
from bcce.workflow.model import CONTROL_TYPES, RetryPolicy, Step, Workflow
from bcce.workflow.substitution import UndefinedVariable, substitute
from bcce.workflow.templating import expressions_in

#: Roots an expression may name.
EXPRESSION_ROOTS = frozenset({"steps", "env", "vars", "inputs", "run", "self"})

WORKFLOW_LIMITS = Limits(max_bytes=2 * 1024 * 1024, max_depth=48, max_nodes=200_000)


@dataclass
class LoadOptions:
    """What the loader needs from outside the file."""

    variables: Mapping[str, str] = field(default_factory=dict)  # --var K=V
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    env_allowlist: Collection[str] = ()
    builtins: Mapping[str, str] = field(default_factory=dict)
    step_types: Collection[str] | None = None  # None: do not check registration
    unavailable_types: Mapping[str, BcceError] = field(default_factory=dict)  # failed plugins
    step_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # plugin types
    check_files: bool = True


def load_workflow(path: str | Path, options: LoadOptions | None = None) -> Workflow:
    """Load and validate the workflow at ``path``."""
    options = options or LoadOptions()
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise WorkflowError(
            f"cannot read workflow: {exc.strerror or exc}",
            location=str(source),
            hint="check the path",
        ) from exc
    if len(raw) > WORKFLOW_LIMITS.max_bytes:
        raise WorkflowError(
            f"workflow file is larger than {WORKFLOW_LIMITS.max_bytes} bytes",
            location=str(source),
            hint="split it into smaller workflows",
        )
    document = load_yaml(raw, source=str(source), limits=WORKFLOW_LIMITS, error=WorkflowError)
    return _Loader(document, source, hashlib.sha256(raw).hexdigest(), options).load()


class _Loader:
    def __init__(
        self, document: YamlDocument, source: Path, digest: str, options: LoadOptions
    ) -> None:
        self.document = document
        self.source = source
        self.digest = digest
        self.options = options
        self.builtins = {"WORKFLOW_DIR": str(source.resolve().parent), **options.builtins}

    def error(
        self, message: str, path: tuple[str | int, ...], hint: str | None = None, column: int = 0
    ) -> WorkflowError:
        mark = self.document.mark_of(path)
        location = str(self.source)
        if mark is not None:
            location = f"{mark.source}:{mark.line}:{mark.column + column}"
        return WorkflowError(message, location=location, key=dotted(path) or None, hint=hint)

    def load(self) -> Workflow:
        data = self.document.data
        if not isinstance(data, dict):
            raise self.error(
                "a workflow file must be a mapping with version, workflow and steps",
                (),
                hint="start the file with 'version: 1'",
            )
        self._check_schema(data)
        variables = self._variables(data)
        data = substitute(data, variables, self._undefined)
        env = data.get("env") or {}
        steps = tuple(self._step(s, ("steps", i)) for i, s in enumerate(data["steps"]))
        self._check_semantics(steps)
        return Workflow(
            name=str(data.get("workflow") or self.source.stem),
            source=self.source.resolve(),
            digest=self.digest,
            steps=steps,
            env=env,
            model=data.get("model"),
            guardrails=tuple(data.get("guardrails") or ()),
            max_runtime_seconds=env.get("max_runtime_seconds"),
            raw=data,
        )

    # -- schema ---------------------------------------------------------------------------
    def _check_schema(self, data: dict[str, Any]) -> None:
        from bcce.workflow.schema import schema_errors

        issues = schema_errors(data)
        if not issues:
            return
        first = issues[0]
        error = self.error(first.message, tuple(first.path), hint=first.hint)
        if len(issues) > 1:
            others = []
            for issue in issues[1:6]:
                mark = self.document.mark_of(tuple(issue.path))
                where = f"{mark.line}:{mark.column}" if mark else "?"
                others.append(f"{where} {dotted(tuple(issue.path))}: {issue.message}")
            more = f"\n    ... and {len(issues) - 6} more" if len(issues) > 6 else ""
            error.message += "\n  also:\n    " + "\n    ".join(others) + more
        raise error

    # -- variables ------------------------------------------------------------------------
    def _variables(self, data: dict[str, Any]) -> dict[str, str]:
        allowed = set(self.options.env_allowlist)
        process = {k: v for k, v in self.options.environ.items() if k in allowed}
        base = {**process, **self.options.variables, **self.builtins}
        env = data.get("env") or {}
        resolved_env = substitute(env, base, self._undefined, ("env",))
        workflow_env = {
            k: _text(v) for k, v in resolved_env.items() if isinstance(v, str | int | float | bool)
        }
        return {**process, **workflow_env, **self.options.variables, **self.builtins}

    def _undefined(self, exc: UndefinedVariable, path: tuple[str | int, ...]) -> WorkflowError:
        return self.error(
            f"undefined variable ${{{exc.name}}}",
            path,
            hint="define it under 'env:', pass --var "
            f"{exc.name}=VALUE, or allow it from the environment (workflow.env_allowlist); "
            f"write $${{{exc.name}}} for a literal",
        )

    # -- steps ----------------------------------------------------------------------------
    def _step(self, raw: dict[str, Any], path: tuple[str | int, ...]) -> Step:
        step_type = raw["type"]
        if raw.get("policy") is not None:
            from bcce.policy.presets import expand_policy

            try:
                raw = {**raw, "policy": expand_policy(raw["policy"])}
            except ConfigError as exc:
                raise self.error(exc.message, (*path, "policy"), hint=exc.hint) from None
        needs_raw = raw.get("needs")
        needs = (needs_raw,) if isinstance(needs_raw, str) else tuple(needs_raw or ())
        retry = None
        if "retry" in raw or raw.get("on_error") == "retry":
            spec = raw.get("retry") or {}
            retry = RetryPolicy(
                max_attempts=int(spec.get("max_attempts", 3)),
                backoff_seconds=float(spec.get("backoff_seconds", 1.0)),
                max_backoff_seconds=float(spec.get("max_backoff_seconds", 60.0)),
                jitter=bool(spec.get("jitter", True)),
            )
        # The step's own limit and its policy's: the lower one holds.
        limits = [raw.get("timeout_seconds"), (raw.get("policy") or {}).get("timeout_seconds")]
        given = [float(t) for t in limits if t is not None]
        timeout = min(given) if given else None
        children: tuple[Step, ...] = ()
        else_children: tuple[Step, ...] = ()
        if step_type in ("composite", "parallel"):
            children = tuple(
                self._step(s, (*path, "steps", i)) for i, s in enumerate(raw.get("steps", []))
            )
        elif step_type == "conditional":
            children = tuple(
                self._step(s, (*path, "then", i)) for i, s in enumerate(raw.get("then", []))
            )
            else_children = tuple(
                self._step(s, (*path, "else", i)) for i, s in enumerate(raw.get("else", []))
            )
        return Step(
            id=raw["id"],
            type=step_type,
            raw=raw,
            location=path,
            needs=needs,
            explicit_needs="needs" in raw,
            condition=raw.get("if"),
            branch_condition=raw.get("condition"),
            timeout_seconds=timeout,
            retry=retry,
            on_error=raw.get("on_error", "fail"),
            outputs=dict(raw.get("outputs") or {}),
            children=children,
            else_children=else_children,
            failure_strategy=raw.get("failure_strategy", "abort"),
            max_parallel=raw.get("max_parallel"),
        )

    # -- semantics ------------------------------------------------------------------------
    def _check_semantics(self, steps: tuple[Step, ...]) -> None:
        seen: dict[str, Step] = {}
        for top in steps:
            for step in top.walk():
                if step.id in seen:
                    first = self.document.mark_of((*seen[step.id].location, "id"))
                    raise self.error(
                        f"duplicate step id {step.id!r}"
                        + (f" (first used on line {first.line})" if first else ""),
                        (*step.location, "id"),
                        hint="step ids must be unique in the whole workflow, nested steps included",
                    )
                seen[step.id] = step
                self._check_step(step)
        self._check_block(steps)

    def _check_block(self, steps: tuple[Step, ...]) -> None:
        ids = {s.id: s for s in steps}
        for step in steps:
            for index, need in enumerate(step.needs):
                if need not in ids:
                    raise self.error(
                        f"step {step.id!r} needs unknown step {need!r}",
                        (*step.location, "needs", index)
                        if not isinstance(step.raw.get("needs"), str)
                        else (*step.location, "needs"),
                        hint=f"steps in this block: {', '.join(ids)}",
                    )
                if need == step.id:
                    raise self.error(f"step {step.id!r} needs itself", (*step.location, "needs"))
        cycle = _find_cycle({s.id: s.needs for s in steps})
        if cycle:
            raise self.error(
                f"'needs' form a cycle: {' -> '.join(cycle)}",
                (*ids[cycle[0]].location, "needs"),
                hint="remove one of the dependencies so that steps can be ordered",
            )
        for step in steps:
            if step.children:
                self._check_block(step.children)
            if step.else_children:
                self._check_block(step.else_children)

    def _check_params(self, step: Step, schema: Mapping[str, Any]) -> None:
        """A plugin step's own keys against its type's schema; expressions are checked at run."""
        from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

        from bcce.plugin.api import ENGINE_KEYS
        from bcce.plugin.manifest import check_json_schema

        check_json_schema(schema, None, f"stepSchemas.{step.type}")
        params = {k: v for k, v in step.raw.items() if k not in ENGINE_KEYS}
        for error in sorted(
            Draft202012Validator(schema).iter_errors(params), key=lambda e: list(e.absolute_path)
        ):
            if isinstance(error.instance, str) and "${{" in error.instance:
                continue  # its value is known only when the step runs
            path = (*step.location, *error.absolute_path)
            if error.validator == "additionalProperties" and not error.absolute_path:
                unknown = sorted(set(params) - set(schema.get("properties", {})))
                path = (*step.location, unknown[0]) if unknown else path
            raise self.error(
                f"{step.type} step: {error.message}",
                path,
                hint=f"see the parameters of {step.type} in its plugin's documentation "
                "(`bcce plugin info`)",
            )

    def _check_step(self, step: Step) -> None:
        failed = self.options.unavailable_types.get(step.type)
        if failed is not None:
            mark = self.document.mark_of((*step.location, "type"))
            raise PluginError(
                failed.message,
                location=f"{mark.source}:{mark.line}:{mark.column}" if mark else str(self.source),
                key=dotted((*step.location, "type")),
                hint=failed.hint,
                code=failed.code,
            )
        schema = self.options.step_schemas.get(step.type)
        if schema is not None:
            self._check_params(step, schema)
        types = self.options.step_types
        if types is not None and step.type not in types and step.type not in CONTROL_TYPES:
            raise self.error(
                f"unknown step type {step.type!r}",
                (*step.location, "type"),
                hint=f"registered types: {', '.join(sorted(types))}; "
                "plugin types need their plugin enabled",
            )
        for key in ("if", "condition"):
            text = step.raw.get(key)
            if isinstance(text, str):
                try:
                    parse(text, roots=EXPRESSION_ROOTS)
                except ExpressionError as exc:
                    raise self.error(
                        f"invalid expression: {exc.message}",
                        (*step.location, key),
                        hint=exc.hint or "see docs/workflows.md#expressions",
                    ) from None
        for key, value in step.raw.items():
            if key in ("if", "condition", "steps", "then", "else"):
                continue
            self._check_templates(value, (*step.location, key))
        if step.type == "prompt" and step.raw.get("available_tools"):
            from bcce.policy.tools import ToolSet

            try:
                ToolSet.for_prompt(list(step.raw["available_tools"]))
            except ConfigError as exc:
                raise self.error(
                    exc.message, (*step.location, "available_tools"), hint=exc.hint
                ) from None
        prompt_file = step.raw.get("prompt_file")
        if prompt_file and self.options.check_files:
            target = (self.source.parent / prompt_file).resolve()
            if not target.is_file():
                raise self.error(
                    f"prompt_file {prompt_file!r} not found (looked for {target})",
                    (*step.location, "prompt_file"),
                    hint="prompt files are relative to the workflow file's directory",
                )

    def _check_templates(self, value: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(value, str):
            try:
                expressions_in(value, EXPRESSION_ROOTS)
            except (ExpressionError, WorkflowError) as exc:
                raise self.error(
                    f"invalid ${{{{ }}}} expression: {exc.message}",
                    path,
                    hint="see docs/workflows.md#expressions",
                ) from None
        elif isinstance(value, dict):
            for k, v in value.items():
                self._check_templates(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._check_templates(v, (*path, i))


def _find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle in ``graph`` as a list of ids (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for root in graph:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        trail: list[str] = []
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                trail.append(node)
            deps = graph.get(node, ())
            if index < len(deps):
                stack.append((node, index + 1))
                nxt = deps[index]
                if state.get(nxt) == 1:
                    return [*trail[trail.index(nxt) :], nxt]
                if not state.get(nxt) and nxt in graph:
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                trail.pop()
    return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
