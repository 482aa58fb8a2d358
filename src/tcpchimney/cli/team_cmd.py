"""``chimney demo --team [--sim]`` and ``chimney bench failover`` (wired into ``cli/main.py`` by the lead).

``add_team_arguments(demo_parser)`` adds the team options to the demo parser; ``cmd_demo_team(args)`` runs the demo
(real wire through a userspace OVS LACP partner, or ``--sim`` in the simulator); ``cmd_bench_failover(args)`` runs
the failover benchmark with the OVS detection baseline measured on the real wire.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import platform
import sys
from pathlib import Path
from typing import Any

FAILOVER_JSON = "bench-results/failover.json"


def add_team_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``chimney demo`` for the team demo (``--team``; ``--sim``, ``--seed``, ``--json``, ``--out`` are
    the demo's own)."""
    p.add_argument("--team", action="store_true", help="NIC team failover demo (real wire: userspace OVS LACP bond)")
    p.add_argument("--team-connections", type=int, default=64, help="team demo: concurrent transfers (default 64)")


# ================================================================================================ demo --team
def cmd_demo_team(args: argparse.Namespace) -> int:
    out = Path(getattr(args, "out", "out") or "out")
    out.mkdir(parents=True, exist_ok=True)
    seed = int(getattr(args, "seed", 0) or 0)
    as_json = bool(getattr(args, "json", False))
    connections = int(getattr(args, "team_connections", 64) or 64)
    if getattr(args, "sim", False):
        result, events = _run_sim(seed, connections, out)
        trace_path = out / "team-sim-trace.jsonl"
        plot_path = out / "team-sim-plot.png"
        _write_trace(events, trace_path)
        title = "simulated wire"
    else:
        from tcpchimney.scenario.team_wire import TeamWireDemoConfig, run_team_wire_demo, team_wire_missing

        why = team_wire_missing()
        if why is not None:
            print(f"chimney demo --team: {why}; run `chimney demo --team --sim` otherwise", file=sys.stderr)
            return 2
        cfg = TeamWireDemoConfig(connections=connections, out=str(out), seed=seed)
        if not as_json:
            print(
                f"tcpchimney team demo (real wire: {connections} transfers through a 2-member 802.3ad team, "
                "userspace Open vSwitch as LACP partner, Linux kernel echo server behind it)\n"
            )
            print("timeline (live):")

        tty = sys.stdout.isatty()

        def live(line: str) -> None:
            print(("\r\x1b[2K" if tty else "") + "  " + line, flush=True)

        def progress(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        try:
            result, events = asyncio.run(
                run_team_wire_demo(cfg, None if as_json else live, None if as_json else progress)
            )
        except KeyboardInterrupt:
            return 130
        trace_path = Path(result["trace"])
        plot_path = out / "team-plot.png"
        title = "real wire"
    conn = plot_team(events, str(plot_path), title)
    result["trace"] = str(trace_path)
    result["plot"] = str(plot_path) if conn else None
    result["plot_connection"] = conn
    if as_json:
        print(json.dumps(result, default=str))
    else:
        if getattr(args, "sim", False):
            from tcpchimney.scenario.team_wire import Timeline

            print(f"tcpchimney team demo (simulated wire, seed {seed})\n\ntimeline:")
            for line in Timeline(_first_failover_t(events) - 0.5).lines(events):
                print("  " + line)
        print()
        for line in summary_lines(result):
            print(line)
        print(f"\ntrace: {result['trace']}\nplot:  {result['plot']} ({conn})")
    return 0 if demo_ok(result) else 1


def _first_failover_t(events: list[dict[str, Any]]) -> float:
    for ev in events:
        if ev.get("kind") == "failover":
            return float(ev.get("t", 0.0))
    return 0.5


def _run_sim(seed: int, connections: int, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from tcpchimney.scenario.team_demo import TeamDemoConfig, run_team_demo

    result, world = run_team_demo(TeamDemoConfig(seed=seed, connections=connections))
    result["mode"] = "simulated"
    events = list(world.tracer.events)
    if result.get("failover") is not None:
        from tcpchimney.scenario.team_wire import failover_phases

        result["failover"].update({k: round(v, 6) for k, v in failover_phases(events).items()})
    return result, events


def _write_trace(events: list[dict[str, Any]], path: Path) -> None:
    with path.open("w") as fh:
        for ev in events:
            fh.write(json.dumps(ev, default=str) + "\n")


def plot_team(events: list[dict[str, Any]], path: str, title: str) -> str | None:
    """Time-sequence plot of the connection with the most ownership changes, failover marked; its label or None."""
    from tcpchimney.trace.plot import plot_busiest

    return plot_busiest(events, path, lambda conn: f"{conn}: team failover ({title})")


def demo_ok(result: dict[str, Any]) -> bool:
    return bool(
        result.get("mismatched_bytes") == 0
        and result.get("contract_violations") == 0
        and result.get("completed") == result.get("connections")
        and result.get("failover") is not None
    )


_FLAGS = (("selected", "SEL"), ("in_sync", "SYNC"), ("collecting", "COL"), ("distributing", "DIST"))


def members_lines(states: list[dict[str, Any]]) -> list[str]:
    lines = [f"    {'member':<7} {'carrier':<8} {'active':<7} {'LACP':<18} {'partner':<24} connections"]
    for m in states:
        lacp = m.get("lacp") or {}
        flags = ",".join(short for key, short in _FLAGS if lacp.get(key)) or "-"
        partner = lacp.get("partner") or {}
        who = f"{partner.get('system', '-')}/{partner.get('port', '-')}" if partner else "-"
        carrier = "up" if m.get("carrier") else "DOWN"
        active = "yes" if m.get("active") else "no"
        lines.append(
            f"    {m.get('name', '?'):<7} {carrier:<8} {active:<7} {flags:<18} {who:<24} {m.get('connections')}"
        )
    return lines


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    transfers = result.get("transfers")
    if transfers:
        bad = [t for t in transfers if not t["exact"]]
        lines.append(f"transfers ({len(transfers)}; each echoed by the kernel and checked with SHA-256):")
        lines.append(f"  {'#':>3} {'connection':<34} {'bytes':>9}  {'sha256 sent':<16} {'sha256 echoed':<16} check")
        shown = transfers if len(transfers) <= 12 else [*transfers[:8], *bad[:8]]
        for t in shown:
            lines.append(
                f"  {t['index']:>3} {t['conn'] or '-':<34} {t['bytes']:>9}  {t['sha256_sent'][:16]} "
                f"{t['sha256_echoed'][:16]} {'OK' if t['exact'] else 'BAD'}"
            )
        if len(shown) < len(transfers):
            lines.append(f"  ... {len(transfers) - len(shown)} more ({len(transfers) - len(bad)} of all OK)")
        lines.append("")
    members = result.get("members") or {}
    for phase in ("before_failure", "after_failover", "during_failure", "after_rejoin"):
        if phase in members:
            lines.append(f"members {phase.replace('_', ' ')}:")
            lines.extend(members_lines(members[phase]))
    fo = result.get("failover") or {}
    lines.append("")
    lines.append("failover:")
    if fo:
        t_detect = fo.get("t_detect")
        rows: list[tuple[str, Any]] = [
            ("member / reason", f"{fo.get('member')} / {fo.get('reason')}"),
            ("offloaded at the failure (on the failed member)", f"{fo.get('connections')} ({fo.get('on_member')})"),
        ]
        if "team_detect_s" in fo:
            rows.append(("link down -> team noticed", _ms(fo["team_detect_s"])))
        if t_detect is not None and fo.get("t_host_owns_all") is not None:
            rows.append(("team noticed -> all connections owned by the host", _ms(fo["t_host_owns_all"] - t_detect)))
        if t_detect is not None and fo.get("t_resume") is not None:
            rows.append(("team noticed -> OFFLOAD_RESUME", _ms(fo["t_resume"] - t_detect)))
        if fo.get("cpu_resume") is not None and fo.get("cpu_detect") is not None:
            rows.append(("CPU time of the whole failover", _ms(fo["cpu_resume"] - fo["cpu_detect"])))
        if "first_reoffload_s" in fo:
            rows.append(("link down -> first re-offload on the survivor", _ms(fo["first_reoffload_s"])))
        if "last_reoffload_s" in fo:
            rows.append(("link down -> last re-offload before the link came back", _ms(fo["last_reoffload_s"])))
        if "rejoin_s" in fo:
            rows.append(("link up -> member rejoined", _ms(fo["rejoin_s"])))
        width = max(len(r[0]) for r in rows)
        lines.extend(f"  {name:<{width}}  {value}" for name, value in rows)
    else:
        lines.append("  none recorded")
    totals: list[tuple[str, Any]] = [
        ("connections", result.get("connections")),
        ("completed", result.get("completed")),
        ("bytes sent", result.get("bytes_sent")),
        ("bytes verified", result.get("bytes_verified")),
        ("mismatched bytes", result.get("mismatched_bytes")),
        ("offloads", result.get("offloads")),
        ("UPLOAD_ALL cycles", result.get("upload_all_cycles")),
        ("resumes", result.get("resumes")),
        ("contract violations", result.get("contract_violations")),
        ("wall time (s)", result.get("wall_seconds")),
    ]
    terms = result.get("terminations") or {}
    for reason, n in sorted((terms.get("by_reason") or {}).items()):
        totals.append((f"terminations: {reason}", n))
    width = max(len(r[0]) for r in totals)
    lines.append("")
    lines.extend(f"{name:<{width}}  {value}" for name, value in totals)
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# ============================================================================================ bench failover
def cmd_bench_failover(args: argparse.Namespace) -> int:
    """Simulated failover cost for 10/100/1,000 connections next to OVS's own detection time on the real wire."""
    from tcpchimney.bench.failover import SIZES, run_failover_bench
    from tcpchimney.scenario.team_wire import team_wire_missing, write_json

    json_path = getattr(args, "json_out", None)
    if json_path in (None, "bench-results/sim.json"):  # the bench parser's default belongs to `bench sim`
        json_path = FAILOVER_JSON
    quick = bool(getattr(args, "quick", False))
    with contextlib.redirect_stdout(io.StringIO()):  # its own table is printed below, with the ratios
        sim = run_failover_bench(None, sizes=SIZES)
    baseline: dict[str, Any] | None = None
    why = team_wire_missing()
    if why is None:
        from tcpchimney.scenario.team_wire import measure_ovs_detection

        try:
            baseline = asyncio.run(measure_ovs_detection(carrier_trials=1 if quick else 5, lacp_trials=1))
        except Exception as exc:  # the simulated figures still stand
            why = f"measurement failed: {type(exc).__name__}: {exc}"
    rows = failover_rows(sim["rows"], baseline)
    report = {
        "benchmark": "team_failover",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "simulated": sim,
        "baseline_ovs_detection_s": None
        if baseline is None
        else {"carrier": baseline["carrier_median_s"], "lacp": baseline["lacp_median_s"]},
        "baseline": baseline,
        "baseline_unavailable": why,
        "rows": rows,
    }
    for line in failover_table(rows, baseline, why):
        print(line)
    write_json(json_path, report)
    print(f"\nJSON: {json_path}")
    ok = all(r["bytes_exact"] and r["violations"] == 0 for r in sim["rows"])
    return 0 if ok else 1


def failover_rows(sim_rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per (mode, connections): the simulated times (virtual time + the CPU the failover took, since the
    simulated NICs complete state operations without virtual delay) and their ratio to OVS's detection time of the
    same failure kind (carrier loss for "carrier", lost LACPDUs for "silent")."""
    rows = []
    for r in sim_rows:
        to_host = r["to_host_virtual_s"] + r["to_host_cpu_s"]
        to_reoffload = r["to_reoffloaded_virtual_s"] + r["to_reoffloaded_cpu_s"]
        base = None
        if baseline is not None:
            base = baseline["carrier_median_s"] if r["mode"] == "carrier" else baseline["lacp_median_s"]
        rows.append(
            {
                "mode": r["mode"],
                "connections": r["connections"],
                "to_host_s": to_host,
                "to_reoffloaded_s": to_reoffload,
                "upload_cpu_s": r["to_host_cpu_s"],
                "ovs_detection_s": base,
                "to_host_ratio": (to_host / base) if base else None,
                "to_reoffloaded_ratio": (to_reoffload / base) if base else None,
                "bytes_exact": r["bytes_exact"],
                "violations": r["violations"],
            }
        )
    return rows


def failover_table(rows: list[dict[str, Any]], baseline: dict[str, Any] | None, why: str | None) -> list[str]:
    head = (
        f"{'failure':<14} {'conns':>6} {'to host':>11} {'re-offloaded':>13} {'OVS notices':>12} "
        f"{'to host/OVS':>12} {'re-offl./OVS':>13} {'exact':>6}"
    )
    lines = ["team failover (simulated team, times from the link going down; OVS measured on the real wire)", "", head]
    lines.append("-" * len(head))
    for r in rows:
        label = "carrier loss" if r["mode"] == "carrier" else "lost LACPDUs"
        base = r["ovs_detection_s"]
        lines.append(
            f"{label:<14} {r['connections']:>6} {_ms(r['to_host_s']):>11} {_ms(r['to_reoffloaded_s']):>13} "
            f"{(_ms(base) if base else 'n/a'):>12} {_ratio(r['to_host_ratio']):>12} "
            f"{_ratio(r['to_reoffloaded_ratio']):>13} {r['bytes_exact']!s:>6}"
        )
    lines.append("")
    if baseline is None:
        lines.append(f"OVS baseline could not be measured: {why}")
    else:
        lines.append(
            "OVS detection (median): carrier loss "
            f"{_ms(baseline['carrier_median_s'])} over {len(baseline['carrier'])} trials, lost LACPDUs (fast timers) "
            f"{_ms(baseline['lacp_median_s'])}; our team noticed them after {_ms(baseline['team_carrier_median_s'])} "
            f"and {_ms(baseline['team_lacp_median_s'])}"
        )
    lines.append(
        "to host = link down until every connection is owned by the host again (detection + UPLOAD_ALL); "
        "re-offloaded = until all are offloaded on the survivor (host_backoff 0)"
    )
    return lines


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"
