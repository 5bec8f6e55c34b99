"""The mesh of link proxies between drill nodes, and partitions expressed over it.

For nodes ``1..n`` with real peer listen addresses ``L[j]``, the proxy ``P[i][j]`` (i != j)
listens on a fresh loopback port and forwards to ``L[j]``; node ``i`` is told that peer ``j``
lives at ``P[i][j]``. A connection that ``i`` opens to ``j`` therefore carries ``i -> j`` bytes
in ``P[i][j]``'s forward direction and ``j -> i`` bytes in its backward direction; a connection
``j`` opens to ``i`` carries them the other way round in ``P[j][i]``. Cutting the *directed*
link ``src -> dst`` sets both of those directions, so no byte from ``src`` reaches ``dst`` on
either connection, while ``dst -> src`` may still flow (a one-way partition).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from stalwart.drill._errors import DrillConfigError
from stalwart.drill._proxy import Direction, LinkProxy, Mode


class ProxyMesh:
    """All ``n * (n - 1)`` directed link proxies of a cluster; ``await start()``, ``await close()``."""

    def __init__(self, listen: Mapping[int, tuple[str, int]]) -> None:
        if len(listen) < 2:
            raise DrillConfigError("a mesh needs at least two nodes")
        self.listen = dict(listen)
        self.proxies: dict[tuple[int, int], LinkProxy] = {
            (i, j): LinkProxy(*listen[j]) for i in listen for j in listen if i != j
        }

    @property
    def node_ids(self) -> list[int]:
        return sorted(self.listen)

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()

    def peers_arg(self, node: int) -> str:
        """The ``--peers`` value for ``node``: itself at its real address, others via proxies."""
        parts = []
        for j in self.node_ids:
            if j == node:
                host, port = self.listen[j]
                parts.append(f"{j}={host}:{port}")
            else:
                parts.append(f"{j}={self.proxies[(node, j)].address}")
        return ",".join(parts)

    def set_link(self, src: int, dst: int, mode: Mode, delay_ms: int = 0) -> None:
        """What happens to bytes that ``src`` sends to ``dst`` (on either connection)."""
        if src == dst or (src, dst) not in self.proxies:
            raise DrillConfigError(f"no link {src} -> {dst}")
        self.proxies[(src, dst)].set_mode(Direction.FORWARD, mode, delay_ms)
        self.proxies[(dst, src)].set_mode(Direction.BACKWARD, mode, delay_ms)

    def cut(self, src: int, dst: int) -> None:
        self.set_link(src, dst, Mode.DROP)

    def partition(self, groups: Sequence[Iterable[int]]) -> list[tuple[int, int]]:
        """Cut every link between different groups, both ways; returns the cut directed links."""
        sets = [set(g) for g in groups]
        member_of = {n: k for k, g in enumerate(sets) for n in g}
        if sorted(member_of) != self.node_ids or sum(len(g) for g in sets) != len(member_of):
            raise DrillConfigError(f"groups {groups} do not split nodes {self.node_ids} exactly")
        cut = [(a, b) for (a, b) in self.proxies if member_of[a] != member_of[b]]
        for a, b in cut:
            self.cut(a, b)
        return cut

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def is_healed(self) -> bool:
        return all(p.mode(d) is Mode.PASS for p in self.proxies.values() for d in Direction)

    def reset_node(self, node: int) -> None:
        """Close every proxied connection to or from ``node`` (after it was killed)."""
        for (a, b), proxy in self.proxies.items():
            if node in (a, b):
                proxy.reset_connections()
