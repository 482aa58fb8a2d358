"""Whole-frame parse/build: known frame bytes, each frame kind, and safe_parse's drop accounting."""

from __future__ import annotations

import dataclasses

import pytest

from tcpchimney.wire import frame as frame_mod
from tcpchimney.wire.addr import BROADCAST_MAC
from tcpchimney.wire.arp import ARP_REQUEST, arp_request
from tcpchimney.wire.drops import DropCounter
from tcpchimney.wire.errors import DecodeError
from tcpchimney.wire.ethernet import ETH_P_IP, encode_ethernet
from tcpchimney.wire.frame import (
    ArpFrame,
    IcmpFrame,
    OtherFrame,
    TcpFrame,
    build_arp_frame,
    build_icmp_frame,
    build_tcp_frame,
    parse_frame,
    safe_parse,
)
from tcpchimney.wire.icmp import ICMP_ECHO_REQUEST, IcmpEcho
from tcpchimney.wire.ipv4 import IPPROTO_UDP, encode_ipv4
from tcpchimney.wire.tcp import ACK, SYN, TcpOptions, TcpSegment

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])

# Ethernet + IPv4 + TCP SYN, field by field.  IPv4 checksum 0x1486 and TCP checksum 0xc598 were computed
# independently with a word-by-word RFC 1071 sum.
KNOWN_SYN_FRAME = bytes.fromhex(
    "020000000002 020000000001 0800"  # dst, src, IPv4
    "45 00 003c 1234 4000 40 06 1486 0a000001 0a000002"  # 60 bytes, id 0x1234, DF, TTL 64, TCP
    "c350 0050 01020304 00000000 a002 faf0 c598 0000"  # 50000 -> 80, SYN, window 64240
    "020405b4 0402080a 0000abcd 00000000 01030307"  # MSS 1460, SACK-perm, TS, NOP, wscale 7
)
SYN_SEG = TcpSegment(50000, 80, 0x01020304, 0, SYN, 64240, options=TcpOptions(1460, 7, True, (), (0xABCD, 0)))


def test_build_known_syn_frame() -> None:
    assert build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, SYN_SEG, ident=0x1234) == KNOWN_SYN_FRAME


def test_parse_known_syn_frame() -> None:
    parsed = parse_frame(KNOWN_SYN_FRAME)
    assert isinstance(parsed, TcpFrame)
    assert (parsed.eth.dst, parsed.eth.src, parsed.eth.ethertype, parsed.eth.vlan) == (MAC_B, MAC_A, ETH_P_IP, 0)
    ip = parsed.ip
    assert (ip.src, ip.dst, ip.protocol, ip.ttl, ip.tos, ip.ident, ip.dont_fragment, ip.total_length) == (
        IP_A,
        IP_B,
        6,
        64,
        0,
        0x1234,
        True,
        60,
    )
    assert parsed.seg == SYN_SEG
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.seg = SYN_SEG  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.ip.ttl = 1  # type: ignore[misc]
    assert hash(parsed) == hash(parse_frame(KNOWN_SYN_FRAME))


def test_tcp_frame_round_trip_with_vlan_padding_and_bytearray() -> None:
    seg = TcpSegment(80, 50000, 7, 0x01020305, ACK, 500, options=TcpOptions(timestamp=(5, 0xABCD)))
    frame = build_tcp_frame(MAC_B, MAC_A, IP_B, IP_A, seg, ttl=9, tos=0x10, ident=0x8001, vlan=12)
    padded = frame + bytes(max(0, 64 - len(frame))) + b"\xee" * 4  # padding / trailer after the datagram
    parsed = parse_frame(bytearray(padded))
    assert isinstance(parsed, TcpFrame)
    assert parsed.seg == seg and parsed.eth.vlan == 12
    assert (parsed.ip.ttl, parsed.ip.tos, parsed.ip.ident) == (9, 0x10, 0x8001)
    assert type(parsed.ip.src) is bytes and type(parsed.eth.src) is bytes


def test_arp_frame() -> None:
    req = arp_request(MAC_A, IP_A, IP_B)
    frame = build_arp_frame(MAC_A, BROADCAST_MAC, req)
    assert len(frame) == 42 and frame[:6] == BROADCAST_MAC
    parsed = parse_frame(frame + bytes(18))
    assert isinstance(parsed, ArpFrame)
    assert parsed.arp == req and parsed.arp.op == ARP_REQUEST and parsed.eth.src == MAC_A


def test_icmp_frame() -> None:
    echo = IcmpEcho(ICMP_ECHO_REQUEST, 0, 77, 3, b"ping!")
    frame = build_icmp_frame(MAC_A, MAC_B, IP_A, IP_B, echo, ttl=32)
    parsed = parse_frame(frame)
    assert isinstance(parsed, IcmpFrame)
    assert parsed.icmp == echo and parsed.ip.protocol == 1 and parsed.ip.ttl == 32


def test_other_frames() -> None:
    ipv6 = encode_ethernet(MAC_B, MAC_A, 0x86DD, bytes(40))
    parsed = parse_frame(ipv6)
    assert isinstance(parsed, OtherFrame) and parsed.ip is None and parsed.eth.ethertype == 0x86DD
    udp = encode_ethernet(MAC_B, MAC_A, ETH_P_IP, encode_ipv4(IP_A, IP_B, IPPROTO_UDP, bytes(8)))
    parsed = parse_frame(udp)
    assert isinstance(parsed, OtherFrame) and parsed.ip is not None and parsed.ip.protocol == IPPROTO_UDP


def test_checksum_options() -> None:
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, b"data")
    unchecked = build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, seg, checksum=False)
    assert unchecked[14 + 20 + 16 : 14 + 20 + 18] == b"\x00\x00"
    with pytest.raises(DecodeError) as exc:
        parse_frame(unchecked)
    assert exc.value.reason == "tcp-bad-checksum"
    parsed = parse_frame(unchecked, verify_checksums=False)
    assert isinstance(parsed, TcpFrame) and parsed.seg == seg


def _drop_reason(frame: bytes) -> str:
    drops = DropCounter()
    assert safe_parse(frame, drops) is None
    assert drops.total == 1
    (reason,) = drops.as_dict()
    return reason


def test_safe_parse_counts_every_layer_reason() -> None:
    good = KNOWN_SYN_FRAME
    ip_hdr = bytearray(good[14:34])
    ip_hdr[6] = 0x20  # MF
    ip_hdr[10:12] = b"\x00\x00"
    s = sum(int.from_bytes(ip_hdr[i : i + 2], "big") for i in range(0, 20, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    ip_hdr[10:12] = (~s & 0xFFFF).to_bytes(2, "big")
    fragment = good[:14] + bytes(ip_hdr) + good[34:]
    cases = {
        "eth-truncated": good[:10],
        "ipv4-truncated": good[:30],
        "ipv4-bad-checksum": good[:22] + b"\x01" + good[23:],  # TTL changed
        "ipv4-fragment": fragment,
        "tcp-bad-checksum": good[:-1] + b"\x08",
        "arp-truncated": build_arp_frame(MAC_A, BROADCAST_MAC, arp_request(MAC_A, IP_A, IP_B))[:30],
        "icmp-bad-checksum": build_icmp_frame(MAC_A, MAC_B, IP_A, IP_B, IcmpEcho(8, 0, 1, 1, b"x"))[:-1] + b"y",
    }
    for expected, frame in cases.items():
        assert _drop_reason(frame) == expected
    drops = DropCounter()
    assert safe_parse(good, drops) is not None and drops.total == 0


def test_safe_parse_contains_unexpected_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> TcpSegment:
        raise ZeroDivisionError("decoder bug")

    monkeypatch.setattr(frame_mod, "parse_tcp_at", broken)
    with pytest.raises(ZeroDivisionError):
        parse_frame(KNOWN_SYN_FRAME)
    assert _drop_reason(KNOWN_SYN_FRAME) == "malformed-ZeroDivisionError"
