"""``chimney bench sim``: throughput, retrieve latency and UPLOAD_ALL cost, measured in the simulator.

Every figure is printed next to a baseline measured in the same run, as a ratio:
- throughput against the simulator alone carrying frames of the same size (the ceiling the stack runs under);
- target-requested retrieve latency against a host-initiated terminate of the same connections;
- UPLOAD_ALL (terminate all + RESUME) per connection against offloading the same connections.
CPU time is process time, so figures do not depend on what else the machine does (within reason).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.scenario.workload import TransferSet
from tcpchimney.scenario.world import PEER_IP, SimWorld, WorldConfig
from tcpchimney.sim.link import Impairments
from tcpchimney.sim.network import SimNetwork


def _cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def sim_carry_rate(frame_size: int, frames: int) -> float:
    """Bytes per CPU second the simulated link alone moves (pre-built frames to a null receiver)."""
    net = SimNetwork(0)
    link = net.link(Impairments(delay=0.0001))
    frame = bytes(frame_size)
    got = [0]

    def sink(f: bytes) -> None:
        got[0] += 1

    link.b.set_receiver(sink)

    def run() -> None:
        for i in range(frames):
            link.a.transmit(frame)
            if i % 64 == 63:
                net.clock.run_until_idle()
        net.clock.run_until_idle()

    cpu = _cpu(run)
    return frame_size * frames / max(cpu, 1e-9)


def throughput(mtu: int, payload: int, offload: bool) -> dict[str, Any]:
    policy = OffloadPolicy(enabled=offload, offload_after=0.0)
    world = SimWorld(WorldConfig(seed=1, mtu=mtu, impairments=Impairments(delay=0.0002), policy=policy))
    ts = TransferSet(world.clock, world.host, world.peer, PEER_IP, world.rng)
    t = ts.start(payload, 0)
    cpu = _cpu(lambda: world.clock.run_until(600.0, lambda: ts.all_done))
    ok = t.done and t.mismatched_bytes() == 0
    return {
        "mtu": mtu,
        "path": "offloaded" if offload else "software",
        "payload_bytes": payload,
        "cpu_seconds": cpu,
        "mb_per_cpu_second": payload / cpu / 1e6,
        "exact": ok,
        "virtual_seconds": world.clock.now(),
    }


def _idle_world(n: int, seed: int = 2) -> tuple[SimWorld, list[Any]]:
    """n established, offloaded, idle connections."""
    policy = OffloadPolicy(enabled=True, offload_after=0.0, backoff={})
    world = SimWorld(
        WorldConfig(seed=seed, impairments=Impairments(delay=0.0001), policy=policy, nic_max_connections=n + 16)
    )
    accepted: list[Any] = []
    world.peer.listen(7000, accepted.append, backlog=n + 16)
    socks = [world.host.connect(PEER_IP, 7000) for _ in range(n)]
    world.clock.run_until(world.clock.now() + 5.0, _all(socks, lambda s: s.owner != "host"))
    # let the last handshake ACKs reach the peer, so none of the setup is counted in what is measured next
    world.clock.run_until(world.clock.now() + 0.01)
    return world, socks


def _all(socks: list[Any], done: Callable[[Any], bool]) -> Callable[[], bool]:
    """A stop predicate for ``run_until``: True once ``done(s)`` holds for every socket.

    It is called after every clock event, so it remembers how far it got instead of rescanning every socket each
    time (an O(n) scan per event would make the harness itself quadratic in n).  The sockets are re-checked once
    all passed, so a socket that went back is not missed.
    """
    pos = [0]

    def check() -> bool:
        i = pos[0]
        n = len(socks)
        while i < n and done(socks[i]):
            i += 1
        pos[0] = i
        if i < n:
            return False
        if all(done(s) for s in socks):
            return True
        pos[0] = 0
        return False

    return check


def _owned_by_host(socks: list[Any]) -> Callable[[], bool]:
    return _all(socks, lambda s: s.owner == "host")


def _settle(world: SimWorld) -> None:
    """Run what the previous measurement left scheduled (e.g. re-offloading the connection it retrieved), so that
    each timed operation is charged only for its own work."""
    world.clock.run_until(world.clock.now() + 0.001)


def retrieve_latency(n: int) -> dict[str, Any]:
    world, socks = _idle_world(n)
    offloaded = [s for s in socks if s.owner != "host"]
    handles = {id(s): world.host.offload_handle(s) for s in offloaded}
    retrieve: list[float] = []
    for s in offloaded[: n // 2]:
        h = handles.get(id(s))
        if h is None:
            continue
        _settle(world)
        start = time.perf_counter()
        world.nic.request_retrieve(h, UploadReason.LOW_ACTIVITY)
        world.clock.run_until(world.clock.now() + 1.0, _owned_by_host([s]))
        retrieve.append(time.perf_counter() - start)
    host_term: list[float] = []
    for s in offloaded[n // 2 :]:
        _settle(world)
        start = time.perf_counter()
        world.host.terminate(s, reason="bench")
        world.clock.run_until(world.clock.now() + 1.0, _owned_by_host([s]))
        host_term.append(time.perf_counter() - start)
    return {
        "connections": len(retrieve),
        "retrieve_median_us": statistics.median(retrieve) * 1e6 if retrieve else None,
        "retrieve_p99_us": _p99(retrieve) * 1e6 if retrieve else None,
        "host_terminate_median_us": statistics.median(host_term) * 1e6 if host_term else None,
        "host_terminate_p99_us": _p99(host_term) * 1e6 if host_term else None,
        "violations": len(world.violations()),
    }


def _p99(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def upload_all(n: int) -> dict[str, Any]:
    """UPLOAD_ALL of n offloaded connections, then RESUME and re-offload; the offload itself is the baseline."""
    start_setup = time.process_time()
    world, socks = _idle_world(n)
    setup_cpu = time.process_time() - start_setup
    offloaded = sum(1 for s in socks if s.owner != "host")

    def terminate_all() -> None:
        world.nic.request_upload_all(0.0)
        world.clock.run_until(world.clock.now() + 10.0, _owned_by_host(socks))

    cpu_upload = _cpu(terminate_all)
    all_host = all(s.owner == "host" for s in socks)
    cpu_resume = _cpu(lambda: world.clock.run_until(world.clock.now() + 10.0, _all(socks, lambda s: s.owner != "host")))
    reoffloaded = sum(1 for s in socks if s.owner != "host")
    return {
        "connections": n,
        "offloaded_before": offloaded,
        "setup_cpu_seconds": setup_cpu,
        "upload_all_cpu_seconds": cpu_upload,
        "upload_all_us_per_connection": cpu_upload / max(1, offloaded) * 1e6,
        "all_host_owned_after": all_host,
        "resume_and_reoffload_cpu_seconds": cpu_resume,
        "reoffload_us_per_connection": cpu_resume / max(1, reoffloaded) * 1e6,
        "terminate_and_resume_us_per_connection": (cpu_upload + cpu_resume) / max(1, offloaded) * 1e6,
        "reoffloaded": reoffloaded,
        "violations": len(world.violations()),
    }


def run_sim_bench(quick: bool = False, json_path: str | None = "bench-results/sim.json") -> int:
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
    }
    payload = 4 * 1024 * 1024 if quick else 32 * 1024 * 1024
    rows: list[tuple[str, str, str, str]] = []
    tput = []
    for mtu in (1500, 9000, 65535):
        carry = sim_carry_rate(mtu, 2000 if quick else 20000) / 1e6
        r = throughput(mtu, payload, offload=False)
        r["sim_carry_mb_per_cpu_second"] = carry
        tput.append(r)
        rows.append(
            (
                f"software path throughput, MTU {mtu}",
                f"{r['mb_per_cpu_second']:.1f} MB/CPU-s",
                f"sim link alone {carry:.0f} MB/CPU-s",
                f"{r['mb_per_cpu_second'] / carry:.3f}",
            )
        )
    r = throughput(1500, payload, offload=True)
    tput.append(r)
    rows.append(
        (
            "offloaded path throughput, MTU 1500",
            f"{r['mb_per_cpu_second']:.1f} MB/CPU-s",
            f"software path {tput[0]['mb_per_cpu_second']:.1f} MB/CPU-s",
            f"{r['mb_per_cpu_second'] / tput[0]['mb_per_cpu_second']:.3f}",
        )
    )
    results["throughput"] = tput
    lat = retrieve_latency(100 if quick else 400)
    results["retrieve_latency"] = lat
    if lat["retrieve_median_us"] is not None:
        rows.append(
            (
                "retrieve -> host-owned, median",
                f"{lat['retrieve_median_us']:.0f} us",
                f"host terminate {lat['host_terminate_median_us']:.0f} us",
                f"{lat['retrieve_median_us'] / lat['host_terminate_median_us']:.3f}",
            )
        )
        rows.append(
            (
                "retrieve -> host-owned, p99",
                f"{lat['retrieve_p99_us']:.0f} us",
                f"host terminate {lat['host_terminate_p99_us']:.0f} us",
                f"{lat['retrieve_p99_us'] / lat['host_terminate_p99_us']:.3f}",
            )
        )
    ua = []
    for n in (1000,) if quick else (1000, 10000):
        u = upload_all(n)
        ua.append(u)
        rows.append(
            (
                f"UPLOAD_ALL of {n}: terminate all",
                f"{u['upload_all_cpu_seconds'] * 1e3:.1f} ms ({u['upload_all_us_per_connection']:.1f} us/conn)",
                f"offload {u['reoffload_us_per_connection']:.1f} us/conn",
                f"{u['upload_all_us_per_connection'] / max(u['reoffload_us_per_connection'], 1e-9):.3f}",
            )
        )
        rows.append(
            (
                f"UPLOAD_ALL of {n}: terminate + resume + re-offload",
                f"{u['terminate_and_resume_us_per_connection']:.1f} us/conn",
                "target 100 us/conn",
                f"{u['terminate_and_resume_us_per_connection'] / 100.0:.3f}",
            )
        )
    results["upload_all"] = ua
    print(f"tcpchimney bench sim  (Python {results['python']}, {results['machine']}, {results['system']})")
    header = ("figure", "measured", "baseline (same run)", "ratio")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nJSON: {path}")
    return 0
