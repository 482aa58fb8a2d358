"""Longest-prefix-match routing and the path MTU (taken from the outgoing interface)."""

from __future__ import annotations

from dataclasses import dataclass

from tcpchimney.host.interfaces import Interface


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    network: int  # host bits cleared
    prefix_len: int
    gateway: bytes | None  # None: the destination is on the link
    interface: Interface


def _mask(prefix_len: int) -> int:
    return (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF if prefix_len else 0


class RouteTable:
    def __init__(self) -> None:
        self._routes: list[Route] = []  # sorted by prefix length, longest first
        self._cache: dict[bytes, tuple[Interface, bytes] | None] = {}

    def add(self, network: bytes, prefix_len: int, gateway: bytes | None, interface: Interface) -> Route:
        if not 0 <= prefix_len <= 32:
            raise ValueError(f"bad prefix length {prefix_len}")
        net = int.from_bytes(network, "big") & _mask(prefix_len)
        route = Route(net, prefix_len, gateway, interface)
        self._routes.append(route)
        self._routes.sort(key=lambda r: -r.prefix_len)
        self._cache.clear()
        return route

    def remove_interface(self, interface: Interface) -> None:
        self._routes = [r for r in self._routes if r.interface is not interface]
        self._cache.clear()

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def lookup(self, dst: bytes) -> tuple[Interface, bytes] | None:
        """(outgoing interface, next-hop IP) for ``dst``, or None when there is no route."""
        cache = self._cache
        if dst in cache:
            return cache[dst]
        value = int.from_bytes(dst, "big")
        result: tuple[Interface, bytes] | None = None
        for r in self._routes:
            if value & _mask(r.prefix_len) == r.network:
                result = (r.interface, r.gateway if r.gateway is not None else dst)
                break
        if len(cache) > 4096:
            cache.clear()
        cache[dst] = result
        return result

    def path_mtu(self, dst: bytes) -> int | None:
        hit = self.lookup(dst)
        return None if hit is None else hit[0].mtu
