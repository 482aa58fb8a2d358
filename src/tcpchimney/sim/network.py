"""A simulated Ethernet segment: a learning switch, and a small container that owns the clock and the randomness."""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Literal

from tcpchimney.clock import VirtualClock
from tcpchimney.links.base import LinkPort
from tcpchimney.sim.link import CaptureFn, Impairments, SimLink


class SimSwitch:
    """A learning Ethernet bridge with no forwarding delay (the attached links carry the delay).

    Broadcast, multicast and unknown-unicast frames are flooded to every other port that is up; a known unicast
    destination goes out of the one port it was learned on, never back out of the ingress port.  Entries learned on a
    port are forgotten when that port's carrier goes down, and after ``ageing_time`` seconds without traffic.
    """

    def __init__(self, clock: VirtualClock, name: str = "switch", ageing_time: float = 300.0) -> None:
        self.name = name
        self._clock = clock
        self._ports: list[LinkPort] = []
        self._fdb: dict[bytes, tuple[int, float]] = {}  # MAC -> (port index, time last seen)
        self.ageing_time = ageing_time
        self.forwarded = 0
        self.flooded = 0
        self.filtered = 0

    @property
    def ports(self) -> tuple[LinkPort, ...]:
        return tuple(self._ports)

    def attach(self, port: LinkPort) -> int:
        """Plug a link end into the switch; returns the switch port number.  The switch becomes its receiver."""
        index = len(self._ports)
        self._ports.append(port)
        port.set_receiver(lambda frame: self._on_frame(index, frame))
        port.set_link_listener(lambda up: self._on_link(index, up))
        return index

    def lookup(self, mac: bytes) -> int | None:
        """The port a MAC address was learned on, if any (ignores ageing)."""
        entry = self._fdb.get(mac)
        return None if entry is None else entry[0]

    def flush(self) -> None:
        self._fdb.clear()

    def _on_frame(self, ingress: int, frame: bytes) -> None:
        if len(frame) < 14:
            self.filtered += 1
            return
        now = self._clock._now
        fdb = self._fdb
        src = frame[6:12]
        if not src[0] & 1:  # never learn a group address
            fdb[src] = (ingress, now)
        dst = frame[0:6]
        if not dst[0] & 1:
            entry = fdb.get(dst)
            if entry is not None:
                port, seen = entry
                if now - seen <= self.ageing_time:
                    if port == ingress:
                        self.filtered += 1
                    else:
                        self.forwarded += 1
                        self._ports[port].transmit(frame)
                    return
                del fdb[dst]
        self.flooded += 1
        for i, p in enumerate(self._ports):
            if i != ingress and p.up:
                p.transmit(frame)

    def _on_link(self, index: int, up: bool) -> None:
        if not up:
            for mac in [m for m, (p, _) in self._fdb.items() if p == index]:
                del self._fdb[mac]

    def __repr__(self) -> str:
        return f"SimSwitch({self.name!r}, ports={len(self._ports)})"


class SimNetwork:
    """Owns a ``VirtualClock`` and a seeded ``random.Random``; builds links and switches on them.

    Each link gets its own ``Random`` seeded from the network's generator, so the loss pattern on one link does not
    shift when traffic on another link changes (while the whole run stays a function of ``seed``).
    """

    def __init__(self, seed: int, start: float = 0.0) -> None:
        self.seed = seed
        self.clock = VirtualClock(start)
        self.rng = Random(seed)
        self.links: list[SimLink] = []
        self.switches: list[SimSwitch] = []

    def now(self) -> float:
        return self.clock.now()

    def link(
        self,
        impairments: Impairments | None = None,
        impairments_ba: Impairments | None = None,
        name: str | None = None,
        capture: CaptureFn | None = None,
        capture_at: Literal["tx", "rx"] = "tx",
    ) -> SimLink:
        """A new link; ``impairments`` (default ``Impairments()``) applies a->b and, unless given, b->a too."""
        link = SimLink(
            self.clock,
            Random(self.rng.getrandbits(64)),
            impairments if impairments is not None else Impairments(),
            impairments_ba,
            name=name if name is not None else f"link{len(self.links)}",
            capture=capture,
            capture_at=capture_at,
        )
        self.links.append(link)
        return link

    def switch(self, name: str | None = None, ageing_time: float = 300.0) -> SimSwitch:
        sw = SimSwitch(self.clock, name if name is not None else f"switch{len(self.switches)}", ageing_time)
        self.switches.append(sw)
        return sw

    def run_until(self, t: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to virtual time ``t`` (or until ``stop()`` becomes true after an event)."""
        self.clock.run_until(t, stop)

    def run_until_idle(self, limit: float = float("inf")) -> None:
        """Run until nothing is scheduled or the next event would be after ``limit``."""
        self.clock.run_until_idle(limit)
