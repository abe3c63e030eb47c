"""The ``bcce`` command line: Click commands that parse, call the framework and render."""

from __future__ import annotations

import sys


def entry_point(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:  # answered before Click is imported: scripts call this often
        from bcce._version import __version__

        sys.stdout.write(f"bcce, version {__version__}\n")
        return 0
    from bcce.cli.main import run

    return run(args)
