"""What agent and prompt steps cost: the cost ledger and ``bcce cost report``.

The ledger is ``<workflow.state_dir>/costs.jsonl``: append-only JSON lines, one record per agent
or prompt step *attempt*, written by the budget bookkeeping (:mod:`bcce.policy.spend`) as soon as
the attempt's Claude Code session ends, from its real result message. Several processes (runs
sharing a state directory) append to it safely: every append holds an exclusive ``flock`` on the
file and is one ``write()`` of a whole line, and a line a killed writer left unfinished is
skipped by readers and closed off by the next writer.

Tokens are taken from the per-model breakdown of the result message (``modelUsage``) when it
has one, else from its ``usage``: when Claude Code stops a session for its budget
(``error_max_budget_usd``) it reports zeros in ``usage`` but the real counts per model.
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bcce.core.when import parse_iso
from bcce.errors import StorageError, UsageError

LEDGER_NAME = "costs.jsonl"
TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
#: Claude Code's ``modelUsage`` spelling of each token count.
_CAMEL = {
    "input_tokens": "inputTokens",
    "output_tokens": "outputTokens",
    "cache_read_input_tokens": "cacheReadInputTokens",
    "cache_creation_input_tokens": "cacheCreationInputTokens",
}
GroupBy = Literal["team", "project", "workflow", "model", "day"]
GROUPS: tuple[GroupBy, ...] = ("team", "project", "workflow", "model", "day")
#: The group value of records without a team, project...
NONE_KEY = "(none)"
#: The first column of the total row in CSV output.
TOTAL_KEY = "(total)"


def ledger_path(state_dir: Path | str) -> Path:
    """Where the ledger of a state directory is."""
    return Path(state_dir).absolute() / LEDGER_NAME


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class CostRecord:
    """One agent or prompt step attempt's usage, as the ledger keeps it."""

    time: str  # ISO 8601, UTC, when the attempt's session ended
    run_id: str
    step: str
    attempt: int
    workflow: str
    team: str | None
    project: str | None
    model: str
    total_cost_usd: float | None  # None: the session ended without a result message
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    #: model id -> token counts and ``cost_usd`` (the result message's ``modelUsage``)
    model_usage: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    provider: str | None = None
    subtype: str | None = None  # the result message's subtype (error_max_budget_usd...)

    def __post_init__(self) -> None:
        # Every entry has every token count and cost_usd, whatever spelling it came in.
        object.__setattr__(self, "model_usage", normalise_model_usage(self.model_usage))

    @property
    def cost(self) -> float:
        """The cost in US dollars, 0 when unknown."""
        return float(self.total_cost_usd or 0.0)

    @property
    def moment(self) -> datetime.datetime:
        return parse_iso(self.time)

    @property
    def day(self) -> str:
        return self.moment.date().isoformat()

    def tokens(self) -> dict[str, int]:
        return {key: int(getattr(self, key)) for key in TOKEN_KEYS}

    def by_model(self) -> dict[str, dict[str, float]]:
        """Tokens and cost per model; a record without a breakdown is all its own model's."""
        if self.model_usage:
            return {name: dict(values) for name, values in self.model_usage.items()}
        return {self.model: {**self.tokens(), "cost_usd": self.cost}}

    @classmethod
    def from_result(
        cls,
        result: Any,
        *,
        run_id: str,
        step: str,
        attempt: int,
        workflow: str,
        team: str | None,
        project: str | None,
        model: str,
        provider: str | None = None,
        time: datetime.datetime | None = None,
    ) -> CostRecord:
        """The record of a session from its :class:`~bcce.agent.session.AgentResult`."""
        breakdown = normalise_model_usage(getattr(result, "model_usage", None) or {})
        if breakdown:
            tokens = {
                key: int(sum(m.get(key, 0) for m in breakdown.values())) for key in TOKEN_KEYS
            }
        else:
            usage = getattr(result, "usage", None) or {}
            tokens = {key: _count(usage.get(key)) for key in TOKEN_KEYS}
        cost = getattr(result, "total_cost_usd", None)
        return cls(
            time=(time or utc_now()).isoformat(timespec="milliseconds"),
            run_id=run_id,
            step=step,
            attempt=attempt,
            workflow=workflow,
            team=team,
            project=project,
            model=model,
            total_cost_usd=None if cost is None else float(cost),
            model_usage=breakdown,
            provider=provider,
            subtype=getattr(result, "subtype", None),
            **tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        # "time" first: readers filter lines by day on the raw text before parsing them.
        return {
            "time": self.time,
            "run_id": self.run_id,
            "step": self.step,
            "attempt": self.attempt,
            "workflow": self.workflow,
            "team": self.team,
            "project": self.project,
            "model": self.model,
            "provider": self.provider,
            "subtype": self.subtype,
            "total_cost_usd": self.total_cost_usd,
            **self.tokens(),
            "model_usage": {name: dict(values) for name, values in self.model_usage.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostRecord:
        cost = data.get("total_cost_usd")
        return cls(
            time=str(data["time"]),
            run_id=str(data["run_id"]),
            step=str(data["step"]),
            attempt=int(data.get("attempt") or 1),
            workflow=str(data.get("workflow") or ""),
            team=_text(data.get("team")),
            project=_text(data.get("project")),
            model=str(data.get("model") or ""),
            total_cost_usd=None if cost is None else float(cost),
            model_usage=normalise_model_usage(data.get("model_usage") or {}),
            provider=_text(data.get("provider")),
            subtype=_text(data.get("subtype")),
            **{key: _count(data.get(key)) for key in TOKEN_KEYS},
        )

    def event_payload(self) -> dict[str, Any]:
        """The ``cost.recorded`` event's payload."""
        return {
            "workflow": self.workflow,
            "step": self.step,
            "attempt": self.attempt,
            "team": self.team,
            "project": self.project,
            "model": self.model,
            "total_cost_usd": self.total_cost_usd,
            **self.tokens(),
            "model_usage": {name: dict(values) for name, values in self.model_usage.items()},
        }


def normalise_model_usage(raw: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{model: {input_tokens, output_tokens, cache_*_input_tokens, cost_usd}}`` from Claude
    Code's ``modelUsage`` (camelCase) or from a ledger record (already snake_case)."""
    out: dict[str, dict[str, float]] = {}
    for name, values in raw.items():
        if not isinstance(values, Mapping):
            continue
        entry: dict[str, float] = {
            key: _count(values.get(key, values.get(_CAMEL[key]))) for key in TOKEN_KEYS
        }
        cost = values.get("cost_usd", values.get("costUSD"))
        entry["cost_usd"] = float(cost) if isinstance(cost, int | float) else 0.0
        out[str(name)] = entry
    return out


class CostLedger:
    """The append-only cost ledger of one state directory; safe across processes."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self.skipped = 0  # unreadable lines met by the last read

    def append(self, record: CostRecord) -> None:
        """Append one record: one ``write()`` of a whole line, under an exclusive lock."""
        line = (
            json.dumps(record.to_dict(), separators=(",", ":"), allow_nan=False, default=str) + "\n"
        ).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _storage_error("open the cost ledger", self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            # A writer killed mid-line left a fragment: end it so this record stays readable.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            raise _storage_error("append to the cost ledger", self.path, exc) from exc
        finally:
            os.close(fd)  # closing releases the lock

    def records(
        self,
        *,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        day: str | None = None,
    ) -> list[CostRecord]:
        """The records whose time is in ``[since, until)`` and on UTC ``day``, in file order."""
        return list(self._iter(since=since, until=until, day=day))

    def spent(self, *, day: str, team: str | None = None) -> float:
        """What was spent on UTC ``day`` (``YYYY-MM-DD``), by ``team`` if given."""
        return sum(r.cost for r in self._iter(day=day) if team is None or r.team == team)

    def _iter(
        self,
        *,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        day: str | None = None,
    ) -> Iterator[CostRecord]:
        self.skipped = 0
        try:
            with self.path.open("rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
                data = handle.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _storage_error("read the cost ledger", self.path, exc) from exc
        # Records are written by to_dict with "time" first: a day filter needs no JSON parsing.
        marker = f'{{"time":"{day}'.encode() if day else None
        for raw in data.split(b"\n"):
            if not raw.strip() or (marker is not None and not raw.startswith(marker)):
                continue
            try:
                record = CostRecord.from_dict(json.loads(raw))
                moment = record.moment
            except (ValueError, KeyError, TypeError):
                self.skipped += 1
                continue
            if since is not None and moment < since:
                continue
            if until is not None and moment >= until:
                continue
            yield record


@dataclass
class ReportRow:
    """One group of a report (or its total)."""

    key: str
    runs: int = 0
    steps: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self, by: str) -> dict[str, Any]:
        return {
            by: self.key,
            "runs": self.runs,
            "steps": self.steps,
            "attempts": self.attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclass
class CostReport:
    """Spend grouped by ``by``, with a total."""

    by: GroupBy
    since: datetime.datetime | None
    until: datetime.datetime | None
    rows: list[ReportRow]
    total: ReportRow

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "rows": [row.to_dict(self.by) for row in self.rows],
            "total": {k: v for k, v in self.total.to_dict(self.by).items() if k != self.by},
        }

    def to_csv(self) -> str:
        """One line per group, then a ``(total)`` line."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        columns = list(self.total.to_dict(self.by))
        writer.writerow(columns)
        for row in [*self.rows, self.total]:
            values = row.to_dict(self.by)
            writer.writerow([values[c] for c in columns])
        return buffer.getvalue()


class _Group:
    def __init__(self, key: str) -> None:
        self.row = ReportRow(key)
        self.runs: set[str] = set()
        self.steps: set[tuple[str, str]] = set()

    def add(self, record: CostRecord, tokens: Mapping[str, float], cost: float) -> None:
        self.runs.add(record.run_id)
        self.steps.add((record.run_id, record.step))
        row = self.row
        row.attempts += 1
        row.input_tokens += int(tokens.get("input_tokens", 0))
        row.output_tokens += int(tokens.get("output_tokens", 0))
        row.cache_read_input_tokens += int(tokens.get("cache_read_input_tokens", 0))
        row.cache_creation_input_tokens += int(tokens.get("cache_creation_input_tokens", 0))
        row.cost_usd += cost

    def done(self) -> ReportRow:
        self.row.runs = len(self.runs)
        self.row.steps = len(self.steps)
        return self.row


def build_report(
    records: Iterable[CostRecord],
    by: GroupBy = "team",
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> CostReport:
    """Group ``records`` by ``by``; ``model`` splits each record by its per-model breakdown."""
    if by not in GROUPS:
        raise UsageError(f"cannot group by {by!r}", hint=f"--by one of {', '.join(GROUPS)}")
    groups: dict[str, _Group] = {}
    total = _Group("")
    for record in records:
        total.add(record, record.tokens(), record.cost)
        if by == "model":
            for model, values in record.by_model().items():
                groups.setdefault(model, _Group(model)).add(record, values, values["cost_usd"])
            continue
        key = record.day if by == "day" else getattr(record, by)
        key = str(key) if key else NONE_KEY
        groups.setdefault(key, _Group(key)).add(record, record.tokens(), record.cost)
    rows = [group.done() for group in groups.values()]
    if by == "day":
        rows.sort(key=lambda r: r.key)
    else:
        rows.sort(key=lambda r: (-r.cost_usd, r.key))
    final = total.done()
    final.key = TOTAL_KEY
    return CostReport(by, since, until, rows, final)


def report(
    ledger: CostLedger,
    by: GroupBy = "team",
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> CostReport:
    """The report of the ledger's records in ``[since, until)``."""
    records = ledger.records(since=since, until=until)
    return build_report(records, by, since=since, until=until)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"cannot {action}: {exc.strerror or exc}",
        location=str(path),
        hint="check the state directory (workflow.state_dir) and the disk it is on",
    )


__all__ = [
    "GROUPS",
    "LEDGER_NAME",
    "TOKEN_KEYS",
    "CostLedger",
    "CostRecord",
    "CostReport",
    "GroupBy",
    "ReportRow",
    "build_report",
    "ledger_path",
    "normalise_model_usage",
    "report",
]
