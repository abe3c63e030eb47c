"""bcce: governed, auditable, resumable Claude Code workflows on Amazon Bedrock.

Importing this package is cheap: the application, boto3 and the agent SDK load only when used.
"""

from __future__ import annotations

from bcce._version import __version__

# Not `from typing import TYPE_CHECKING`: importing typing costs `bcce --version` ~8 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bcce.application import create_application
    from bcce.containers.application import Application

__all__ = ["Application", "__version__", "create_application"]


def __getattr__(name: str) -> Any:
    if name == "create_application":
        from bcce.application import create_application

        return create_application
    if name == "Application":
        from bcce.containers.application import Application

        return Application
    raise AttributeError(f"module 'bcce' has no attribute {name!r}")
