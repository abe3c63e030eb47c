"""Run reports: ``bcce workflow report RUN_ID [--format html|md|json]``.

:func:`build_report` gathers a run's model from its run directory; :func:`render` turns it into a
self-contained HTML page, Markdown or JSON; :func:`write_report` does both and writes the result
where the command line asks. (``bcce.workflow.reports`` is the JUnit XML written at run end.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bcce.core.durable import atomic_write_bytes
from bcce.errors import BcceError, StorageError, UsageError
from bcce.workflow.report.markdown import render_markdown
from bcce.workflow.report.model import RunReport, StepReport, build_report
from bcce.workflow.report.page import render_html

if TYPE_CHECKING:
    import datetime

    from bcce.storage.backend import StorageBackend
    from bcce.workflow.state import RunStateStore

__all__ = [
    "FORMATS",
    "REPORT_FILE",
    "RunReport",
    "StepReport",
    "WrittenReport",
    "build_report",
    "link_base",
    "render",
    "render_html",
    "render_markdown",
    "write_report",
]

FORMATS = ("html", "md", "json")
#: Where ``bcce workflow report`` writes the HTML page by default, in the run directory.
REPORT_FILE = "report.html"


def render(report: RunReport, fmt: str, base: str = "") -> str:
    """``report`` as ``fmt`` (html, md or json); links are relative to ``base`` (see
    :func:`link_base`). JSON holds paths relative to the run directory instead of links."""
    if fmt == "html":
        return render_html(report, base)
    if fmt == "md":
        return render_markdown(report, base)
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    raise UsageError(f"unknown report format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")


def link_base(run_dir: Path, report_dir: Path) -> str:
    """The run directory as a relative link from ``report_dir`` ('' when they are the same)."""
    relative = Path(os.path.relpath(run_dir.absolute(), report_dir.absolute())).as_posix()
    return "" if relative == "." else relative


@dataclass(frozen=True)
class WrittenReport:
    """A rendered report: written to ``path``, or, when ``path`` is None, for standard output.
    ``warning`` says why a report written into the run directory could not be stored too."""

    text: str
    path: Path | None
    warning: str | None = None


def write_report(
    store: RunStateStore,
    run_id: str,
    fmt: str = "html",
    output: str | Path | None = None,
    *,
    cwd: Path | None = None,
    storage: Callable[[], StorageBackend] | None = None,
    now: datetime.datetime | None = None,
) -> WrittenReport:
    """Build and render the report of ``run_id``.

    ``output``: None for the default (HTML into ``<run dir>/report.html``, Markdown and JSON to
    standard output), ``"-"`` for standard output, or a file path. Links are relative to the file
    written, or to ``cwd`` (default: the current directory) for standard output. A report written
    into the run directory is also stored with the run's files when ``storage`` (called only
    then) is a backend elsewhere.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    report = build_report(store, run_id, now=now)
    run_dir = store.run_dir(run_id)
    target: Path | None
    if output is None:
        target = run_dir / REPORT_FILE if fmt == "html" else None
    elif str(output) == "-":
        target = None
    else:
        target = Path(output)
        if target.is_dir():
            raise UsageError(
                f"--output {target} is a directory", hint=f"name a file, e.g. {target}/report.{fmt}"
            )
    where = (target.absolute().parent if target is not None else (cwd or Path.cwd())).absolute()
    text = render(report, fmt, link_base(run_dir, where))
    if target is None:
        return WrittenReport(text, None)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create {target.parent}: {exc.strerror or exc}",
            hint="choose another --output",
            location=str(target),
        ) from exc
    atomic_write_bytes(target, text.encode("utf-8"))
    if storage is not None and target.absolute() == (run_dir / REPORT_FILE).absolute():
        from bcce.workflow.artifacts import ArtifactPublisher

        try:
            ArtifactPublisher(storage(), store.root).publish_file(run_id, REPORT_FILE)
        except BcceError as exc:  # the local report is written: that is what was asked for
            return WrittenReport(text, target, f"not stored with the run's files: {exc.message}")
    return WrittenReport(text, target)
