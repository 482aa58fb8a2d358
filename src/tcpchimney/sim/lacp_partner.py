"""A simulated LACP partner switch: its aggregated ports run ``LacpPort`` and it bridges frames between the
aggregation and one peer port.

Frames from the peer go out on one distributing aggregated port, chosen by the same symmetric 4-tuple hash the team
uses (``team.members.flow_key`` / ``pick``), so a connection's frames normally arrive on the member that runs it
while both sides agree on the set of active links; non-IP frames (ARP, broadcast) go out on the first distributing
port.  Frames from an aggregated port go to the peer only while that port is collecting; LACPDUs are consumed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from tcpchimney.clock import Scheduler
from tcpchimney.links.base import LinkPort
from tcpchimney.team.lacp import LacpEvent
from tcpchimney.team.lacpdu import is_slow_protocols_frame
from tcpchimney.team.members import LacpRunner, flow_key, pick


class SimLacpPartner:
    """An LACP-speaking switch for the simulator (one aggregation group + one plain peer port)."""

    def __init__(
        self,
        scheduler: Scheduler,
        agg_ports: Sequence[LinkPort],
        peer_port: LinkPort,
        *,
        system_mac: bytes = bytes.fromhex("020000aa0001"),
        key: int = 7,
        name: str = "lacp-switch",
        lacp: bool = True,
    ) -> None:
        self.name = name
        self._agg = list(agg_ports)
        self._peer = peer_port
        self.events: list[LacpEvent] = []
        self.to_peer = 0
        self.from_peer = 0
        self.dropped_not_collecting = 0
        self.dropped_no_port = 0
        self._runner: LacpRunner | None = None
        if lacp:
            self._runner = LacpRunner(scheduler, system_mac, len(self._agg), self._send_pdu, self._on_events, key=key)
        for i, port in enumerate(self._agg):
            port.set_receiver(functools.partial(self._from_agg, i))
            port.set_link_listener(functools.partial(self._on_link, i))
        peer_port.set_receiver(self._from_peer)
        if self._runner is not None:
            for i, port in enumerate(self._agg):
                if port.up:
                    self._runner.set_carrier(i, True)

    @property
    def runner(self) -> LacpRunner | None:
        return self._runner

    def distributing(self) -> list[int]:
        """Indices of aggregated ports that carry traffic now."""
        if self._runner is None:
            return [i for i, p in enumerate(self._agg) if p.up]
        return [i for i, p in enumerate(self._runner.ports) if p.distributing and self._agg[i].up]

    def set_port_key(self, index: int, key: int) -> None:
        """Re-key one aggregated port (misconfiguration): the team sees a different partner there and takes the
        port out of the aggregation ("partner cleared Sync")."""
        if self._runner is not None:
            port = self._runner.ports[index]
            port.key = key  # announced with the next periodic LACPDU (at most one fast period away)
            self._runner.poll()

    def _send_pdu(self, index: int, frame: bytes) -> None:
        self._agg[index].transmit(frame)

    def _on_events(self, events: list[LacpEvent]) -> None:
        self.events.extend(events)

    def _on_link(self, index: int, up: bool) -> None:
        if self._runner is not None:
            self._runner.set_carrier(index, up)

    def _from_agg(self, index: int, frame: bytes) -> None:
        if is_slow_protocols_frame(frame):
            if self._runner is not None:
                self._runner.handle_frame(index, frame)
            return
        if self._runner is not None and not self._runner.ports[index].collecting:
            self.dropped_not_collecting += 1
            return
        self.to_peer += 1
        self._peer.transmit(frame)

    def _from_peer(self, frame: bytes) -> None:
        ports = self.distributing()
        if not ports:
            self.dropped_no_port += 1
            return
        key = flow_key(frame)
        index = ports[0] if key is None else ports[pick(key, len(ports))]
        self.from_peer += 1
        self._agg[index].transmit(frame)
