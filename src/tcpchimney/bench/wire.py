"""``chimney bench wire``: our stack against the Linux kernel on TAP and on veth, next to kernel-to-kernel figures.

For each link kind: throughput Linux->stack and stack->Linux on the software path (offload policy off) and on the
offloaded path (every connection handed to the SoftToe NIC once established), connection setup latency (kernel
client -> our listener, and our client -> a kernel listener) and connections per second (sequential connect+close
from the kernel).  The baseline is the same measurement between two kernels in two namespaces joined by a veth pair
(a TAP device needs a userspace program on one side, so kernel<->kernel over veth serves as the baseline for both
link kinds).  Every figure is printed with its ratio to the baseline; the table also goes to JSON.

The kernel-side programs send/receive constant bytes without hashing (the byte-exact checks are the interop tests'
job), so the numbers measure the stacks.  Every loop is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.links.netns import PeerNamespace, netlink_call
from tcpchimney.scenario.wire_world import WireConfig, WireWorld, peer_program

BLOCK = 64 * 1024
_ZERO = bytes(BLOCK)
SINK_PORT = 5101
SOURCE_PORT = 5102


async def _count_sink(reader: Any, writer: Any) -> None:
    """Read to EOF counting, answer the count, close (the kernel client's timer stops at our close)."""
    n = 0
    for _ in range(1 << 30):
        data = await reader.read(1 << 18)
        if not data:
            break
        n += len(data)
    writer.write(b"%d\n" % n)
    writer.close()


async def _zero_source(reader: Any, writer: Any) -> None:
    """Read "N\\n", send N constant bytes, close."""
    line = await reader.readline()
    left = int(line.strip() or b"0")
    for _ in range(left // BLOCK + 1):
        if left <= 0:
            break
        chunk = _ZERO if left >= BLOCK else _ZERO[:left]
        writer.write(chunk)
        left -= len(chunk)
        await writer.drain()
    writer.close()


def _mbps(nbytes: int, secs: float) -> float:
    return nbytes / secs / 1e6 if secs > 0 else 0.0


async def _stack_side(link: str, size: int, connects: int) -> dict[str, float]:
    """Figures for our stack on ``link``: software path, offloaded path, connection setup."""
    out: dict[str, float] = {}
    for path, policy in (("software", OffloadPolicy(enabled=False)), ("offload", OffloadPolicy())):
        async with WireWorld(WireConfig(link=link, policy=policy)) as w:
            await w.host.start_server(_count_sink, SINK_PORT)
            await w.host.start_server(_zero_source, SOURCE_PORT)
            await w.peer("blast", port=SINK_PORT, n=1 << 20, timeout=60)  # warm-up (ARP, first offload)
            r = await w.peer("blast", port=SINK_PORT, n=size, timeout=300)
            out[f"{path}_linux_to_stack_MBps"] = _mbps(size, r["secs"])
            r = await w.peer("drain", port=SOURCE_PORT, n=size, timeout=300)
            assert r["received"] == size, r
            out[f"{path}_stack_to_linux_MBps"] = _mbps(size, r["secs"])
            if path == "offload":
                out["offloads"] = float(w.host.stats["offloads"])
                continue
            r = await w.peer("connect_loop", port=SINK_PORT, n=connects, timeout=120)
            times = r["times"]
            out["connect_in_ms"] = statistics.median(times) * 1e3
            out["connections_per_s"] = len(times) / sum(times) if sum(times) > 0 else 0.0
            # our client -> kernel listener
            server = await w.peer_start("serve", port=6100, mode="count", ip="0.0.0.0")
            await server.line(10)
            loop = asyncio.get_running_loop()
            lat: list[float] = []
            for _ in range(connects):
                t0 = loop.time()
                _, writer = await w.host.open_connection(w.peer_ip, 6100)
                lat.append(loop.time() - t0)
                writer.close()
            out["connect_out_ms"] = statistics.median(lat) * 1e3
    return out


class KernelPair:
    """Two namespaces joined by a veth pair (10.78.0.1 <-> 10.78.0.2): the kernel-to-kernel baseline."""

    def __init__(self) -> None:
        self.a = PeerNamespace("tcpchba")
        try:
            self.b = PeerNamespace("tcpchbb")
        except BaseException:
            self.a.close()
            raise
        tag = os.urandom(3).hex()
        self.ifa, self.ifb = f"tcb{tag}a", f"tcb{tag}b"
        try:
            netlink_call(lambda: _add_veth(self.ifa, self.ifb))
            self.a.move_link_in(self.ifa)
            self.b.move_link_in(self.ifb)
            self.a.configure_link(self.ifa, "10.78.0.1", 24)
            self.b.configure_link(self.ifb, "10.78.0.2", 24)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.b.close()
        self.a.close()


def _add_veth(a: str, b: str) -> None:
    with IPRoute() as ipr:
        ipr.link("add", ifname=a, kind="veth", peer={"ifname": b})


async def _kernel_side(size: int, connects: int) -> dict[str, float]:
    out: dict[str, float] = {}
    pair = KernelPair()
    try:
        sink = await peer_program(pair.b, "serve", port=SINK_PORT, mode="count", ip="0.0.0.0")
        source = await peer_program(pair.b, "serve", port=SOURCE_PORT, mode="zeros", ip="0.0.0.0")
        try:
            await sink.line(10)
            await source.line(10)

            async def run(cmd: str, **args: Any) -> dict[str, Any]:
                p = await peer_program(pair.a, cmd, ip="10.78.0.2", **args)
                try:
                    return await p.line(300)
                finally:
                    p.kill()
                    with suppress(Exception):
                        await p.finish(5)

            await run("blast", port=SINK_PORT, n=1 << 20)
            big = max(size, 256 << 20)  # the kernel is fast: a bigger transfer gives a stable figure
            r = await run("blast", port=SINK_PORT, n=big)
            out["linux_to_stack_MBps"] = _mbps(big, r["secs"])
            r = await run("drain", port=SOURCE_PORT, n=big)
            out["stack_to_linux_MBps"] = _mbps(big, r["secs"])
            r = await run("connect_loop", port=SINK_PORT, n=connects)
            times = r["times"]
            out["connect_ms"] = statistics.median(times) * 1e3
            out["connections_per_s"] = len(times) / sum(times) if sum(times) > 0 else 0.0
        finally:
            sink.kill()
            source.kill()
            with suppress(Exception):
                await sink.finish(5)
            with suppress(Exception):
                await source.finish(5)
    finally:
        pair.close()
    return out


ROWS = (
    ("Linux -> stack, software path (MB/s)", "software_linux_to_stack_MBps", "linux_to_stack_MBps", True),
    ("stack -> Linux, software path (MB/s)", "software_stack_to_linux_MBps", "stack_to_linux_MBps", True),
    ("Linux -> stack, offloaded (MB/s)", "offload_linux_to_stack_MBps", "linux_to_stack_MBps", True),
    ("stack -> Linux, offloaded (MB/s)", "offload_stack_to_linux_MBps", "stack_to_linux_MBps", True),
    ("connect latency, Linux -> stack (ms)", "connect_in_ms", "connect_ms", False),
    ("connect latency, stack -> Linux (ms)", "connect_out_ms", "connect_ms", False),
    ("connections/s, Linux -> stack", "connections_per_s", "connections_per_s", True),
)


def table(results: dict[str, Any]) -> list[str]:
    base = results["baseline_kernel_veth"]
    lines = [f"{'link':<5} {'measure':<40} {'stack':>10} {'kernel':>10} {'ratio':>8}"]
    for link in results["links"]:
        ours = results["links"][link]
        for label, key, bkey, _higher_better in ROWS:
            v, b = ours.get(key), base.get(bkey)
            if v is None or b is None:
                continue
            ratio = v / b if b else 0.0
            lines.append(f"{link:<5} {label:<40} {v:>10.3f} {b:>10.3f} {ratio:>8.4f}")
    lines.append("baseline: Linux kernel <-> Linux kernel over a veth pair between two namespaces (same machine)")
    lines.append("ratio = stack / kernel (for latency, above 1 means slower than the kernel)")
    return lines


async def bench(quick: bool) -> dict[str, Any]:
    size = (16 if quick else 64) << 20
    connects = 50 if quick else 200
    results: dict[str, Any] = {
        "size_bytes": size,
        "connects": connects,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "links": {},
    }
    results["baseline_kernel_veth"] = await _kernel_side(size, connects)
    for link in ("tap", "veth"):
        results["links"][link] = await _stack_side(link, size, connects)
    return results


def run_wire_bench(quick: bool = False, json_path: str = "bench-results/wire.json") -> int:
    if os.geteuid() != 0:
        print("chimney bench wire: needs root (network namespaces, TAP/veth devices)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = asyncio.run(bench(quick))
    results["wall_seconds"] = round(time.perf_counter() - t0, 2)
    for line in table(results):
        print(line)
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {path}")
    return 0
