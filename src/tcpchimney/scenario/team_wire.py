"""A NIC team on a real wire: our ``HostStack`` -> ``TeamTarget`` (SoftToe members on AF_PACKET veths) -> Open
vSwitch in userspace with an LACP bond (``OvsPartner``, its own namespace) -> the namespace kernel behind the bridge.

``TeamWire`` builds and tears down that world on the running asyncio loop (``AsyncioScheduler``); every process and
namespace it starts is stopped by PID / removed in ``close()``, also when start-up fails half way.  Each member's
link is wrapped in a ``MutableLink`` so a test or the benchmark can stop our LACPDUs on one member (a silent
failure that only LACP expiry notices) while its data still flows.

Also here: ``run_team_wire_demo`` (``chimney demo --team``: echo transfers to a kernel server, a member link taken
down in the middle, the failover shown live, the member restored) and ``measure_ovs_detection`` (how long OVS itself
takes to notice a carrier loss and lost LACPDUs: the baseline of ``chimney bench failover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tcpchimney.clock import AsyncioScheduler
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.sockets import TcpSocket
from tcpchimney.host.stack import HostStack
from tcpchimney.links.base import FrameReceiver, LinkListener
from tcpchimney.links.ovs import MemberLink, OvsPartner, ovs_missing
from tcpchimney.links.packet import random_local_mac
from tcpchimney.scenario.report import Progress, host_counters
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.team.lacpdu import is_slow_protocols_frame
from tcpchimney.team.team import TeamTarget
from tcpchimney.trace.tracer import NullTracer, Tracer

ECHO_PORT = 7100

ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys

    async def echo(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def main(ip, port):
        server = await asyncio.start_server(echo, ip, port, backlog=4096)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def quick_policy() -> OffloadPolicy:
    """Offload at once and come back quickly after any upload (0.2 s back-off), so a demo re-offloads in view."""
    policy = OffloadPolicy(host_backoff=0.2, failure_backoff=0.2)
    policy.backoff = {reason: min(value, 0.2) for reason, value in policy.backoff.items()}
    return policy


def team_wire_missing() -> str | None:
    """Why the real-wire team cannot run here (None when it can): root and userspace OVS are needed."""
    return ovs_missing()


class MutableLink:
    """A ``LinkPort`` around a ``MemberLink`` that can drop our outgoing LACPDUs (``mute_lacp``) while data flows."""

    def __init__(self, link: MemberLink) -> None:
        self.link = link
        self.name = link.name
        self.mute_lacp = False
        self.lacp_dropped = 0

    @property
    def up(self) -> bool:
        return self.link.up

    @property
    def stats(self) -> Any:
        return self.link.stats

    def transmit(self, frame: bytes) -> None:
        if self.mute_lacp and is_slow_protocols_frame(frame):
            self.lacp_dropped += 1
            return
        self.link.transmit(frame)

    def set_receiver(self, receiver: FrameReceiver) -> None:
        self.link.set_receiver(receiver)

    def set_link_listener(self, listener: LinkListener) -> None:
        self.link.set_link_listener(listener)


class WatchTracer(Tracer):
    """A ``Tracer`` that keeps ``segment`` events only for the connections in ``watch`` (the plot needs a few, the
    hot path should not pay for all) and hands every other event to ``on_event`` as it happens (the live view)."""

    def __init__(
        self,
        now: Callable[[], float],
        stream: IO[str] | None = None,
        keep: bool = True,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(now, stream, keep)
        self.watch: set[str] | None = set()  # None: keep every connection's segments
        self.on_event = on_event

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "segment" and self.watch is not None and fields.get("conn") not in self.watch:
            return
        super().emit(kind, **fields)
        if self.on_event is not None and kind != "segment" and self._keep:
            self.on_event(self.events[-1])


@dataclass
class TeamWireConfig:
    members: int = 2
    bond_mode: str = "balance-tcp"
    lacp_time: str = "fast"
    mtu: int = 1500
    policy: OffloadPolicy = field(default_factory=lambda: quick_policy())
    trace_path: str | None = None  # JSON-lines trace file
    trace: bool = False  # keep events in memory (``tracer.events``)
    on_event: Callable[[dict[str, Any]], None] | None = None
    carrier_poll: float = 0.02  # seconds between reads of the member links' kernel carrier
    max_connections: int = 4096  # per member NIC
    seed: int = 0
    tracer: Tracer | None = None  # use this tracer (e.g. ``chimney serve``'s) instead of building one


class TeamWire:
    """The real-wire team world (see the module docstring).  ``async with TeamWire(cfg) as w: ...``."""

    def __init__(self, config: TeamWireConfig | None = None) -> None:
        self.config = config or TeamWireConfig()
        self.ovs: OvsPartner | None = None
        self.links: list[MemberLink] = []
        self.ports: list[MutableLink] = []
        self.nics: list[SoftToe] = []
        self.team: TeamTarget | None = None
        self.host: HostStack | None = None
        self.team_id = -1
        self.tracer: Tracer = NullTracer()
        self.sched: AsyncioScheduler | None = None
        self._trace_file: IO[str] | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifetime ------------------------------------------------------------------------------------------------
    async def __aenter__(self) -> TeamWire:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> TeamWire:
        reason = team_wire_missing()
        if reason is not None:
            raise RuntimeError(f"real-wire team unavailable: {reason}")
        cfg = self.config
        loop = asyncio.get_running_loop()
        try:
            self.ovs = OvsPartner(members=cfg.members, bond_mode=cfg.bond_mode, lacp_time=cfg.lacp_time, mtu=cfg.mtu)
            await asyncio.to_thread(self.ovs.start)
            ovs = self.ovs
            self.sched = sched = AsyncioScheduler(loop)
            if cfg.trace_path is not None:
                Path(cfg.trace_path).parent.mkdir(parents=True, exist_ok=True)
                self._trace_file = open(cfg.trace_path, "w")  # noqa: SIM115 - closed by close()
            if cfg.tracer is not None:
                self.tracer = cfg.tracer
            elif cfg.trace or self._trace_file is not None:
                self.tracer = WatchTracer(sched.now, self._trace_file, keep=cfg.trace, on_event=cfg.on_event)
            tcp = TcpConfig(mss=cfg.mtu - 40)
            mac = random_local_mac()
            self.links = [ovs.open_member_link(i) for i in range(cfg.members)]
            self.ports = [MutableLink(link) for link in self.links]
            self.nics = [
                SoftToe(
                    sched,
                    port,
                    mac,
                    name=f"nic{i}",
                    max_connections=cfg.max_connections,
                    tcp_config=tcp,
                    tracer=self.tracer,
                )
                for i, port in enumerate(self.ports)
            ]
            self.team = TeamTarget(sched, list(self.nics), name="team0", mac=mac, tracer=self.tracer)
            self.host = HostStack(
                sched, name="host", tcp_config=tcp, policy=cfg.policy, tracer=self.tracer, seed=cfg.seed,
                on_violation="record",
            )  # fmt: skip
            self.team_id = self.host.add_nic(self.team)
            self.host.add_interface(self.team_id, mac, ovs.local_ip, ovs.prefix_len, cfg.mtu)
            for link in self.links:
                await link.start(loop)
                link.poll_carrier()
            self._poller = asyncio.create_task(self._poll_carrier())
        except BaseException:
            await self.close()
            raise
        return self

    async def _poll_carrier(self) -> None:
        # AF_PACKET gives no carrier events: read the kernel's view (OVS taking its end down shows here).
        while True:
            for link in self.links:
                link.poll_carrier()
            await asyncio.sleep(self.config.carrier_poll)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
        for link in self.links:
            with contextlib.suppress(Exception):
                link.close()
        if self.ovs is not None:
            await asyncio.to_thread(self.ovs.stop)
        if self._trace_file is not None:
            with contextlib.suppress(Exception):
                self._trace_file.close()

    # -- accessors (typed, for callers that know the world is started) -------------------------------------------
    @property
    def the_team(self) -> TeamTarget:
        assert self.team is not None, "TeamWire not started"
        return self.team

    @property
    def the_host(self) -> HostStack:
        assert self.host is not None, "TeamWire not started"
        return self.host

    @property
    def the_ovs(self) -> OvsPartner:
        assert self.ovs is not None, "TeamWire not started"
        return self.ovs

    @property
    def peer_ip(self) -> str:
        return self.the_ovs.peer_ip

    @property
    def local_ip(self) -> str:
        return self.the_ovs.local_ip

    def now(self) -> float:
        assert self.sched is not None
        return self.sched.now()

    def violations(self) -> list[Exception]:
        return list(self.the_host.chimney.violations) + list(self.the_team.lower.violations)

    # -- convergence and failures --------------------------------------------------------------------------------
    async def converge(self, timeout: float = 20.0, members: list[int] | None = None) -> None:
        """Wait until our team has ``members`` (default all) active and OVS reports them current and enabled."""
        wanted = list(range(self.config.members)) if members is None else sorted(members)
        team = self.the_team
        await wait_for(lambda: all(i in team.active_members() for i in wanted), timeout, "LACP convergence (team)")
        await asyncio.to_thread(self.the_ovs.wait_bond_current, timeout, wanted)

    def set_member_link(self, index: int, up: bool, cause: str = "link down") -> None:
        """Take member ``index``'s link down or up at link level (our end of the veth: OVS loses carrier too)."""
        if not up:
            self.tracer.emit("failover", member=self.nics[index].name, cause=cause)
        else:
            self.tracer.emit("member_restored", member=self.nics[index].name)
        self.links[index].set_carrier(up)

    def mute_lacp(self, index: int, mute: bool) -> None:
        """Stop (or restart) our LACPDUs on member ``index``; data keeps flowing."""
        if mute:
            self.tracer.emit("failover", member=self.nics[index].name, cause="LACPDUs stopped")
        self.ports[index].mute_lacp = mute

    # -- the kernel side -----------------------------------------------------------------------------------------
    async def start_echo_server(self, port: int = ECHO_PORT) -> subprocess.Popen[Any]:
        """A kernel echo server on ``peer_ip:port`` in the OVS namespace (stopped by ``close()``)."""
        ns = self.the_ovs.ns
        assert ns is not None
        proc = ns.popen([sys.executable, "-c", ECHO_SERVER, self.peer_ip, str(port)], stdout=subprocess.PIPE, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15.0)
        if line.strip() != "ready":
            raise RuntimeError(f"echo server did not start (exit {proc.poll()})")
        return proc


async def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> float:
    """Poll ``cond`` on the loop until true; returns the seconds it took.  Raises ``TimeoutError`` naming ``what``."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


def conn_label(sock: TcpSocket) -> str:
    lip, lport, rip, rport = sock.key
    return f"{lip}:{lport}>{rip}:{rport}"


# ================================================================================================== echo flows
@dataclass
class EchoFlow:
    """One transfer: ``data`` written to the kernel echo server, everything echoed back checked byte for byte."""

    index: int
    data: bytes
    sock: TcpSocket | None = None
    written: int = 0
    echoed: bytearray = field(default_factory=bytearray)
    eof: bool = False
    closed: str | None = None
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.eof or (self.closed is not None and self.closed != "closed")

    @property
    def exact(self) -> bool:
        return bytes(self.echoed) == self.data

    def mismatched(self) -> int:
        got = bytes(self.echoed)
        if got == self.data:
            return 0
        common = min(len(got), len(self.data))
        diff = sum(1 for i in range(0, common, 4096) if got[i : i + 4096] != self.data[i : i + 4096]) * 4096
        return min(common, diff) + abs(len(self.data) - len(got))

    def summary(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "conn": conn_label(self.sock) if self.sock is not None else None,
            "bytes": len(self.data),
            "echoed": len(self.echoed),
            "sha256_sent": hashlib.sha256(self.data).hexdigest(),
            "sha256_echoed": hashlib.sha256(bytes(self.echoed)).hexdigest(),
            "exact": self.exact,
            "closed": self.closed,
        }


class EchoFlows:
    """Drives many ``EchoFlow`` from our stack to a kernel echo server, paced with a send high-water mark."""

    CHUNK = 16 * 1024
    HIGH_WATER = 64 * 1024

    def __init__(self, host: HostStack, ip: str, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.ip = ip
        self.port = port
        self.loop = loop
        self.flows: list[EchoFlow] = []

    def start(self, data: bytes) -> EchoFlow:
        flow = EchoFlow(len(self.flows), data)
        self.flows.append(flow)
        sock = self.host.connect(self.ip, self.port)
        flow.sock = sock
        sock.on_readable = lambda: self._read(flow)
        sock.on_closed = lambda reason: self._closed(flow, reason)
        self._pump(flow)
        return flow

    def _pump(self, flow: EchoFlow) -> None:
        sock = flow.sock
        if sock is None or flow.closed is not None or flow.written >= len(flow.data):
            return
        while flow.written < len(flow.data) and sock.send_buffered < self.HIGH_WATER:
            end = min(flow.written + self.CHUNK, len(flow.data))
            sock.write(flow.data[flow.written : end])
            flow.written = end
        if flow.written >= len(flow.data):
            sock.close()
        else:
            self.loop.call_later(0.002, self._pump, flow)

    def _read(self, flow: EchoFlow) -> None:
        sock = flow.sock
        if sock is None:
            return
        flow.echoed += sock.read()
        if sock.at_eof and not flow.eof:
            flow.eof = True
            flow.finished = time.monotonic()

    def _closed(self, flow: EchoFlow, reason: str) -> None:
        flow.closed = reason
        if flow.finished is None:
            flow.finished = time.monotonic()

    @property
    def all_done(self) -> bool:
        return all(f.done for f in self.flows)

    def bytes_echoed(self) -> int:
        return sum(len(f.echoed) for f in self.flows)

    def bytes_total(self) -> int:
        return sum(len(f.data) for f in self.flows)

    def totals(self) -> dict[str, int]:
        sent = sum(2 * len(f.data) for f in self.flows)  # each byte crosses the team twice (out and echoed back)
        verified = sum(2 * len(f.data) for f in self.flows if f.exact)
        return {
            "bytes_sent": sent,
            "bytes_verified": verified,
            "mismatched_bytes": sum(f.mismatched() for f in self.flows),
        }


# ================================================================================================ the timeline
TIMELINE_KINDS = frozenset(
    {
        "failover",
        "member_restored",
        "team.failover",
        "team.join",
        "team.resume",
        "pause",
        "upload_all",
        "resume",
        "terminate_done",
        "offload_done",
        "violation",
    }
)
_GROUPED = {"terminate_done": "terminations done", "offload_done": "offloads done"}


class Timeline:
    """Turns trace events into readable lines; runs of terminations / offloads become one line with a count.

    ``feed(event)`` returns the lines that are complete (for the live view); ``flush()`` the pending group."""

    def __init__(self, t0: float = 0.0) -> None:
        self.t0 = t0
        self._group: tuple[str, float, float, int, str] | None = None  # (kind, first t, last t, count, reason)

    def _ms(self, t: float) -> str:
        return f"{(t - self.t0) * 1000:+10.1f} ms"

    def feed(self, ev: dict[str, Any]) -> list[str]:
        kind = str(ev.get("kind"))
        if kind not in TIMELINE_KINDS or ev.get("host", "host") != "host":
            return []
        t = float(ev.get("t", 0.0))
        out: list[str] = []
        if kind in _GROUPED:
            reason = str(ev.get("reason") or ev.get("target") or "")
            if kind == "terminate_done" and reason == "final":
                return []  # a finished connection comes home for TIME_WAIT: routine
            g = self._group
            if g is not None and g[0] == kind and g[4] == reason:
                self._group = (kind, g[1], t, g[3] + 1, reason)
                return []
            out.extend(self.flush())
            self._group = (kind, t, t, 1, reason)
            return out
        out.extend(self.flush())
        out.append(f"{self._ms(t)}  {_describe(kind, ev)}")
        return out

    def flush(self) -> list[str]:
        g = self._group
        self._group = None
        if g is None:
            return []
        kind, first, last, count, reason = g
        span = f" over {(last - first) * 1000:.1f} ms" if count > 1 else ""
        why = f" ({reason})" if reason else ""
        return [f"{self._ms(first)}  {count} {_GROUPED[kind]}{why}{span}"]

    def lines(self, events: list[dict[str, Any]], limit: int = 80) -> list[str]:
        out: list[str] = []
        for ev in events:
            out.extend(self.feed(ev))
        out.extend(self.flush())
        if len(out) > limit:
            out = [*out[: limit // 2], f"   ... {len(out) - limit} more lines ...", *out[-limit // 2 :]]
        return out


def _describe(kind: str, ev: dict[str, Any]) -> str:
    if kind == "failover":
        return f"LINK DOWN     {ev.get('member')} ({ev.get('cause')})"
    if kind == "member_restored":
        return f"LINK UP       {ev.get('member')}"
    if kind == "team.failover":
        return f"team: member {ev.get('members')} lost ({ev.get('reason')}): OFFLOAD_PAUSE + UPLOAD_ALL"
    if kind == "team.join":
        return f"team: member {ev.get('members')} rejoined the aggregate"
    if kind == "team.resume":
        return f"team: OFFLOAD_RESUME, active members {ev.get('active')}"
    if kind == "pause":
        return "host: PAUSE"
    if kind == "upload_all":
        return f"host: UPLOAD_ALL ({ev.get('connections')} connections offloaded)"
    if kind == "resume":
        return f"host: RESUME (max_connections {ev.get('max_connections')})"
    extra = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("t", "kind", "host"))
    return f"{kind} {extra}"


# ================================================================================================ the demo
@dataclass
class TeamWireDemoConfig:
    connections: int = 64
    min_bytes: int = 768 * 1024
    max_bytes: int = 1536 * 1024
    fail_member: int = 0
    fail_at_fraction: float = 0.25  # take the link down once this share of the bytes came back
    restore_after: float = 1.0  # seconds after the re-offloads on the survivor
    time_limit: float = 180.0
    out: str = "out"
    seed: int = 0
    plot_connections: int = 4  # connections whose segments are traced for the plot


async def run_team_wire_demo(
    cfg: TeamWireDemoConfig,
    live: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``chimney demo --team`` on the real wire.  ``live(line)`` gets timeline lines as they happen and
    ``progress(text)`` a status line a few times a second.  Returns (result, trace events)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trace_path = out / "team-trace.jsonl"
    wall0 = time.perf_counter()
    timeline = Timeline()

    def on_event(ev: dict[str, Any]) -> None:
        if live is not None:
            for line in timeline.feed(ev):
                live(line)

    wcfg = TeamWireConfig(trace_path=str(trace_path), trace=True, on_event=on_event, seed=cfg.seed)
    snapshots: dict[str, list[dict[str, Any]]] = {}
    phases: dict[str, float] = {}
    async with TeamWire(wcfg) as w:
        team, host, loop = w.the_team, w.the_host, asyncio.get_running_loop()
        timeline.t0 = w.now()
        t_conv = time.monotonic()
        await w.converge()
        converge_s = time.monotonic() - t_conv
        w.tracer.emit("converged", lacp=[m["lacp"] for m in team.member_states()])
        await w.start_echo_server()
        rng = random.Random(cfg.seed)
        flows = EchoFlows(host, w.peer_ip, ECHO_PORT, loop)
        tracer = w.tracer
        for i in range(cfg.connections):
            flow = flows.start(rng.randbytes(rng.randint(cfg.min_bytes, cfg.max_bytes)))
            if (
                i < cfg.plot_connections
                and isinstance(tracer, WatchTracer)
                and tracer.watch is not None
                and flow.sock is not None
            ):
                tracer.watch.add(conn_label(flow.sock))
        total = flows.bytes_total()
        status = Progress(progress, tty=sys.stdout.isatty())

        def show(phase: str) -> None:
            states = team.member_states()
            per = " ".join(
                f"{m['name']}:{'up' if m['active'] else 'DOWN'}/{m['connections']}" for m in states
            )  # fmt: skip
            status.show(
                f"[{phase:<10}] done {sum(f.done for f in flows.flows):>3}/{len(flows.flows)}  "
                f"echoed {flows.bytes_echoed() * 100 // max(1, total):>3}%  offloaded {team.offloaded_connections():>3}"
                f"  members {per}",
                time.monotonic(),
            )

        async def watch(phase: str, cond: Callable[[], bool], timeout: float) -> None:
            start = time.monotonic()
            while not cond():
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"timed out after {timeout} s waiting for: {phase}")
                show(phase)
                await asyncio.sleep(0.05)

        try:
            await watch("offload", lambda: team.offloaded_connections() >= cfg.connections // 2, 30.0)
            await watch("transfer", lambda: flows.bytes_echoed() >= cfg.fail_at_fraction * total, cfg.time_limit)
            snapshots["before_failure"] = team.member_states()
            running = sum(1 for f in flows.flows if not f.done)
            t_down = time.monotonic()
            t_down_sched = w.now()
            w.set_member_link(cfg.fail_member, False)
            survivors = [i for i in range(wcfg.members) if i != cfg.fail_member]
            await watch("detect", lambda: cfg.fail_member not in team.active_members(), 10.0)
            records = team.failovers.records
            phases["team_detect_s"] = (records[0].t_detect if records else w.now()) - t_down_sched
            await watch("upload", lambda: not team.uploading, 15.0)
            phases["resume_s"] = time.monotonic() - t_down
            snapshots["after_failover"] = team.member_states()
            before = sum(w.nics[i].stats.initiates for i in survivors)
            await watch("re-offload", lambda: sum(w.nics[i].stats.initiates for i in survivors) > before, 15.0)
            until = time.monotonic() + cfg.restore_after
            await watch("survivor", lambda: time.monotonic() >= until, cfg.restore_after + 5)
            snapshots["during_failure"] = team.member_states()
            w.set_member_link(cfg.fail_member, True)
            await watch("rejoin", lambda: cfg.fail_member in team.active_members(), 20.0)
            await watch("finish", lambda: flows.all_done, cfg.time_limit)
            await asyncio.sleep(0.3)
            snapshots["after_rejoin"] = team.member_states()
            ovs_lacp = await asyncio.to_thread(w.the_ovs.lacp_show)
        finally:
            status.done()
        for line in timeline.flush():
            if live is not None:
                live(line)
        events = list(w.tracer.events)
        phases.update(failover_phases(events))
        result = _demo_result(w, flows, snapshots, phases, running, converge_s, ovs_lacp)
    result["trace"] = str(trace_path)
    result["wall_seconds"] = round(time.perf_counter() - wall0, 3)
    result["mode"] = "real-wire"
    return result, events


def _demo_result(
    w: TeamWire,
    flows: EchoFlows,
    snapshots: dict[str, list[dict[str, Any]]],
    phases: dict[str, float],
    running: int,
    converge_s: float,
    ovs_lacp: dict[str, Any],
) -> dict[str, Any]:
    team, host = w.the_team, w.the_host
    stats = host.stats
    records = team.failovers.records
    rec = records[0].as_dict() if records else None
    if rec is not None:
        rec.update({k: round(v, 6) for k, v in phases.items()})
        rec["running_at_failure"] = running
    violations = w.violations()
    return {
        "connections": len(flows.flows),
        "completed": sum(1 for f in flows.flows if f.eof),
        "reset": sum(1 for f in flows.flows if f.closed not in (None, "closed")),
        **flows.totals(),
        "transfers": [f.summary() for f in flows.flows],
        **host_counters(stats),
        "frames_forwarded": stats.get("frames_forwarded", 0),
        "failovers": len(records),
        "failover": rec,
        "members": snapshots,
        "ovs_lacp": ovs_lacp,
        "lacp_converge_s": round(converge_s, 3),
        "team_stats": team.stats.as_dict(),
        "contract_violations": len(violations),
        "violations": [str(v) for v in violations],
    }


# ====================================================================================== OVS detection baseline
async def measure_ovs_detection(
    carrier_trials: int = 3, lacp_trials: int = 1, poll: float = 0.005, timeout: float = 15.0
) -> dict[str, Any]:
    """How long OVS takes to notice a member failure, measured on the real wire with our team as its partner.

    Carrier loss: our end of member 0's veth goes down; we poll ``bond/show`` until OVS reports the member
    disabled.  Lost LACPDUs (fast timers): we stop our PDUs on member 0 and poll ``lacp/show`` until OVS no longer
    reports it current (then bond/show disabled).  The team's own detection time is recorded for each trial too.
    Times are seconds from the failure; each poll runs ``ovs-appctl`` (a few ms), which bounds the resolution."""
    out: dict[str, Any] = {"carrier": [], "lacp": [], "team_carrier": [], "team_lacp": [], "poll_s": poll}
    async with TeamWire(TeamWireConfig()) as w:
        ovs, team = w.the_ovs, w.the_team
        await w.converge()

        def disabled(o: OvsPartner) -> bool:
            state = o.bond_show()["members"].get(o.members[0].ovs_ifname, {}).get("state")
            return bool(state != "enabled")

        async def trial(kind: str, fail: Callable[[bool], None]) -> None:
            """Fail member 0 with ``fail(True)``; time OVS disabling it and the team dropping it; restore it."""
            t0 = time.monotonic()
            fail(True)
            team_task = asyncio.create_task(_hit_time(lambda: 0 not in team.active_members(), timeout))
            out[kind].append(await asyncio.to_thread(_poll_until, lambda: disabled(ovs), timeout, poll) - t0)
            out["team_" + kind].append(await team_task - t0)
            fail(False)
            await w.converge()

        for _ in range(carrier_trials):
            await trial("carrier", lambda down: w.set_member_link(0, not down))
        for _ in range(lacp_trials):
            await trial("lacp", lambda mute: w.mute_lacp(0, mute))
        out["violations"] = len(w.violations())
    for key in ("carrier", "lacp", "team_carrier", "team_lacp"):
        values = out[key]
        out[key + "_median_s"] = statistics.median(values) if values else None
    return out


def _poll_until(cond: Callable[[], bool], timeout: float, interval: float) -> float:
    """Blocking poll (run on a worker thread): the ``time.monotonic()`` at which ``cond`` first held."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not reached within {timeout} s")
        time.sleep(interval)
    return time.monotonic()


async def _hit_time(cond: Callable[[], bool], timeout: float) -> float:
    await wait_for(cond, timeout, "the team to notice", interval=0.001)
    return time.monotonic()


def failover_phases(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds from the first ``failover`` trace event (link down) to: the team noticing (``team.failover``), the
    host's RESUME, the first and the last re-offload of the run that follows it; and from ``member_restored`` to
    the team's join.  Keys are missing for what the trace does not show."""
    out: dict[str, float] = {}
    t_down: float | None = None
    t_resume: float | None = None
    t_up: float | None = None
    last_offload: float | None = None
    for ev in events:
        kind, t = ev.get("kind"), float(ev.get("t", 0.0))
        if kind == "failover" and t_down is None:
            t_down = t
        elif t_down is None:
            continue
        elif kind == "team.failover" and "team_detect_s" not in out:
            out["team_detect_s"] = t - t_down
        elif kind == "resume" and ev.get("host", "host") == "host" and t_resume is None:
            t_resume = t
            out["link_down_to_resume_s"] = t - t_down
        elif kind == "offload_done" and t_resume is not None and t_up is None:
            if "first_reoffload_s" not in out:
                out["first_reoffload_s"] = t - t_down
            last_offload = t
        elif kind == "member_restored" and t_up is None:
            t_up = t
        elif kind == "team.join" and t_up is not None and "rejoin_s" not in out:
            out["rejoin_s"] = t - t_up
    if last_offload is not None and t_down is not None:
        out["last_reoffload_s"] = last_offload - t_down
    return out


def write_json(path: str | Path, obj: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2, default=str) + "\n")
