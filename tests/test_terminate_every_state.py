"""The host may terminate an offloaded connection in any TCP state; the NIC complies and no byte is lost.

Each case shapes a transfer so that the offloaded connection passes through one state, watches the NIC, and has the
host terminate the connection the moment the NIC reports that state.  The transfer must still end byte-exact.
"""

from __future__ import annotations

import pytest

from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.scenario.workload import TransferSet
from tcpchimney.scenario.world import PEER_IP, SimWorld, WorldConfig
from tcpchimney.sim.link import Impairments
from tcpchimney.tcp.state import TcpState

POLL = 0.0001  # virtual seconds between looks at the NIC

# state -> (client bytes, server bytes, linger): each side closes once it has written everything and the linger
# (counted from the start) has passed, so the sizes decide who closes first.
SHAPES: dict[TcpState, tuple[int, int, float]] = {
    TcpState.ESTABLISHED: (200_000, 200_000, 0.05),
    TcpState.FIN_WAIT_1: (200_000, 10_000, 0.0),  # host closes while its data is still in flight
    TcpState.FIN_WAIT_2: (1_000, 300_000, 0.0),  # host's FIN acked, peer keeps sending
    TcpState.CLOSE_WAIT: (300_000, 1_000, 0.0),  # peer closes first, host still sending
    TcpState.LAST_ACK: (300_000, 1_000, 0.0),
    TcpState.CLOSING: (0, 0, 0.03),  # both close at the same instant: the FINs cross
}


def run_until_state(state: TcpState, seed: int) -> tuple[list[TcpState], SimWorld, TransferSet]:
    up, down, linger = SHAPES[state]
    world = SimWorld(
        WorldConfig(
            seed=seed,
            impairments=Impairments(delay=0.002, rate_bps=50e6),
            policy=OffloadPolicy(offload_after=0.0, backoff={}),
        )
    )
    ts = TransferSet(world.clock, world.host, world.peer, PEER_IP, world.rng)
    ts.start(up, down, linger=linger)
    seen: list[TcpState] = []
    terminated_in: list[TcpState] = []

    def watch() -> None:
        for info in world.nic.connections():
            if info.state not in seen:
                seen.append(info.state)
            if info.state == state and not terminated_in:
                sock = next(s for s in world.host.connections if s.connection is info.handle)
                terminated_in.append(info.state)
                world.host.terminate(sock, reason="test")
        if not ts.all_done:
            world.clock.call_later(POLL, watch)

    world.clock.call_soon(watch)
    world.clock.run_until(60.0, lambda: ts.all_done)
    world.clock.run_until(world.clock.now() + 0.5)
    return terminated_in, world, ts


@pytest.mark.parametrize("state", list(SHAPES), ids=lambda s: s.name)
def test_host_terminates_in_state(state: TcpState) -> None:
    for seed in range(6):
        terminated_in, world, ts = run_until_state(state, seed)
        assert world.violations() == []
        t = ts.transfers[0]
        assert t.done and not t.reset
        assert bytes(t.server.received) == t.client.to_send
        assert bytes(t.client.received) == t.server.to_send
        if terminated_in:
            assert terminated_in == [state]
            return
    pytest.fail(f"no run put an offloaded connection into {state.name}")


def test_closed_connection_comes_home_in_time_wait() -> None:
    """TIME_WAIT runs on the host: an offloaded connection that closes comes home and waits there."""
    world = SimWorld(
        WorldConfig(
            seed=3,
            impairments=Impairments(delay=0.002, rate_bps=50e6),
            policy=OffloadPolicy(offload_after=0.0, backoff={}),
            trace=True,
        )
    )
    ts = TransferSet(world.clock, world.host, world.peer, PEER_IP, world.rng)
    t = ts.start(5_000, 50_000)
    world.clock.run_until(60.0, lambda: ts.all_done)
    world.clock.run_until(world.clock.now() + 1.0)
    assert t.done and not t.reset and t.mismatched_bytes() == 0
    states = [
        obj
        for ev in world.tracer.events
        if ev["kind"] == "chimney.terminate_start"
        for obj in ev["objects"]
        if "Connection(" in obj
    ]
    assert len(states) == 1, states  # the closing connection was uploaded once, by the host
    assert world.host.connections[0].state in (TcpState.TIME_WAIT, TcpState.CLOSED)
