"""Small file-system helpers: counted fsyncs, whole writes and reads, atomic replace, directory locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass

from stalwart.storage._errors import CorruptionError, StorageError, StorageLockedError

# fdatasync flushes the data and the metadata needed to read it back (the file size), not mtime.
# macOS has no fdatasync; fsync there does not reach the platter either (F_FULLFSYNC would).
_datasync = getattr(os, "fdatasync", os.fsync)


@dataclass(slots=True)
class SyncStats:
    """Counts the flushes a store issued; tests and benchmarks read it to prove group commit."""

    data_syncs: int = 0  # fdatasync of a log segment
    file_syncs: int = 0  # fsync of a new file (metadata, snapshot) before its rename
    dir_syncs: int = 0  # fsync of a directory after a create, rename or unlink

    @property
    def total(self) -> int:
        return self.data_syncs + self.file_syncs + self.dir_syncs


@dataclass(slots=True)
class Syncer:
    """Issues (or, with ``enabled=False``, skips) flushes and counts them in ``stats``."""

    enabled: bool
    stats: SyncStats

    def data(self, fd: int) -> None:
        if self.enabled:
            _datasync(fd)
            self.stats.data_syncs += 1

    def file(self, fd: int) -> None:
        if self.enabled:
            os.fsync(fd)
            self.stats.file_syncs += 1

    def directory(self, path: str) -> None:
        if not self.enabled:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.stats.dir_syncs += 1


@contextlib.contextmanager
def io_errors(what: str) -> Iterator[None]:
    """Turn an ``OSError`` (EIO, ENOSPC, EACCES, ...) into a :class:`StorageError` naming ``what``."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{what}: {exc}") from exc


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (a regular file may accept fewer at once)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written at ``offset``."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def pread_exact(fd: int, size: int, offset: int, path: str) -> bytes:
    """Read exactly ``size`` bytes at ``offset``; a short file is corruption (its size was checked)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = os.pread(fd, remaining, offset)
        if not chunk:
            raise CorruptionError(path, offset, f"file ends {remaining} bytes early")
        parts.append(chunk)
        remaining -= len(chunk)
        offset += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def unlink_quiet(path: str) -> None:
    """Remove ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def atomic_replace(path: str, data: bytes, syncer: Syncer) -> None:
    """Replace ``path`` by ``data``: write a temp file, fsync it, rename over, fsync the directory.

    After a crash the file holds either the old or the new contents, never a mix (on a file
    system that honours rename atomicity and fsync; see docs/storage.md for the limits).
    """
    directory = os.path.dirname(path) or "."
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        syncer.file(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    syncer.directory(directory)


def ensure_dir(path: str, syncer: Syncer) -> None:
    """Create ``path`` (and parents) if missing, making the new entry durable in its parent."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    ensure_dir(parent, syncer)
    os.mkdir(path, 0o755)
    syncer.directory(parent)


class DirLock:
    """An exclusive ``flock`` on ``<directory>/LOCK``; the kernel drops it when the process dies."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "LOCK")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StorageLockedError(f"{directory} is locked by another user of it") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1
