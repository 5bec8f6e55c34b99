"""The drill's errors, under the shared hierarchy."""

from __future__ import annotations

from stalwart.errors import ConfigError, StalwartError


class DrillError(StalwartError):
    """The drill could not run (a node would not start, the cluster never served)."""


class DrillConfigError(ConfigError, DrillError):
    """A drill option is wrong (node count, nemesis name, duration)."""
