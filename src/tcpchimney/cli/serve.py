"""``chimney serve``: our host stack with SoftToe NICs on real links, running services and a control socket.

One ``PeerNamespace`` holds the Linux peer: each NIC gets its own link (TAP or veth) into it, on its own subnet.
Everything runs on one asyncio loop (``AsyncioScheduler``).  SIGINT/SIGTERM stop it cleanly: the control socket
and the services close, then the links and the namespace are removed (the links/netns code does the cleanup, also
at interpreter exit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tcpchimney.config import ConfigError, NicAddresses, ServeConfig, load_config, plan_addresses, with_overrides
from tcpchimney.services import DEFAULT_PORTS, ServiceRegistry, start_services


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file (flags override it)")
    p.add_argument("--name", help="instance name (names the control socket); default chimney")
    p.add_argument("--link", choices=["tap", "veth"], help="link kind (default tap)")
    p.add_argument("--nics", type=int, help="number of SoftToe NICs, one link each (default 1)")
    p.add_argument("--mtu", type=int, help="link MTU (default 1500)")
    p.add_argument(
        "--addr",
        action="append",
        help="our address ip/prefix per NIC (repeat or comma-separate); default 10.77.<i>.2/24",
    )
    p.add_argument("--peer-addr", action="append", help="the Linux peer's address per NIC; default .1 (or .2) of ours")
    p.add_argument("--socket", help="control socket path (default /run/tcpchimney/<name>.sock or ./<name>.sock)")
    p.add_argument("--seed", type=int, help="random seed of the host stack")
    p.add_argument("--trace", help="write a JSON-lines trace here")
    for service, port in DEFAULT_PORTS.items():
        p.add_argument(f"--{service}-port", type=int, metavar="PORT", help=f"{service} port (default {port}; 0 = off)")
    p.add_argument("--http-root", help="document root of the HTTP server (default: none, only /bytes/N)")
    p.add_argument("--data-seed", type=int, help="seed of the pseudo-random bytes served by source and /bytes/N")
    p.add_argument("--no-offload", dest="offload", action="store_false", default=None, help="never offload")
    p.add_argument("--offload-after", type=float, help="seconds in ESTABLISHED before the policy offloads")
    p.add_argument("--tap-offload", action="store_true", default=None, help="TAP: allow kernel GSO/checksum offload")
    p.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    p.add_argument(
        "--team", type=int, metavar="N", help="one NIC team of N SoftToe members behind a userspace OVS LACP bond"
    )
    p.add_argument("--info-file", help="write the addresses, namespace and socket as JSON here once ready")


def _split_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    cfg = load_config(args.config) if args.config else ServeConfig()
    ports = {s: getattr(args, f"{s}_port") for s in DEFAULT_PORTS if getattr(args, f"{s}_port") is not None}
    cfg = with_overrides(
        cfg,
        name=args.name,
        link=args.link,
        nics=args.nics,
        mtu=args.mtu,
        addr=_split_list(args.addr),
        peer_addr=_split_list(args.peer_addr),
        socket=args.socket,
        seed=args.seed,
        trace=args.trace,
        ports=ports or None,
        http_root=args.http_root,
        data_seed=args.data_seed,
        offload=args.offload,
        offload_after=args.offload_after,
        tap_offload=args.tap_offload,
        team=getattr(args, "team", None),
    )
    return cfg.validate()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"chimney serve: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("chimney serve: needs root (network namespaces, TAP/veth devices)", file=sys.stderr)
        return 2
    if cfg.team:
        from tcpchimney.links.ovs import ovs_missing

        why = ovs_missing()
        if why is not None:
            print(f"chimney serve --team: userspace Open vSwitch unavailable: {why}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(run_serve(cfg, duration=args.duration, info_file=args.info_file))
    except KeyboardInterrupt:
        return 130


class _Serve:
    """Everything ``run_serve`` started, so it can be stopped in reverse order."""

    def __init__(self) -> None:
        self.ns: Any = None
        self.links: list[Any] = []
        self.servers: dict[str, Any] = {}
        self.control: Any = None
        self.trace_file: TextIO | None = None
        self.team: Any = None  # a started ``TeamWire`` (``--team``)

    async def close(self) -> None:
        if self.control is not None:
            with contextlib.suppress(Exception):
                await self.control.close()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.close()
        for link in reversed(self.links):
            with contextlib.suppress(Exception):
                link.close()
        if self.ns is not None:
            with contextlib.suppress(Exception):
                self.ns.close()
        if self.team is not None:
            with contextlib.suppress(Exception):
                await self.team.close()
        if self.trace_file is not None:
            with contextlib.suppress(Exception):
                self.trace_file.close()


def _readdress(ns: Any, ifname: str, old: tuple[str, int], new: tuple[str, int]) -> None:
    """Inside ``ns``: replace the address the link code gave the peer end with the configured one."""
    from pyroute2 import IPRoute

    from tcpchimney.links.netns import netlink_call

    def change() -> None:
        with IPRoute(netns=ns.name) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise OSError(f"no interface {ifname} in {ns.name}")
            ipr.addr("del", index=found[0], address=old[0], prefixlen=old[1])
            ipr.addr("add", index=found[0], address=new[0], prefixlen=new[1])

    netlink_call(change)


def _make_link(cfg: ServeConfig, ns: Any, plan: NicAddresses) -> Any:
    if cfg.link == "tap":
        from tcpchimney.links.tap import TapLink

        return TapLink(ns, subnet=plan.index, prefix_len=plan.prefix_len, mtu=cfg.mtu, offload=cfg.tap_offload)
    from tcpchimney.links.packet import VethLink

    return VethLink(ns, subnet=plan.index, prefix_len=plan.prefix_len, mtu=cfg.mtu)


async def run_serve(
    cfg: ServeConfig,
    *,
    duration: float | None = None,
    info_file: str | None = None,
    out: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    namespace_factory: Callable[[str], Any] | None = None,
    link_factory: Callable[[ServeConfig, Any, NicAddresses], Any] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM, ``duration`` seconds, or ``stop`` is set; returns the exit status.

    ``namespace_factory(prefix)`` and ``link_factory(cfg, ns, plan)`` default to ``PeerNamespace`` and the TAP/veth
    links (tests pass in-memory stand-ins); ``on_ready(info)`` is called once everything listens.
    """
    from tcpchimney.clock import AsyncioScheduler
    from tcpchimney.control.server import ControlServer, StackControl, default_socket_path
    from tcpchimney.host.policy import OffloadPolicy
    from tcpchimney.tcp.engine import TcpConfig
    from tcpchimney.trace.tracer import NullTracer, Tracer

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    plans = plan_addresses(cfg)
    run = _Serve()
    try:
        sched = AsyncioScheduler(loop)
        tracer: Tracer = NullTracer()
        if cfg.trace:
            run.trace_file = open(cfg.trace, "w")  # noqa: SIM115 - closed by run.close()
            tracer = Tracer(sched.now, run.trace_file, keep=False)
        policy = OffloadPolicy(
            enabled=cfg.offload,
            offload_after=cfg.offload_after,
            min_bytes=cfg.min_bytes,
            honor_optional=cfg.honor_optional,
        )
        tcp_config = TcpConfig(mss=cfg.mtu - 40)
        team_kw: dict[str, Any] = {}
        if cfg.team:
            host, nics, links, nic_info, ns_name, team_kw = await _start_team(cfg, run, policy, tracer)
        else:
            host, nics, links, nic_info, ns_name = await _start_nics(
                cfg, run, plans, sched, policy, tracer, tcp_config, namespace_factory, link_factory
            )
        registry = ServiceRegistry()
        run.servers = await start_services(
            lambda handler, port: host.start_server(handler, port),
            cfg.ports,
            registry,
            http_root=cfg.http_root,
            seed=cfg.data_seed,
        )
        socket_path = cfg.socket or default_socket_path(cfg.name)
        info: dict[str, Any] = {
            "name": cfg.name,
            "pid": os.getpid(),
            "namespace": ns_name,
            "nics": nic_info,
            "services": {s: p for s, p in cfg.ports.items() if p},
            "http_root": cfg.http_root,
            "data_seed": cfg.data_seed,
            "socket": socket_path,
        }
        control = StackControl(host, nics, registry, links=links, info=info, **team_kw)
        run.control = ControlServer(control.handle, socket_path)
        await run.control.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        for line in describe(info):
            out(line)
        if info_file:
            with open(info_file, "w") as fh:
                json.dump(info, fh, indent=2)
        if on_ready is not None:
            on_ready(info)
        if duration is not None:
            loop.call_later(duration, stop.set)
        await stop.wait()
        out("chimney serve: stopping")
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        await run.close()


async def _start_nics(
    cfg: ServeConfig,
    run: _Serve,
    plans: list[NicAddresses],
    sched: Any,
    policy: Any,
    tracer: Any,
    tcp_config: Any,
    namespace_factory: Callable[[str], Any] | None,
    link_factory: Callable[[ServeConfig, Any, NicAddresses], Any] | None,
) -> tuple[Any, dict[int, Any], dict[str, Any], list[dict[str, Any]], str]:
    """The plain set-up: one SoftToe per link into one peer namespace."""
    from tcpchimney.host.stack import HostStack
    from tcpchimney.links.netns import PeerNamespace
    from tcpchimney.targets.softtoe import SoftToe

    loop = asyncio.get_running_loop()
    host = HostStack(
        sched, name=cfg.name, tcp_config=tcp_config, policy=policy, tracer=tracer, seed=cfg.seed,
        on_violation="record",
    )  # fmt: skip
    run.ns = (namespace_factory or PeerNamespace)(cfg.ns_prefix)
    nics: dict[int, Any] = {}
    links: dict[str, Any] = {}
    nic_info: list[dict[str, Any]] = []
    for plan in plans:
        link = (link_factory or _make_link)(cfg, run.ns, plan)
        run.links.append(link)
        peer_ifname = getattr(link, "peer_ifname", link.name)
        if (link.peer_ip, link.prefix_len) != (plan.peer_ip, plan.prefix_len):
            _readdress(run.ns, peer_ifname, (link.peer_ip, link.prefix_len), (plan.peer_ip, plan.prefix_len))
        name = f"nic{plan.index}"
        nic = SoftToe(
            sched, link, link.local_mac, name=name, max_connections=cfg.max_connections, tcp_config=tcp_config,
            tracer=tracer,
        )  # fmt: skip
        target_id = host.add_nic(nic)
        host.add_interface(target_id, link.local_mac, plan.local_ip, plan.prefix_len, cfg.mtu)
        nics[target_id] = nic
        links[link.name] = link
        await link.start(loop)
        nic_info.append(
            {
                "nic": name,
                "link": cfg.link,
                "ifname": link.name,
                "peer_ifname": peer_ifname,
                "addr": f"{plan.local_ip}/{plan.prefix_len}",
                "mac": link.local_mac.hex(":"),
                "peer_addr": plan.peer_ip,
            }
        )
    return host, nics, links, nic_info, run.ns.name


async def _start_team(
    cfg: ServeConfig, run: _Serve, policy: Any, tracer: Any
) -> tuple[Any, dict[int, Any], dict[str, Any], list[dict[str, Any]], str, dict[str, Any]]:
    """``--team N``: N SoftToe members in a ``TeamTarget`` over veths into a userspace OVS LACP bond; the Linux peer
    sits behind the OVS bridge.  Returns what ``run_serve`` needs plus the ``StackControl`` team arguments."""
    from tcpchimney.scenario.team_wire import TeamWire, TeamWireConfig

    tw = TeamWire(
        TeamWireConfig(
            members=cfg.team, mtu=cfg.mtu, policy=policy, seed=cfg.seed, max_connections=cfg.max_connections,
            tracer=tracer,
        )
    )  # fmt: skip
    run.team = tw
    await tw.start()
    await tw.converge()
    ovs = tw.the_ovs
    assert ovs.ns is not None
    team = tw.the_team
    nics = {m.target_id: m.nic for m in team.members}  # member NICs (ids in the team's lower chimney)
    links = {link.name: link for link in tw.links}
    nic_info = [
        {
            "nic": m.nic.name,
            "link": "ovs-lacp",
            "ifname": ovs.members[m.index].team_ifname,
            "peer_ifname": ovs.members[m.index].ovs_ifname,
            "addr": f"{ovs.local_ip}/{ovs.prefix_len}",
            "mac": team.mac.hex(":"),
            "peer_addr": ovs.peer_ip,
        }
        for m in team.members
    ]
    team_kw = {"team": team, "member_link": tw.set_member_link}
    return tw.the_host, nics, links, nic_info, ovs.ns.name, team_kw


def describe(info: dict[str, Any]) -> list[str]:
    """The start-up banner: where everything is and how to reach it from the namespace."""
    ns = info["namespace"]
    lines = [f"chimney serve {info['name']} (pid {info['pid']}): peer namespace {ns}"]
    for n in info["nics"]:
        lines.append(
            f"  {n['nic']}: {n['link']} {n['ifname']}  ours {n['addr']} ({n['mac']})  <->  peer {n['peer_addr']} "
            f"({n['peer_ifname']} in {ns})"
        )
    services = ", ".join(f"{s} {p}" for s, p in info["services"].items())
    lines.append(f"  services: {services or 'none'}")
    if "http" in info["services"]:
        lines.append(f"  http root: {info['http_root'] or '(none: only /bytes/N)'}")
    lines.append(f"  control: {info['socket']}")
    ours = info["nics"][0]["addr"].split("/")[0]
    svc = info["services"]
    lines.append("try:")
    if "http" in svc:
        port = "" if svc["http"] == 80 else f":{svc['http']}"
        lines.append(
            f"  ip netns exec {ns} curl -o /dev/null -w '%{{size_download}}\\n' http://{ours}{port}/bytes/1000000"
        )
    if "source" in svc:
        lines.append(f"  echo 1000000 | ip netns exec {ns} nc -q 5 {ours} {svc['source']} | sha256sum")
    if "sink" in svc:
        lines.append(f"  head -c 1000000 /dev/urandom | ip netns exec {ns} nc -N {ours} {svc['sink']}")
    lines.append(f"  chimney ctl --socket {info['socket']} list")
    return lines
