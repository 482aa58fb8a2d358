"""The host's own stack (no offload): ARP, ICMP echo, RST for closed ports, routing, TCP over a simulated link."""

from __future__ import annotations

import pytest

from tcpchimney.host.interfaces import Interface
from tcpchimney.host.routes import RouteTable
from tcpchimney.sim.link import Impairments
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.addr import BROADCAST_MAC, ip_to_bytes
from tcpchimney.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket
from tcpchimney.wire.frame import ArpFrame, IcmpFrame, TcpFrame, build_arp_frame, build_tcp_frame, parse_frame
from tcpchimney.wire.icmp import ICMP_ECHO_REPLY
from tcpchimney.wire.tcp import ACK, RST, SYN, TcpSegment
from test_host_support import HOST_IP, HOST_MAC, PEER_IP, PEER_MAC, Pump, Sink, establish, make_pair, pattern


def frames_of(pair, kind):  # type: ignore[no-untyped-def]
    out = []
    for frame, direction in pair.captured:
        p = parse_frame(frame)
        if isinstance(p, kind):
            out.append((p, direction))
    return out


def test_arp_request_reply_and_cache() -> None:
    pair = make_pair(target="none", capture=True)
    establish(pair)
    arps = frames_of(pair, ArpFrame)
    requests = [p for p, d in arps if p.arp.op == ARP_REQUEST]
    replies = [p for p, d in arps if p.arp.op == ARP_REPLY]
    assert len(requests) == 1 and requests[0].eth.dst == BROADCAST_MAC
    assert requests[0].arp.sender_mac == HOST_MAC and requests[0].arp.target_ip == ip_to_bytes(PEER_IP)
    assert len(replies) == 1 and replies[0].eth.dst == HOST_MAC and replies[0].arp.sender_mac == PEER_MAC
    assert pair.host.arp.entries()[ip_to_bytes(PEER_IP)] == PEER_MAC
    # The peer learned the requester from the request itself (RFC 826 merge): it never had to ask.
    assert pair.peer.arp.entries()[ip_to_bytes(HOST_IP)] == HOST_MAC
    assert pair.peer.arp.requests_sent == 0
    # A second connection needs no new ARP exchange.
    establish(pair, port=81)
    assert len([p for p, _ in frames_of(pair, ArpFrame)]) == 2


def test_arp_for_other_address_is_not_answered() -> None:
    pair = make_pair(target="none", capture=True)
    req = ArpPacket(ARP_REQUEST, PEER_MAC, ip_to_bytes(PEER_IP), b"\x00" * 6, ip_to_bytes("10.0.0.99"))
    pair.peer_nic.send_frame(build_arp_frame(PEER_MAC, BROADCAST_MAC, req))
    pair.run(1.0)
    assert [p for p, d in frames_of(pair, ArpFrame) if d == "ab"] == []
    assert ip_to_bytes(PEER_IP) not in pair.host.arp.entries()  # not for us and not known: not added


def test_arp_unresolved_gives_up_and_drops_queued_packets() -> None:
    pair = make_pair(target="none")
    sink = Sink(pair.host.connect("10.0.0.77", 80))
    pair.run(3.5)
    assert pair.host.arp.requests_sent >= 3
    assert pair.host.drops["arp-unresolved"] >= 1
    assert sink.closed is None or sink.closed == "timeout"


def test_icmp_echo_is_answered_with_the_same_payload() -> None:
    pair = make_pair(target="none", capture=True)
    pair.peer.ping(HOST_IP, ident=7, seq=3, payload=b"hello chimney")
    pair.run(1.0)
    assert pair.host.echo_replies == 1
    replies = [p for p, d in frames_of(pair, IcmpFrame) if d == "ab"]
    assert len(replies) == 1
    echo = replies[0].icmp
    assert echo.type == ICMP_ECHO_REPLY and echo.ident == 7 and echo.seq == 3 and echo.payload == b"hello chimney"
    assert replies[0].ip.ident < 0x8000


def test_rst_for_closed_port() -> None:
    pair = make_pair(target="none")
    sink = Sink(pair.host.connect(PEER_IP, 4444))
    assert pair.run_until(lambda: sink.closed is not None, 5.0)
    assert sink.closed == "reset"
    assert pair.peer.stats["rst_sent"] == 1
    assert sink.sock.state == TcpState.CLOSED
    assert pair.host.connections == []


def test_rst_answers_ack_segment_with_its_ack_number_and_never_a_rst() -> None:
    pair = make_pair(target="none", capture=True)
    establish(pair)  # resolves ARP both ways
    pair.captured.clear()
    src, dst = ip_to_bytes(PEER_IP), ip_to_bytes(HOST_IP)
    seg = TcpSegment(5555, 6666, 1000, 424242, ACK, 1000, b"xyz")
    pair.peer_nic.send_frame(build_tcp_frame(PEER_MAC, HOST_MAC, src, dst, seg))
    rst = TcpSegment(5555, 6666, 1000, 0, RST, 0)
    pair.peer_nic.send_frame(build_tcp_frame(PEER_MAC, HOST_MAC, src, dst, rst))
    pair.run(0.1)
    out = [p for p, d in frames_of(pair, TcpFrame) if d == "ab"]
    assert len(out) == 1
    r = out[0].seg
    assert r.flags == RST and r.seq == 424242 and r.src_port == 6666 and r.dst_port == 5555
    assert pair.host.drops["rst-no-connection"] == 1


def test_transfer_both_ways_then_graceful_close() -> None:
    pair = make_pair(target="none")
    client, server = establish(pair)
    up, down = pattern(300_000, 1), pattern(200_000, 2)
    Pump(pair, client.sock, up, close=True)
    Pump(pair, server.sock, down, close=True)
    assert pair.run_until(lambda: client.eof and server.eof, 30.0)
    assert bytes(server.data) == up and bytes(client.data) == down
    assert client.sock.bytes_written == len(up) and client.sock.bytes_read == len(down)
    assert pair.run_until(lambda: client.closed is not None and server.closed is not None, 200.0)
    assert client.closed == "closed" and server.closed == "closed"
    assert pair.host.connections == [] and pair.peer.connections == []
    assert client.sock.owner == "host"


def test_transfer_over_a_lossy_reordering_link_is_exact() -> None:
    imp = Impairments(delay=0.001, jitter=0.0005, loss=0.05, duplicate=0.02, reorder=0.05, corrupt=0.05)
    pair = make_pair(target="none", impairments=imp, seed=5)
    client, server = establish(pair)
    up, down = pattern(120_000, 3), pattern(90_000, 4)
    Pump(pair, client.sock, up, close=True)
    Pump(pair, server.sock, down, close=True)
    assert pair.run_until(lambda: client.eof and server.eof, 120.0)
    assert bytes(server.data) == up and bytes(client.data) == down
    corrupted = pair.link.stats_ab.corrupted + pair.link.stats_ba.corrupted
    assert corrupted > 0 and pair.host.drops.total + pair.peer.drops.total > 0  # caught by checksums, not delivered


def test_close_before_established_sends_data_then_fin() -> None:
    pair = make_pair(target="none")
    got: list[Sink] = []
    pair.peer.listen(80, lambda s: got.append(Sink(s)))
    sock = pair.host.connect(PEER_IP, 80)
    sock.write(b"early data")
    sock.close()  # in SYN_SENT: queued until established
    assert pair.run_until(lambda: bool(got) and got[0].eof, 5.0)
    assert bytes(got[0].data) == b"early data"


def test_abort_sends_rst_and_peer_sees_reset() -> None:
    pair = make_pair(target="none")
    client, server = establish(pair)
    client.sock.write(b"a" * 1000)
    pair.run(0.1)
    client.sock.abort()
    assert client.closed == "reset"
    assert pair.run_until(lambda: server.closed is not None, 5.0)
    assert server.closed == "reset"
    with pytest.raises(ConnectionError):
        client.sock.write(b"more")


def test_ip_ids_stay_in_the_host_half_and_segments_fit_the_mtu() -> None:
    pair = make_pair(target="none", capture=True, mtu=576)
    client, server = establish(pair)
    Pump(pair, client.sock, pattern(50_000, 9), close=True)
    assert pair.run_until(lambda: server.eof, 20.0)
    tcp = [p for p, d in frames_of(pair, TcpFrame) if d == "ab"]
    assert tcp and all(p.ip.ident < 0x8000 for p in tcp)
    assert max(len(p.seg.payload) for p in tcp) <= 576 - 40
    assert client.sock.connection.iface.tcp_config.mss == 536


def test_listener_backlog_and_close() -> None:
    pair = make_pair(target="none")
    accepted: list[Sink] = []
    lst = pair.peer.listen(90, lambda s: accepted.append(Sink(s)), backlog=4)
    socks = [Sink(pair.host.connect(PEER_IP, 90)) for _ in range(3)]
    assert pair.run_until(lambda: len(accepted) == 3, 5.0)
    assert lst.accepted == 3 and lst.pending == 0
    lst.close()
    late = Sink(pair.host.connect(PEER_IP, 90))
    assert pair.run_until(lambda: late.closed is not None, 5.0)
    assert late.closed == "reset"
    assert all(s.closed is None for s in socks)
    pair.host.listen(91, lambda s: None)
    with pytest.raises(OSError):
        pair.host.listen(91, lambda s: None)


def test_connect_without_route_raises() -> None:
    pair = make_pair(target="none")
    with pytest.raises(OSError):
        pair.host.connect("192.168.7.1", 80)


def test_route_via_gateway_resolves_the_gateway() -> None:
    pair = make_pair(target="none", capture=True)
    iface = pair.host.interfaces[0]
    pair.host.add_route("192.168.0.0", 16, PEER_IP, iface)
    # The peer owns only 10.0.0.2: it answers the ARP for the gateway and RSTs the SYN (not its address -> drop).
    Sink(pair.host.connect("192.168.1.1", 80))
    pair.run(0.5)
    reqs = [p for p, d in frames_of(pair, ArpFrame) if d == "ab" and p.arp.op == ARP_REQUEST]
    assert reqs and reqs[0].arp.target_ip == ip_to_bytes(PEER_IP)
    syns = [p for p, d in frames_of(pair, TcpFrame) if d == "ab" and p.seg.flags & SYN]
    assert syns and syns[0].eth.dst == PEER_MAC and syns[0].ip.dst == ip_to_bytes("192.168.1.1")
    assert pair.peer.drops["not-for-us"] >= 1


def test_route_table_longest_prefix_match() -> None:
    cfg = TcpConfig()
    a = Interface.create(0, HOST_MAC, "10.0.0.1", 24, 1500, cfg)
    b = Interface.create(1, PEER_MAC, "10.1.0.1", 16, 9000, cfg)
    rt = RouteTable()
    rt.add(ip_to_bytes("0.0.0.0"), 0, ip_to_bytes("10.0.0.254"), a)
    rt.add(ip_to_bytes("10.1.0.0"), 16, None, b)
    rt.add(ip_to_bytes("10.1.2.0"), 24, ip_to_bytes("10.1.0.9"), b)
    assert rt.lookup(ip_to_bytes("10.1.7.7")) == (b, ip_to_bytes("10.1.7.7"))
    assert rt.lookup(ip_to_bytes("10.1.2.3")) == (b, ip_to_bytes("10.1.0.9"))
    assert rt.lookup(ip_to_bytes("8.8.8.8")) == (a, ip_to_bytes("10.0.0.254"))
    assert rt.path_mtu(ip_to_bytes("10.1.7.7")) == 9000
    # MSS = MTU - 40 by default; a deliberately smaller configured MSS is kept.
    assert a.tcp_config.mss == 1460 and b.tcp_config.mss == 8960
    assert Interface.create(0, HOST_MAC, "1.1.1.1", 8, 576, cfg).tcp_config.mss == 536
    assert Interface.create(0, HOST_MAC, "1.1.1.1", 8, 1500, TcpConfig(mss=1000)).tcp_config.mss == 1000


def test_segment_tracing_only_when_enabled() -> None:
    pair = make_pair(target="none", trace=True)
    assert pair.tracer is not None
    pair.tracer.enabled = False
    client, _server = establish(pair)
    client.sock.write(b"x" * 3000)
    pair.run(0.5)
    assert [e for e in pair.tracer.events if e["kind"] == "segment"] == []
    pair.tracer.enabled = True
    client.sock.write(b"y" * 3000)
    pair.run(0.5)
    segs = [e for e in pair.tracer.events if e["kind"] == "segment"]
    assert segs and {e["dir"] for e in segs} == {"in", "out"}
    e = next(e for e in segs if e["dir"] == "out" and e["len"] > 0)
    assert e["conn"] == f"{HOST_IP}:{client.sock.key[1]}>{PEER_IP}:80" and e["owner"] == "host"
    assert {"seq", "ack", "len", "flags"} <= e.keys()


def test_garbage_frames_are_counted_not_raised() -> None:
    pair = make_pair(target="none")
    pair.host.on_receive_frame(pair.target_id, b"\x00" * 5)
    pair.host.on_receive_frame(pair.target_id, HOST_MAC + PEER_MAC + b"\x08\x00" + b"\x45" + b"\x00" * 10)
    assert pair.host.drops.total == 2
