"""Errors of the storage package, all under :class:`stalwart.errors.StorageError`."""

from __future__ import annotations

from stalwart.errors import CorruptionError, StorageError


class LogIndexError(StorageError):
    """A log index is out of range: not contiguous on append, below the compacted prefix, or past the end."""


class RecordTooLargeError(StorageError):
    """A record, value or snapshot exceeds its configured size limit; nothing was written."""

    def __init__(self, what: str, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"{what} of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class StorageClosedError(StorageError):
    """The store was used after ``close()``."""


class StorageLockedError(StorageError):
    """Another process (or another object in this one) holds the directory's lock."""


class InvalidStorageOpError(StorageError):
    """A storage operation a correct protocol never asks for (gap on append, truncation below first)."""


__all__ = [
    "CorruptionError",
    "InvalidStorageOpError",
    "LogIndexError",
    "RecordTooLargeError",
    "StorageClosedError",
    "StorageError",
    "StorageLockedError",
]
