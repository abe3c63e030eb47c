"""The run report as one self-contained HTML page.

Inline CSS and an inline SVG timeline; no script, no external resource (a Content-Security-Policy
forbids both, so even a mistake here could not make the page fetch or run anything). Every value
from the run (step output, diffs, errors, policy reasons) is untrusted text and is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterator

from bcce._version import __version__
from bcce.workflow.report import text as fmt
from bcce.workflow.report.model import Decision, Diff, RunReport, Segment, StepReport

# The timeline's geometry, in SVG user units (the SVG scales to the page's width).
WIDTH = 1000
LABEL_WIDTH = 250
PLOT_LEFT = LABEL_WIDTH + 10
PLOT_RIGHT = WIDTH - 80  # room for the duration written after each row's last bar
ROW = 26
BAR = 14
TOP = 30
MIN_BAR = 2.0  # a bar never vanishes, however short the attempt
MIN_OPEN = 6.0  # an attempt with no recorded end is drawn open-ended, at least this wide

STATUS_LABELS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "timed_out": "timed out",
    "retried": "failed, retried",
    "cancelled": "cancelled",
    "skipped": "skipped",
    "running": "running",
    "interrupted": "interrupted",
    "awaiting_approval": "awaiting approval",
    "pending": "pending",
}

CSS = """
:root {
  --succeeded: #2f9e5b; --failed: #d9463e; --timed_out: #9c2f1c; --retried: #f08c2e;
  --cancelled: #c9a227; --skipped: #a7afba; --running: #2f7de1; --interrupted: #b04fc0;
  --awaiting_approval: #7a5af5; --pending: #d5dae1;
  --ink: #1f2328; --muted: #5f6b7a; --line: #d8dee4; --soft: #f6f8fa; --denied: #fdecea;
  color-scheme: light;
}
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; display: flex; flex-wrap: wrap; gap: 10px;
  align-items: center; }
h1 .mono { font-size: inherit; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 32px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 0; display: flex; flex-wrap: wrap; gap: 8px;
  align-items: center; }
h4 { font-size: .95rem; margin: 14px 0 6px; }
a { color: #0b62c4; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; }
.sub { color: var(--muted); margin: 0 0 4px; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: .8rem;
  font-weight: 600; color: #fff; background: var(--pending); white-space: nowrap;
  vertical-align: middle; }
.badge.s-pending, .badge.s-skipped { color: var(--ink); }
.s-succeeded { --c: var(--succeeded); } .s-failed { --c: var(--failed); }
.s-timed_out { --c: var(--timed_out); } .s-retried { --c: var(--retried); }
.s-cancelled { --c: var(--cancelled); } .s-skipped { --c: var(--skipped); }
.s-running { --c: var(--running); } .s-interrupted { --c: var(--interrupted); }
.s-awaiting_approval { --c: var(--awaiting_approval); } .s-pending { --c: var(--pending); }
.badge[class*="s-"] { background: var(--c); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px;
  margin: 12px 0 8px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; background: #fff; }
.card .k { color: var(--muted); font-size: .78rem; text-transform: uppercase;
  letter-spacing: .03em; }
.card .v { font-size: 1.05rem; font-weight: 600; overflow-wrap: anywhere; }
.card.wide { grid-column: span 2; }
.card.alert { border-color: var(--failed); background: var(--denied); }
.error { border-left: 4px solid var(--failed); background: var(--denied); padding: 8px 12px;
  margin: 8px 0; white-space: pre-wrap; overflow-wrap: anywhere; border-radius: 4px; }
.note { border-left: 4px solid var(--line); background: var(--soft); padding: 6px 12px;
  margin: 8px 0; border-radius: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; font-size: .85rem; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.err { color: #9c2f1c; min-width: 10rem; max-width: 360px; overflow-wrap: break-word; }
td.step-cell { white-space: nowrap; }
table.decisions, #steps-table { min-width: 720px; }  /* narrow windows scroll them */
table.decisions td { overflow-wrap: anywhere; min-width: 4.5rem; }
table.decisions td:first-child, table.decisions td:nth-child(2) { min-width: 0; }
table.decisions td:nth-child(4), table.decisions td:nth-child(6) { min-width: 13rem; }
table.decisions td:nth-child(5) { overflow-wrap: normal; white-space: nowrap; }
tr.denied td { background: var(--denied); }
tr.denied td:first-child { box-shadow: inset 4px 0 0 var(--failed); }
.chip { display: inline-block; padding: 0 7px; border-radius: 4px; font-size: .78rem;
  font-weight: 600; border: 1px solid var(--line); white-space: nowrap; }
.chip.allowed { color: #1d6b3c; background: #e7f5ec; border-color: #b9e2c7; }
.chip.denied { color: #fff; background: var(--failed); border-color: var(--failed); }
.timeline-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px;
  padding: 6px 4px 2px; }
svg.timeline { display: block; width: 100%; min-width: 760px; height: auto; }
svg.timeline text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  fill: var(--ink); }
svg.timeline .axis text { fill: var(--muted); font-size: 11px; }
svg.timeline .grid { stroke: #e6eaef; stroke-width: 1; }
svg.timeline .row-odd { fill: #f8fafc; }
svg.timeline .row-even { fill: #fff; }
svg.timeline .label .type { fill: var(--muted); font-size: 11px; }
svg.timeline .label.control { font-weight: 600; }
svg.timeline .bar { fill: var(--c); stroke: rgba(0,0,0,.18); stroke-width: 1; }
svg.timeline .bar.control { fill-opacity: .35; stroke: var(--c); stroke-width: 1.5; }
svg.timeline .bar.open { stroke: var(--ink); stroke-dasharray: 4 3; }
svg.timeline .bar.mark { stroke: none; }
svg.timeline .mark-label { fill: var(--muted); font-size: 11px; font-style: italic; }
svg.timeline .attempt { fill: #fff; font-size: 10px; font-weight: 600; pointer-events: none; }
svg.timeline .dur { fill: var(--muted); font-size: 11px; }
svg.timeline .denial-mark { fill: var(--failed); stroke: #fff; stroke-width: .75; }
svg.timeline .resume { stroke: var(--interrupted); stroke-width: 1.5; stroke-dasharray: 5 4; }
svg.timeline .resume-label { fill: var(--interrupted); font-size: 11px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 8px 2px 0; font-size: .85rem;
  color: var(--muted); }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px;
  background: var(--c); border: 1px solid rgba(0,0,0,.18); }
.swatch.open { background: #fff; border: 1px dashed var(--ink); }
.swatch.denial { width: 0; height: 0; border: 6px solid transparent;
  border-bottom: 9px solid var(--failed); border-top: 0; border-radius: 0; }
section.step { border: 1px solid var(--line); border-left: 5px solid var(--c);
  border-radius: 8px; padding: 12px 16px; margin: 14px 0; break-inside: avoid-page; }
section.step.nested { margin-left: calc(var(--depth) * 18px); }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr));
  gap: 4px 16px; margin: 10px 0 4px; }
dl.facts div { min-width: 0; }
dl.facts dt { color: var(--muted); font-size: .75rem; text-transform: uppercase;
  letter-spacing: .03em; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
pre.diff, pre.tail { margin: 0; padding: 8px 0; background: var(--soft);
  border: 1px solid var(--line); border-radius: 6px; overflow-x: auto; }
pre.tail { padding: 8px 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
pre.diff .ln { display: block; padding: 0 12px; min-height: 1.45em; white-space: pre; }
pre.diff .add { background: #e6ffec; color: #116329; }
pre.diff .del { background: #ffebe9; color: #a40e26; }
pre.diff .hunk { background: #ddf4ff; color: #0550ae; }
pre.diff .meta { color: var(--muted); font-weight: 600; }
.diff-block { margin: 10px 0; }
.diff-block.kind-applied h4::before { content: "\\2713  "; color: var(--succeeded); }
.diff-block.kind-rejected h4::before { content: "\\2717  "; color: var(--failed); }
.approval { display: inline-block; padding: 4px 10px; border-radius: 6px; margin: 6px 0;
  border: 1px solid var(--line); background: var(--soft); }
.approval.v-approved { border-color: #b9e2c7; background: #e7f5ec; }
.approval.v-rejected { border-color: var(--failed); background: var(--denied); }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--muted); }
ul.artifacts { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap;
  gap: 6px 10px; }
ul.artifacts li { border: 1px solid var(--line); border-radius: 6px; padding: 2px 8px;
  background: #fff; }
ul.artifacts .size { color: var(--muted); font-size: .8rem; margin-left: 4px; }
table.outputs th { width: 1%; white-space: nowrap; }
table.outputs td code { white-space: pre-wrap; overflow-wrap: anywhere; }
footer { margin-top: 36px; color: var(--muted); font-size: .8rem; }
@media (max-width: 640px) {
  main { padding: 14px 10px 32px; }
  h1 { font-size: 1.3rem; }
  section.step.nested { margin-left: 0; }
  .cards { grid-template-columns: repeat(2, 1fr); }
  .card.wide { grid-column: span 2; }
}
@media print {
  body { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  .timeline-wrap, .scroll { overflow: visible; }
  svg.timeline { min-width: 0; }
  table.decisions, #steps-table { min-width: 0; font-size: 8pt; }
  th, td { padding: 3px 4px; }
  th { white-space: normal; }
  td.err { min-width: 6rem; }
  td.num:nth-child(9) { white-space: normal; }  /* tokens */
  .badge { padding: 0 6px; font-size: 7.5pt; }
  a { color: inherit; }
  h2 { break-after: avoid-page; }
  section.step { break-inside: avoid; }
}
"""


def render_html(report: RunReport, link_base: str = "") -> str:
    """The page; artifact links are ``link_base`` (the run directory as seen from the page's
    directory, '' when the page is in it) joined with each file's path."""
    return "".join(_Page(report, link_base).render())


def e(value: object) -> str:
    """Escape for text and attribute values alike."""
    return html.escape(str(value), quote=True)


class _Page:
    def __init__(self, report: RunReport, link_base: str) -> None:
        self.report = report
        self.base = link_base

    def href(self, path: str) -> str:
        return e(fmt.href(self.base, path))

    def render(self) -> Iterator[str]:
        report = self.report
        title = f"Run {report.run_id} · {report.workflow} · {report.status}"
        yield '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        yield (
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'\">\n"
        )
        yield '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        yield '<meta name="referrer" content="no-referrer">\n'
        yield f'<meta name="generator" content="bcce {e(__version__)}">\n'
        yield f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        yield from self.header()
        yield from self.timeline()
        yield from self.table()
        yield '<h2 id="steps">Steps</h2>\n'
        for step in report.steps:
            yield from self.step_section(step)
        if report.files:
            yield '<h2 id="files">Run files</h2>\n<ul class="artifacts">'
            for item in report.files:
                yield (
                    f'<li><a href="{self.href(item.path)}">{e(item.name)}</a>'
                    f'<span class="size">{e(fmt.size(item.size))}</span></li>'
                )
            yield "</ul>\n"
        yield (
            f"<footer>Generated by bcce {e(__version__)} at {e(fmt.timestamp(report.generated_at))}"
            f' from <span class="mono">{e(report.run_dir)}</span>. Times are UTC; offsets are '
            "from the start of the run.</footer>\n</main>\n</body>\n</html>\n"
        )

    # -- the header ---------------------------------------------------------------------------
    def header(self) -> Iterator[str]:
        report = self.report
        yield (
            f'<header>\n<h1>Run <span class="mono">{e(report.run_id)}</span> '
            f'<span class="badge s-{e(report.status)}" id="run-status">'
            f"{e(STATUS_LABELS.get(report.status, report.status))}</span></h1>\n"
        )
        where = f" · {report.workflow_path}" if report.workflow_path else ""
        yield f'<p class="sub">Workflow <b>{e(report.workflow)}</b>{e(where)}</p>\n'
        started = fmt.timestamp(report.started_at) or "not started"
        finished = fmt.timestamp(report.finished_at)
        ended = f"finished {finished}" if finished else "not finished"
        yield f'<p class="sub">Started {e(started)} · {e(ended)}</p>\n'
        counts = report.status_counts()
        summary = ", ".join(f"{n} {STATUS_LABELS.get(s, s)}" for s, n in sorted(counts.items()))
        retries = sum(s.retries for s in report.steps)
        tokens = report.total_tokens
        cards = [
            ("Duration", _run_duration(report), ""),
            ("Steps", summary or "none", "wide"),
            ("Retries", str(retries), ""),
            ("Policy denials", str(report.denials), "alert" if report.denials else ""),
            ("Cost", fmt.cost(report.total_cost_usd) or "—", ""),
            ("Tokens", fmt.tokens(*tokens) if tokens else "—", ""),
        ]
        if report.resumes:
            cards.append(("Resumes", str(report.resumes), ""))
        yield '<div class="cards">'
        for key, value, extra in cards:
            ident = key.lower().replace(" ", "-")
            yield (
                f'<div class="card {extra}" id="card-{ident}"><div class="k">{e(key)}</div>'
                f'<div class="v">{e(value)}</div></div>'
            )
        yield "</div>\n"
        if report.error:
            yield f'<div class="error" id="run-error">{e(report.error)}</div>\n'
        if report.status == "interrupted":
            yield (
                '<p class="note">No process drives this run any more: it stopped without '
                "finishing (killed, or the machine went down). "
                f"<code>bcce workflow resume {e(report.run_id)}</code> continues it.</p>\n"
            )
        elif report.status == "running":
            yield '<p class="note">The run is still running: this report is a snapshot.</p>\n'
        yield "</header>\n"

    # -- the timeline -------------------------------------------------------------------------
    def timeline(self) -> Iterator[str]:
        report = self.report
        yield '<h2 id="timeline">Timeline</h2>\n'
        if report.timeline_start is None or not any(
            s.segments or s.skipped_offset_seconds is not None for s in report.steps
        ):
            yield '<p class="note">No step has started: there is no timeline yet.</p>\n'
            return
        span = max(report.timeline_seconds, 0.001)
        scale = (PLOT_RIGHT - PLOT_LEFT) / span
        rows_bottom = TOP + ROW * len(report.steps)
        # Resume labels go under the rows, clear of the axis labels.
        height = rows_bottom + (24 if report.resume_offsets else 8)
        yield (
            f'<div class="timeline-wrap"><svg class="timeline" id="timeline-svg" '
            f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="{e("Timeline of the steps of run " + report.run_id)}" '
            f'data-span-seconds="{span:.6f}" data-plot-left="{PLOT_LEFT}" '
            f'data-plot-right="{PLOT_RIGHT}">\n'
        )
        for index in range(len(report.steps)):
            stripe = "row-odd" if index % 2 else "row-even"
            yield (
                f'<rect class="{stripe}" x="0" y="{TOP + index * ROW}" width="{WIDTH}" '
                f'height="{ROW}"/>\n'
            )
        yield from self.axis(span, scale, rows_bottom)
        for offset in report.resume_offsets:
            x = PLOT_LEFT + offset * scale
            yield (
                f'<line class="resume" x1="{x:.2f}" x2="{x:.2f}" y1="{TOP - 4}" '
                f'y2="{rows_bottom + 6}"><title>resumed at {e(fmt.offset(offset))}</title></line>'
                f'<text class="resume-label" x="{x:.2f}" y="{rows_bottom + 18}" '
                'text-anchor="middle">resumed</text>\n'
            )
        statuses: list[str] = []
        opened = denials = False
        for index, step in enumerate(report.steps):
            top = TOP + index * ROW
            yield from self.row_label(step, top)
            last_end: float | None = None
            for segment in step.segments:
                statuses.append(segment.status)
                opened |= segment.open
                x = PLOT_LEFT + segment.offset_seconds * scale
                width = max(segment.duration_seconds * scale, MIN_OPEN if segment.open else MIN_BAR)
                last_end = x + width
                yield from self.bar(step, segment, x, top + (ROW - BAR) / 2, width)
            if not step.segments and step.skipped_offset_seconds is not None:
                statuses.append(step.status)
                x = PLOT_LEFT + step.skipped_offset_seconds * scale
                reason = f": {step.reason}" if step.reason else ""
                yield (
                    f'<rect class="bar mark s-{e(step.status)}" x="{x:.2f}" '
                    f'y="{top + (ROW - BAR) / 2:.2f}" width="6" height="{BAR}" rx="1" '
                    f'data-step="{e(step.id)}" data-status="{e(step.status)}">'
                    f"<title>{e(step.id)}: {e(step.status)}{e(reason)}</title></rect>"
                    f'<text class="mark-label" x="{x + 10:.2f}" y="{top + ROW / 2 + 4}">'
                    f"{e(STATUS_LABELS.get(step.status, step.status))}</text>\n"
                )
            for decision in step.denials:
                if decision.offset_seconds is None:
                    continue
                denials = True
                x = PLOT_LEFT + decision.offset_seconds * scale
                y = top + (ROW + BAR) / 2 - 1
                yield (
                    f'<path class="denial-mark" data-step="{e(step.id)}" '
                    f'd="M{x:.2f} {y - 7:.2f} l5 8 h-10 z"><title>'
                    f"{e(_denial_title(decision))}</title></path>\n"
                )
            if last_end is not None:
                label = _row_label(step)
                if last_end + 8 + 6.5 * len(label) <= WIDTH:
                    yield (
                        f'<text class="dur" x="{last_end + 6:.2f}" y="{top + ROW / 2 + 4}">'
                        f"{e(label)}</text>\n"
                    )
        yield "</svg></div>\n"
        yield from self.legend(statuses, opened, denials)

    def axis(self, span: float, scale: float, bottom: int) -> Iterator[str]:
        step = fmt.nice_step(span)
        yield '<g class="axis">'
        tick = 0.0
        while tick <= span + 1e-9:
            x = PLOT_LEFT + tick * scale
            yield (
                f'<line class="grid" x1="{x:.2f}" x2="{x:.2f}" y1="{TOP - 4}" y2="{bottom}"/>'
                f'<text x="{x:.2f}" y="{TOP - 10}" text-anchor="middle">'
                f"{e(fmt.axis_label(tick, step))}</text>"
            )
            tick = round(tick + step, 9)
        yield "</g>\n"

    def row_label(self, step: StepReport, top: int) -> Iterator[str]:
        x = 10 + 14 * min(step.depth, 8)
        room = int((LABEL_WIDTH - x) / 7.2)
        label = step.id if len(step.id) <= room - 2 else step.id[: max(room - 3, 4)] + "…"
        kind = f" {step.type}" if len(label) + len(step.type) + 1 <= room else ""
        marker = "▸ " if step.control else ""
        tip = (
            f"{step.id} ({step.type}): {step.name} — {STATUS_LABELS.get(step.status, step.status)}"
        )
        classes = "label control" if step.control else "label"
        yield (
            f'<text class="{classes}" x="{x}" y="{top + ROW / 2 + 4}" data-step="{e(step.id)}">'
            f"<title>{e(tip)}</title>{e(marker + label)}"
            f'<tspan class="type">{e(kind)}</tspan></text>\n'
        )

    def bar(
        self, step: StepReport, segment: Segment, x: float, y: float, width: float
    ) -> Iterator[str]:
        classes = ["bar", f"s-{segment.status}"]
        if step.control:
            classes.append("control")
        if segment.open:
            classes.append("open")
        ending = "still running" if segment.status == "running" else fmt.clock(segment.finished_at)
        tip = (
            f"{step.id} — attempt {segment.attempt}: "
            f"{STATUS_LABELS.get(segment.status, segment.status)}, "
            f"{fmt.duration(segment.duration_seconds)} "
            f"({fmt.clock(segment.started_at)} → {ending}, {fmt.offset(segment.offset_seconds)})"
        )
        if segment.error:
            tip += f"\n{segment.error}"
        yield (
            f'<rect class="{" ".join(e(c) for c in classes)}" x="{x:.2f}" y="{y:.2f}" '
            f'width="{width:.2f}" height="{BAR}" rx="2" data-step="{e(step.id)}" '
            f'data-attempt="{segment.attempt}" data-status="{e(segment.status)}" '
            f'data-offset-seconds="{segment.offset_seconds:.6f}" '
            f'data-duration-seconds="{segment.duration_seconds:.6f}">'
            f"<title>{e(tip)}</title></rect>\n"
        )
        if width >= 28 and len(step.segments) > 1:
            yield (
                f'<text class="attempt" x="{x + 5:.2f}" y="{y + BAR - 3.5:.2f}">'
                f"#{segment.attempt}</text>\n"
            )

    def legend(self, statuses: list[str], opened: bool, denials: bool) -> Iterator[str]:
        yield '<div class="legend" id="legend">'
        for status in STATUS_LABELS:
            if status in statuses:
                yield (
                    f'<span data-status="{e(status)}"><i class="swatch s-{e(status)}"></i>'
                    f"{e(STATUS_LABELS[status])}</span>"
                )
        if opened:
            yield '<span><i class="swatch open"></i>no end recorded</span>'
        if denials:
            yield '<span><i class="swatch denial"></i>policy denial</span>'
        yield "<span>hover a bar for its times</span></div>\n"

    # -- the table of steps ---------------------------------------------------------------------
    def table(self) -> Iterator[str]:
        yield '<h2 id="summary">Summary</h2>\n<div class="scroll"><table id="steps-table">'
        yield (
            "<thead><tr><th>Step</th><th>Type</th><th>Status</th><th class=num>Start</th>"
            "<th class=num>Duration</th><th class=num>Attempts</th><th class=num>Exit</th>"
            "<th class=num>Cost</th><th class=num>Tokens</th><th class=num>Denials</th>"
            "<th>Error</th></tr></thead>\n<tbody>"
        )
        for step in self.report.steps:
            start = step.segments[0].offset_seconds if step.segments else None
            denials = len(step.denials)
            usage = step.usage
            cells = [
                f'<td class="step-cell" style="padding-left:{8 + 16 * min(step.depth, 8)}px">'
                f'<a href="#step-{e(step.id)}">{e(step.id)}</a></td>',
                f"<td>{e(step.type)}</td>",
                f'<td><span class="badge s-{e(step.status)}">'
                f"{e(STATUS_LABELS.get(step.status, step.status))}</span></td>",
                f"<td class=num>{e(fmt.offset(start))}</td>",
                f"<td class=num>{e(fmt.duration(step.duration_seconds))}</td>",
                f"<td class=num>{e(fmt.attempts(step.attempts, step.retries))}</td>",
                f"<td class=num>{e('' if step.exit_code is None else step.exit_code)}</td>",
                f"<td class=num>{e(fmt.cost(usage.cost_usd) if usage else '')}</td>",
                "<td class=num>"
                f"{e(fmt.tokens(usage.input_tokens, usage.output_tokens) if usage else '')}</td>",
                f"<td class=num>{denials or ''}</td>",
                f'<td class="err">{e(_first_line(step.error or ""))}</td>',
            ]
            row_class = ' class="denied"' if denials else ""
            yield f'<tr{row_class} data-step="{e(step.id)}">{"".join(cells)}</tr>\n'
        yield "</tbody></table></div>\n"

    # -- a step -------------------------------------------------------------------------------
    def step_section(self, step: StepReport) -> Iterator[str]:
        nested = " nested" if step.depth else ""
        yield (
            f'<section class="step s-{e(step.status)}{nested}" id="step-{e(step.id)}" '
            f'style="--depth:{min(step.depth, 8)}">\n'
            f'<h3><a href="#step-{e(step.id)}" class="mono">{e(step.id)}</a>'
            f'<span class="badge s-{e(step.status)}">'
            f"{e(STATUS_LABELS.get(step.status, step.status))}</span>"
            f'<span class="muted">{e(step.type)}'
            f"{e(' · ' + step.name if step.name != step.id else '')}</span></h3>\n"
        )
        yield from self.facts(step)
        if step.error:
            yield f'<div class="error">{e(step.error)}</div>\n'
        if step.status in ("failed", "timed_out") and step.conclusion == "success":
            yield '<p class="note">The run went on after this failure (on_error: continue).</p>\n'
        if step.reason:
            yield f'<p class="note">{e(step.reason)}</p>\n'
        for note in step.budget_notes:
            yield f'<div class="error budget">Budget: {e(note)}</div>\n'
        if step.kept:
            yield '<p class="note">Kept on resume: it had succeeded before.</p>\n'
        if step.decisions:
            yield from self.decisions(step)
        if step.approval is not None:
            approval = step.approval
            who = f" by {approval.by}" if approval.by else ""
            via = f" via {approval.via}" if approval.via else ""
            why = f" — {approval.reason}" if approval.reason else ""
            yield (
                f'<p class="approval v-{e(approval.verdict)}" data-verdict="{e(approval.verdict)}">'
                f"<b>{e(approval.verdict.capitalize())}</b>{e(who)}{e(via)}{e(why)}</p>\n"
            )
        for diff in step.diffs:
            yield from self.diff(diff)
        if step.outputs:
            yield '<h4>Outputs</h4><div class="scroll"><table class="outputs"><tbody>'
            for key, value in step.outputs.items():
                yield f"<tr><th>{e(key)}</th><td><code>{e(value)}</code></td></tr>"
            yield "</tbody></table></div>\n"
        for tail in step.tails:
            failed = step.status in ("failed", "timed_out")
            shown = "last lines of " if tail.truncated else ""
            yield (
                f"<details{' open' if failed else ''}><summary>{e(shown + tail.name)}</summary>"
                f'<pre class="tail">{e(tail.text)}</pre></details>\n'
            )
        if step.artifacts:
            yield '<h4>Artifacts</h4><ul class="artifacts">'
            for item in step.artifacts:
                yield (
                    f'<li><a href="{self.href(item.path)}">{e(item.name)}</a>'
                    f'<span class="size">{e(fmt.size(item.size))}</span></li>'
                )
            yield "</ul>\n"
        yield "</section>\n"

    def facts(self, step: StepReport) -> Iterator[str]:
        usage = step.usage
        facts = [
            ("Started", fmt.clock(step.started_at) if step.segments else ""),
            ("Finished", fmt.clock(step.finished_at) if step.segments else ""),
            ("Duration", fmt.duration(step.duration_seconds)),
            ("Attempts", fmt.attempts(step.attempts, step.retries)),
            ("Exit code", "" if step.exit_code is None else str(step.exit_code)),
            (
                "Inside",
                f"{step.parent}{f' ({step.branch})' if step.branch else ''}" if step.parent else "",
            ),
            ("Cost", fmt.cost(usage.cost_usd) if usage else ""),
            ("Tokens", fmt.tokens(usage.input_tokens, usage.output_tokens) if usage else ""),
            (
                "Cache tokens",
                _cache(usage.cache_read_tokens, usage.cache_creation_tokens) if usage else "",
            ),
            ("Model", (usage.model or "") if usage else ""),
            ("Turns", fmt.count(usage.turns) if usage else ""),
        ]
        shown = [(k, v) for k, v in facts if v]
        if not shown:
            return
        yield '<dl class="facts">'
        for key, value in shown:
            yield f"<div><dt>{e(key)}</dt><dd>{e(value)}</dd></div>"
        yield "</dl>\n"
        if len(step.segments) > 1:
            yield '<div class="scroll"><table class="attempts"><thead><tr><th>Attempt</th>'
            yield "<th>Result</th><th class=num>Start</th><th class=num>Duration</th>"
            yield "<th>Error</th></tr></thead><tbody>"
            for segment in step.segments:
                yield (
                    f'<tr><td>#{segment.attempt}</td><td><span class="badge s-'
                    f'{e(segment.status)}">{e(STATUS_LABELS.get(segment.status, segment.status))}'
                    f"</span></td><td class=num>{e(fmt.offset(segment.offset_seconds))}</td>"
                    f"<td class=num>{e(fmt.duration(segment.duration_seconds))}</td>"
                    f'<td class="err">{e(_first_line(segment.error or ""))}</td></tr>'
                )
            yield "</tbody></table></div>\n"

    def decisions(self, step: StepReport) -> Iterator[str]:
        denied = len(step.denials)
        heading = f"Policy decisions ({len(step.decisions)}"
        heading += f", {denied} denied)" if denied else ")"
        if denied:
            yield f'<h4>{e(heading)}</h4>\n<div class="scroll"><table class="decisions">'
        else:  # nothing to look at unless asked: folded
            yield (
                f"<details><summary>{e(heading[:-1] + ', all allowed)')}</summary>"
                '<div class="scroll"><table class="decisions">'
            )
        yield (
            "<thead><tr><th>Time</th><th>Decision</th><th>Tool</th><th>Subject</th>"
            "<th>Rule</th><th>Reason</th><th>Layer</th></tr></thead><tbody>"
        )
        for decision in step.decisions:
            verdict = "allowed" if decision.allowed else "denied"
            row = "" if decision.allowed else ' class="denied"'
            yield (
                f'<tr{row} data-allowed="{str(decision.allowed).lower()}">'
                f"<td class=num>{e(fmt.clock(decision.time))}</td>"
                f'<td><span class="chip {verdict}">{verdict}</span></td>'
                f"<td>{e(decision.tool or decision.kind)}</td>"
                f"<td><code>{e(decision.subject)}</code></td>"
                f"<td><code>{e(decision.rule or '')}</code></td>"
                f"<td>{e(decision.reason or '')}</td><td>{e(decision.layer or '')}</td></tr>\n"
            )
        yield "</tbody></table></div>" + ("\n" if denied else "</details>\n")

    def diff(self, diff: Diff) -> Iterator[str]:
        title = {
            "applied": "Applied diff",
            "rejected": "Rejected diff",
            "proposed": "Proposed diff (waiting for approval)",
            "changes": "Change set",
        }.get(diff.kind, diff.kind)
        files = ", ".join(diff.files)
        counts = f"+{diff.added} \N{MINUS SIGN}{diff.removed}"
        head = (
            f'<h4>{e(title)} <span class="muted">{e(files)} ({e(counts)})</span> · '
            f'<a href="{self.href(diff.path)}">{e(diff.path.rsplit("/", 1)[-1])}</a></h4>'
        )
        body = "".join(
            f'<span class="ln {_line_class(line)}">{e(line)}</span>'
            for line in diff.text.splitlines()
        )
        more = '<p class="muted">(cut short: the file has the rest)</p>' if diff.truncated else ""
        block = f'<pre class="diff"><code>{body}</code></pre>{more}'
        if diff.kind == "changes":  # the agent's change set: applied_diff shows what landed
            yield (
                f'<details class="diff-block kind-{e(diff.kind)}"><summary>{e(title)}: '
                f"{e(files)} ({e(counts)})</summary>{head}{block}</details>\n"
            )
        else:
            yield f'<div class="diff-block kind-{e(diff.kind)}">{head}{block}</div>\n'


def _run_duration(report: RunReport) -> str:
    took = fmt.duration(report.duration_seconds)
    if not took:
        return "—"
    if report.status == "running":
        return f"{took} so far"
    return f"≥ {took}" if report.status == "interrupted" else took


def _row_label(step: StepReport) -> str:
    """What the timeline writes after a row's last bar."""
    last = step.segments[-1] if step.segments else None
    if last is not None and last.status == "interrupted":
        return "interrupted"
    if last is not None and last.status == "running":
        return f"running, {fmt.duration(last.duration_seconds)}"
    return fmt.duration(step.duration_seconds)


def _line_class(line: str) -> str:
    if line.startswith(("+++", "---", "diff ", "index ", "new file", "deleted file", "similarity")):
        return "meta"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    if line.startswith("@@"):
        return "hunk"
    return "ctx"


def _cache(read: int | None, created: int | None) -> str:
    if not read and not created:
        return ""
    return f"{fmt.count(read or 0)} read / {fmt.count(created or 0)} written"


def _first_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= 160 else first[:159] + "…"


def _denial_title(decision: Decision) -> str:
    what = decision.tool or decision.kind
    return f"denied {what} [{decision.rule or '?'}]: {decision.reason or ''}\n{decision.subject}"
