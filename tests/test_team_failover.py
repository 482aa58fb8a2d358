"""TeamTarget failover in the simulator: host -> team of SoftToe members -> LACP partner switch -> peer host."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tcpchimney.chimney.constants import NdisStatus
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.scenario.team_world import PEER_IP, TeamWorld, TeamWorldConfig
from tcpchimney.scenario.workload import Transfer, TransferSet
from tcpchimney.sim.link import Impairments
from tcpchimney.team.remap import ImEntry

SLOW = Impairments(delay=0.0005, rate_bps=50e6, queue_bytes=1_000_000)


def make_world(seed: int = 1, members: int = 2, impairments: Impairments | None = None, **kw: Any) -> TeamWorld:
    w = TeamWorld(TeamWorldConfig(seed=seed, members=members, impairments=impairments or SLOW, **kw))
    assert w.converge()
    w.run_for(0.01)  # the PAUSE/RESUME that advertises the members' capabilities
    return w


def start(w: TeamWorld, n: int, up: int, down: int, seed: int = 3, base_port: int = 5000) -> TransferSet:
    ts = TransferSet(w.clock, w.host, w.peer, PEER_IP, random.Random(seed), base_port=base_port)
    for _ in range(n):
        ts.start(up, down)
    return ts


def member_of(w: TeamWorld, t: Transfer) -> int | None:
    """The member that runs the transfer's connection now (None if the host runs it)."""
    sock = t.client.sock
    if sock is None:
        return None
    c = w.host.offload_handle(sock)
    entry = getattr(c, "context", None) if c is not None else None
    return entry.member if isinstance(entry, ImEntry) else None


class StatusLog:
    """Records the team's upward status indications with a snapshot at each RESUME."""

    def __init__(self, w: TeamWorld) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        chimney = w.host.chimney
        original = chimney.indicate_status

        def spy(target_id: int, status: int, info: Any = None) -> None:
            snap: dict[str, Any] = {}
            if status == NdisStatus.OFFLOAD_RESUME:
                snap = {
                    "pending": [p for p in chimney.pending_operations() if p.target_id == w.team_id],
                    "offloaded": w.team.offloaded_connections(),
                    "host_offloaded": w.host.stats["offloaded_now"],
                }
            self.events.append((w.now, NdisStatus(status).name, snap))
            original(target_id, status, info)

        chimney.indicate_status = spy

    def names(self) -> list[str]:
        return [e[1] for e in self.events]


def assert_clean(w: TeamWorld, ts: TransferSet, allow_reset: bool = False) -> None:
    assert ts.all_done
    assert w.violations() == []
    assert w.team.lower_violations == []
    for t in ts.transfers:
        if t.reset:
            assert allow_reset, f"transfer {t.index} was reset"
            continue
        assert t.mismatched_bytes() == 0, f"transfer {t.index}"
        assert bytes(t.server.received) == t.client.to_send
        assert bytes(t.client.received) == t.server.to_send
    w.host.chimney.check_quiescent()
    w.team.lower.check_quiescent()


def test_connections_are_spread_over_members() -> None:
    w = make_world(members=3)
    ts = start(w, 90, 400_000, 10_000)
    w.run_for(0.3)
    counts = [m["connections"] for m in w.team.member_states()]
    assert sum(counts) >= 80
    assert all(c >= 15 for c in counts), counts
    # every connection runs on the member the hash chose, so its frames arrive there (nothing is forwarded)
    assert all(nic.stats.offloaded_segments_in > 0 for nic in w.nics)
    w.run_for(60, lambda: ts.all_done)
    assert_clean(w, ts)


def test_200_transfers_survive_a_member_link_going_down() -> None:
    w = make_world()
    log = StatusLog(w)
    ts = start(w, 200, 100_000, 50_000)
    w.run_for(0.4)  # in the middle of the transfers: most connections are still offloaded
    before = [m["connections"] for m in w.team.member_states()]
    assert before[0] > 20 and before[1] > 20
    upload_alls = w.host.stats["upload_alls"]
    w.fail_link(0)
    w.run_for(0.001)
    assert w.team.active_members() == [1]
    assert w.host.stats["upload_alls"] == upload_alls + 1
    assert w.team.offloaded_connections() == 0  # every connection is the host's again
    assert w.team.member_states()[0]["connections"] == 0
    # RESUME came only after every termination completed, and then the host re-queried: only the survivor
    resumes = [e for e in log.events if e[1] == "OFFLOAD_RESUME"]
    assert resumes and log.names().index("UPLOAD_ALL") < log.names().index("OFFLOAD_RESUME")
    for _, _, snap in resumes:
        assert snap["pending"] == [] and snap["offloaded"] == 0 and snap["host_offloaded"] == 0
    caps = w.host.chimney.capabilities(w.team_id)
    assert caps is not None and caps.max_connections == w.nics[1].max_connections
    offloads = w.host.stats["offloads"]
    w.run_for(2.0)
    assert w.host.stats["offloads"] > offloads  # offloaded again, by policy, after RESUME
    states = w.team.member_states()
    assert states[0]["connections"] == 0 and states[1]["connections"] > 0
    w.run_for(60, lambda: ts.all_done)
    assert_clean(w, ts)
    rec = w.team.failovers.records[0]
    assert rec.member == 0 and rec.reason == "carrier" and rec.on_member == before[0]


def test_hardware_failure_resets_exactly_its_connections() -> None:
    w = make_world()
    ts = start(w, 60, 300_000, 100_000)
    w.run_for(0.3)
    where = {t.index: member_of(w, t) for t in ts.transfers if not t.done}
    on0 = {i for i, m in where.items() if m == 0}
    assert on0 and any(m == 1 for m in where.values())
    w.team.fail_member(0, hardware=True)
    w.run_for(60, lambda: ts.all_done)
    reset = {t.index for t in ts.transfers if t.reset}
    assert reset == on0
    assert w.team.stats.hardware_injections == len(on0)
    assert_clean(w, ts, allow_reset=True)
    assert w.nics[0].stats.retrieves["HARDWARE_FAILURE"] == len(on0)


def _step_until(w: TeamWorld, cond: Any, limit: int = 100_000) -> None:
    for _ in range(limit):
        if cond():
            return
        assert w.clock.step()
    raise AssertionError("condition never held")


def _lower_kinds(w: TeamWorld) -> list[str]:
    return [op.kind for op, _m, _r in w.team._lower_ops.values()]


@pytest.mark.parametrize("hardware", [False, True])
def test_member_fails_while_a_termination_is_in_flight(hardware: bool) -> None:
    w = make_world(seed=5)
    ts = start(w, 20, 300_000, 100_000, seed=5)
    w.run_for(0.5)
    victims = [t for t in ts.transfers if member_of(w, t) == 0][:4]
    assert victims
    for t in victims:
        assert t.client.sock is not None
        w.host.terminate(t.client.sock)
    _step_until(w, lambda: "terminate" in _lower_kinds(w))
    if hardware:
        w.team.fail_member(0, hardware=True)
    else:
        w.fail_link(0)
    w.run_for(60, lambda: ts.all_done)
    assert_clean(w, ts, allow_reset=hardware)
    if not hardware:
        assert not any(t.reset for t in ts.transfers)


@pytest.mark.parametrize("hardware", [False, True])
def test_member_fails_while_an_offload_is_in_flight(hardware: bool) -> None:
    w = make_world(seed=6)
    ts = start(w, 10, 200_000, 100_000, seed=6)
    _step_until(w, lambda: "initiate" in _lower_kinds(w))
    members = {m for op, m, _r in w.team._lower_ops.values()}
    assert members
    victim = min(m.index for m in members)
    if hardware:
        w.team.fail_member(victim, hardware=True)
    else:
        w.fail_link(victim)
    w.run_for(60, lambda: ts.all_done)
    assert_clean(w, ts, allow_reset=hardware)
    if hardware:
        assert any(t.reset for t in ts.transfers)
    else:
        assert not any(t.reset for t in ts.transfers)


def test_both_members_fail_and_come_back() -> None:
    w = make_world(seed=7)
    log = StatusLog(w)
    ts = start(w, 30, 300_000, 80_000, seed=7)
    w.run_for(0.2)
    assert w.team.offloaded_connections() > 0
    w.fail_link(0)
    w.fail_link(1)
    w.run_for(0.5)
    assert w.team.active_members() == []
    assert w.team.offloaded_connections() == 0
    caps = w.host.chimney.capabilities(w.team_id)
    assert caps is not None and caps.max_connections == 0
    assert "LINK_STATE" in log.names()
    offloads = w.host.stats["offloads"]
    w.run_for(1.0)
    assert w.host.stats["offloads"] == offloads  # nothing to offload to
    w.restore_link(0)
    w.restore_link(1)
    assert w.converge()
    w.run_for(0.01)
    caps = w.host.chimney.capabilities(w.team_id)
    assert caps is not None and caps.max_connections == sum(n.max_connections for n in w.nics)
    w.run_for(60, lambda: ts.all_done)
    assert_clean(w, ts)
    assert w.host.stats["offloads"] > offloads


def test_member_rejoins_without_upload_all_and_takes_new_connections() -> None:
    w = make_world(seed=8)
    w.fail_link(1)
    w.run_for(0.1)
    assert w.team.active_members() == [0]
    ts = start(w, 20, 300_000, 50_000, seed=8)
    w.run_for(0.3)
    assert w.team.member_states()[0]["connections"] > 0
    assert w.team.member_states()[1]["connections"] == 0
    upload_alls = w.host.stats["upload_alls"]
    held = w.team.member_states()[0]["connections"]
    w.restore_link(1)
    assert w.converge()
    w.run_for(0.01)
    assert w.host.stats["upload_alls"] == upload_alls  # a join needs no UPLOAD_ALL
    # Existing connections stay where they are: none moves to the returning member (some may finish meanwhile).
    assert 0 < w.team.member_states()[0]["connections"] <= held
    assert w.team.member_states()[1]["connections"] == 0
    initiates = w.nics[1].stats.initiates
    ts2 = start(w, 20, 300_000, 50_000, seed=9, base_port=6000)
    w.run_for(0.1)
    assert w.nics[1].stats.initiates > initiates
    assert w.team.member_states()[1]["connections"] > 0
    w.run_for(60, lambda: ts.all_done and ts2.all_done)
    assert_clean(w, ts)
    assert_clean(w, ts2)


def test_member_nic_upload_all_fails_the_team_over_and_the_nic_rejoins() -> None:
    w = make_world(seed=10)
    log = StatusLog(w)
    ts = start(w, 20, 300_000, 50_000, seed=10)
    w.run_for(0.2)
    assert w.team.member_states()[0]["connections"] > 0
    w.nics[0].request_upload_all(resume_after=0.5)
    w.run_for(0.01)
    assert "UPLOAD_ALL" in log.names()
    assert w.team.offloaded_connections() == 0
    assert not w.team.uploading  # RESUME given (the NIC is still paused: nothing is placed on it)
    w.run_for(0.3)
    assert w.team.member_states()[0]["connections"] == 0
    w.run_for(0.5)  # the NIC's own RESUME: it takes placements again
    initiates = w.nics[0].stats.initiates
    ts2 = start(w, 20, 300_000, 50_000, seed=11, base_port=7000)
    w.run_for(0.1)
    assert w.nics[0].stats.initiates > initiates
    w.run_for(60, lambda: ts.all_done and ts2.all_done)
    assert_clean(w, ts)
    assert_clean(w, ts2)


def test_neighbor_update_reaches_every_copy() -> None:
    from tcpchimney.scenario.team_world import PEER_MAC
    from tcpchimney.wire.addr import ip_to_bytes

    w = make_world(seed=12)
    ts = start(w, 20, 300_000, 50_000, seed=12)
    w.run_for(0.2)
    assert all(s["connections"] > 0 for s in w.team.member_states())

    def macs() -> set[bytes]:
        return {nb.cached.dl_destination_address for nic in w.nics for nb in nic._neighbors.values()}

    assert macs() == {PEER_MAC}
    other = bytes.fromhex("020000000099")
    w.host._off.neighbor_mac_changed(ip_to_bytes(PEER_IP), other)
    w.run_for(0.001)
    assert macs() == {other}
    assert sum(len(nic._neighbors) for nic in w.nics) == 2  # one copy per member
    w.host._off.neighbor_mac_changed(ip_to_bytes(PEER_IP), PEER_MAC)
    w.run_for(0.001)
    assert macs() == {PEER_MAC}
    w.run_for(60, lambda: ts.all_done)
    assert_clean(w, ts)


def test_calls_from_a_fast_member_wait_for_the_slow_members_initiate(monkeypatch: pytest.MonkeyPatch) -> None:
    """One upper initiate becomes one lower initiate per member; until the slowest completes, the upper object is
    still being offloaded, so what the fast member indicates meanwhile is held (and receive data refused, then
    re-enabled with a zero-byte post) instead of reaching the host early."""
    w = make_world(seed=13, policy=OffloadPolicy(enabled=False))
    slow = w.nics[1]
    original = slow.initiate_offload

    def delayed(tree: Any) -> None:
        w.clock.call_later(0.05, original, tree)

    monkeypatch.setattr(slow, "initiate_offload", delayed)
    ts = start(w, 16, 300_000, 300_000, seed=13)
    w.run_for(0.05)
    socks = [t.client.sock for t in ts.transfers if t.client.sock is not None and not t.done]
    assert len(socks) == 16
    for sock in socks:
        w.host.offload(sock)  # one batch: one upper tree over both members
    w.run_for(0.002)
    assert w.team.stats.initiates == 1
    w.run_for(60, lambda: ts.all_done)
    assert w.team.stats.held_calls + w.team.stats.early_refusals > 0
    assert w.nics[0].stats.initiates == 1 and w.nics[1].stats.initiates == 1
    assert_clean(w, ts)


def test_query_and_invalidate_pass_through_to_the_member_copies() -> None:
    from tcpchimney.chimney.objects import ContextSlot, path_block, tcp_block
    from tcpchimney.tcp.state import TcpDelegated, TcpState

    w = make_world(seed=14)
    ts = start(w, 12, 400_000, 400_000, seed=14)
    w.run_for(0.1)
    conns = [w.host.offload_handle(t.client.sock) for t in ts.transfers if t.client.sock is not None]
    live = [c for c in conns if c is not None]
    assert len({c.context.member for c in live}) == 2
    block = tcp_block(context=ContextSlot(live[0].context), handle=live[0])
    w.host.chimney.query_offload(w.team_id, block)
    w.run_for(0.001)
    assert block.status == NdisStatus.SUCCESS
    assert isinstance(block.delegated, TcpDelegated) and block.delegated.state == TcpState.ESTABLISHED
    nic = w.nics[live[0].context.member]
    tc = nic.context_for(live[0].context.lower)
    assert tc is not None and block.delegated.rcv_nxt == tc.engine.rcv_nxt
    # invalidating the path stops every connection on it, on both members: each asks for its upload
    path = live[0].path
    assert path is not None
    pblock = path_block(context=ContextSlot(path.context), handle=path)
    w.host.chimney.invalidate_offload(w.team_id, pblock)
    w.run_for(0.05)
    assert pblock.status == NdisStatus.SUCCESS
    assert w.host.stats["by_reason"].get("INVALID_STATE", 0) == len(live)
    assert all(nic.stats.retrieves["INVALID_STATE"] > 0 for nic in w.nics)
    w.run_for(60, lambda: ts.all_done)
    assert_clean(w, ts)
