"""Find and load targets from the package stalwart.sim.targets (see its docstring)."""

from __future__ import annotations

import importlib
import pkgutil

from stalwart.errors import ConfigError
from stalwart.sim import targets as _targets_pkg
from stalwart.sim._target import SimTarget


class UnknownTargetError(ConfigError):
    """No target of that name, or its module defines no valid ``TARGET``."""


def target_names() -> list[str]:
    """Names of the candidate target modules, sorted (nothing is imported)."""
    names = [m.name for m in pkgutil.iter_modules(_targets_pkg.__path__) if not m.name.startswith("_")]
    return sorted(names)


def load_target(name: str) -> SimTarget:
    """Import ``stalwart.sim.targets.<name>`` and return its ``TARGET``."""
    if name not in target_names():
        known = ", ".join(target_names()) or "none"
        raise UnknownTargetError(f"no simulation target {name!r} (known: {known})")
    module = importlib.import_module(f"{_targets_pkg.__name__}.{name}")
    target = getattr(module, "TARGET", None)
    if not isinstance(target, SimTarget):
        raise UnknownTargetError(f"{module.__name__} defines no TARGET that is a SimTarget")
    if target.name != name:
        raise UnknownTargetError(f"{module.__name__}: TARGET.name is {target.name!r}, expected {name!r}")
    return target


def available_targets() -> dict[str, SimTarget]:
    """Every target that loads, by name (a module that fails to import is left out)."""
    found: dict[str, SimTarget] = {}
    for name in target_names():
        try:
            found[name] = load_target(name)
        except (ImportError, UnknownTargetError):
            continue
    return found
