"""Errors of the runtime host, all rooted at :class:`stalwart.errors.StalwartError`."""

from __future__ import annotations

from stalwart.errors import ConfigError, RemoteProtocolError, StalwartError


class RuntimeConfigError(ConfigError):
    """A runtime option is out of range or inconsistent (a bad address, a zero limit, ...)."""


class PeerProtocolError(RemoteProtocolError):
    """A peer sent something that does not follow the transport protocol; its connection is dropped."""


class MessageTooLargeError(StalwartError):
    """A message to send encodes to more bytes than one frame may carry; it was not queued."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"message of {size_bytes} bytes exceeds the frame limit of {limit_bytes} bytes")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


__all__ = ["MessageTooLargeError", "PeerProtocolError", "RuntimeConfigError"]
