"""Team failover cost in the simulator: for 10, 100 and 1,000 offloaded connections, the virtual and CPU time from
a member link going down (1) until every connection is owned by the host again (UPLOAD_ALL done) and (2) until every
connection is offloaded again, on the surviving member.

The host policy re-offloads at once after RESUME (``host_backoff=0``) so the figures measure the mechanism, not the
policy's back-off.  Virtual time here is the simulated chimney/wire time (SoftToe completes state operations on the
next scheduler turn, so the upload takes no virtual time); the detection delay of a real partner switch is the
baseline the lead fills in (``baseline_ovs_detection_s``).  Each connection sends a checked 1,000-byte message
before the failure and another after the re-offload, so a run also shows that no byte went missing.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from pathlib import Path
from typing import Any

from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.sockets import TcpSocket
from tcpchimney.scenario.team_world import PEER_IP, TeamWorld, TeamWorldConfig
from tcpchimney.sim.link import Impairments

SIZES = (10, 100, 1000)
MODES = ("carrier", "silent")
MESSAGE = 1000


def _accept(buf: bytearray, sock: TcpSocket) -> None:
    def readable() -> None:
        buf.extend(sock.read())

    sock.on_readable = readable


def _measure(n: int, mode: str = "carrier", seed: int = 0) -> dict[str, Any]:
    policy = OffloadPolicy(host_backoff=0.0)
    w = TeamWorld(TeamWorldConfig(seed=seed, members=2, policy=policy, nic_max_connections=4096))
    if not w.converge():
        raise RuntimeError("LACP did not converge")
    w.run_for(0.01)
    received: dict[int, bytearray] = {}
    socks: list[TcpSocket] = []
    payload = [bytes([i % 251]) * MESSAGE for i in range(n)]

    base = 20000
    for i in range(n):
        port = base + i
        w.peer.listen(port, functools.partial(_accept, received.setdefault(port, bytearray())))
        sock = w.host.connect(PEER_IP, port)
        socks.append(sock)
        sock.write(payload[i])

    def host_offloaded() -> int:
        return int(w.host.stats["offloaded_now"])

    w.run_for(30.0, lambda: host_offloaded() == n and sum(len(b) for b in received.values()) == n * MESSAGE)
    if host_offloaded() != n:
        raise RuntimeError(f"only {host_offloaded()} of {n} connections offloaded")
    on_member = [m["connections"] for m in w.team.member_states()]
    t0, c0 = w.now, time.process_time()
    if mode == "carrier":
        w.fail_link(0)  # carrier loss: both ends see it at once
    else:
        w.links[0].set_impairments(Impairments(loss=1.0))  # silent failure: only LACP expiry (3 s) notices
    w.run_for(30.0, lambda: host_offloaded() == 0 and not w.team.uploading)
    t1, c1 = w.now, time.process_time()
    w.run_for(30.0, lambda: host_offloaded() == n)
    t2, c2 = w.now, time.process_time()
    reoffloaded = host_offloaded()
    survivors = [m["connections"] for m in w.team.member_states()]
    for i, sock in enumerate(socks):
        sock.write(payload[i])
    w.run_for(30.0, lambda: sum(len(b) for b in received.values()) == 2 * n * MESSAGE)
    exact = all(bytes(received.get(base + i, b"")) == payload[i] * 2 for i in range(n))
    violations = len(w.violations()) + len(w.team.lower_violations)
    rec = w.team.failovers.records[0] if w.team.failovers.records else None
    return {
        "connections": n,
        "mode": mode,
        "on_members_before": on_member,
        "on_members_after": survivors,
        "reoffloaded": reoffloaded,
        "to_host_virtual_s": t1 - t0,
        "to_host_cpu_s": c1 - c0,
        "to_reoffloaded_virtual_s": t2 - t0,
        "to_reoffloaded_cpu_s": c2 - c0,
        "team_detect_to_resume_cpu_s": (rec.cpu_resume - rec.cpu_detect)
        if rec is not None and rec.cpu_resume is not None
        else None,
        "bytes_exact": exact,
        "violations": violations,
    }


def run_failover_bench(
    json_path: str | Path | None = None, sizes: tuple[int, ...] = SIZES, modes: tuple[str, ...] = MODES
) -> dict[str, Any]:
    """Run the failover benchmark, print a table and (optionally) write the JSON report.

    ``modes``: "carrier" (the member link goes down) and "silent" (the link drops everything with its carrier up,
    so only the LACP partner expiry detects it)."""
    rows = [_measure(n, mode) for mode in modes for n in sizes]
    report: dict[str, Any] = {
        "benchmark": "team_failover",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "policy": {"host_backoff": 0.0, "reoffload_after_resume": True},
        "baseline_ovs_detection_s": None,  # filled in by the lead (LACP/carrier detection time on real OVS)
        "rows": rows,
    }
    print(format_table(rows))
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'mode':>8} {'conns':>6} {'to host (virt ms)':>18} {'to host (CPU ms)':>17} "
        f"{'re-offloaded (virt ms)':>23} {'re-offloaded (CPU ms)':>22} {'exact':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['mode']:>8} {r['connections']:>6} {r['to_host_virtual_s'] * 1e3:>18.3f} "
            f"{r['to_host_cpu_s'] * 1e3:>17.1f} {r['to_reoffloaded_virtual_s'] * 1e3:>23.3f} "
            f"{r['to_reoffloaded_cpu_s'] * 1e3:>22.1f} {r['bytes_exact']!s:>6}"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    run_failover_bench(sys.argv[1] if len(sys.argv) > 1 else None)
