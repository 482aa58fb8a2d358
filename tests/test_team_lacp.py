"""LACP in the team world: convergence before distribution, LACPDUs consumed, loss by expiry and by sync."""

from __future__ import annotations

import random
from typing import Any

from tcpchimney.scenario.team_world import PEER_IP, TeamWorld, TeamWorldConfig
from tcpchimney.scenario.workload import TransferSet
from tcpchimney.sim.link import Impairments
from tcpchimney.team.lacpdu import is_slow_protocols_frame
from tcpchimney.team.members import flow_key, pick, tuple_key
from tcpchimney.wire.addr import ip_to_bytes


def test_lacp_converges_before_traffic_is_distributed() -> None:
    w = TeamWorld(TeamWorldConfig(seed=2, members=2))
    seen: list[bytes] = []
    original = w.host.on_receive_frame

    def spy(target_id: int, frame: bytes) -> None:
        seen.append(frame)
        original(target_id, frame)

    w.host.on_receive_frame = spy  # type: ignore[method-assign]
    # before LACP has run nobody carries traffic and the host is offered no offload capacity
    assert w.team.active_members() == []
    caps = w.host.chimney.capabilities(w.team_id)
    assert caps is not None and caps.max_connections == 0
    w.host.ping(PEER_IP)
    assert w.team.stats.frames_dropped_no_member >= 1
    assert w.team.stats.frames_out == 0
    t_converged: list[float] = []
    assert w.converge()
    t_converged.append(w.now)
    states = w.team.member_states()
    assert all(s["lacp"]["distributing"] and s["lacp"]["in_sync"] for s in states)
    assert w.team.stats.frames_out == 0  # nothing was distributed before convergence
    w.run_for(0.01)
    caps = w.host.chimney.capabilities(w.team_id)
    assert caps is not None and caps.max_connections == sum(n.max_connections for n in w.nics)
    ts = TransferSet(w.clock, w.host, w.peer, PEER_IP, random.Random(1))
    for _ in range(10):
        ts.start(50_000, 50_000)
    w.run_for(30, lambda: ts.all_done)
    assert ts.all_done and ts.totals()["mismatched_bytes"] == 0
    assert w.team.stats.lacp_in > 0 and w.team.stats.lacp_out > 0
    assert not any(is_slow_protocols_frame(f) for f in seen)  # LACPDUs never reach the host
    assert w.violations() == []


def _run_with_loss(w: TeamWorld, act: Any, reason: str) -> None:
    assert w.converge()
    w.run_for(0.01)
    ts = TransferSet(w.clock, w.host, w.peer, PEER_IP, random.Random(4))
    for _ in range(12):
        ts.start(400_000, 100_000)
    w.run_for(0.2)
    assert w.team.offloaded_connections() > 0
    t0 = w.now
    act()
    w.run_for(10, lambda: w.team.active_members() == [1])
    assert w.team.active_members() == [1]
    rec = w.team.failovers.records[-1]
    assert rec.reason == reason
    assert rec.t_detect - t0 <= 3.5  # three missed fast PDUs (3 s) at most, plus the PDU phase
    w.run_for(120, lambda: ts.all_done)
    assert ts.all_done
    for t in ts.transfers:
        assert not t.reset and t.mismatched_bytes() == 0
    assert w.violations() == []


def test_partner_expiry_fails_the_member_over() -> None:
    w = TeamWorld(TeamWorldConfig(seed=3, members=2, impairments=Impairments(rate_bps=50e6, queue_bytes=10**6)))
    dead = Impairments(loss=1.0)
    _run_with_loss(w, lambda: w.links[0].set_impairments(dead), "expired")
    assert w.team.member_states()[0]["carrier"]  # carrier stayed up: only LACP noticed


def test_partner_clearing_sync_fails_the_member_over() -> None:
    w = TeamWorld(TeamWorldConfig(seed=4, members=2, impairments=Impairments(rate_bps=50e6, queue_bytes=10**6)))
    _run_with_loss(w, lambda: w.switch.set_port_key(0, 99), "sync-cleared")


def test_flow_hash_is_symmetric_and_matches_the_placement_key() -> None:
    from tcpchimney.wire.frame import build_tcp_frame
    from tcpchimney.wire.tcp import ACK, TcpSegment

    rng = random.Random(5)
    for _ in range(200):
        a, b = ip_to_bytes(f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"), ip_to_bytes("10.0.0.2")
        pa, pb = rng.randrange(1, 65536), rng.randrange(1, 65536)
        seg = TcpSegment(pa, pb, 1, 0, ACK, 1000, b"")
        there = build_tcp_frame(b"\x02" * 6, b"\x04" * 6, a, b, seg)
        back = build_tcp_frame(b"\x04" * 6, b"\x02" * 6, b, a, TcpSegment(pb, pa, 1, 0, ACK, 1000, b""))
        assert flow_key(there) == flow_key(back) == tuple_key(a, b, pa, pb) == tuple_key(b, a, pb, pa)
        assert pick(tuple_key(a, b, pa, pb), 3) in (0, 1, 2)
    assert flow_key(b"\xff" * 60) is None  # not IPv4
