"""The main job in simulation: many connections move data while the NIC asks for them back.

Timeline: transfers start; the policy offloads them; the NIC requests retrieval of single connections with several
reasons (some by its own detectors, some injected); the host terminates one on its own; the NIC requests UPLOAD_ALL
and later RESUME; the host offloads again; everything is checked byte for byte at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.scenario.workload import TransferSet
from tcpchimney.scenario.world import PEER_IP, SimWorld, WorldConfig
from tcpchimney.sim.link import Impairments
from tcpchimney.targets.detectors import DetectorConfig
from tcpchimney.tcp.state import RETRIEVE_FORBIDDEN_STATES

INJECTED_REASONS = (
    UploadReason.HIGH_DROP_RATE,
    UploadReason.SMALL_IO,
    UploadReason.HIGH_OUT_OF_ORDER_PACKETS,
    UploadReason.TIMEOUT_EXPIRATION,
    UploadReason.UPLOAD_REQUESTED,
    UploadReason.RECEIVED_URGENT_DATA,
)


@dataclass
class DemoConfig:
    seed: int = 0
    connections: int = 24
    min_bytes: int = 64 * 1024
    max_bytes: int = 1024 * 1024
    loss: float = 0.01
    rate_bps: float = 100e6  # the simulated wire's speed, so transfers last long enough to be handed around
    idle_connections: int = 3  # connections that go quiet, so the NIC's LowActivity detector asks for them
    idle_timeout: float = 0.5
    time_limit: float = 300.0
    trace: bool = True
    upload_all_at: float = 1.0
    resume_after: float = 0.05
    extra: dict[str, Any] = field(default_factory=dict)


def run_demo(config: DemoConfig) -> tuple[dict[str, Any], SimWorld]:
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    world = SimWorld(
        WorldConfig(
            seed=config.seed,
            impairments=Impairments(
                delay=0.0005,
                loss=config.loss,
                duplicate=config.loss / 2,
                reorder=config.loss,
                rate_bps=config.rate_bps,
            ),
            policy=OffloadPolicy(offload_after=0.010),
            trace=config.trace,
            detectors=DetectorConfig(idle_timeout=config.idle_timeout, sweep_interval=config.idle_timeout / 4),
        )
    )
    rng = world.rng
    transfers = TransferSet(world.clock, world.host, world.peer, PEER_IP, rng)
    for _ in range(config.connections):
        transfers.start(
            rng.randint(config.min_bytes, config.max_bytes), rng.randint(config.min_bytes, config.max_bytes)
        )

    # Target-requested retrievals of single connections, spread over the transfer.
    def inject(reason: UploadReason) -> None:
        infos = [c for c in world.nic.connections() if c.state not in RETRIEVE_FORBIDDEN_STATES]
        if infos:
            world.nic.request_retrieve(rng.choice(infos).handle, reason)

    for i, reason in enumerate(INJECTED_REASONS):
        world.clock.call_at(0.15 + 0.1 * i, inject, reason)

    # Quiet connections: a little data, then silence until they close; the NIC notices and asks for them back.
    idle = TransferSet(world.clock, world.host, world.peer, PEER_IP, rng, base_port=6000)
    for _ in range(config.idle_connections):
        idle.start(100, 100, linger=config.upload_all_at + 4 * config.idle_timeout)

    # The host takes one connection back on its own.
    def host_terminate() -> None:
        offloaded = [s for s in world.host.connections if s.owner != "host"]
        if offloaded:
            world.host.terminate(rng.choice(offloaded), reason="host-policy")

    world.clock.call_at(0.8, host_terminate)
    world.clock.call_at(config.upload_all_at, world.nic.request_upload_all, config.resume_after)

    world.clock.run_until(config.time_limit, lambda: transfers.all_done and idle.all_done)
    # Let final ACKs and TIME_WAIT bookkeeping settle a little (bounded).
    world.clock.run_until(world.clock.now() + 1.0)

    everything = transfers.transfers + idle.transfers
    totals = {k: transfers.totals()[k] + idle.totals()[k] for k in ("bytes_sent", "bytes_verified", "mismatched_bytes")}
    stats = world.host.stats
    result: dict[str, Any] = {
        "seed": config.seed,
        "connections": len(everything),
        "completed": sum(1 for t in everything if t.done),
        "reset": sum(1 for t in everything if t.reset),
        **totals,
        "offloads": stats.get("offloads", 0),
        "terminations": {
            "by_reason": dict(stats.get("terminations", {}).get("by_reason", {})),
            "by_requester": dict(stats.get("terminations", {}).get("by_requester", {})),
        },
        "retrieves_received": stats.get("retrieves_received", 0),
        "upload_all_cycles": stats.get("upload_alls", 0),
        "resumes": stats.get("resumes", 0),
        "contract_violations": len(world.violations()),
        "violations": [str(v) for v in world.violations()],
        "virtual_seconds": round(world.clock.now(), 6),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "transfers": [t.summary() for t in everything],
    }
    return result, world


TIMELINE_KINDS = {
    "offload_done",
    "retrieve",
    "terminate_start",
    "terminate_done",
    "upload_all",
    "pause",
    "resume",
    "link_state",
    "violation",
}


def timeline_lines(events: list[dict[str, Any]], limit: int = 60) -> list[str]:
    """Readable lines for the interesting events; runs of the same event at the same instant become one line."""
    lines: list[str] = []
    offloads = 0
    last_key: tuple[Any, ...] | None = None
    repeat = 0
    for ev in events:
        kind = ev.get("kind")
        if kind not in TIMELINE_KINDS or ev.get("host", "host") != "host":
            continue
        if kind in ("terminate_start", "terminate_done") and ev.get("reason") == "final":
            continue  # routine: a closed connection comes home for TIME_WAIT (counted in the summary)
        if kind == "offload_done":
            offloads += 1
        key = (round(ev["t"] * 1000), kind, ev.get("by"), ev.get("reason"))
        if key == last_key:
            repeat += 1
            lines[-1] = f"{lines[-1].split('  [x')[0]}  [x{repeat + 1} connections]"
            continue
        last_key, repeat = key, 0
        detail = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("t", "kind", "host"))
        lines.append(f"{ev['t'] * 1000:10.3f} ms  {kind:<16} {detail}")
    if len(lines) > limit:
        lines = [*lines[: limit // 2], f"   ... {len(lines) - limit} more events ...", *lines[-limit // 2 :]]
    lines.append(f"({offloads} offloads in all)")
    return lines


def summary_table(result: dict[str, Any]) -> str:
    rows = [
        ("connections", result["connections"]),
        ("completed", result["completed"]),
        ("reset (hardware failure / timeout)", result["reset"]),
        ("bytes sent", result["bytes_sent"]),
        ("bytes verified", result["bytes_verified"]),
        ("mismatched bytes", result["mismatched_bytes"]),
        ("offloads", result["offloads"]),
        ("retrieve requests received", result["retrieves_received"]),
        ("UPLOAD_ALL cycles", result["upload_all_cycles"]),
        ("resumes", result["resumes"]),
        ("contract violations", result["contract_violations"]),
        ("virtual time (s)", result["virtual_seconds"]),
        ("wall time (s)", result["wall_seconds"]),
    ]
    for who, n in sorted(result["terminations"]["by_requester"].items()):
        rows.append((f"terminations asked by {who}", n))
    for reason, n in sorted(result["terminations"]["by_reason"].items()):
        rows.append((f"  reason {reason}", n))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
