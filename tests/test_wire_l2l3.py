"""Ethernet, ARP, IPv4 and ICMP codecs: round trips, known vectors and every drop reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpchimney.wire.arp import (
    ARP_REPLY,
    ARP_REQUEST,
    ArpPacket,
    arp_reply_to,
    arp_request,
    decode_arp,
    encode_arp,
)
from tcpchimney.wire.errors import DecodeError
from tcpchimney.wire.ethernet import ETH_HLEN, ETH_P_ARP, ETH_P_IP, decode_ethernet, encode_ethernet
from tcpchimney.wire.icmp import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    IcmpEcho,
    IcmpMessage,
    decode_icmp,
    echo_reply_to,
    encode_icmp,
    encode_icmp_echo,
)
from tcpchimney.wire.ipv4 import IPPROTO_TCP, IPPROTO_UDP, decode_ipv4, encode_ipv4

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])

addr4 = st.binary(min_size=4, max_size=4)
mac = st.binary(min_size=6, max_size=6)


def reason(exc: pytest.ExceptionInfo[DecodeError]) -> str:
    return exc.value.reason


# ---------------------------------------------------------------- Ethernet


def test_ethernet_round_trip_and_layout() -> None:
    frame = encode_ethernet(MAC_B, MAC_A, ETH_P_IP, b"payload")
    assert frame[:6] == MAC_B and frame[6:12] == MAC_A and frame[12:14] == b"\x08\x00"
    assert len(frame) == ETH_HLEN + 7
    eth, payload = decode_ethernet(frame)
    assert (eth.dst, eth.src, eth.ethertype, eth.vlan) == (MAC_B, MAC_A, ETH_P_IP, 0)
    assert payload == b"payload"


def test_ethernet_vlan_tag_recorded_and_skipped() -> None:
    frame = encode_ethernet(MAC_B, MAC_A, ETH_P_ARP, b"xyz", vlan=42)
    assert frame[12:16] == b"\x81\x00\x00\x2a"
    eth, payload = decode_ethernet(frame)
    assert eth.ethertype == ETH_P_ARP and eth.vlan == 42 and payload == b"xyz"
    # priority bits in the TCI are not part of the VLAN id
    tagged = MAC_B + MAC_A + b"\x81\x00\xe0\x07\x08\x00" + b"p"
    eth, payload = decode_ethernet(tagged)
    assert eth.vlan == 7 and eth.ethertype == ETH_P_IP and payload == b"p"


def test_ethernet_truncated() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_ethernet(b"\x00" * 13)
    assert reason(exc) == "eth-truncated"
    with pytest.raises(DecodeError) as exc:
        decode_ethernet(MAC_B + MAC_A + b"\x81\x00\x00\x01")  # tag without inner type
    assert reason(exc) == "eth-truncated"


def test_ethernet_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode_ethernet(MAC_B[:5], MAC_A, ETH_P_IP, b"")
    with pytest.raises(ValueError):
        encode_ethernet(MAC_B, MAC_A, ETH_P_IP, b"", vlan=4095)


# ---------------------------------------------------------------- ARP


@settings(max_examples=50, deadline=None)
@given(op=st.sampled_from([ARP_REQUEST, ARP_REPLY]), smac=mac, sip=addr4, tmac=mac, tip=addr4)
def test_arp_round_trip(op: int, smac: bytes, sip: bytes, tmac: bytes, tip: bytes) -> None:
    pkt = ArpPacket(op, smac, sip, tmac, tip)
    data = encode_arp(pkt)
    assert len(data) == 28
    assert decode_arp(data + b"\x00" * 18) == pkt  # Ethernet padding ignored


def test_arp_known_vector() -> None:
    req = arp_request(MAC_A, IP_A, IP_B)
    assert encode_arp(req) == bytes.fromhex("0001 0800 06 04 0001 020000000001 0a000001 000000000000 0a000002")
    reply = arp_reply_to(req, MAC_B)
    assert reply == ArpPacket(ARP_REPLY, MAC_B, IP_B, MAC_A, IP_A)


def test_arp_drop_reasons() -> None:
    good = encode_arp(arp_request(MAC_A, IP_A, IP_B))
    cases = {
        "arp-truncated": good[:27],
        "arp-unsupported": b"\x00\x06" + good[2:],  # IEEE 802 hardware type
        "arp-bad-op": good[:6] + b"\x00\x03" + good[8:],
    }
    for expected, data in cases.items():
        with pytest.raises(DecodeError) as exc:
            decode_arp(data)
        assert reason(exc) == expected
    with pytest.raises(DecodeError) as exc:
        decode_arp(good[:4] + b"\x10" + good[5:])  # hlen 16
    assert reason(exc) == "arp-unsupported"


# ---------------------------------------------------------------- IPv4


def test_ipv4_known_header_checksum() -> None:
    # The widely used example header (UDP, 192.168.0.1 -> 192.168.0.199) whose checksum is 0xb861.
    hdr = bytes.fromhex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
    ip, payload = decode_ipv4(hdr + bytes(0x73 - 20))
    assert ip.protocol == IPPROTO_UDP and ip.ttl == 64 and ip.dont_fragment and ip.total_length == 0x73
    assert ip.src == bytes([192, 168, 0, 1]) and ip.dst == bytes([192, 168, 0, 199])
    assert len(payload) == 0x73 - 20
    built = encode_ipv4(ip.src, ip.dst, IPPROTO_UDP, payload, ttl=64, ident=0)
    assert built[:20] == hdr


@settings(max_examples=100, deadline=None)
@given(
    src=addr4,
    dst=addr4,
    proto=st.integers(0, 255),
    payload=st.binary(max_size=100),
    ttl=st.integers(0, 255),
    tos=st.integers(0, 255),
    ident=st.integers(0, 0xFFFF),
    df=st.booleans(),
    padding=st.binary(max_size=30),
)
def test_ipv4_round_trip_trims_padding(
    src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int, tos: int, ident: int, df: bool, padding: bytes
) -> None:
    data = encode_ipv4(src, dst, proto, payload, ttl=ttl, tos=tos, ident=ident, dont_fragment=df)
    ip, got = decode_ipv4(data + padding)
    assert got == payload
    assert (ip.src, ip.dst, ip.protocol, ip.ttl, ip.tos, ip.ident, ip.dont_fragment) == (
        src,
        dst,
        proto,
        ttl,
        tos,
        ident,
        df,
    )
    assert ip.total_length == 20 + len(payload)


def _with_checksum(hdr: bytearray) -> bytes:
    hdr[10:12] = b"\x00\x00"
    total = sum(int.from_bytes(hdr[i : i + 2], "big") for i in range(0, len(hdr), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    hdr[10:12] = (~total & 0xFFFF).to_bytes(2, "big")
    return bytes(hdr)


def test_ipv4_every_drop_reason() -> None:
    good = encode_ipv4(IP_A, IP_B, IPPROTO_TCP, b"x" * 20)

    def patched(offset: int, value: bytes, *, fix_checksum: bool = True) -> bytes:
        hdr = bytearray(good[:20])
        hdr[offset : offset + len(value)] = value
        return (_with_checksum(hdr) if fix_checksum else bytes(hdr)) + good[20:]

    opt_hdr = bytearray(good[:20]) + bytearray(b"\x01\x01\x01\x00")  # IHL 6: four option bytes (NOPs, EOL)
    opt_hdr[0] = 0x46
    opt_hdr[2:4] = (24 + 20).to_bytes(2, "big")
    with_options = _with_checksum(opt_hdr) + good[20:]

    cases = {
        "ipv4-truncated": [good[:19], patched(0, b"\x4f")[:40]],  # IHL 15 = 60 bytes > 40 available
        "ipv4-version": [patched(0, b"\x65")],
        "ipv4-bad-header-length": [patched(0, b"\x44")],
        "ipv4-bad-checksum": [patched(8, b"\x3f", fix_checksum=False)],
        "ipv4-options": [with_options],
        "ipv4-fragment": [patched(6, b"\x20\x00"), patched(6, b"\x00\x10"), patched(6, b"\x40\x01")],
        "ipv4-bad-total-length": [patched(2, (100).to_bytes(2, "big")), patched(2, (19).to_bytes(2, "big"))],
    }
    for expected, datas in cases.items():
        for data in datas:
            with pytest.raises(DecodeError) as exc:
                decode_ipv4(data)
            assert reason(exc) == expected, data.hex()
    # the corrupted header is accepted when verification is off
    ip, _ = decode_ipv4(patched(8, b"\x3f", fix_checksum=False), verify_checksum=False)
    assert ip.ttl == 0x3F


# ---------------------------------------------------------------- ICMP


def test_icmp_echo_known_vector_and_round_trip() -> None:
    req = IcmpEcho(ICMP_ECHO_REQUEST, 0, 0x1234, 1, b"abcd")
    data = encode_icmp_echo(req)
    # 0800 csum 1234 0001 61626364: sum = 0x0800+0x1234+0x0001+0x6162+0x6364 = 0xdefb -> checksum 0x2104
    assert data == bytes.fromhex("0800 2104 1234 0001 61626364")
    assert decode_icmp(data) == req
    reply = echo_reply_to(req)
    assert reply.type == ICMP_ECHO_REPLY and reply.payload == b"abcd" and reply.seq == 1
    assert decode_icmp(encode_icmp(reply)) == reply


def test_icmp_generic_message_and_mtu() -> None:
    msg = IcmpMessage(3, 4, b"\x00\x00\x05\x78" + b"original datagram")
    data = encode_icmp(msg)
    decoded = decode_icmp(data)
    assert decoded == msg
    assert isinstance(decoded, IcmpMessage) and decoded.next_hop_mtu == 1400
    assert IcmpMessage(11, 0, b"\x00" * 8).next_hop_mtu is None


def test_icmp_drop_reasons() -> None:
    data = encode_icmp_echo(IcmpEcho(ICMP_ECHO_REQUEST, 0, 1, 2, b"hello"))
    with pytest.raises(DecodeError) as exc:
        decode_icmp(data[:7])
    assert reason(exc) == "icmp-truncated"
    corrupted = data[:-1] + bytes([data[-1] ^ 0x01])
    with pytest.raises(DecodeError) as exc:
        decode_icmp(corrupted)
    assert reason(exc) == "icmp-bad-checksum"
    assert isinstance(decode_icmp(corrupted, verify_checksum=False), IcmpEcho)
