"""``cmd`` steps: a shell command in the workspace, with a clean environment and a kill switch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bcce.steps.base import StepContext, StepResult
from bcce.workflow.process import run_process

MAX_STDOUT_OUTPUT = 64 * 1024


class CmdExecutor:
    def execute(self, context: StepContext) -> StepResult:
        command = context.render(str(context.step.raw.get("command", "")))
        decision = context.policy.check_step_command(command, context.step.raw.get("policy"))
        context.publish(
            "policy.decision",
            {
                "step": context.step.id,
                "kind": "command",
                "subject": command,
                "allowed": decision.allowed,
                "rule": decision.rule,
                "reason": decision.reason,
                "layer": decision.layer,
            },
        )
        if not decision.allowed:
            context.publish(
                "policy.denied",
                {
                    "step": context.step.id,
                    "kind": "command",
                    "subject": command,
                    "rule": decision.rule,
                    "reason": decision.reason,
                    "layer": decision.layer,
                },
            )
            return StepResult(
                "failed",
                denied=True,
                error=f"command denied by policy ({decision.rule}): {decision.reason}",
            )
        outputs_file = context.artifacts / "outputs.env"
        outputs_file.unlink(missing_ok=True)  # an earlier attempt's outputs are not this one's
        env = {**context.env, "BCCE_OUTPUT": str(outputs_file)}
        stream: Callable[[str, bytes], bytes] | None = None
        if context.echo is not None:
            echo = context.echo
            redactors = {"stdout": context.redactor.stream(), "stderr": context.redactor.stream()}

            def stream(name: str, chunk: bytes) -> bytes:
                text = chunk.decode("utf-8", "replace")
                clean = redactors[name].feed(text) if chunk else redactors[name].flush()
                data = clean.encode()
                if data:
                    echo(name, data)
                return data

        result = run_process(
            [context.settings.workflow.shell, "-c", decision.command or command],
            cwd=context.workspace,
            env=env,
            stdout_path=context.artifacts / "output.txt",
            stderr_path=context.artifacts / "error.txt",
            deadline=context.deadline,
            should_stop=context.should_stop,
            grace_seconds=context.settings.workflow.kill_grace_seconds,
            tee=stream,
            cookie=context.cookie,
        )
        for name in ("output.txt", "error.txt", "outputs.env"):
            if stream is None or name == "outputs.env":
                _redact_file(context.artifacts / name, context)
        stdout = _read_capped(context.artifacts / "output.txt")
        outputs: dict[str, Any] = {
            "stdout": stdout.strip(),
            "exit_code": result.exit_code,
            **_read_outputs(outputs_file),
        }
        metrics = {
            "exit_code": result.exit_code,
            "duration_seconds": round(result.duration, 6),
            "stdout_bytes": result.stdout_bytes,
            "stderr_bytes": result.stderr_bytes,
        }
        if result.timed_out:
            return StepResult(
                "timed_out",
                outputs,
                result.exit_code,
                "timed out; the process tree was killed",
                metrics=metrics,
            )
        if result.cancelled:
            return StepResult("cancelled", outputs, result.exit_code, "cancelled", metrics=metrics)
        if result.exit_code != 0:
            return StepResult(
                "failed",
                outputs,
                result.exit_code,
                f"command exited with code {result.exit_code}",
                metrics=metrics,
            )
        return StepResult("succeeded", outputs, 0, metrics=metrics)


def _redact_file(path: Path, context: StepContext) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    clean = context.redactor.redact_bytes(data)
    if clean != data:
        path.write_bytes(clean)


def _read_capped(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.read(MAX_STDOUT_OUTPUT).decode("utf-8", "replace")


def _read_outputs(path: Path) -> dict[str, str]:
    """``name=value`` lines a command wrote to ``$BCCE_OUTPUT`` (like GitHub's GITHUB_OUTPUT)."""
    if not path.is_file():
        return {}
    outputs = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().isidentifier():
            outputs[name.strip()] = value
    return outputs
