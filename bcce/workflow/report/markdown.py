"""The run report as Markdown: the HTML page's content as tables and fenced diffs.

Untrusted text is escaped for the places it goes: table cells and prose lose their Markdown
and HTML meaning (``<script>`` stays text on renderers that allow inline HTML); code is fenced
with more backticks than it contains.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from bcce.workflow.report import text as fmt
from bcce.workflow.report.model import RunReport, StepReport
from bcce.workflow.report.page import STATUS_LABELS

# Intraword underscores (step ids) mean nothing to CommonMark: only the others are escaped.
_SPECIAL = re.compile(r"([\\`*\[\]|~])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def render_markdown(report: RunReport, link_base: str = "") -> str:
    """The report; links are ``link_base`` joined with each file's path in the run directory."""
    return "\n".join(_Document(report, link_base).render()).rstrip("\n") + "\n"


def md(value: object) -> str:
    """Plain text for a table cell or a line of prose."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def fence(body: str, language: str = "") -> list[str]:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    marks = "`" * max(3, longest + 1)
    return [f"{marks}{language}", body, marks]


def _status(value: str) -> str:
    return STATUS_LABELS.get(value, value)


class _Document:
    def __init__(self, report: RunReport, link_base: str) -> None:
        self.report = report
        self.base = link_base

    def link(self, label: str, path: str) -> str:
        return f"[{md(label)}]({fmt.href(self.base, path)})"

    def render(self) -> Iterator[str]:
        report = self.report
        yield f"# Run {md(report.run_id)} — {md(report.workflow)} ({md(_status(report.status))})"
        yield ""
        tokens = report.total_tokens
        rows = [
            ("Status", _status(report.status)),
            ("Workflow", f"{report.workflow} ({report.workflow_path or '?'})"),
            ("Started", fmt.timestamp(report.started_at) or "not started"),
            ("Finished", fmt.timestamp(report.finished_at) or "—"),
            ("Duration", fmt.duration(report.duration_seconds) or "—"),
            ("Retries", str(sum(s.retries for s in report.steps))),
            ("Policy denials", str(report.denials)),
            ("Cost", fmt.cost(report.total_cost_usd) or "—"),
            ("Tokens", fmt.tokens(*tokens) if tokens else "—"),
            ("Resumes", str(report.resumes)),
        ]
        yield "| | |"
        yield "|---|---|"
        for key, value in rows:
            yield f"| {key} | {md(value)} |"
        yield ""
        if report.error:
            yield f"**Error:** {md(report.error)}"
            yield ""
        yield "## Steps"
        yield ""
        yield (
            "| Step | Type | Status | Start | Duration | Attempts | Exit | Cost | Tokens "
            "| Denials | Error |"
        )
        yield "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|"
        for step in report.steps:
            usage = step.usage
            start = step.segments[0].offset_seconds if step.segments else None
            indent = "&nbsp;&nbsp;" * step.depth
            denials = len(step.denials)
            cells = [
                f"{indent}{md(step.id)}",
                md(step.type),
                md(_status(step.status)),
                md(fmt.offset(start)),
                md(fmt.duration(step.duration_seconds)),
                md(fmt.attempts(step.attempts, step.retries)),
                "" if step.exit_code is None else str(step.exit_code),
                md(fmt.cost(usage.cost_usd)) if usage else "",
                md(fmt.tokens(usage.input_tokens, usage.output_tokens)) if usage else "",
                f"**{denials}**" if denials else "",
                md((step.error or "").strip().splitlines()[0] if step.error else ""),
            ]
            yield "| " + " | ".join(cells) + " |"
        yield ""
        for step in report.steps:
            yield from self.step(step)
        if report.files:
            yield "## Run files"
            yield ""
            yield " · ".join(self.link(f.name, f.path) for f in report.files)
            yield ""
        yield (
            f"_Generated at {md(fmt.timestamp(report.generated_at))}; times are UTC, offsets "
            "from the start of the run._"
        )

    def step(self, step: StepReport) -> Iterator[str]:
        yield f"## Step {md(step.id)} — {md(_status(step.status))}"
        yield ""
        usage = step.usage
        facts = [
            ("Name", step.name if step.name != step.id else ""),
            ("Type", step.type),
            (
                "Inside",
                f"{step.parent}{f' ({step.branch})' if step.branch else ''}" if step.parent else "",
            ),
            ("Started", fmt.clock(step.started_at) if step.segments else ""),
            ("Finished", fmt.clock(step.finished_at) if step.segments else ""),
            ("Duration", fmt.duration(step.duration_seconds)),
            ("Attempts", fmt.attempts(step.attempts, step.retries)),
            ("Exit code", "" if step.exit_code is None else str(step.exit_code)),
            ("Cost", fmt.cost(usage.cost_usd) if usage else ""),
            ("Tokens", fmt.tokens(usage.input_tokens, usage.output_tokens) if usage else ""),
            ("Model", (usage.model or "") if usage else ""),
            ("Reason", step.reason or ""),
        ]
        for key, value in facts:
            if value:
                yield f"- **{key}:** {md(value)}"
        for note in step.budget_notes:
            yield f"- **Budget:** {md(note)}"
        if step.kept:
            yield "- **Kept on resume:** it had succeeded before"
        yield ""
        if len(step.segments) > 1:
            yield "| Attempt | Result | Start | Duration | Error |"
            yield "|--:|---|--:|--:|---|"
            for segment in step.segments:
                yield (
                    f"| {segment.attempt} | {md(_status(segment.status))} "
                    f"| {md(fmt.offset(segment.offset_seconds))} "
                    f"| {md(fmt.duration(segment.duration_seconds))} | {md(segment.error or '')} |"
                )
            yield ""
        if step.error:
            yield "**Error**"
            yield ""
            yield from fence(step.error, "text")
            yield ""
        if step.decisions:
            denied = len(step.denials)
            yield f"**Policy decisions** ({len(step.decisions)}, {denied} denied)"
            yield ""
            yield "| Time | Decision | Tool | Subject | Rule | Reason | Layer |"
            yield "|---|---|---|---|---|---|---|"
            for d in step.decisions:
                verdict = "allowed" if d.allowed else "**⛔ denied**"
                yield (
                    f"| {md(fmt.clock(d.time))} | {verdict} | {md(d.tool or d.kind)} "
                    f"| {md(d.subject)} | {md(d.rule or '')} | {md(d.reason or '')} "
                    f"| {md(d.layer or '')} |"
                )
            yield ""
        if step.approval is not None:
            a = step.approval
            line = f"**Approval:** {md(a.verdict)}"
            line += f" by {md(a.by)}" if a.by else ""
            line += f" via {md(a.via)}" if a.via else ""
            line += f" — {md(a.reason)}" if a.reason else ""
            yield line
            yield ""
        for diff in step.diffs:
            title = {
                "applied": "Applied diff",
                "rejected": "Rejected diff",
                "proposed": "Proposed diff (waiting for approval)",
                "changes": "Change set",
            }.get(diff.kind, diff.kind)
            files = ", ".join(diff.files)
            yield (
                f"**{title}** — {md(files)} (+{diff.added} \N{MINUS SIGN}{diff.removed}), "
                f"{self.link(diff.path.rsplit('/', 1)[-1], diff.path)}"
            )
            yield ""
            yield from fence(diff.text, "diff")
            if diff.truncated:
                yield "_(cut short: the file has the rest)_"
            yield ""
        if step.outputs:
            yield "| Output | Value |"
            yield "|---|---|"
            for key, value in step.outputs.items():
                yield f"| {md(key)} | {md(value)} |"
            yield ""
        for tail in step.tails:
            yield f"**{md(('last lines of ' if tail.truncated else '') + tail.name)}**"
            yield ""
            yield from fence(tail.text, "text")
            yield ""
        if step.artifacts:
            links = " · ".join(self.link(a.name, a.path) for a in step.artifacts)
            yield f"**Artifacts:** {links}"
            yield ""
