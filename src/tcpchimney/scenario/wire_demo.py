"""The main job on a real wire: the Linux kernel in a namespace drives many connections to our stack.

Timeline (seconds after the transfers start): the policy offloads every connection; quiet connections make the
NIC's LowActivity detector ask for them back; a kernel sender's urgent byte (MSG_OOB) makes it ask with
ReceivedUrgentData; at ``inject_at`` the NIC asks for single connections with several other reasons; the host
terminates one on its own; at ``upload_all_at`` the NIC requests UPLOAD_ALL and, once everything is home, RESUME; the
host offloads again.  Every transfer is checked with SHA-256 on both ends.  Leaves a pcap (kernel side), a JSON-lines
trace and a PNG time-sequence plot in ``out``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.scenario.report import Progress
from tcpchimney.scenario.wire_world import PeerProcess, WireConfig, WireWorld, fast_policy
from tcpchimney.services import ServiceRegistry, pseudo_random_sha256, start_services
from tcpchimney.targets.detectors import DetectorConfig
from tcpchimney.targets.softtoe import RetrieveForbidden

PORTS = {"echo": 7, "discard": 9, "sink": 5001, "source": 5002, "http": 8080}
INJECTED = (
    UploadReason.HIGH_DROP_RATE,
    UploadReason.SMALL_IO,
    UploadReason.HIGH_OUT_OF_ORDER_PACKETS,
    UploadReason.UPLOAD_REQUESTED,
)


@dataclass
class WireDemoConfig:
    link: str = "tap"
    senders: int = 8  # kernel -> our sink
    receivers: int = 8  # our source -> kernel
    idle: int = 3  # quiet connections (LowActivity)
    size: int = 3 * 1024 * 1024  # bytes per transfer
    curl: bool = True  # one curl download of /bytes/N when curl is installed
    idle_timeout: float = 0.6
    inject_at: float = 0.8
    host_terminate_at: float = 1.1
    upload_all_at: float = 1.6
    resume_delay: float = 0.3
    time_limit: float = 120.0
    out: str = "out"
    capture: bool = True
    seed: int = 0


async def run_wire_demo(
    cfg: WireDemoConfig, progress_out: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the demo; returns (result, trace events)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trace_path = out / "wire-trace.jsonl"
    pcap_path = out / "wire.pcapng"
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    detectors = DetectorConfig(idle_timeout=cfg.idle_timeout, sweep_interval=cfg.idle_timeout / 4, repeat_interval=1.0)
    wcfg = WireConfig(
        link=cfg.link, seed=cfg.seed, policy=fast_policy(), detectors=detectors, trace=str(trace_path), keep_trace=True
    )
    progress = Progress(progress_out, tty=progress_out is not None and sys.stdout.isatty())
    async with WireWorld(wcfg) as w:
        registry = ServiceRegistry()
        await start_services(lambda h, p: w.host.start_server(h, p), PORTS, registry)
        can_capture = cfg.capture and shutil.which("dumpcap") is not None
        if can_capture:
            await w.start_capture(str(pcap_path), snaplen=128)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = cfg.size
        # kernel-side programs (paced so the transfers outlast the UPLOAD_ALL/RESUME cycle)
        procs: dict[str, PeerProcess] = {}
        procs["send"] = await w.peer_start(
            "many", each="send", port=PORTS["sink"], n=n, count=cfg.senders, seed=100, pause_every=128 * 1024,
            pause=0.04, stagger=0.02,
        )  # fmt: skip
        procs["recv"] = await w.peer_start(
            "many", each="recv", port=PORTS["source"], n=n, count=cfg.receivers, read_pause=0.002, stagger=0.02
        )
        procs["idle"] = await w.peer_start(
            "many", each="idle", port=PORTS["sink"], n=64 * 1024, count=cfg.idle, idle=cfg.upload_all_at + 1.5
        )
        procs["oob"] = await w.peer_start("oob", port=PORTS["sink"], n=1024 * 1024, seed=7, gap=0.25)
        curl_proc = None
        if cfg.curl and shutil.which("curl"):
            curl_proc = await w.exec_in_ns(
                "sh", "-c",
                f"curl -sS --fail --max-time 90 --limit-rate 2M http://{w.local_ip}:{PORTS['http']}/bytes/{n} "
                "| sha256sum",
            )  # fmt: skip

        injected: list[str] = []
        host_terminated: list[str] = []
        phases = {"inject": False, "terminate": False, "upload_all": False, "resume": False}
        results: dict[str, Any] = {}

        async def collect(name: str, p: PeerProcess) -> None:
            results[name] = await p.line(cfg.time_limit)

        async def collect_curl() -> None:
            if curl_proc is not None:
                stdout, stderr = await asyncio.wait_for(curl_proc.communicate(), cfg.time_limit)
                results["curl"] = {
                    "rc": curl_proc.returncode,
                    "sha": stdout.decode().split()[0] if stdout else "",
                    "err": stderr.decode(errors="replace")[-500:],
                }

        tasks = [asyncio.create_task(collect(k, p)) for k, p in procs.items()]
        tasks.append(asyncio.create_task(collect_curl()))
        upload_all_done_at: float | None = None
        for _ in range(int(cfg.time_limit / 0.05)):
            if all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
            el = loop.time() - t0
            if not phases["inject"] and el >= cfg.inject_at:
                phases["inject"] = True
                offloaded = [s for s in w.offloaded() if w.host.offload_handle(s) is not None]
                for reason, sock in zip(INJECTED, offloaded, strict=False):
                    try:
                        w.nic.request_retrieve(w.host.offload_handle(sock), reason)
                        injected.append(reason.name)
                    except (RetrieveForbidden, KeyError):
                        pass
            if not phases["terminate"] and el >= cfg.host_terminate_at:
                offloaded = w.offloaded()
                if offloaded:
                    phases["terminate"] = True
                    w.host.terminate(offloaded[-1], "host-policy")
                    host_terminated.append(offloaded[-1].connection.label)
            if not phases["upload_all"] and el >= cfg.upload_all_at:
                phases["upload_all"] = True
                w.nic.request_upload_all(resume_after=None)
            if phases["upload_all"] and not phases["resume"]:
                if upload_all_done_at is None and not w.nic.upload_all_pending:
                    upload_all_done_at = loop.time()
                if upload_all_done_at is not None and loop.time() - upload_all_done_at >= cfg.resume_delay:
                    phases["resume"] = True
                    w.nic.resume()
            st = w.host.stats
            progress.show(
                f"t={el:5.1f}s  connections {len(w.host.connections):3d}  offloaded {len(w.offloaded()):3d}  "
                f"offloads {st['offloads']:4d}  retrieves {st['retrieves_received']:3d}  "
                f"terminations {st['terminations']['total']:4d}  upload_all {st['upload_alls']}  "
                f"resumes {st['resumes']}",
                el,
            )
        progress.done()
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.3)  # final ACKs
        if can_capture:
            await w.stop_captures()
        transfers = _transfers(results, n, registry)
        stats = w.host.stats
        violations = list(w.host.chimney.violations)
        result: dict[str, Any] = {
            "link": cfg.link,
            "namespace": w.ns.name if w.ns is not None else None,
            "connections": len(transfers),
            "expected_connections": cfg.senders + cfg.receivers + cfg.idle + 1 + (curl_proc is not None),
            "completed": sum(1 for t in transfers if t["ok"]),
            "bytes_sent": sum(t["bytes"] for t in transfers),
            "bytes_verified": sum(t["bytes"] for t in transfers if t["ok"]),
            "mismatched_bytes": sum(t["bytes"] for t in transfers if not t["ok"]),
            "offloads": stats["offloads"],
            "terminations": {
                "by_reason": dict(stats["terminations"]["by_reason"]),
                "by_requester": dict(stats["terminations"]["by_requester"]),
            },
            "nic_retrieve_reasons": dict(w.nic.stats.retrieves),
            "injected_reasons": injected,
            "host_terminated": host_terminated,
            "retrieves_received": stats["retrieves_received"],
            "upload_all_cycles": stats["upload_alls"],
            "resumes": stats["resumes"],
            "contract_violations": len(violations) + len(w.host.violations),
            "violations": [str(v) for v in violations][:20],
            "rst_sent": stats["rst_sent"],
            "wall_seconds": round(time.perf_counter() - wall0, 3),
            "cpu_seconds": round(time.process_time() - cpu0, 3),
            "transfers": transfers,
            "trace": str(trace_path),
            "pcap": str(pcap_path) if can_capture else None,
        }
        events = list(w.tracer.events)
    if can_capture and shutil.which("tshark"):
        from tcpchimney.trace.tshark import analyze

        result["wire_check"] = analyze(str(pcap_path), wcfg_local_ip(result, events)).as_dict()
    return result, events


def wcfg_local_ip(result: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """Our address as it appears in the trace's connection labels ("ip:port>ip:port")."""
    for ev in events:
        conn = ev.get("conn")
        if isinstance(conn, str) and ">" in conn:
            return conn.split(">")[0].rsplit(":", 1)[0]
    return "10.77.0.2"


def _transfers(results: dict[str, Any], n: int, registry: ServiceRegistry) -> list[dict[str, Any]]:
    """One row per transfer: what it was, its size, and whether both ends agree on the SHA-256."""
    rows: list[dict[str, Any]] = []
    want_source = pseudo_random_sha256(n)
    for kind in ("send", "idle"):
        for r in (results.get(kind) or {}).get("results", []):
            ok = "error" not in r and str(r.get("reply", "")).split() == [str(r.get("sent")), r.get("sha")]
            rows.append(
                {"kind": f"kernel->stack ({kind})", "bytes": int(r.get("sent", 0)), "ok": ok, "sha": r.get("sha")}
            )
    for r in (results.get("recv") or {}).get("results", []):
        ok = "error" not in r and r.get("received") == n and r.get("sha") == want_source
        rows.append({"kind": "stack->kernel", "bytes": int(r.get("received", 0)), "ok": ok, "sha": r.get("sha")})
    oob = results.get("oob")
    if oob is not None:
        ok = str(oob.get("reply", "")).split() == [str(oob.get("sent")), oob.get("sha")]
        rows.append(
            {"kind": "kernel->stack (urgent)", "bytes": int(oob.get("sent", 0)), "ok": ok, "sha": oob.get("sha")}
        )
    curl = results.get("curl")
    if curl is not None:
        ok = curl["rc"] == 0 and curl["sha"] == want_source
        rows.append({"kind": "curl /bytes/N", "bytes": n if ok else 0, "ok": ok, "sha": curl["sha"]})
    return rows


def plot_demo(events: list[dict[str, Any]], path: str) -> str | None:
    from tcpchimney.trace.plot import plot_busiest

    return plot_busiest(events, path, lambda conn: f"time-sequence of {conn} (real wire)")


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"{'transfer':<26} {'bytes':>10}  sha256 check"]
    for t in result["transfers"]:
        sha = (t["sha"] or "")[:16]
        lines.append(f"{t['kind']:<26} {t['bytes']:>10}  {'OK ' if t['ok'] else 'BAD'} {sha}")
    rows: list[tuple[str, Any]] = [
        ("connections", result["connections"]),
        ("bytes sent", result["bytes_sent"]),
        ("bytes verified", result["bytes_verified"]),
        ("mismatched bytes", result["mismatched_bytes"]),
        ("offloads", result["offloads"]),
        ("retrieve requests received", result["retrieves_received"]),
        ("NIC retrieve reasons", ", ".join(f"{k} {v}" for k, v in sorted(result["nic_retrieve_reasons"].items()))),
        ("UPLOAD_ALL cycles", result["upload_all_cycles"]),
        ("resumes", result["resumes"]),
        ("RSTs sent by our stack", result["rst_sent"]),
        ("contract violations", result["contract_violations"]),
        ("wall time (s)", result["wall_seconds"]),
    ]
    for who, n in sorted(result["terminations"]["by_requester"].items()):
        rows.append((f"terminations asked by {who}", n))
    for reason, n in sorted(result["terminations"]["by_reason"].items()):
        rows.append((f"  reason {reason}", n))
    wc = result.get("wire_check")
    if wc:
        rows.append(
            (
                "tshark",
                f"{wc['packets']} packets, RST from us {wc['rst_from_ours']}, bad checksums {wc['bad_checksums']}, "
                f"window shrinks {wc['window_shrinks']}, ack_lost_segment {wc['ack_lost_segment']}",
            )
        )
    width = max(len(r[0]) for r in rows)
    return [*lines, "", *(f"{name:<{width}}  {value}" for name, value in rows)]


def demo_ok(result: dict[str, Any]) -> bool:
    return bool(
        result["mismatched_bytes"] == 0
        and result["contract_violations"] == 0
        and result["connections"] == result["expected_connections"]
        and result["completed"] == result["connections"]
    )


def can_run() -> str | None:
    """Why the real-wire demo cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP/veth devices); run `chimney demo --sim` otherwise"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None
