"""``chimney demo --team --sim``: a NIC team fails over while data flows.

Transfers run through an 802.3ad team of two emulated NICs; member 0's link goes down mid-transfer; the team
indicates PAUSE and UPLOAD_ALL, the host takes every connection back, the team moves to the survivor and indicates
RESUME, the host offloads again; later the member comes back and rejoins.  Every byte is checked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.scenario.report import host_counters
from tcpchimney.scenario.team_world import PEER_IP, TeamWorld, TeamWorldConfig
from tcpchimney.scenario.workload import TransferSet
from tcpchimney.sim.link import Impairments


@dataclass
class TeamDemoConfig:
    seed: int = 0
    connections: int = 40
    members: int = 2
    min_bytes: int = 64 * 1024
    max_bytes: int = 512 * 1024
    rate_bps: float = 50e6
    fail_at: float = 0.3
    restore_at: float = 1.2
    time_limit: float = 300.0


def run_team_demo(config: TeamDemoConfig) -> tuple[dict[str, Any], TeamWorld]:
    wall_start = time.perf_counter()
    world = TeamWorld(
        TeamWorldConfig(
            seed=config.seed,
            members=config.members,
            impairments=Impairments(delay=0.0005, rate_bps=config.rate_bps),
            policy=OffloadPolicy(offload_after=0.005, host_backoff=0.0),
            trace=True,
        )
    )
    converged = world.converge()
    start = world.clock.now()
    rng = world.rng
    transfers = TransferSet(world.clock, world.host, world.peer, PEER_IP, rng)
    for _ in range(config.connections):
        transfers.start(
            rng.randint(config.min_bytes, config.max_bytes), rng.randint(config.min_bytes, config.max_bytes)
        )
    snapshots: dict[str, list[dict[str, Any]]] = {}

    def fail() -> None:
        snapshots["before_failure"] = world.team.member_states()
        world.tracer.emit("failover", member=world.nics[0].name, cause="link down")
        world.fail_link(0)

    def restore() -> None:
        snapshots["during_failure"] = world.team.member_states()
        world.tracer.emit("member_restored", member=world.nics[0].name)
        world.restore_link(0)

    def after_resume() -> None:
        snapshots["after_failover"] = world.team.member_states()

    world.clock.call_at(start + config.fail_at, fail)
    world.clock.call_at(start + config.fail_at + 0.05, after_resume)
    world.clock.call_at(start + config.restore_at, restore)
    world.clock.run_until(start + config.time_limit, lambda: transfers.all_done and "during_failure" in snapshots)
    world.clock.run_until(world.clock.now() + 1.0)
    snapshots["after_rejoin"] = world.team.member_states()

    totals = transfers.totals()
    stats = world.host.stats
    records = world.team.failovers.records
    failover = records[0] if records else None
    result: dict[str, Any] = {
        "seed": config.seed,
        "lacp_converged": converged,
        "connections": len(transfers.transfers),
        "completed": sum(1 for t in transfers.transfers if t.done),
        "reset": sum(1 for t in transfers.transfers if t.reset),
        **totals,
        **host_counters(stats),
        "failovers": len(records),
        "failover": _failover_dict(failover),
        "members": snapshots,
        "contract_violations": len(world.violations()),
        "violations": [str(v) for v in world.violations()],
        "virtual_seconds": round(world.clock.now(), 6),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
    }
    return result, world


def _failover_dict(record: Any) -> dict[str, Any] | None:
    if record is None:
        return None
    fields = {}
    for name in dir(record):
        if name.startswith("_"):
            continue
        value = getattr(record, name)
        if isinstance(value, (int, float, str, bool)) or value is None:
            fields[name] = value
    return fields


def members_table(states: list[dict[str, Any]]) -> str:
    lines = [f"  {'member':<8} {'carrier':<8} {'active':<7} {'LACP':<32} connections"]
    for m in states:
        lacp = m.get("lacp") or {}
        flags = ",".join(k for k in ("selected", "in_sync", "collecting", "distributing") if lacp.get(k))
        lines.append(
            f"  {m.get('name', '?'):<8} {m.get('carrier')!s:<8} {m.get('active')!s:<7} {flags or '-':<32} "
            f"{m.get('connections')}"
        )
    return "\n".join(lines)
