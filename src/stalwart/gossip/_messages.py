"""Messages of the gossip counter (wire tags 100-199) and what it outputs.

A client sends :class:`Increment` and gets :class:`IncrementAck` once the new count is durable;
:class:`ReadTotal` gets :class:`TotalReply`. Nodes exchange :class:`GossipVector` on ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from stalwart.sansio import NodeId
from stalwart.wire import Bounds, MaxLen, message

MAX_AMOUNT = 1 << 20
"""The largest increment one request may ask for."""
MAX_COUNT = (1 << 63) - 1
"""Counts stay within a signed 64-bit integer (what msgpack and the stored form carry)."""
MAX_NODES = 256
"""A gossip vector names at most this many nodes."""
MAX_NODE_ID_CHARS = 255
"""As long as a node id may be in the wire handshake."""


@message(100)
@dataclass(frozen=True, slots=True)
class Increment:
    """Client request: add ``amount`` to this node's own counter."""

    request_id: int
    amount: int = 1


@message(101)
@dataclass(frozen=True, slots=True)
class IncrementAck:
    """Reply to :class:`Increment`, sent only after ``count`` (the node's own count) is durable."""

    request_id: int
    count: int


@message(102)
@dataclass(frozen=True, slots=True)
class GossipVector:
    """A node's view of every counter: ``counts[i]`` belongs to ``nodes[i]``."""

    nodes: Annotated[tuple[Annotated[str, MaxLen(MAX_NODE_ID_CHARS)], ...], MaxLen(MAX_NODES)]
    counts: Annotated[tuple[Annotated[int, Bounds(0, MAX_COUNT)], ...], MaxLen(MAX_NODES)]


@message(103)
@dataclass(frozen=True, slots=True)
class ReadTotal:
    """Client request: what is the merged total as this node knows it?"""

    request_id: int


@message(104)
@dataclass(frozen=True, slots=True)
class TotalReply:
    """Reply to :class:`ReadTotal`."""

    request_id: int
    total: int


@dataclass(frozen=True, slots=True)
class TotalChanged:
    """Output: this node's merged view changed (also emitted once after start)."""

    node_id: NodeId
    total: int
    counts: tuple[tuple[NodeId, int], ...]


GossipInput = Increment | ReadTotal | GossipVector | IncrementAck | TotalReply
"""Everything a gossip node may be stepped with (replies are refused, typed)."""
GossipMessage = IncrementAck | GossipVector | TotalReply

__all__ = [
    "MAX_AMOUNT",
    "MAX_COUNT",
    "MAX_NODES",
    "GossipInput",
    "GossipMessage",
    "GossipVector",
    "Increment",
    "IncrementAck",
    "ReadTotal",
    "TotalChanged",
    "TotalReply",
]
