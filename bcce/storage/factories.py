"""Factories of the built-in storage backends, for the storage container's Selector.

``s3`` imports its implementation (and boto3, through the client callable) only when chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings
    from bcce.storage.backend import StorageBackend


def s3(settings: BcceSettings, client: Callable[[], Any]) -> StorageBackend:
    from bcce.storage.s3 import S3StorageBackend

    return S3StorageBackend.from_settings(settings, client=client)


__all__ = ["s3"]
