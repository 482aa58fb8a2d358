"""``chimney``: the command line (demo, bench, plot)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.team:
        from tcpchimney.cli.team_cmd import cmd_demo_team

        return cmd_demo_team(args)
    if not args.sim:
        return _cmd_wire_demo(args)
    from tcpchimney.scenario.demo import DemoConfig, run_demo, summary_table, timeline_lines

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result, world = run_demo(DemoConfig(seed=args.seed, connections=args.connections, loss=args.loss))
    events = world.tracer.events
    trace_path = out / "demo-trace.jsonl"
    with trace_path.open("w") as fh:
        for ev in events:
            fh.write(json.dumps(ev, default=str) + "\n")
    plot_path = out / "demo-plot.png"
    plotted = _plot_busiest(events, plot_path)
    result["trace"] = str(trace_path)
    result["plot"] = str(plot_path) if plotted else None
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(f"tcpchimney demo (simulated wire, seed {args.seed})\n")
        print("timeline:")
        for line in timeline_lines(events):
            print("  " + line)
        print("\nsummary:")
        print(summary_table(result))
        print(f"\ntrace: {trace_path}" + (f"\nplot:  {plot_path}" if plotted else ""))
    ok = result["mismatched_bytes"] == 0 and result["contract_violations"] == 0
    return 0 if ok else 1


def _cmd_wire_demo(args: argparse.Namespace) -> int:
    import asyncio

    from tcpchimney.scenario.wire_demo import (
        WireDemoConfig,
        can_run,
        demo_ok,
        plot_demo,
        run_wire_demo,
        summary_lines,
    )

    why = can_run()
    if why is not None:
        print(f"chimney demo: {why}", file=sys.stderr)
        return 2
    cfg = WireDemoConfig(link=args.link, out=args.out, seed=args.seed, senders=max(1, args.connections // 3))
    cfg.receivers = cfg.senders

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    progress = None if args.json else show
    if not args.json:
        print(f"tcpchimney demo (real wire: {cfg.link}, Linux kernel peer in a network namespace)\n")
    try:
        result, events = asyncio.run(run_wire_demo(cfg, progress))
    except KeyboardInterrupt:
        return 130
    plot_path = Path(args.out) / "wire-plot.png"
    plotted = plot_demo(events, str(plot_path))
    result["plot"] = str(plot_path) if plotted else None
    result["plot_connection"] = plotted
    if args.json:
        print(json.dumps(result, default=str))
    else:
        from tcpchimney.scenario.demo import timeline_lines

        print("\ntimeline:")
        for line in timeline_lines(events):
            print("  " + line)
        print("\nsummary:")
        for line in summary_lines(result):
            print(line)
        print(f"\ntrace: {result['trace']}\npcap:  {result['pcap']}\nplot:  {result['plot']} ({plotted})")
    return 0 if demo_ok(result) else 1


def _plot_busiest(events: list[dict[str, object]], path: Path) -> bool:
    """Plot the connection with the most ownership changes (the most instructive picture)."""
    from tcpchimney.trace.plot import list_connections, plot_time_sequence

    conns = list_connections(events)
    if not conns:
        return False
    changes = {c: 0 for c in conns}
    for ev in events:
        if ev.get("kind") in ("owner", "retrieve", "terminate_done") and ev.get("conn") in changes:
            changes[str(ev["conn"])] += 1
    best = max(conns, key=lambda c: changes[c])
    plot_time_sequence(events, best, str(path), title=f"time-sequence of {best}")
    return True


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "sim":
        from tcpchimney.bench.sim import run_sim_bench

        return run_sim_bench(quick=args.quick, json_path=args.json_out)
    if args.what == "wire":
        from tcpchimney.bench.wire import run_wire_bench

        json_out = args.json_out if args.json_out != "bench-results/sim.json" else "bench-results/wire.json"
        return run_wire_bench(quick=args.quick, json_path=json_out)
    from tcpchimney.cli.team_cmd import cmd_bench_failover

    return cmd_bench_failover(args)


def _cmd_plot(args: argparse.Namespace) -> int:
    from tcpchimney.trace.plot import list_connections, load_trace, plot_time_sequence

    events = load_trace(args.trace)
    conns = list_connections(events)
    if args.list or not conns:
        for c in conns:
            print(c)
        return 0 if conns else 1
    conn = args.conn or conns[0]
    plot_time_sequence(events, conn, args.output, title=f"time-sequence of {conn}")
    print(args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chimney", description="TCP Chimney Offload in Python")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main scenario (offload, retrieve, UPLOAD_ALL/RESUME, verify)")
    demo.add_argument("--sim", action="store_true", help="use the deterministic simulator")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--connections", type=int, default=24)
    demo.add_argument("--loss", type=float, default=0.01, help="loss probability per frame on the simulated wire")
    demo.add_argument("--out", default="out", help="folder for the trace and the plot")
    demo.add_argument("--link", choices=["tap", "veth"], default="tap", help="real wire: the link kind")
    from tcpchimney.cli.team_cmd import add_team_arguments

    add_team_arguments(demo)
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="measure and print a table (and write JSON)")
    bench.add_argument("what", choices=["sim", "wire", "failover"])
    bench.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke run)")
    bench.add_argument("--json-out", default="bench-results/sim.json")
    bench.set_defaults(func=_cmd_bench)

    plot = sub.add_parser("plot", help="draw the time-sequence plot of a connection from a JSON-lines trace")
    plot.add_argument("trace")
    plot.add_argument("--conn", help="connection as printed by --list (default: the first)")
    plot.add_argument("--list", action="store_true", help="list the connections in the trace")
    plot.add_argument("-o", "--output", default="out/plot.png")
    plot.set_defaults(func=_cmd_plot)

    from tcpchimney.cli import ctl as _ctl
    from tcpchimney.cli import serve as _serve

    serve = sub.add_parser("serve", help="run the host stack on real links (TAP/veth) with services (needs root)")
    _serve.add_arguments(serve)
    serve.set_defaults(func=_serve.cmd_serve)

    ctl = sub.add_parser("ctl", help="control a running `chimney serve` (list, retrieve, upload_all, stats...)")
    _ctl.add_arguments(ctl)
    ctl.set_defaults(func=_ctl.cmd_ctl)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
