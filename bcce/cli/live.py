"""What a person sees while a workflow runs: a line per step transition, output when interactive."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from bcce.events.bus import Event

if TYPE_CHECKING:
    from bcce.workflow.runner import RunResult

_MARKS = {
    "step.started": ("▶", "cyan", "running"),
    "step.completed": ("✓", "green", "done"),
    "step.failed": ("✗", "red", "failed"),
    "step.timed_out": ("⏱", "red", "timed out"),
    "step.cancelled": ("■", "yellow", "cancelled"),
    "step.skipped": ("↷", None, "skipped"),
    "step.retrying": ("↻", "yellow", "retrying"),
    "step.kept": ("=", None, "kept from the earlier attempt"),
    "step.awaiting_approval": ("?", "blue", "awaiting approval"),
}


@contextlib.contextmanager
def _reader_gone() -> Iterator[None]:
    """``bcce workflow run | head``: once the reader leaves, drop the view, never the run."""
    try:
        yield
    except BrokenPipeError:
        # Point the standard streams at /dev/null so later writes (and the interpreter's
        # final flush) do not fail again; the run itself goes on and is recorded as usual.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, stream.fileno())
        os.close(devnull)


class LiveView:
    """Subscribes to the run's events; interactive terminals also get the steps' output."""

    def __init__(self, run_id: str, *, interactive: bool) -> None:
        self.run_id = run_id
        self.interactive = interactive
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock, _reader_gone():
            click.echo(text)

    def on_event(self, event: Event) -> None:
        if event.run_id != self.run_id:
            return
        payload: dict[str, Any] = dict(event.payload)
        if event.type == "workflow.started":
            resumed = " (resumed)" if payload.get("resumed") else ""
            self._line(f"run {self.run_id}: {payload.get('workflow')}{resumed}")
            return
        mark = _MARKS.get(event.type)
        if mark is None:
            if event.type == "policy.denied":
                tool = f" {payload['tool']}" if payload.get("tool") else ""
                self._line(
                    click.style("    ⛔ denied", fg="red", bold=True)
                    + f"{tool} [{payload.get('layer', 'policy')}: {payload.get('rule')}] "
                    + str(payload.get("reason"))
                )
            return
        symbol, colour, word = mark
        step = payload.get("step", "?")
        if payload.get("name") and payload["name"] != step:
            step = f"{step} ({payload['name']})"
        details = []
        if event.type == "step.started" and int(payload.get("attempt") or 1) > 1:
            details.append(f"attempt {payload['attempt']}")
        if payload.get("duration_seconds") is not None and event.type != "step.started":
            details.append(f"{payload['duration_seconds']:.2f}s")
        if event.type == "step.retrying":
            details.append(f"in {payload.get('delay_seconds')}s: {payload.get('error')}")
        if payload.get("error") and event.type in ("step.failed", "step.timed_out"):
            details.append(str(payload["error"]))
        if payload.get("reason") and event.type == "step.skipped":
            details.append(str(payload["reason"]))
        if event.type == "step.failed" and payload.get("conclusion") == "success":
            details.append("continuing (on_error: continue)")
        elapsed = time.monotonic() - self.started
        suffix = f"  {'; '.join(details)}" if details else ""
        self._line(
            f"[{elapsed:7.2f}s] {click.style(symbol, fg=colour, bold=True)} {step} {word}{suffix}"
        )

    def echo(self, step_id: str, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        with self._lock, _reader_gone():
            target = sys.stderr if stream == "stderr" else sys.stdout
            for line in text.splitlines():
                target.write(click.style(f"    {step_id} | ", dim=True) + line + "\n")
            target.flush()

    def summary(self, result: RunResult) -> None:
        state = result.state
        counts: dict[str, int] = {}
        for info in state.steps.values():
            counts[info.get("status", "pending")] = counts.get(info.get("status", "pending"), 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        colour = "green" if state.status == "succeeded" else "red"
        self._line(
            click.style(f"run {state.run_id} {state.status}", fg=colour, bold=True)
            + f" in {time.monotonic() - self.started:.2f}s ({parts})"
        )
        if state.error:
            self._line(f"  {state.error}")
        self._line(f"  details: bcce workflow status {state.run_id}")
