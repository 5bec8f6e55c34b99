"""A small pure demo protocol for the runtime: a gossip counter (a grow-only CRDT counter).

Each node counts client increments durably and gossips its vector of counts to its peers on
ticks; every node converges to the same total. Messages use wire tags 100-199.
"""

from stalwart.gossip._counter import (
    COUNT_KEY,
    GossipCounter,
    GossipError,
    GossipStateError,
    decode_count,
    encode_count,
)
from stalwart.gossip._messages import (
    MAX_AMOUNT,
    MAX_COUNT,
    MAX_NODES,
    GossipInput,
    GossipMessage,
    GossipVector,
    Increment,
    IncrementAck,
    ReadTotal,
    TotalChanged,
    TotalReply,
)

INPUT_TYPES = (Increment, ReadTotal, GossipVector, IncrementAck, TotalReply)
"""The message classes a gossip node accepts from the wire (for a host's inbound filter)."""

__all__ = [
    "COUNT_KEY",
    "INPUT_TYPES",
    "MAX_AMOUNT",
    "MAX_COUNT",
    "MAX_NODES",
    "GossipCounter",
    "GossipError",
    "GossipInput",
    "GossipMessage",
    "GossipStateError",
    "GossipVector",
    "Increment",
    "IncrementAck",
    "ReadTotal",
    "TotalChanged",
    "TotalReply",
    "decode_count",
    "encode_count",
]
