"""Team members: their health (carrier + LACP), the LACP driver shared by the team and the simulated partner,
and the flow hash that spreads traffic and offloaded connections over the active members.

A member is *active* (carries traffic, receives new offloads) iff its carrier is up, it is not failed by the
control API, and, with LACP, its port is distributing (the partner has it in sync and collecting).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

from tcpchimney.clock import Scheduler, TimerHandle
from tcpchimney.team.lacp import LacpAggregator, LacpEvent, LacpPort, PartnerLost
from tcpchimney.team.lacpdu import decode_lacp_frame, encode_lacp_frame

_ETH_IPV4 = b"\x08\x00"
_TCP = 6
_UDP = 17


def flow_key(frame: bytes) -> int | None:
    """A symmetric 32-bit key of an IPv4 frame's 4-tuple (the same both ways); ``None`` for non-IPv4 frames.

    Read from fixed offsets without a full parse (the software path calls it per frame): CRC-32 of the two
    (address, port) endpoints in sorted order; other IP protocols hash the addresses only."""
    if len(frame) < 34 or frame[12:14] != _ETH_IPV4:
        return None
    ihl = (frame[14] & 0x0F) * 4
    off = 14 + ihl
    if frame[23] in (_TCP, _UDP) and len(frame) >= off + 4:
        end_a = frame[26:30] + frame[off : off + 2]
        end_b = frame[30:34] + frame[off + 2 : off + 4]
    else:
        end_a, end_b = frame[26:30], frame[30:34]
    return _fmix(zlib.crc32(end_a + end_b if end_a <= end_b else end_b + end_a))


def _fmix(h: int) -> int:
    """MurmurHash3's 32-bit finalizer: CRC-32 is linear, so its low bits alone can ignore the bits that vary
    (e.g. only the low bits of sequential ephemeral ports); the finalizer makes every output bit depend on all."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def tuple_key(src_ip: bytes, dst_ip: bytes, src_port: int, dst_port: int) -> int:
    """``flow_key`` of a TCP/UDP 4-tuple given as values (used to place an offloaded connection)."""
    end_a = bytes(src_ip) + src_port.to_bytes(2, "big")
    end_b = bytes(dst_ip) + dst_port.to_bytes(2, "big")
    return _fmix(zlib.crc32(end_a + end_b if end_a <= end_b else end_b + end_a))


def pick(key: int, count: int) -> int:
    """Index in ``range(count)`` for a flow key (from its high bits)."""
    return (key * count) >> 32 if count > 1 else 0


class LacpRunner:
    """Drives a sans-IO ``LacpAggregator`` on a scheduler: timers, PDU transmission, events.

    ``send(index, frame)`` transmits a LACP frame on port ``index`` (0-based, port number = index + 1);
    ``on_events(events)`` is called after every input with the edge-triggered LACP events.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        system_mac: bytes,
        n_ports: int,
        send: Callable[[int, bytes], None],
        on_events: Callable[[list[LacpEvent]], None],
        *,
        key: int = 1,
        system_priority: int = 32768,
        fast: bool = True,
    ) -> None:
        self._sched = scheduler
        self.system_mac = system_mac
        self._send = send
        self._on_events = on_events
        self.ports = [
            LacpPort(system_mac, i + 1, key, system_priority=system_priority, fast=fast) for i in range(n_ports)
        ]
        self.aggregator = LacpAggregator(self.ports)
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self.pdus_in = 0
        self.pdus_out = 0

    def set_carrier(self, index: int, up: bool) -> None:
        self.ports[index].set_carrier(up, self._sched.now())
        self.poll()

    def handle_frame(self, index: int, frame: bytes) -> None:
        try:
            _src, pdu = decode_lacp_frame(frame)
        except Exception:  # a malformed or non-LACP slow-protocols frame (e.g. Marker): ignored
            return
        self.pdus_in += 1
        self.ports[index].handle_lacpdu(pdu, self._sched.now())
        self.poll()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.aggregator.handle_timer(self._sched.now())
        self.poll()

    def poll(self) -> None:
        """Send the PDUs owed, re-arm the timer and report events (after any input or state change)."""
        now = self._sched.now()
        for port, pdu in self.aggregator.pdus_to_send(now):
            self.pdus_out += 1
            self._send(port.port_number - 1, encode_lacp_frame(pdu, self.system_mac))
        events = self.aggregator.pop_events()
        due = self.aggregator.next_timer()
        if due != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._timer_at = due
            if due is not None:
                self._timer = self._sched.call_at(max(due, now), self._on_timer)
        if events:
            self._on_events(events)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None


class Member:
    """One member NIC of a team and what the team knows about it."""

    __slots__ = (
        "active",
        "admin_down",
        "carrier",
        "connections",
        "failures",
        "hw_failed",
        "index",
        "lacp",
        "last_loss",
        "nic",
        "nic_paused",
        "target_id",
    )

    def __init__(self, index: int, nic: Any, lacp: LacpPort | None, carrier: bool) -> None:
        self.index = index
        self.nic = nic
        self.lacp = lacp
        self.target_id = -1  # in the team's lower chimney
        self.carrier = carrier
        self.admin_down = False  # fail_member(i) until restore_member(i)
        self.hw_failed = False
        self.nic_paused = False  # the NIC itself indicated OFFLOAD_PAUSE / UPLOAD_ALL (until its RESUME)
        self.active = False  # as last acted on by the team (healthy() is the current verdict)
        self.connections = 0  # TCP connections the team placed on it (offloading/offloaded/terminating)
        self.failures = 0
        self.last_loss: str | None = None

    def healthy(self) -> bool:
        if not self.carrier or self.admin_down or self.hw_failed:
            return False
        return self.lacp is None or self.lacp.distributing

    def collecting(self) -> bool:
        """Frames received on it may go up (802.1AX: a port that is not collecting discards frames)."""
        return self.carrier and (self.lacp is None or self.lacp.collecting)

    def state(self) -> dict[str, Any]:
        port = self.lacp
        out: dict[str, Any] = {
            "index": self.index,
            "name": getattr(self.nic, "name", f"member{self.index}"),
            "carrier": self.carrier,
            "active": self.active,
            "admin_down": self.admin_down,
            "hw_failed": self.hw_failed,
            "connections": self.connections,
            "failures": self.failures,
            "last_loss": self.last_loss,
        }
        if port is not None:
            partner = port.partner
            out["lacp"] = {
                "selected": port.selected,
                "in_sync": port.in_sync,
                "collecting": port.collecting,
                "distributing": port.distributing,
                "rx_state": port.rx_state.value,
                "mux_state": port.mux_state.value,
                "partner": {"system": partner.system.hex(":"), "key": partner.key, "port": partner.port},
            }
        else:
            out["lacp"] = None
        return out


def loss_reason(events: Sequence[LacpEvent], port_number: int) -> str | None:
    """The reason of the last ``PartnerLost`` event for ``port_number`` among ``events``."""
    reason = None
    for e in events:
        if isinstance(e, PartnerLost) and e.port == port_number:
            reason = e.reason
    return reason
