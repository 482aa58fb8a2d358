"""Property: whatever member fails when (link, admin, hardware; during offloads, terminates or transfers), and
whether or not it comes back, every transfer ends byte-exact (or, for a hardware failure, is reset only if it ran
on the failed member) and neither the host's nor the team's chimney records a contract violation."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpchimney.scenario.team_world import PEER_IP, TeamWorld, TeamWorldConfig
from tcpchimney.scenario.workload import TransferSet
from tcpchimney.sim.link import Impairments
from tcpchimney.team.remap import ImEntry

_IMP = Impairments(delay=0.0005, rate_bps=20e6, queue_bytes=500_000)


def _member_of(w: TeamWorld, sock: object) -> int | None:
    c = w.host.offload_handle(sock)  # type: ignore[arg-type]
    entry = getattr(c, "context", None) if c is not None else None
    return entry.member if isinstance(entry, ImEntry) else None


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    seed=st.integers(0, 2**16),
    members=st.integers(2, 3),
    lacp=st.booleans(),
    conns=st.integers(1, 4),
    fail_steps=st.integers(0, 400),
    victim=st.integers(0, 2),
    kind=st.sampled_from(["link", "admin", "hardware"]),
    restore_after=st.one_of(st.none(), st.floats(0.0, 0.5)),
    second=st.booleans(),
)
def test_team_failover_property(
    seed: int,
    members: int,
    lacp: bool,
    conns: int,
    fail_steps: int,
    victim: int,
    kind: str,
    restore_after: float | None,
    second: bool,
) -> None:
    w = TeamWorld(TeamWorldConfig(seed=seed, members=members, lacp=lacp, impairments=_IMP))
    assert w.converge()
    w.run_for(0.002)
    rng = random.Random(seed)
    ts = TransferSet(w.clock, w.host, w.peer, PEER_IP, rng)
    for _ in range(conns):
        ts.start(rng.randrange(1, 60_000), rng.randrange(0, 30_000))
    for _ in range(fail_steps):  # fail at an arbitrary event: mid-handshake, mid-offload, mid-terminate...
        if not w.clock.step():
            break
    victim %= members
    where = {t.index: _member_of(w, t.client.sock) for t in ts.transfers if t.client.sock is not None}
    if kind == "link":
        w.fail_link(victim)
    else:
        w.team.fail_member(victim, hardware=(kind == "hardware"))
        if not lacp:
            w.fail_link(victim)  # without LACP the switch cannot see a failure inside the NIC: take the wire down
    if second:
        w.run_for(0.01)
        other = (victim + 1) % members
        w.fail_link(other)
        w.run_for(0.05)
        w.restore_link(other)
    if restore_after is not None:
        w.run_for(restore_after)
        if kind == "link":
            w.restore_link(victim)
        else:
            w.team.restore_member(victim)
            w.restore_link(victim)
    w.run_for(120, lambda: ts.all_done)
    assert ts.all_done
    w.run_for(0.5)  # let the host release idle paths / neighbors it started terminating as the last one finished
    assert w.violations() == []
    for t in ts.transfers:
        if t.reset:
            assert kind == "hardware" and where.get(t.index) in (victim, None), (t.index, where.get(t.index))
        else:
            assert t.mismatched_bytes() == 0
    w.host.chimney.check_quiescent()
    w.team.lower.check_quiescent()
