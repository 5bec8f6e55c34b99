"""Errors of the runtime host, all rooted at :class:`stalwart.errors.StalwartError`."""

from __future__ import annotations

from stalwart.errors import ConfigError, RemoteProtocolError


class RuntimeConfigError(ConfigError):
    """A runtime option is out of range or inconsistent (a bad address, a zero limit, ...)."""


class PeerProtocolError(RemoteProtocolError):
    """A peer sent something that does not follow the transport protocol; its connection is dropped."""


__all__ = ["PeerProtocolError", "RuntimeConfigError"]
