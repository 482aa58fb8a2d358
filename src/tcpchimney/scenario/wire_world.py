"""A real-wire world: our host stack + one SoftToe NIC on a TAP or veth link, the Linux kernel as the peer.

``WireWorld`` is an async context manager used by the interop tests, ``chimney demo`` (real wire) and
``chimney bench wire``.  It creates a throw-away ``PeerNamespace`` (the kernel peer lives there, on
``10.77.<n>.1``; we are ``.2``), the link into it, an ``AsyncioScheduler`` on the running loop, the NIC and the
host, and removes everything on exit.  Programs for the kernel side run inside the namespace as
``python3 -c PEER_SCRIPT`` (only the standard library and kernel sockets), started with ``peer`` / ``peer_start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from tcpchimney.clock import AsyncioScheduler
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.stack import HostStack
from tcpchimney.links.netns import PeerNamespace, setns
from tcpchimney.targets.detectors import DetectorConfig
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.trace.tracer import NullTracer, Tracer

# Kernel-side programs.  argv[1] is a JSON object; the program prints one JSON line per result on stdout.
# Data is the pseudo-random stream of services.pseudo_random_chunks (random.Random(seed) in 64 KiB blocks).
PEER_SCRIPT = r"""
import hashlib, json, random, socket, sys, threading, time
A = json.loads(sys.argv[1])
BLOCK = 65536

def chunks(n, seed):
    rng = random.Random(seed)
    left = n
    while left > 0:
        b = rng.randbytes(BLOCK)
        if left < BLOCK:
            b = b[:left]
        left -= len(b)
        yield b

def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def connect(ip, port):
    s = socket.create_connection((ip, port), timeout=A.get("timeout", 60))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def recv_all(s, h):
    n = 0
    while True:
        d = s.recv(1 << 18)
        if not d:
            return n
        h.update(d)
        n += len(d)

def half_close_reply(s):
    # half-close, read the server's answer to EOF and close; the answer as text
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        reply += d
    s.close()
    return reply.decode(errors="replace").strip()

def send_stream(s, n, seed, pause_every=0, pause=0.0):
    h = hashlib.sha256()
    sent = 0
    for b in chunks(n, seed):
        h.update(b)
        s.sendall(b)
        sent += len(b)
        if pause_every and sent % pause_every < BLOCK:
            time.sleep(pause)
    return sent, h.hexdigest()

def do_send(i=0):
    # to our sink: send n bytes, half-close, read the sink's "count sha" answer
    s = connect(A["ip"], A["port"])
    t0 = time.monotonic()
    sent, sha = send_stream(s, A["n"], A.get("seed", 0) + i, A.get("pause_every", 0), A.get("pause", 0.0))
    reply = half_close_reply(s)
    return dict(i=i, sent=sent, sha=sha, reply=reply, secs=time.monotonic() - t0)

def do_recv(i=0):
    # from our source: ask for n bytes, read to EOF
    s = connect(A["ip"], A["port"])
    t0 = time.monotonic()
    s.sendall(b"%d\n" % A["n"])
    h = hashlib.sha256()
    if A.get("read_pause"):
        # a slow reader: 64 KiB, then a pause, so the transfer lasts long enough to be handed around
        got = 0
        while True:
            d = s.recv(65536)
            if not d:
                break
            h.update(d)
            got += len(d)
            time.sleep(A["read_pause"])
    else:
        got = recv_all(s, h)
    s.close()
    return dict(i=i, received=got, sha=h.hexdigest(), secs=time.monotonic() - t0)

BARRIER = threading.Barrier(A["count"]) if A.get("together") else None

def do_echo(i=0):
    s = connect(A["ip"], A["port"])
    data = b"".join(chunks(A["n"], A.get("seed", 0) + i))
    if BARRIER is not None:
        BARRIER.wait(A.get("timeout", 60))  # every connection is open before any data moves
    h = hashlib.sha256()
    def writer():
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=writer)
    t.start()
    got = recv_all(s, h)
    t.join()
    s.close()
    return dict(i=i, sent=len(data), sha=hashlib.sha256(data).hexdigest(), received=got, echo_sha=h.hexdigest())

def do_oob(i=0):
    # ordinary data, one urgent byte (MSG_OOB), more data; the receiver gets it inline (or not at all)
    s = connect(A["ip"], A["port"])
    data = b"".join(chunks(A["n"], A.get("seed", 0) + i))
    half = len(data) // 2
    s.sendall(data[:half])
    time.sleep(A.get("gap", 0.3))
    s.send(b"!", socket.MSG_OOB)
    time.sleep(A.get("gap", 0.3))
    s.sendall(data[half:])
    reply = half_close_reply(s)
    whole = data[:half] + b"!" + data[half:]
    return dict(i=i, sent=len(whole), sha=hashlib.sha256(whole).hexdigest(),
                sha_without=hashlib.sha256(data).hexdigest(), reply=reply)

def do_idle(i=0):
    # connect, stay silent for a while, then send n bytes to the sink
    s = connect(A["ip"], A["port"])
    time.sleep(A.get("idle", 2.0))
    sent, sha = send_stream(s, A["n"], A.get("seed", 0) + i)
    reply = half_close_reply(s)
    return dict(i=i, sent=sent, sha=sha, reply=reply)

def do_many():
    # A["each"] in ("send", "recv", "echo", "idle"): A["count"] concurrent connections, one thread each
    fn = {"send": do_send, "recv": do_recv, "echo": do_echo, "idle": do_idle}[A["each"]]
    res = [None] * A["count"]
    def run(i):
        try:
            res[i] = fn(i)
        except Exception as e:
            res[i] = dict(i=i, error=repr(e))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(A["count"])]
    for t in ts:
        t.start()
        time.sleep(A.get("stagger", 0.0))
    for t in ts:
        t.join()
    out(results=res)

ZERO = bytes(BLOCK)

def send_zeros(s, n):
    # n bytes of one constant block, no hashing (the benchmarks' load)
    view = memoryview(ZERO)
    while n > 0:
        n -= s.send(view[: min(BLOCK, n)])

def count_all(s):
    # bytes to EOF, counted only
    n = 0
    buf = bytearray(1 << 18)
    while True:
        k = s.recv_into(buf)
        if not k:
            return n
        n += k

def read_line(s):
    # a short request line ("N\n"), read without over-reading what follows
    line = b""
    while not line.endswith(b"\n"):
        d = s.recv(64)
        if not d:
            break
        line += d
    return line

def do_blast(i=0):
    # benchmark sender: n bytes of one constant block (no hashing), half-close, wait for the server to finish
    s = connect(A["ip"], A["port"])
    t0 = time.perf_counter()
    send_zeros(s, A["n"])
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    secs = time.perf_counter() - t0
    s.close()
    return dict(i=i, sent=A["n"], secs=secs)

def do_drain(i=0):
    # benchmark receiver: ask for n bytes ("n\n"), count them to EOF (no hashing)
    s = connect(A["ip"], A["port"])
    t0 = time.perf_counter()
    s.sendall(b"%d\n" % A["n"])
    got = count_all(s)
    secs = time.perf_counter() - t0
    s.close()
    return dict(i=i, received=got, secs=secs)

def do_connect_loop():
    # connection setup latency: connect + close n times sequentially
    times = []
    for _ in range(A["n"]):
        t0 = time.perf_counter()
        s = socket.create_connection((A["ip"], A["port"]), timeout=10)
        times.append(time.perf_counter() - t0)
        s.close()
    out(times=times)

def do_serve():
    # a kernel server: mode sink (read to EOF, answer "count sha"), source (read "N\n", send N bytes), echo
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((A.get("bind", "0.0.0.0"), A["port"]))
    ls.listen(256)
    out(ready=True)
    mode = A["mode"]
    def handle(c):
        try:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if mode == "sink":
                h = hashlib.sha256()
                n = recv_all(c, h)
                c.sendall(b"%d %s\n" % (n, h.hexdigest().encode()))
            elif mode == "source":
                for b in chunks(int(read_line(c)), A.get("seed", 0)):
                    c.sendall(b)
            elif mode == "count":
                c.sendall(b"%d\n" % count_all(c))
            elif mode == "zeros":
                send_zeros(c, int(read_line(c)))
            elif mode == "echo":
                while True:
                    d = c.recv(1 << 18)
                    if not d:
                        break
                    c.sendall(d)
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        except OSError:
            pass
        finally:
            c.close()
    served = 0
    limit = A.get("limit", 0)
    while not limit or served < limit:
        c, _ = ls.accept()
        served += 1
        threading.Thread(target=handle, args=(c,), daemon=True).start()
    time.sleep(A.get("linger", 0.5))

def do_interactive():
    # one connection (connect to ip:port, or accept on port with "listen"), driven by JSON lines on stdin
    if A.get("listen"):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", A["port"]))
        ls.listen(1)
        out(ready=True)
        s, _ = ls.accept()
    else:
        s = connect(A["ip"], A["port"])
    s.settimeout(A.get("timeout", 60))
    out(connected=True)
    for raw in iter(sys.stdin.readline, ""):
        op = json.loads(raw)
        kind = op["op"]
        try:
            if kind == "send":
                sent, sha = send_stream(s, op["n"], op.get("seed", 0))
                out(sent=sent, sha=sha)
            elif kind == "shutdown":
                s.shutdown(socket.SHUT_WR)
                out(ok=True)
            elif kind == "recv":
                # until n bytes (or EOF when n is absent)
                h = hashlib.sha256()
                got = 0
                want = op.get("n")
                eof = False
                while want is None or got < want:
                    d = s.recv(min(1 << 18, want - got) if want is not None else 1 << 18)
                    if not d:
                        eof = True
                        break
                    h.update(d)
                    got += len(d)
                out(received=got, sha=h.hexdigest(), eof=eof)
            elif kind == "state":
                out(state=s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0])
            elif kind == "close":
                s.close()
                out(ok=True)
                break
        except OSError as e:
            out(error=repr(e))

cmd = A["cmd"]
if cmd == "interactive":
    do_interactive()
elif cmd == "serve":
    do_serve()
elif cmd == "many":
    do_many()
elif cmd == "connect_loop":
    do_connect_loop()
else:
    fns = {"send": do_send, "recv": do_recv, "echo": do_echo, "oob": do_oob, "idle": do_idle, "blast": do_blast,
           "drain": do_drain}
    out(**fns[cmd]())
"""


async def exec_in(
    ns: PeerNamespace, *args: str, stdout: int | None = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """Start ``args`` inside ``ns`` (setns between fork and exec) without blocking the loop."""
    fd = ns.open_fd()
    try:
        return await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=lambda: setns(fd),
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)


async def peer_program(ns: PeerNamespace, cmd: str, **args: Any) -> PeerProcess:
    """Start ``PEER_SCRIPT`` with ``cmd`` inside ``ns`` (``ip`` must be given)."""
    proc = await exec_in(ns, sys.executable, "-c", PEER_SCRIPT, json.dumps({"cmd": cmd, **args}))
    return PeerProcess(proc)


def fast_policy(**overrides: Any) -> OffloadPolicy:
    """An offload policy for tests and the demo: offload at once, come back quickly after any upload."""
    pol = OffloadPolicy(host_backoff=0.2, failure_backoff=0.2)
    pol.backoff = {reason: min(value, 0.2) for reason, value in pol.backoff.items()}
    for key, value in overrides.items():
        setattr(pol, key, value)
    return pol


@dataclass
class WireConfig:
    link: str = "tap"  # "tap" or "veth"
    mtu: int = 1500
    tap_offload: bool = False  # TAP: kernel checksum/TSO offload (super-segments up to 64 KB cross the fd)
    seed: int = 0
    policy: OffloadPolicy = field(default_factory=fast_policy)
    detectors: DetectorConfig | None = None
    tcp_config: TcpConfig | None = None
    trace: str | None = None  # JSON-lines trace file
    keep_trace: bool = False  # also keep the events in memory (tracer.events)
    ns_prefix: str = "tcpchw"
    on_violation: str = "record"


class PeerProcess:
    """A kernel-side program running in the namespace (see ``WireWorld.peer_start``)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, timeout: float = 30.0, **op: Any) -> dict[str, Any]:
        """Send one JSON command line to an ``interactive`` program and wait for its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(op) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.line(timeout)

    async def line(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON line the program printed."""
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            err = b""
            if self.proc.stderr is not None:
                with contextlib.suppress(Exception):
                    err = await asyncio.wait_for(self.proc.stderr.read(), 2.0)
            raise RuntimeError(f"peer program ended without output: {err.decode(errors='replace')[-2000:]}")
        result: dict[str, Any] = json.loads(raw)
        return result

    async def finish(self, timeout: float = 30.0) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class WireWorld:
    """Our stack + SoftToe on a real link, the Linux kernel as the peer in a throw-away namespace."""

    def __init__(self, config: WireConfig | None = None) -> None:
        self.config = config or WireConfig()
        self.ns: PeerNamespace | None = None
        self.link: Any = None
        self.host: HostStack
        self.nic: SoftToe
        self.nic_id = -1
        self.sched: AsyncioScheduler
        self.tracer: Tracer = NullTracer()
        self._trace_file: TextIO | None = None
        self._peers: list[PeerProcess] = []
        self._captures: list[asyncio.subprocess.Process] = []
        self._procs: list[asyncio.subprocess.Process] = []

    # -- lifetime ------------------------------------------------------------------------------------------------
    async def __aenter__(self) -> WireWorld:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self.sched = AsyncioScheduler(loop)
        if cfg.trace or cfg.keep_trace:
            if cfg.trace:
                self._trace_file = open(cfg.trace, "w")  # noqa: SIM115 - closed in close()
            t0 = self.sched.now()
            # trace times in seconds since the world started (the loop's clock is arbitrary)
            self.tracer = Tracer(lambda: self.sched.now() - t0, self._trace_file, keep=cfg.keep_trace)
        self.ns = PeerNamespace(cfg.ns_prefix)
        if cfg.link == "tap":
            from tcpchimney.links.tap import TapLink

            self.link = TapLink(self.ns, mtu=cfg.mtu, offload=cfg.tap_offload)
        elif cfg.link == "veth":
            from tcpchimney.links.packet import VethLink

            self.link = VethLink(self.ns, mtu=cfg.mtu)
        else:
            raise ValueError(f"link must be tap or veth, not {cfg.link!r}")
        tcp = cfg.tcp_config or TcpConfig(mss=cfg.mtu - 40)
        self.host = HostStack(
            self.sched, name="host", tcp_config=tcp, policy=cfg.policy, tracer=self.tracer, seed=cfg.seed,
            on_violation=cfg.on_violation,
        )  # fmt: skip
        self.nic = SoftToe(
            self.sched, self.link, self.link.local_mac, name="nic0", tcp_config=tcp, detectors=cfg.detectors,
            tracer=self.tracer,
        )  # fmt: skip
        self.nic_id = self.host.add_nic(self.nic)
        self.host.add_interface(self.nic_id, self.link.local_mac, self.link.local_ip, self.link.prefix_len, cfg.mtu)
        await self.link.start(loop)

    async def close(self) -> None:
        for p in self._peers:
            p.kill()
        for p in self._peers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.proc.wait(), 5)
        self._peers.clear()
        await self.stop_captures()
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 5)
        self._procs.clear()
        if self.link is not None:
            with contextlib.suppress(Exception):
                self.link.close()
        if self.ns is not None:
            self.ns.close()
        if self._trace_file is not None:
            self._trace_file.close()
            self._trace_file = None

    # -- addresses -----------------------------------------------------------------------------------------------
    @property
    def local_ip(self) -> str:
        return str(self.link.local_ip)

    @property
    def peer_ip(self) -> str:
        return str(self.link.peer_ip)

    @property
    def peer_ifname(self) -> str:
        return str(getattr(self.link, "peer_ifname", self.link.name))

    # -- running things in the namespace -------------------------------------------------------------------------
    async def exec_in_ns(self, *args: str, stdout: int | None = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
        """Start ``args`` inside the namespace (setns between fork and exec) without blocking the loop."""
        assert self.ns is not None
        proc = await exec_in(self.ns, *args, stdout=stdout)
        self._procs.append(proc)  # killed in close() if still running (e.g. a test failed half-way)
        return proc

    async def peer_start(self, cmd: str, **args: Any) -> PeerProcess:
        """Start a kernel-side program (``PEER_SCRIPT``); ``ip`` defaults to our address."""
        args.setdefault("ip", self.local_ip)
        assert self.ns is not None
        p = await peer_program(self.ns, cmd, **args)
        self._peers.append(p)
        return p

    async def peer(self, cmd: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        """Run a kernel-side program to completion; its (last) JSON result line."""
        p = await self.peer_start(cmd, **args)
        try:
            result = await p.line(timeout)
            await p.finish(10.0)
        finally:
            p.kill()
            self._peers.remove(p)
        return result

    async def ns_run(self, *args: str, timeout: float = 20.0) -> str:
        """Run a tool (nft, ss...) in the namespace to completion; its stdout (raises on failure)."""
        proc = await self.exec_in_ns(*args)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err.decode(errors='replace')}")
        return out.decode(errors="replace")

    # -- impairments and capture ---------------------------------------------------------------------------------
    async def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of the frames arriving at the kernel peer (nftables input hook); 0 removes the rule."""
        nft = shutil.which("nft")
        if nft is None:
            raise RuntimeError("nft not found (apt-get install nftables)")
        with contextlib.suppress(RuntimeError):
            await self.ns_run(nft, "delete", "table", "inet", "tcpchimney_loss")
        if percent <= 0:
            return
        await self.ns_run(nft, "add", "table", "inet", "tcpchimney_loss")
        await self.ns_run(
            nft, "add", "chain", "inet", "tcpchimney_loss", "c", "{ type filter hook input priority 0 ; }"
        )  # fmt: skip
        await self.ns_run(
            nft, "add", "rule", "inet", "tcpchimney_loss", "c", "meta", "l4proto", "tcp", "numgen", "random", "mod",
            "100", "<", str(int(percent)), "counter", "drop",
        )  # fmt: skip

    async def block_from_us(self, on: bool) -> None:
        """Make the kernel peer drop every frame from our address (on) or stop doing so (off)."""
        nft = shutil.which("nft")
        if nft is None:
            raise RuntimeError("nft not found (apt-get install nftables)")
        with contextlib.suppress(RuntimeError):
            await self.ns_run(nft, "delete", "table", "inet", "tcpchimney_block")
        if not on:
            return
        await self.ns_run(nft, "add", "table", "inet", "tcpchimney_block")
        await self.ns_run(
            nft, "add", "chain", "inet", "tcpchimney_block", "c", "{ type filter hook input priority -10 ; }"
        )  # fmt: skip
        await self.ns_run(nft, "add", "rule", "inet", "tcpchimney_block", "c", "ip", "saddr", self.local_ip, "drop")

    async def loss_counter(self) -> int:
        """Packets the loss rule dropped so far."""
        nft = shutil.which("nft")
        assert nft is not None
        text = await self.ns_run(nft, "list", "table", "inet", "tcpchimney_loss")
        for word_index, word in enumerate(parts := text.split()):
            if word == "packets":
                return int(parts[word_index + 1])
        return 0

    async def start_capture(self, path: str, snaplen: int = 0) -> None:
        """Capture on the kernel side's interface (inside the namespace) into ``path`` (pcapng by dumpcap)."""
        dumpcap = shutil.which("dumpcap") or shutil.which("tshark")
        if dumpcap is None:
            raise RuntimeError("dumpcap/tshark not found (apt-get install tshark)")
        args = [dumpcap, "-q", "-i", self.peer_ifname, "-w", path, "-P", "-B", "64"]
        if snaplen:
            args += ["-s", str(snaplen)]
        proc = await self.exec_in_ns(*args, stdout=asyncio.subprocess.DEVNULL)
        self._captures.append(proc)
        # dumpcap says "File: ..." on stderr once it captures
        assert proc.stderr is not None
        with contextlib.suppress(TimeoutError):
            while True:
                raw = await asyncio.wait_for(proc.stderr.readline(), 10.0)
                if not raw or b"File:" in raw or b"Capturing on" in raw:
                    break
        await asyncio.sleep(0.3)

    async def stop_captures(self) -> None:
        for proc in self._captures:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self._captures:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
        self._captures.clear()

    # -- waiting -------------------------------------------------------------------------------------------------
    async def wait_for(self, predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> bool:
        """Poll ``predicate()`` on the loop until it is true or ``timeout`` passes; returns its last value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if predicate():
                return True
            if loop.time() >= deadline:
                return bool(predicate())
            await asyncio.sleep(interval)

    def offloaded(self) -> list[Any]:
        """Our sockets currently owned by the NIC."""
        return [s for s in self.host.connections if s.owner != "host"]
