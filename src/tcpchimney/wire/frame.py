"""Whole-frame entry points used on every packet: ``parse_frame`` / ``safe_parse`` and the ``build_*_frame``s.

Parsing works on offsets into the received frame so the only copy made is the final payload slice.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tcpchimney.wire._fast import frozen_builder
from tcpchimney.wire.arp import ArpPacket, decode_arp, encode_arp
from tcpchimney.wire.drops import DropCounter
from tcpchimney.wire.errors import DecodeError
from tcpchimney.wire.ethernet import (
    ETH_HLEN,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IP,
    EthernetHeader,
    parse_ethernet_header,
)
from tcpchimney.wire.ethernet import make_ethernet_header as _make_eth
from tcpchimney.wire.icmp import IcmpEcho, IcmpMessage, decode_icmp, encode_icmp
from tcpchimney.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPv4Header, ipv4_header_bytes, parse_ipv4_at
from tcpchimney.wire.tcp import TcpSegment, parse_tcp_at, tcp_header_bytes

_IP_TYPE = b"\x08\x00"
_ARP_TYPE = b"\x08\x06"


@dataclass(frozen=True, slots=True)
class ArpFrame:
    eth: EthernetHeader
    arp: ArpPacket


@dataclass(frozen=True, slots=True)
class TcpFrame:
    eth: EthernetHeader
    ip: IPv4Header
    seg: TcpSegment


@dataclass(frozen=True, slots=True)
class IcmpFrame:
    eth: EthernetHeader
    ip: IPv4Header
    icmp: IcmpEcho | IcmpMessage


@dataclass(frozen=True, slots=True)
class OtherFrame:
    """Unknown ethertype (``ip`` None) or an IPv4 datagram of an unhandled protocol (``ip`` set)."""

    eth: EthernetHeader
    ip: IPv4Header | None = None


ParsedFrame = ArpFrame | TcpFrame | IcmpFrame | OtherFrame

_make_tcp_frame = frozen_builder(TcpFrame)
_ETH = struct.Struct("!6s6sH")


def parse_frame(frame: bytes | bytearray | memoryview, verify_checksums: bool = True) -> ParsedFrame:
    """Decode an Ethernet frame; raises :class:`DecodeError` on anything malformed or rejected by policy.

    ``verify_checksums=False`` skips the IPv4, TCP and ICMP checksum checks (e.g. a link that cannot corrupt).
    """
    if type(frame) is not bytes:
        frame = bytes(frame)  # slices of bytearray/memoryview would make unhashable addresses
    n = len(frame)
    if n < ETH_HLEN:
        raise DecodeError("eth-truncated", f"{n} bytes")
    dst, src, ethertype = _ETH.unpack_from(frame)
    if ethertype == ETH_P_IP:  # the hot path, with the Ethernet header parsing inlined
        eth = _make_eth(dst, src, ethertype, 0)
        off = ETH_HLEN
    else:
        eth, off = parse_ethernet_header(frame)
        ethertype = eth.ethertype
    if ethertype == ETH_P_IP:
        ip, start, stop = parse_ipv4_at(frame, off, n, verify_checksums)
        proto = ip.protocol
        if proto == IPPROTO_TCP:
            return _make_tcp_frame(eth, ip, parse_tcp_at(frame, start, stop, ip.src, ip.dst, verify_checksums))
        if proto == IPPROTO_ICMP:
            return IcmpFrame(eth, ip, decode_icmp(frame[start:stop], verify_checksums))
        return OtherFrame(eth, ip)
    if ethertype == ETH_P_ARP:
        return ArpFrame(eth, decode_arp(frame, off))
    return OtherFrame(eth)


def safe_parse(
    frame: bytes | bytearray | memoryview, drops: DropCounter, verify_checksums: bool = True
) -> ParsedFrame | None:
    """:func:`parse_frame` that never raises: failures are counted in ``drops`` and return None.

    Unexpected exceptions (a decoder bug) are counted as ``"malformed-<ExceptionName>"`` so they stay visible.
    """
    try:
        return parse_frame(frame, verify_checksums)
    except DecodeError as exc:
        drops.count(exc.reason)
    except Exception as exc:
        drops.count("malformed-" + type(exc).__name__)
    return None


def _eth_header(src_mac: bytes, dst_mac: bytes, ethertype: bytes, vlan: int) -> bytes:
    if len(src_mac) != 6 or len(dst_mac) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    if vlan:
        if not 0 < vlan < 4095:
            raise ValueError(f"bad VLAN id {vlan}")
        return dst_mac + src_mac + ETH_P_8021Q.to_bytes(2, "big") + vlan.to_bytes(2, "big") + ethertype
    return dst_mac + src_mac + ethertype


def build_tcp_frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: bytes,
    dst_ip: bytes,
    seg: TcpSegment,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    vlan: int = 0,
    checksum: bool = True,
) -> bytes:
    """Ethernet + IPv4 (DF set) + TCP; the payload is copied exactly once.

    ``checksum=False`` leaves the TCP checksum 0 (saves a pass over the payload) for simulated links whose
    receivers parse with ``verify_checksums=False``; the IPv4 header checksum is always filled in.
    """
    tcp_hdr = tcp_header_bytes(seg, src_ip, dst_ip, checksum)
    payload = seg.payload
    ip_hdr = ipv4_header_bytes(src_ip, dst_ip, IPPROTO_TCP, len(tcp_hdr) + len(payload), ttl, tos, ident, True)
    if vlan or len(src_mac) != 6 or len(dst_mac) != 6:
        eth = _eth_header(src_mac, dst_mac, _IP_TYPE, vlan)
    else:
        eth = dst_mac + src_mac + _IP_TYPE
    return b"".join((eth, ip_hdr, tcp_hdr, payload))


def build_arp_frame(src_mac: bytes, dst_mac: bytes, arp: ArpPacket, *, vlan: int = 0) -> bytes:
    """``dst_mac`` is usually ``BROADCAST_MAC`` for requests and the requester's MAC for replies."""
    return _eth_header(src_mac, dst_mac, _ARP_TYPE, vlan) + encode_arp(arp)


def build_icmp_frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: bytes,
    dst_ip: bytes,
    icmp: IcmpEcho | IcmpMessage,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    vlan: int = 0,
) -> bytes:
    body = encode_icmp(icmp)
    ip_hdr = ipv4_header_bytes(src_ip, dst_ip, IPPROTO_ICMP, len(body), ttl, tos, ident, True)
    return b"".join((_eth_header(src_mac, dst_mac, _IP_TYPE, vlan), ip_hdr, body))
