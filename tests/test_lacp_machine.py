"""LACP state machines driven through a tiny virtual-time loop: two systems, one or two links between them."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import pytest

from tcpchimney.team.lacp import (
    DistributingChanged,
    LacpAggregator,
    LacpEvent,
    LacpPort,
    MuxState,
    PartnerLost,
    PartnerSynced,
    RxState,
)
from tcpchimney.team.lacpdu import LacpDu, LacpState, decode_lacp_frame, encode_lacp_frame

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
MAC_C = bytes.fromhex("02000000000c")
DELAY = 0.001  # one-way wire latency
E = TypeVar("E")


@dataclass
class Link:
    a: LacpPort
    b: LacpPort
    a_to_b: bool = True  # deliver PDUs in this direction
    b_to_a: bool = True
    mutate_b_to_a: Callable[[LacpDu], LacpDu] | None = None
    last_rx: dict[int, float] = field(default_factory=dict)  # id(port) -> time of the last PDU it received
    sent: dict[int, list[float]] = field(default_factory=dict)  # id(port) -> send times


class Lab:
    """Ports exchanging LACPDUs (really encoded and decoded) over links with a fixed delay, in virtual time."""

    def __init__(self, links: list[Link]) -> None:
        self.links = links
        self.now = 0.0
        self.events: list[tuple[LacpPort, LacpEvent]] = []
        self._queue: list[tuple[float, int, LacpPort, bytes, Link]] = []
        self._seq = itertools.count()

    @property
    def ports(self) -> list[LacpPort]:
        return [p for link in self.links for p in (link.a, link.b)]

    def carrier(self, link: Link, up: bool) -> None:
        """Cut or restore a link: both ends see the carrier change now."""
        link.a.set_carrier(up, self.now)
        link.b.set_carrier(up, self.now)
        self._after_inputs()

    def _after_inputs(self) -> None:
        for link in self.links:
            for src, dst, allowed in ((link.a, link.b, link.a_to_b), (link.b, link.a, link.b_to_a)):
                for pdu in src.pdus_to_send(self.now):
                    link.sent.setdefault(id(src), []).append(self.now)
                    if not allowed:
                        continue
                    if src is link.b and link.mutate_b_to_a is not None:
                        pdu = link.mutate_b_to_a(pdu)
                    frame = encode_lacp_frame(pdu, src.system_mac)
                    heapq.heappush(self._queue, (self.now + DELAY, next(self._seq), dst, frame, link))
        for port in self.ports:
            self.events.extend((port, e) for e in port.pop_events())

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> None:
        self._after_inputs()
        for _ in range(200_000):  # bounded: a 100 s run at fast rate is a few thousand steps
            if stop is not None and stop():
                return
            times = [t for t in (p.next_timer() for p in self.ports) if t is not None]
            if self._queue:
                times.append(self._queue[0][0])
            t = min(times, default=None)
            if t is None or t > t_end:
                self.now = t_end
                return
            self.now = max(self.now, t)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, dst, frame, link = heapq.heappop(self._queue)
                _, pdu = decode_lacp_frame(frame)
                link.last_rx[id(dst)] = self.now
                dst.handle_lacpdu(pdu, self.now)
            for port in self.ports:
                nt = port.next_timer()
                if nt is not None and nt <= self.now:
                    port.handle_timer(self.now)
            self._after_inputs()
        raise AssertionError("virtual-time loop did not settle")

    def events_of(self, port: LacpPort, kind: type[E]) -> list[E]:
        return [e for p, e in self.events if p is port and isinstance(e, kind)]

    def all_events(self, port: LacpPort) -> list[LacpEvent]:
        return [e for p, e in self.events if p is port]


def _pair(fast_a: bool = True, fast_b: bool = True, **kw: bool) -> tuple[Lab, Link]:
    a = LacpPort(MAC_A, 1, 10, fast=fast_a, active=kw.get("active_a", True))
    b = LacpPort(MAC_B, 7, 20, fast=fast_b, active=kw.get("active_b", True))
    link = Link(a, b)
    lab = Lab([link])
    lab.carrier(link, True)
    return lab, link


def _both_distributing(link: Link) -> Callable[[], bool]:
    return lambda: link.a.distributing and link.b.distributing


def _converge(lab: Lab, link: Link, within: float = 10.0) -> float:
    lab.run_until(lab.now + within, _both_distributing(link))
    assert link.a.distributing and link.b.distributing, (link.a, link.b)
    return lab.now


def _sent_between(link: Link, port: LacpPort, t0: float, t1: float) -> int:
    return sum(1 for t in link.sent.get(id(port), []) if t0 <= t < t1)


def test_two_ports_reach_collecting_distributing() -> None:
    lab, link = _pair()
    _converge(lab, link)
    a, b = link.a, link.b
    for port, other in ((a, b), (b, a)):
        assert port.mux_state is MuxState.COLLECTING_DISTRIBUTING
        assert port.rx_state is RxState.CURRENT
        assert port.selected and port.in_sync and port.collecting and port.distributing
        assert port.partner.system == other.system_mac
        assert port.partner.port == other.port_number
        assert port.partner.key == other.key
        assert port.partner.has(LacpState.SYNCHRONIZATION | LacpState.COLLECTING | LacpState.DISTRIBUTING)
        assert port.actor.has(LacpState.SYNCHRONIZATION | LacpState.COLLECTING | LacpState.DISTRIBUTING)
        kinds = [type(e) for e in lab.all_events(port)]
        assert kinds == [PartnerSynced, DistributingChanged]
        assert [e.distributing for e in lab.events_of(port, DistributingChanged)] == [True]
    # Steady state with fast timers on both sides: one PDU per second each way.
    t0 = lab.now + 1.0
    lab.run_until(t0 + 10.0)
    assert 9 <= _sent_between(link, a, t0, t0 + 10.0) <= 11
    assert 9 <= _sent_between(link, b, t0, t0 + 10.0) <= 11
    assert a.distributing and b.distributing
    assert len(lab.all_events(a)) == 2  # nothing flapped


def test_slow_timers_transmit_every_30_seconds() -> None:
    lab, link = _pair(fast_a=False, fast_b=False)
    _converge(lab, link)
    t0 = lab.now + 1.0
    lab.run_until(t0 + 300.0)
    assert 9 <= _sent_between(link, link.a, t0, t0 + 300.0) <= 11
    assert link.a.distributing and link.b.distributing


@pytest.mark.parametrize(("fast", "timeout"), [(True, 3.0), (False, 90.0)])
def test_partner_expires_after_three_intervals(fast: bool, timeout: float) -> None:
    lab, link = _pair(fast_a=fast, fast_b=fast)
    _converge(lab, link)
    lab.run_until(lab.now + 40.0)  # steady state, including at least one slow period
    link.b_to_a = False  # b's PDUs stop reaching a (carrier stays up)
    stopped = lab.now
    last_rx = link.last_rx[id(link.a)]
    lab.run_until(stopped + timeout + 5.0, lambda: not link.a.distributing)
    lost = lab.events_of(link.a, PartnerLost)
    assert lost == [PartnerLost(link.a.port_number, last_rx + timeout, "expired")]
    assert link.a.rx_state is RxState.EXPIRED
    assert link.a.actor.has(LacpState.EXPIRED)
    assert lab.events_of(link.a, DistributingChanged)[-1].distributing is False


def test_expired_then_defaulted_then_rejoin() -> None:
    lab, link = _pair()
    _converge(lab, link)
    link.b_to_a = False
    lab.run_until(lab.now + 10.0)
    a, b = link.a, link.b
    assert a.rx_state is RxState.DEFAULTED
    assert not a.selected and a.mux_state is MuxState.DETACHED
    assert a.partner.system == bytes(6)  # administrative default partner
    assert a.actor.has(LacpState.DEFAULTED)
    # b still hears a, whose PDUs now carry its Expired bit: b stops using the link as soon as a expires.
    assert [e.reason for e in lab.events_of(b, PartnerLost)] == ["sync-cleared"]
    a_expired = lab.events_of(a, PartnerLost)[0].at
    assert lab.events_of(b, PartnerLost)[0].at == pytest.approx(a_expired + DELAY)
    assert not b.distributing
    # a keeps probing at the fast rate while defaulted.
    assert 4 <= _sent_between(link, a, lab.now - 5.0, lab.now) <= 6
    link.b_to_a = True
    lab.run_until(lab.now + 10.0, _both_distributing(link))
    assert a.distributing and b.distributing
    assert [type(e) for e in lab.all_events(a)].count(PartnerSynced) == 2


def test_mixed_rates_follow_the_partners_timeout_bit() -> None:
    lab, link = _pair(fast_a=True, fast_b=False)
    _converge(lab, link)
    t0 = lab.now + 1.0
    lab.run_until(t0 + 60.0)
    # a asked for fast PDUs, b asked for slow ones.
    assert 58 <= _sent_between(link, link.b, t0, t0 + 60.0) <= 62
    assert 1 <= _sent_between(link, link.a, t0, t0 + 60.0) <= 3
    # Each side times out after three of its own requested intervals.
    link.a_to_b = link.b_to_a = False
    rx_a, rx_b = link.last_rx[id(link.a)], link.last_rx[id(link.b)]
    lab.run_until(lab.now + 100.0)
    assert lab.events_of(link.a, PartnerLost)[0] == PartnerLost(1, rx_a + 3.0, "expired")
    assert lab.events_of(link.b, PartnerLost)[0] == PartnerLost(7, rx_b + 90.0, "expired")


def test_carrier_down_is_immediate_and_rejoins() -> None:
    lab, link = _pair()
    _converge(lab, link)
    lab.run_until(lab.now + 2.5)
    cut = lab.now
    lab.carrier(link, False)
    for port in (link.a, link.b):
        assert lab.events_of(port, PartnerLost) == [PartnerLost(port.port_number, cut, "carrier")]
        assert lab.events_of(port, DistributingChanged)[-1] == DistributingChanged(port.port_number, cut, False)
        assert port.rx_state is RxState.PORT_DISABLED and port.mux_state is MuxState.DETACHED
        assert port.next_timer() is None  # nothing runs while the port is disabled
    assert link.a.pdus_to_send(cut) == []
    lab.run_until(cut + 30.0)
    assert _sent_between(link, link.a, cut, cut + 30.0) == 0
    lab.carrier(link, True)
    back = lab.now
    _converge(lab, link, within=5.0)
    for port in (link.a, link.b):
        assert [type(e) for e in lab.all_events(port)].count(PartnerSynced) == 2
        assert lab.all_events(port)[-1] == DistributingChanged(port.port_number, lab.all_events(port)[-1].at, True)
    assert lab.now - back < 1.0  # rejoined on the PDUs sent at carrier-up, not after a periodic interval


def test_one_sided_carrier_loss_reaches_the_other_side() -> None:
    lab, link = _pair()
    _converge(lab, link)
    link.a.set_carrier(False, lab.now)  # only a sees it (e.g. a unidirectional fault)
    lab.run_until(lab.now + 10.0)
    assert lab.events_of(link.a, PartnerLost)[0].reason == "carrier"
    assert lab.events_of(link.b, PartnerLost)[0].reason == "expired"
    assert not link.b.distributing


def test_partner_clearing_sync_is_reported() -> None:
    lab, link = _pair()
    _converge(lab, link)

    def clear_sync(pdu: LacpDu) -> LacpDu:
        return replace(pdu, actor=pdu.actor.with_state(pdu.actor.state & ~LacpState.SYNCHRONIZATION))

    link.mutate_b_to_a = clear_sync
    lab.run_until(lab.now + 3.0, lambda: not link.a.distributing)
    assert [e.reason for e in lab.events_of(link.a, PartnerLost)] == ["sync-cleared"]
    assert link.a.mux_state is MuxState.ATTACHED  # still attached, but not collecting/distributing
    assert link.a.rx_state is RxState.CURRENT
    link.mutate_b_to_a = None
    lab.run_until(lab.now + 5.0, _both_distributing(link))
    assert link.a.distributing
    assert [type(e) for e in lab.all_events(link.a)][-2:] == [PartnerSynced, DistributingChanged]


def test_partner_advertising_expired_is_not_in_sync() -> None:
    lab, link = _pair()
    _converge(lab, link)

    def expired(pdu: LacpDu) -> LacpDu:  # e.g. Open vSwitch, which keeps Sync set while it has expired us
        return replace(pdu, actor=pdu.actor.with_state(pdu.actor.state | LacpState.EXPIRED))

    link.mutate_b_to_a = expired
    lab.run_until(lab.now + 3.0, lambda: not link.a.distributing)
    assert [e.reason for e in lab.events_of(link.a, PartnerLost)] == ["sync-cleared"]
    assert link.a.rx_state is RxState.CURRENT
    link.mutate_b_to_a = None
    lab.run_until(lab.now + 5.0, _both_distributing(link))
    assert link.a.distributing


def test_passive_ports() -> None:
    lab, link = _pair(active_a=False, active_b=False)
    lab.run_until(20.0)
    assert link.sent == {}  # two passive ends never talk
    assert not link.a.distributing
    lab, link = _pair(active_a=False, active_b=True)
    _converge(lab, link)
    assert not link.a.actor.has(LacpState.ACTIVITY)


def test_rate_limit_three_per_second() -> None:
    a = LacpPort(MAC_A, 1, 10)
    a.set_carrier(True, 0.0)
    stale = LacpDu(
        actor=LacpPort(MAC_B, 2, 20).actor.with_state(LacpState.ACTIVITY | LacpState.AGGREGATION),
        partner=LacpPort(MAC_C, 9, 9).actor,  # a wrong view of a: every PDU makes a owe an answer
    )
    sent: list[float] = []
    for i in range(10):
        now = i * 0.01
        a.handle_lacpdu(stale, now)
        sent.extend(now for _ in a.pdus_to_send(now))
    assert sent == [0.0, 0.01, 0.02]
    assert a.stats.tx_rate_limited == 7
    assert a.pdus_to_send(0.5) == []
    # Nothing more leaves before the first of the three has aged out of the one-second window.
    resent = None
    for _ in range(10):
        t = a.next_timer()
        assert t is not None
        a.handle_timer(t)
        if a.pdus_to_send(t):
            resent = t
            break
    assert resent == pytest.approx(1.0)


def test_own_pdus_are_ignored() -> None:
    a = LacpPort(MAC_A, 1, 10)
    a.set_carrier(True, 0.0)
    (pdu,) = a.pdus_to_send(0.0)
    a.handle_lacpdu(pdu, 0.1)
    assert a.stats.rx_ignored == 1 and a.rx_state is RxState.EXPIRED


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        LacpPort(b"\x00" * 5, 1, 1)
    with pytest.raises(ValueError):
        LacpPort(MAC_A, 0, 1)
    with pytest.raises(ValueError):
        LacpPort(MAC_A, 1, 0x10000)


# -- aggregator ----------------------------------------------------------------------------------------------------
def _teams(far_systems: tuple[bytes, bytes] = (MAC_B, MAC_B)) -> tuple[Lab, LacpAggregator, list[Link]]:
    ours = LacpAggregator([LacpPort(MAC_A, 1, 10), LacpPort(MAC_A, 2, 10)])
    far = [LacpPort(far_systems[0], 11, 20), LacpPort(far_systems[1], 12, 20)]
    LacpAggregator([far[0]] if far_systems[0] != far_systems[1] else far)
    if far_systems[0] != far_systems[1]:
        LacpAggregator([far[1]])
    links = [Link(ours.ports[0], far[0]), Link(ours.ports[1], far[1])]
    lab = Lab(links)
    for link in links:
        lab.carrier(link, True)
    return lab, ours, links


def test_aggregator_uses_both_members_and_fails_over() -> None:
    lab, team, links = _teams()
    lab.run_until(10.0, lambda: len(team.distributing_ports()) == 2)
    assert [p.port_number for p in team.distributing_ports()] == [1, 2]
    assert team.partner_id == (32768, MAC_B, 20)
    assert all(link.b.distributing for link in links)

    def team_events_since(mark: int) -> list[tuple[type, int]]:
        return [(type(e), e.port) for p, e in lab.events[mark:] if p in team.ports]

    mark = len(lab.events)
    links[0].b_to_a = False
    lab.run_until(lab.now + 5.0, lambda: len(team.distributing_ports()) == 1)
    assert [p.port_number for p in team.distributing_ports()] == [2]
    assert team_events_since(mark) == [(PartnerLost, 1), (DistributingChanged, 1)]
    mark = len(lab.events)
    links[0].b_to_a = True
    lab.run_until(lab.now + 5.0, lambda: len(team.distributing_ports()) == 2)
    assert team_events_since(mark) == [(PartnerSynced, 1), (DistributingChanged, 1)]


def test_aggregator_pop_events_merges_ports_in_time_order() -> None:
    team = LacpAggregator([LacpPort(MAC_A, 1, 10), LacpPort(MAC_A, 2, 10)])
    far = LacpAggregator([LacpPort(MAC_B, 1, 20), LacpPort(MAC_B, 2, 20)])
    # Drive the two teams by hand (no Lab, so the aggregator's own event queue is used).
    now = 0.0
    for p in (*team.ports, *far.ports):
        p.set_carrier(True, now)
    for _ in range(200):
        for src, dst in ((team, far), (far, team)):
            for port, pdu in src.pdus_to_send(now):
                dst.port(port.port_number).handle_lacpdu(pdu, now)
        if len(team.distributing_ports()) == 2 and len(far.distributing_ports()) == 2:
            break
        nt = min(t for t in (team.next_timer(), far.next_timer()) if t is not None)
        now = max(now, nt)
        team.handle_timer(now)
        far.handle_timer(now)
    assert len(team.distributing_ports()) == 2
    events = team.pop_events()
    assert sorted((type(e).__name__, e.port) for e in events) == [
        ("DistributingChanged", 1),
        ("DistributingChanged", 2),
        ("PartnerSynced", 1),
        ("PartnerSynced", 2),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert team.pop_events() == []
    assert team.next_timer() is not None


def test_aggregator_selects_only_the_latched_partner() -> None:
    lab, team, links = _teams(far_systems=(MAC_B, MAC_C))  # member 2 is cabled to another system
    lab.run_until(10.0)
    assert team.partner_id == (32768, MAC_B, 20)  # port 1 ranks first
    assert [p.port_number for p in team.distributing_ports()] == [1]
    assert not team.port(2).selected and team.port(2).mux_state is MuxState.DETACHED
    assert not links[1].b.distributing
    # The latched partner disappears: the aggregator moves to the other one.
    lab.carrier(links[0], False)
    lab.run_until(lab.now + 5.0, lambda: bool(team.distributing_ports()))
    assert team.partner_id == (32768, MAC_C, 20)
    assert [p.port_number for p in team.distributing_ports()] == [2]


def test_aggregator_rejects_mismatched_ports() -> None:
    team = LacpAggregator([LacpPort(MAC_A, 1, 10)])
    with pytest.raises(ValueError):
        team.add_port(LacpPort(MAC_B, 2, 10))
    with pytest.raises(ValueError):
        team.add_port(LacpPort(MAC_A, 2, 11))
    with pytest.raises(ValueError):
        team.add_port(LacpPort(MAC_A, 1, 10))
    with pytest.raises(ValueError):
        team.add_port(team.ports[0])
