"""Micro-benchmark of bcce.core.redaction: lines per second on log-like text.

Run: ``.venv/bin/python benchmarks/redaction.py [--lines N]``. Prints lines/s for the cases the
redactor meets (clean lines, lines with secrets, JSON events, chunked command output) and, as a
baseline measured in the same process, one alternation of every pattern and literal form.
Not a test: the numbers depend on the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import time
from collections.abc import Callable, Sequence
from typing import Any

from bcce.core.redaction import BUILTIN_PATTERNS, Redactor, _encoded_forms

WORDS = [
    *("INFO", "DEBUG", "step", "build", "test", "lint", "running", "pytest", "ruff", "-q"),
    *("tests/core", "exit=0", "duration_ms=1234", "cwd=/work/main", "status", "ok"),
    *("run_id=20240101-120000-abcdef", "https://example.com/docs?page=2", "policy", "allowed"),
    *("Access", "Secret", "Session", "Bearer", "token", "denied", "apply_diff", "workflow.done"),
]


def log_lines(count: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 16))) + "\n" for _ in range(count)]


def lines_per_second(function: Callable[[Any], object], lines: Sequence[object]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for line in lines:
            function(line)
        best = min(best, time.perf_counter() - start)
    return len(lines) / best


def one_alternation(secrets: list[str]) -> Callable[[str], str]:
    """The baseline: every pattern and literal form in one alternation, replaced with sub()."""
    forms = sorted({form for secret in secrets for form in _encoded_forms(secret)}, key=len)
    parts = [re.escape(form) for form in reversed(forms)]
    parts += [source.replace("(?P<secret>", "(?:") for source in BUILTIN_PATTERNS.values()]
    combined = re.compile("|".join(f"(?:{part})" for part in parts))
    return lambda text: combined.sub("***", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=20000)
    count = parser.parse_args().lines
    rng = random.Random(7)
    secrets = ["".join(rng.choices(string.ascii_letters + string.digits, k=32)) for _ in range(20)]
    clean = log_lines(count, rng)
    dirty = [line.replace("ok", f"ok {rng.choice(secrets)}", 1) for line in clean]
    events = [{"type": "step.output", "step": "build", "data": {"line": line}} for line in dirty]
    output = "".join(clean)
    chunks = [output[i : i + 4096] for i in range(0, len(output), 4096)]

    bare = Redactor()
    loaded = Redactor(secrets)
    baseline = one_alternation(secrets)

    def stream_all(_: str) -> None:
        stream = loaded.stream()
        for chunk in chunks:
            stream.feed(chunk)
        stream.flush()

    base_clean = lines_per_second(baseline, clean)
    base_dirty = lines_per_second(baseline, dirty)
    rows = [
        ("clean lines, no secrets registered", lines_per_second(bare.redact, clean), base_clean),
        ("clean lines, 20 secrets registered", lines_per_second(loaded.redact, clean), base_clean),
        ("lines with a secret, 20 registered", lines_per_second(loaded.redact, dirty), base_dirty),
        ("JSON events via redact_data", lines_per_second(loaded.redact_data, events), None),
        ("command output, 4 KiB chunks", lines_per_second(stream_all, ["x"]) * count, None),
    ]
    print(f"{count} log lines of ~{len(output) // count} characters")
    for name, rate, base in rows:
        ratio = f"{rate / base:5.2f}x one alternation" if base else ""
        print(f"{name:38} {rate:12,.0f} lines/s  {ratio}")


if __name__ == "__main__":
    main()
