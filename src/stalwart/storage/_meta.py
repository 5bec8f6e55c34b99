"""Stable metadata (term, vote, configuration): a small key -> bytes map replaced atomically."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping

from crc32c import crc32c

from stalwart.storage._errors import CorruptionError, RecordTooLargeError, StorageError
from stalwart.storage._fs import (
    Syncer,
    SyncStats,
    atomic_replace,
    ensure_dir,
    io_errors,
    read_file,
    unlink_quiet,
)

META_MAGIC = b"STLMETA1"
_HEADER = struct.Struct("<8sII")  # magic, entry count, body length
_KEY = struct.Struct("<H")
_VALUE = struct.Struct("<I")
_CRC = struct.Struct("<I")
MAX_KEY_BYTES = 255
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
DEFAULT_MAX_KEYS = 64  # the same bound as stalwart.sansio's reference semantics (a test checks)


class InvalidMetaKeyError(StorageError):
    """A metadata key is empty, too long or not a string."""


def encode_meta(items: Mapping[str, bytes]) -> bytes:
    """``magic | u32 count | u32 body length | body | u32 crc32c(everything before)``.

    The body is the entries sorted by key: ``u16 key length | key (UTF-8) | u32 value length | value``.
    """
    parts: list[bytes] = []
    for key in sorted(items):
        raw_key, value = key.encode(), items[key]
        parts += [_KEY.pack(len(raw_key)), raw_key, _VALUE.pack(len(value)), value]
    body = b"".join(parts)
    head = _HEADER.pack(META_MAGIC, len(items), len(body)) + body
    return head + _CRC.pack(crc32c(head))


def decode_meta(data: bytes, path: str) -> dict[str, bytes]:
    """Parse a metadata file; anything unexpected is a :class:`CorruptionError` naming an offset."""
    if len(data) < _HEADER.size + _CRC.size:
        raise CorruptionError(path, len(data), f"metadata file of {len(data)} bytes is too short")
    magic, count, body_len = _HEADER.unpack_from(data, 0)
    if magic != META_MAGIC:
        raise CorruptionError(path, 0, "bad metadata magic")
    if _HEADER.size + body_len + _CRC.size != len(data):
        raise CorruptionError(path, 12, f"body length {body_len} does not match the file size {len(data)}")
    crc_at = len(data) - _CRC.size
    if _CRC.unpack_from(data, crc_at)[0] != crc32c(memoryview(data)[:crc_at]):
        raise CorruptionError(path, 0, f"metadata checksum mismatch over bytes 0..{crc_at}")
    # The CRC matched, so what follows only fails for a file this code did not write.
    out: dict[str, bytes] = {}
    pos = _HEADER.size
    try:
        for _ in range(count):
            (key_len,) = _KEY.unpack_from(data, pos)
            key = data[pos + 2 : pos + 2 + key_len].decode()
            pos += 2 + key_len
            (value_len,) = _VALUE.unpack_from(data, pos)
            out[key] = data[pos + 4 : pos + 4 + value_len]
            pos += 4 + value_len
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptionError(path, pos, f"malformed metadata entry: {exc}") from None
    if pos != crc_at or len(out) != count:
        raise CorruptionError(path, pos, "metadata entries do not fill the body exactly")
    return out


class MetaStore:
    """A small durable map. Every ``put``/``put_many`` replaces the whole file atomically.

    Writing costs two flushes: fsync of the temp file, then fsync of the directory after the
    rename. A damaged file raises :class:`CorruptionError` on open (no torn states exist: the
    rename is atomic, so damage means the disk changed bytes).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        stats: SyncStats | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.max_keys = max_keys
        self.max_value_bytes = max_value_bytes
        self.stats = stats if stats is not None else SyncStats()
        self._syncer = Syncer(fsync, self.stats)
        self._items: dict[str, bytes] = {}
        with io_errors(f"metadata {self.path}"):
            ensure_dir(os.path.dirname(os.path.abspath(self.path)), self._syncer)
            unlink_quiet(self.path + ".tmp")  # an interrupted replace; the old file is intact
            if os.path.exists(self.path):
                self._items = decode_meta(read_file(self.path), self.path)

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        return self._items.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def as_dict(self) -> dict[str, bytes]:
        """A copy of everything stored."""
        return dict(self._items)

    def put(self, key: str, value: bytes) -> None:
        """Store one value durably."""
        self.put_many({key: value})

    def delete(self, key: str) -> None:
        """Remove one key durably (a no-op if absent)."""
        self.put_many({}, delete=(key,))

    def put_many(self, items: Mapping[str, bytes], *, delete: Iterable[str] = ()) -> None:
        """Apply all changes in one durable atomic replace; on a bad item nothing changes."""
        new = dict(self._items)
        for key in delete:
            new.pop(key, None)
        for key, value in items.items():
            self.check_item(key, value)
            new[key] = bytes(value)
        if len(new) > self.max_keys:
            raise RecordTooLargeError("metadata key count", len(new), self.max_keys)
        with io_errors(f"metadata {self.path}"):
            atomic_replace(self.path, encode_meta(new), self._syncer)
        self._items = new

    def check_item(self, key: str, value: bytes) -> None:
        if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
            raise InvalidMetaKeyError(f"metadata keys are 1..{MAX_KEY_BYTES} UTF-8 bytes, got {key!r}")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise StorageError(f"metadata values are bytes, got {type(value).__name__}")
        if len(value) > self.max_value_bytes:
            raise RecordTooLargeError(f"metadata value {key!r}", len(value), self.max_value_bytes)
