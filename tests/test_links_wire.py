"""TapLink and VethLink against the Linux kernel in a PeerNamespace: ARP, ICMP echo, TCP, carrier, GSO."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
from pyroute2 import IPRoute

from netns_support import NAMESPACES
from tcpchimney.links.netns import PeerNamespace, list_namespaces, netlink_call
from tcpchimney.links.packet import FdLink, VethLink, offload_state
from tcpchimney.links.tap import TapLink
from tcpchimney.wire.addr import BROADCAST_MAC, ip_to_bytes
from tcpchimney.wire.arp import ARP_REPLY, ARP_REQUEST, arp_reply_to, arp_request
from tcpchimney.wire.errors import DecodeError
from tcpchimney.wire.frame import (
    ArpFrame,
    IcmpFrame,
    ParsedFrame,
    TcpFrame,
    build_arp_frame,
    build_icmp_frame,
    build_tcp_frame,
    parse_frame,
)
from tcpchimney.wire.icmp import ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpEcho
from tcpchimney.wire.tcp import ACK, FIN, PSH, SYN, TcpOptions, TcpSegment

pytestmark = NAMESPACES

WAIT = 5.0  # wall-clock bound on every wait for the kernel


@pytest.fixture
def ns() -> Iterator[PeerNamespace]:
    with PeerNamespace() as namespace:
        yield namespace
    assert namespace.name not in list_namespaces()


class Peer:
    """Just enough of a host on our side of the wire: answers ARP for its address, queues every frame it parses."""

    def __init__(self, link: TapLink | VethLink) -> None:
        self.link = link
        self.mac = link.local_mac
        self.ip = ip_to_bytes(link.local_ip)
        self.peer_ip = ip_to_bytes(link.peer_ip)
        self.queue: asyncio.Queue[tuple[bytes, ParsedFrame]] = asyncio.Queue()
        self.bad: list[tuple[bytes, str]] = []
        self.sizes: list[int] = []
        link.set_receiver(self._receive)

    def _receive(self, frame: bytes) -> None:
        self.sizes.append(len(frame))
        try:
            parsed = parse_frame(frame)
        except DecodeError as exc:
            self.bad.append((frame, str(exc)))
            return
        if isinstance(parsed, ArpFrame) and parsed.arp.op == ARP_REQUEST and parsed.arp.target_ip == self.ip:
            self.link.transmit(build_arp_frame(self.mac, parsed.arp.sender_mac, arp_reply_to(parsed.arp, self.mac)))
        self.queue.put_nowait((frame, parsed))

    async def expect(self, pred: Callable[[ParsedFrame], bool], timeout: float = WAIT) -> ParsedFrame:
        async with asyncio.timeout(timeout):
            while True:
                _, parsed = await self.queue.get()
                if pred(parsed):
                    return parsed

    async def resolve(self) -> bytes:
        self.link.transmit(build_arp_frame(self.mac, BROADCAST_MAC, arp_request(self.mac, self.ip, self.peer_ip)))
        reply = await self.expect(
            lambda p: isinstance(p, ArpFrame) and p.arp.op == ARP_REPLY and p.arp.sender_ip == self.peer_ip
        )
        assert isinstance(reply, ArpFrame)
        return reply.arp.sender_mac

    async def ping(self, peer_mac: bytes, seq: int, payload: bytes = b"tcpchimney" * 5) -> IcmpEcho:
        echo = IcmpEcho(ICMP_ECHO_REQUEST, 0, 0x4321, seq, payload)
        self.link.transmit(build_icmp_frame(self.mac, peer_mac, self.ip, self.peer_ip, echo, ident=seq))
        reply = await self.expect(
            lambda p: isinstance(p, IcmpFrame) and isinstance(p.icmp, IcmpEcho) and p.icmp.seq == seq
        )
        assert isinstance(reply, IcmpFrame) and isinstance(reply.icmp, IcmpEcho)
        assert reply.ip.src == self.peer_ip and reply.ip.dst == self.ip
        assert reply.eth.dst == self.mac
        return reply.icmp

    def send_tcp(self, peer_mac: bytes, seg: TcpSegment) -> None:
        self.link.transmit(build_tcp_frame(self.mac, peer_mac, self.ip, self.peer_ip, seg))

    async def connect(self, peer_mac: bytes, sport: int, dport: int, iss: int) -> int:
        """Three-way handshake by hand; returns RCV.NXT."""
        self.send_tcp(peer_mac, TcpSegment(sport, dport, iss, 0, SYN, 65535, options=TcpOptions(mss=1460)))
        synack = await self.expect(lambda p: isinstance(p, TcpFrame) and p.seg.dst_port == sport)
        assert isinstance(synack, TcpFrame) and synack.seg.flags & (SYN | ACK) == SYN | ACK
        assert synack.seg.ack == iss + 1
        rcv_nxt = (synack.seg.seq + 1) & 0xFFFFFFFF
        self.send_tcp(peer_mac, TcpSegment(sport, dport, iss + 1, rcv_nxt, ACK, 65535))
        return rcv_nxt


def make_link(kind: str, ns: PeerNamespace) -> TapLink | VethLink:
    return TapLink(ns) if kind == "tap" else VethLink(ns)


def peer_link_info(ns: PeerNamespace, ifname: str) -> tuple[int, str]:
    def info() -> tuple[int, str]:
        with IPRoute(netns=ns.name) as ipr:
            msg = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
            return int(msg.get_attr("IFLA_CARRIER")), str(msg.get_attr("IFLA_OPERSTATE"))

    return netlink_call(info)


def start_server(ns: PeerNamespace, ip: str, port: int, mode: str, nbytes: int = 0) -> subprocess.Popen[str]:
    """A TCP server inside the namespace: ``send`` writes ``nbytes`` of a pattern, ``recv`` reports what it got."""
    script = textwrap.dedent(
        f"""
        import hashlib, socket, sys
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(({ip!r}, {port}))
        s.listen(1)
        print("ready", flush=True)
        c, _ = s.accept()
        if {mode!r} == "send":
            c.sendall(bytes(range(256)) * ({nbytes} // 256))
            c.recv(1)
        else:
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
        c.close()
        """
    )
    proc = ns.popen([sys.executable, "-c", script], stdout=-1, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


KINDS = ["tap", "veth"]


@pytest.mark.parametrize("kind", KINDS)
def test_arp_and_icmp_echo(kind: str, ns: PeerNamespace) -> None:
    async def main() -> None:
        link = make_link(kind, ns)
        try:
            await link.start()
            peer = Peer(link)
            peer_mac = await peer.resolve()
            assert peer_mac == link.peer_mac
            for seq in (1, 2, 3):
                echo = await peer.ping(peer_mac, seq)
                assert echo.type == ICMP_ECHO_REPLY and echo.payload == b"tcpchimney" * 5
            assert peer.bad == []
            assert link.stats.rx_frames >= 4 and link.stats.tx_frames >= 4
            # IPv6 is off in the namespace: nothing but ARP/IPv4 reaches us.
            while not peer.queue.empty():
                frame, _ = peer.queue.get_nowait()
                assert frame[12:14] in (b"\x08\x00", b"\x08\x06")
        finally:
            link.close()
        assert link.name not in ns.link_names()

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_carrier_down_and_up(kind: str, ns: PeerNamespace) -> None:
    async def main() -> None:
        link = make_link(kind, ns)
        ifname = link.name if isinstance(link, TapLink) else link.peer_ifname
        events: list[bool] = []
        link.set_link_listener(events.append)
        try:
            await link.start()
            peer = Peer(link)
            peer_mac = await peer.resolve()
            link.set_carrier(False)
            assert not link.up
            assert events == []  # told from the loop, not synchronously
            await asyncio.sleep(0)
            assert events == [False]
            assert peer_link_info(ns, ifname)[0] == 0
            dropped = link.stats.tx_dropped
            link.transmit(b"\x00" * 60)
            assert link.stats.tx_dropped == dropped + 1
            link.set_carrier(True)
            await asyncio.sleep(0)
            assert events == [False, True] and link.up
            async with asyncio.timeout(WAIT):
                while peer_link_info(ns, ifname)[0] != 1:
                    await asyncio.sleep(0.01)
            await peer.ping(peer_mac, 9)
        finally:
            link.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_tcp_download_has_mtu_frames_with_valid_checksums(kind: str, ns: PeerNamespace) -> None:
    """Default links: the kernel's TCP frames arrive MTU-sized and fully checksummed (parse_frame verifies)."""
    nbytes = 256 * 400

    async def main() -> None:
        link = make_link(kind, ns)
        server = start_server(ns, link.peer_ip, 5001, "send", nbytes)
        try:
            await link.start()
            peer = Peer(link)
            peer_mac = await peer.resolve()
            data = await download(peer, peer_mac, 5001, nbytes)
            assert data == bytes(range(256)) * (nbytes // 256)
            assert peer.bad == []
            assert max(peer.sizes) <= 14 + link.mtu
        finally:
            link.close()
            server.kill()

    asyncio.run(main())


async def download(peer: Peer, peer_mac: bytes, port: int, nbytes: int) -> bytes:
    sport, iss = 40000 + port % 1000, 1000
    rcv_nxt = await peer.connect(peer_mac, sport, port, iss)
    start = rcv_nxt
    received: dict[int, bytes] = {}
    while (rcv_nxt - start) & 0xFFFFFFFF < nbytes:
        p = await peer.expect(lambda p: isinstance(p, TcpFrame) and p.seg.dst_port == sport)
        assert isinstance(p, TcpFrame)
        if p.seg.payload:
            received[p.seg.seq] = p.seg.payload
            while rcv_nxt in received:
                rcv_nxt = (rcv_nxt + len(received[rcv_nxt])) & 0xFFFFFFFF
        peer.send_tcp(peer_mac, TcpSegment(sport, port, iss + 1, rcv_nxt, ACK, 65535))
    out = b""
    seq = start
    while seq != rcv_nxt:
        out += received[seq]
        seq = (seq + len(received[seq])) & 0xFFFFFFFF
    return out


@pytest.mark.parametrize("rx_gso", ["pass", "segment"])
def test_tap_offload_receives_gso_super_frames(rx_gso: str, ns: PeerNamespace) -> None:
    nbytes = 256 * 800

    async def main() -> None:
        link = TapLink(ns, offload=True, rx_gso="pass" if rx_gso == "pass" else "segment")
        server = start_server(ns, link.peer_ip, 5002, "send", nbytes)
        try:
            await link.start()
            peer = Peer(link)
            peer_mac = await peer.resolve()
            data = await download(peer, peer_mac, 5002, nbytes)
            assert data == bytes(range(256)) * (nbytes // 256)
            assert peer.bad == []  # partial checksums were completed (or recomputed when segmenting)
            assert link.gso_frames_in > 0
            if rx_gso == "pass":
                assert max(peer.sizes) > 14 + link.mtu
            else:
                assert max(peer.sizes) <= 14 + link.mtu
        finally:
            link.close()
            server.kill()

    asyncio.run(main())


def test_tap_transmits_large_segment_as_gso(ns: PeerNamespace) -> None:
    payload = os.urandom(30000)

    async def main() -> None:
        link = TapLink(ns)
        server = start_server(ns, link.peer_ip, 5003, "recv")
        try:
            await link.start()
            peer = Peer(link)
            peer_mac = await peer.resolve()
            sport, iss = 40100, 5000
            rcv_nxt = await peer.connect(peer_mac, sport, 5003, iss)
            peer.send_tcp(peer_mac, TcpSegment(sport, 5003, iss + 1, rcv_nxt, ACK | PSH, 65535, payload))
            assert link.gso_frames_out == 1 and link.stats.tx_dropped == 0
            fin_seq = iss + 1 + len(payload)
            acked = await peer.expect(lambda p: isinstance(p, TcpFrame) and p.seg.ack == fin_seq)
            assert isinstance(acked, TcpFrame)
            peer.send_tcp(peer_mac, TcpSegment(sport, 5003, fin_seq, rcv_nxt, FIN | ACK, 65535))
            await peer.expect(lambda p: isinstance(p, TcpFrame) and p.seg.ack == fin_seq + 1)
            assert server.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), WAIT)
            assert line.split() == [str(len(payload)), hashlib.sha256(payload).hexdigest()]
        finally:
            link.close()
            server.kill()

    asyncio.run(main())


def test_veth_peer_end_has_offloads_off(ns: PeerNamespace) -> None:
    link = VethLink(ns)
    try:
        assert ns.call(offload_state, link.peer_ifname) == (0, 0)
        assert link.peer_ifname in ns.link_names()
        assert link.local_mac not in (link.root_mac, link.peer_mac)
    finally:
        link.close()
    with IPRoute() as ipr:
        assert ipr.link_lookup(ifname=link.name) == []
    assert link.peer_ifname not in ns.link_names()


def test_tap_device_lives_in_namespace_and_goes_with_fd(ns: PeerNamespace) -> None:
    link = TapLink(ns)
    with IPRoute() as ipr:
        assert ipr.link_lookup(ifname=link.name) == []  # not in our namespace
    assert link.name in ns.link_names()
    carrier, _ = peer_link_info(ns, link.name)
    assert carrier == 1
    assert isinstance(link, FdLink)
    link.close()
    link.close()
    assert link.name not in ns.link_names()
