"""Nemesis actions, partition shapes, and explicit schedules.

A schedule is a list of :class:`NemesisEvent` (``at_ms`` of virtual time, an action). Without a
schedule the simulator runs a random nemesis drawn from the seed (see ``_knobs``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from stalwart.errors import ConfigError
from stalwart.sansio import NodeId

SHAPES: tuple[str, ...] = ("halves", "majority-ring", "bridge", "one-way", "isolate")
"""The partition shapes the nemesis knows."""

Link = tuple[int, int]  # (from node index, to node index), a directed link


@dataclass(frozen=True, slots=True)
class Partition:
    """Block the links of a ``shape`` (one of :data:`SHAPES`), drawn over the nodes at fire time."""

    shape: str


@dataclass(frozen=True, slots=True)
class Cut:
    """Block exactly these directed links (``(from, to)`` node names); replaces any partition."""

    links: tuple[tuple[NodeId, NodeId], ...]


@dataclass(frozen=True, slots=True)
class Heal:
    """Unblock every link."""


@dataclass(frozen=True, slots=True)
class Crash:
    """Stop ``node`` at once: its page cache is lost (a synced prefix may survive)."""

    node: NodeId


@dataclass(frozen=True, slots=True)
class Restart:
    """Start ``node`` again from what its disk kept."""

    node: NodeId


@dataclass(frozen=True, slots=True)
class Pause:
    """Neither step nor tick ``node`` for ``duration_ms``; what arrives meanwhile waits."""

    node: NodeId
    duration_ms: int


Action = Partition | Cut | Heal | Crash | Restart | Pause


@dataclass(frozen=True, slots=True)
class NemesisEvent:
    """One timed fault: ``action`` happens ``at_ms`` after the start of the run."""

    at_ms: int
    action: Action


def validate_schedule(schedule: Sequence[NemesisEvent], cluster: tuple[NodeId, ...]) -> None:
    """Raise ConfigError for an event naming an unknown node or shape, or a negative time."""
    for ev in schedule:
        if ev.at_ms < 0:
            raise ConfigError(f"nemesis event at {ev.at_ms} ms: times must be >= 0")
        match ev.action:
            case Partition(shape=shape) if shape not in SHAPES:
                raise ConfigError(f"unknown partition shape {shape!r} (known: {', '.join(SHAPES)})")
            case Crash(node=node) | Restart(node=node) | Pause(node=node) if node not in cluster:
                raise ConfigError(f"nemesis names unknown node {node!r}")
            case Pause(duration_ms=d) if d <= 0:
                raise ConfigError("a pause needs a positive duration_ms")
            case Cut(links=links):
                for a, b in links:
                    if a not in cluster or b not in cluster or a == b:
                        raise ConfigError(f"bad link {a!r} -> {b!r}")
            case _:
                pass


def _between(a: Sequence[int], b: Sequence[int]) -> set[Link]:
    """Both directions between every node of ``a`` and every node of ``b``."""
    return {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}


def shape_links(shape: str, n: int, rng: random.Random) -> frozenset[Link]:
    """The directed links a partition of ``shape`` blocks among nodes ``0..n-1``."""
    order = list(range(n))
    rng.shuffle(order)
    match shape:
        case "halves":
            cut = n // 2 if n > 2 else 1
            return frozenset(_between(order[:cut], order[cut:]))
        case "isolate":
            return frozenset(_between(order[:1], order[1:]))
        case "bridge":
            # order[0] is the bridge: it sees both sides, which cannot see each other.
            rest = order[1:]
            half = max(1, len(rest) // 2)
            return frozenset(_between(rest[:half], rest[half:]))
        case "one-way":
            # Messages from a group to the others are lost; the other direction still works.
            size = 1 + rng.randrange(max(1, n - 1))
            src, dst = order[:size], order[size:]
            return frozenset((x, y) for x in src for y in dst)
        case "majority-ring":
            # Nodes on a ring see their neighbours within `reach`: each sees a majority (itself
            # included), but no two nodes see the same majority (for n >= 5; n = 3 is whole).
            reach = (n // 2 + 1) // 2
            pos = {node: i for i, node in enumerate(order)}
            blocked = set()
            for a in range(n):
                for b in range(n):
                    d = abs(pos[a] - pos[b])
                    if a != b and min(d, n - d) > reach:
                        blocked.add((a, b))
            return frozenset(blocked)
        case _:
            raise ConfigError(f"unknown partition shape {shape!r}")


def schedule_from_json(data: object) -> tuple[NemesisEvent, ...]:
    """Parse a schedule from decoded JSON: a list of objects such as
    ``{"at_ms": 50, "action": "crash", "node": "n1"}``. Actions: ``crash``/``restart`` (node),
    ``pause`` (node, duration_ms), ``partition`` (shape), ``cut`` (links: [[from, to], ...]),
    ``heal``. Raises ConfigError naming the bad entry.
    """
    if not isinstance(data, list):
        raise ConfigError("a nemesis schedule is a JSON list of events")
    return tuple(_event_from_json(i, item) for i, item in enumerate(data))


def _event_from_json(i: int, item: object) -> NemesisEvent:
    if not isinstance(item, dict):
        raise ConfigError(f"nemesis event {i}: expected an object")
    try:
        at_ms, kind = item["at_ms"], item["action"]
        if type(at_ms) is not int:
            raise TypeError("at_ms must be an integer")
        action: Action
        match kind:
            case "crash":
                action = Crash(NodeId(str(item["node"])))
            case "restart":
                action = Restart(NodeId(str(item["node"])))
            case "pause":
                duration = item["duration_ms"]
                if type(duration) is not int:
                    raise TypeError("duration_ms must be an integer")
                action = Pause(NodeId(str(item["node"])), duration)
            case "partition":
                action = Partition(str(item["shape"]))
            case "cut":
                action = Cut(tuple((NodeId(str(a)), NodeId(str(b))) for a, b in item["links"]))
            case "heal":
                action = Heal()
            case _:
                raise ValueError(f"unknown action {kind!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"nemesis event {i}: {exc}") from None
    return NemesisEvent(at_ms, action)
