"""Shared wiring for the host-stack tests: a host and a peer HostStack on one simulated link.

The host's NIC is a SoftToe (offloading), a ScriptedTarget wired to the link (a contract-level fake that runs no
TCP), or a SoftToe with offload disabled; the peer's NIC never offloads.  No tests live here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tcpchimney.chimney.fakes import ScriptedTarget
from tcpchimney.chimney.objects import OffloadCapabilities
from tcpchimney.clock import VirtualClock
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.sockets import TcpSocket
from tcpchimney.host.stack import HostStack
from tcpchimney.links.base import LinkPort
from tcpchimney.sim.link import Impairments, SimLink
from tcpchimney.sim.network import SimNetwork
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.trace.tracer import Tracer
from tcpchimney.wire.addr import mac_to_bytes

HOST_IP = "10.0.0.1"
PEER_IP = "10.0.0.2"
HOST_MAC = mac_to_bytes("02:00:00:00:00:01")
PEER_MAC = mac_to_bytes("02:00:00:00:00:02")


class WiredScriptedTarget(ScriptedTarget):
    """The contract fake with a wire: ordinary frames go out of ``port``; everything received goes up to the host."""

    def __init__(self, clock: VirtualClock, port: LinkPort, caps: OffloadCapabilities | None = None) -> None:
        super().__init__(clock, name="fake0", caps=caps)
        self.port = port
        port.set_receiver(self._rx)

    def send_frame(self, frame: bytes) -> None:
        self.port.transmit(frame)

    def _rx(self, frame: bytes) -> None:
        self.chimney.indicate_receive_frame(self.target_id, frame)


@dataclass
class Pair:
    clock: VirtualClock
    link: SimLink
    host: HostStack
    peer: HostStack
    nic: Any
    peer_nic: SoftToe
    tracer: Tracer | None
    target_id: int
    captured: list[tuple[bytes, str]] = field(default_factory=list)

    def run(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        self.clock.run_until(self.clock.now() + seconds, stop)

    def run_until(self, cond: Callable[[], bool], limit: float = 30.0) -> bool:
        if not cond():
            self.clock.run_until(self.clock.now() + limit, cond)
        return cond()

    def violations(self) -> list[Exception]:
        return list(self.host.chimney.violations) + list(self.peer.chimney.violations)


def make_pair(
    *,
    target: str = "softtoe",
    policy: OffloadPolicy | None = None,
    impairments: Impairments | None = None,
    host_tcp: TcpConfig | None = None,
    peer_tcp: TcpConfig | None = None,
    trace: bool = False,
    capture: bool = False,
    mtu: int = 1500,
    seed: int = 1,
    caps: OffloadCapabilities | None = None,
    on_violation: str = "raise",
) -> Pair:
    net = SimNetwork(seed)
    clock = net.clock
    pair_capture: list[tuple[bytes, str]] = []
    link = net.link(
        impairments or Impairments(delay=0.0005),
        name="wire",
        capture=(lambda f, _t, d: pair_capture.append((f, d))) if capture else None,
    )
    tracer = Tracer(clock.now) if trace else None
    host_tcp = host_tcp or TcpConfig(mss=mtu - 40)
    nic: Any
    if target == "softtoe":
        nic = SoftToe(clock, link.a, HOST_MAC, name="nic0", tcp_config=host_tcp, tracer=tracer)
    elif target == "fake":
        nic = WiredScriptedTarget(clock, link.a, caps)
    elif target == "none":
        nic = SoftToe(clock, link.a, HOST_MAC, name="nic0", offload_enabled=False)
    else:
        raise ValueError(target)
    host = HostStack(
        clock,
        name="host",
        tcp_config=host_tcp,
        policy=policy if policy is not None else OffloadPolicy(enabled=False),
        tracer=tracer,
        seed=seed,
        on_violation=on_violation,
    )
    tid = host.add_nic(nic)
    host.add_interface(tid, HOST_MAC, HOST_IP, 24, mtu=mtu)
    peer_nic = SoftToe(clock, link.b, PEER_MAC, name="peer-nic", offload_enabled=False)
    peer = HostStack(
        clock,
        name="peer",
        tcp_config=peer_tcp or TcpConfig(mss=mtu - 40),
        policy=OffloadPolicy(enabled=False),
        seed=seed + 1,
    )
    ptid = peer.add_nic(peer_nic)
    peer.add_interface(ptid, PEER_MAC, PEER_IP, 24, mtu=mtu)
    return Pair(clock, link, host, peer, nic, peer_nic, tracer, tid, pair_capture)


class Sink:
    """Reads everything a socket receives (optionally not, to apply back-pressure) and records how it ended."""

    def __init__(self, sock: TcpSocket, reading: bool = True) -> None:
        self.sock = sock
        self.data = bytearray()
        self.reading = reading
        self.closed: str | None = None
        self.eof = False
        self.connected = False
        sock.on_readable = self._readable
        sock.on_closed = self._closed
        sock.on_connected = self._connected

    def _connected(self) -> None:
        self.connected = True

    def _readable(self) -> None:
        if self.reading:
            self.drain()

    def drain(self) -> None:
        got = self.sock.read()
        if got:
            self.data += got
        if self.sock.at_eof:
            self.eof = True

    def _closed(self, reason: str) -> None:
        self.closed = reason
        self.drain()


def establish(pair: Pair, port: int = 80, reading: bool = True) -> tuple[Sink, Sink]:
    """A connection from the host to the peer, both ends wrapped in a Sink."""
    accepted: list[Sink] = []
    pair.peer.listen(port, lambda s: accepted.append(Sink(s, reading)))
    client = Sink(pair.host.connect(PEER_IP, port), reading)
    assert pair.run_until(lambda: bool(accepted) and client.connected, 10.0), "handshake did not complete"
    return client, accepted[0]


def pattern(n: int, seed: int = 0) -> bytes:
    """Deterministic non-repeating-looking bytes (positions are distinguishable, so shifts are caught)."""
    import random

    return random.Random(seed).randbytes(n)


class Pump:
    """Writes ``data`` into a socket in chunks while its send buffer is below a high-water mark."""

    def __init__(
        self,
        pair: Pair,
        sock: TcpSocket,
        data: bytes,
        *,
        chunk: int = 16384,
        high: int = 128 * 1024,
        close: bool = False,
        interval: float = 0.001,
    ) -> None:
        self.pair = pair
        self.sock = sock
        self.data = data
        self.pos = 0
        self.chunk = chunk
        self.high = high
        self.close_when_done = close
        self.interval = interval
        self.stopped = False
        self._tick()

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def _tick(self) -> None:
        if self.stopped or self.sock.closed_reason is not None:
            return
        while self.pos < len(self.data) and self.sock.send_buffered < self.high:
            piece = self.data[self.pos : self.pos + self.chunk]
            self.sock.write(piece)
            self.pos += len(piece)
        if self.done:
            if self.close_when_done:
                self.sock.close()
            return
        self.pair.clock.call_later(self.interval, self._tick)
