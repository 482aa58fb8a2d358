"""Whole-frame entry points used on every packet: ``parse_frame`` / ``safe_parse`` and the ``build_*_frame``s.

Parsing works on offsets into the received frame so the only copy made is the final payload slice.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tcpchimney.wire._fast import frozen_builder
from tcpchimney.wire.arp import ArpPacket, decode_arp, encode_arp
from tcpchimney.wire.checksum import fold16
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
from tcpchimney.wire.tcp import (
    NO_OPTIONS,
    TcpSegment,
    _make_options,
    _make_segment,
    _ts_options,
    decode_tcp_options,
    parse_tcp_at,
    tcp_header_bytes,
)

_TS_ONLY_PREFIX = b"\x01\x01\x08\x0a"  # NOP NOP TS(10): the layout tcp_header_bytes uses for timestamps alone
_TS_PAIR = struct.Struct("!II")
_TCP_HDR = struct.Struct("!HHIIBBHHH")
_from_bytes = int.from_bytes

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


_IP_FIELDS = struct.Struct("!HH2xHxB2x4s4s")  # version/IHL+TOS, total length, flags/offset, protocol, src, dst


def parse_tcp_fast(frame: bytes, verify_checksums: bool = True) -> tuple[bytes, bytes, TcpSegment] | None:
    """``(src_ip, dst_ip, segment)`` of the common frame, without building the Ethernet/IPv4/TcpFrame values.

    Only untagged IPv4 with a 20-byte header, unfragmented, carrying TCP is taken; for anything else (other
    protocols, VLAN tags, options, fragments, or anything malformed) it returns None and the caller runs
    :func:`safe_parse`, which classifies and counts it.  A segment returned is equal to ``parse_frame(frame).seg``
    (the checks are those of ``parse_ipv4_at`` and ``parse_tcp_at``, inlined: this runs once per packet).
    """
    if type(frame) is not bytes or frame[12:14] != _IP_TYPE or len(frame) < 54:
        return None
    ver_tos, total, frag, proto, src, dst = _IP_FIELDS.unpack_from(frame, 14)
    if ver_tos >> 8 != 0x45 or proto != IPPROTO_TCP or frag & 0x3FFF or total < 40 or total > len(frame) - ETH_HLEN:
        return None
    end = ETH_HLEN + total
    sport, dport, seq, ack, doff, flags, window, _csum, urg = _TCP_HDR.unpack_from(frame, 34)
    hlen = (doff >> 4) << 2
    tcp_len = total - 20
    if hlen < 20 or hlen > tcp_len:
        return None
    if verify_checksums:
        if _from_bytes(frame[14:34], "big") % 0xFFFF:
            return None
        # pseudo-header + header + payload must sum to 0 (mod 0xFFFF); the header's length is even, so one value
        # over header and payload is congruent to the two summed separately (an odd tail is padded with a zero)
        value = _from_bytes(frame[34:end], "big")
        if tcp_len & 1:
            value <<= 8
        if tcp_len > 512:
            value = fold16(value)
        if (value % 0xFFFF + _from_bytes(src, "big") + _from_bytes(dst, "big") + 6 + tcp_len) % 0xFFFF:
            return None
    pstart = 34 + hlen
    if hlen == 20:
        opts = NO_OPTIONS
    elif hlen == 32 and frame[54:58] == _TS_ONLY_PREFIX:
        ts = _TS_PAIR.unpack_from(frame, 58)
        cached = _ts_options.get(ts)
        if cached is None:
            if len(_ts_options) >= 64:
                _ts_options.clear()
            cached = _ts_options[ts] = _make_options(None, None, False, (), ts)
        opts = cached
    else:
        try:
            opts = decode_tcp_options(frame, 54, pstart)
        except DecodeError:
            return None
    return src, dst, _make_segment(sport, dport, seq, ack, flags, window, frame[pstart:end], opts, urg)


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
    opts = seg.options
    if (
        checksum
        and not vlan
        and (
            opts is NO_OPTIONS
            or (
                opts.timestamp is not None
                and opts.mss is None
                and opts.window_scale is None
                and not opts.sack_permitted
                and not opts.sack_blocks
            )
        )
        and len(src_mac) == 6
        and len(dst_mac) == 6
    ):
        return _build_common_tcp_frame(src_mac, dst_mac, src_ip, dst_ip, seg, ttl, tos, ident)
    tcp_hdr = tcp_header_bytes(seg, src_ip, dst_ip, checksum)
    payload = seg.payload
    ip_hdr = ipv4_header_bytes(src_ip, dst_ip, IPPROTO_TCP, len(tcp_hdr) + len(payload), ttl, tos, ident, True)
    if vlan or len(src_mac) != 6 or len(dst_mac) != 6:
        eth = _eth_header(src_mac, dst_mac, _IP_TYPE, vlan)
    else:
        eth = dst_mac + src_mac + _IP_TYPE
    return b"".join((eth, ip_hdr, tcp_hdr, payload))


_ETH_IP_TCP = struct.Struct("!6s6sHBBHHHBBH4s4sHHIIBBHHH")  # Ethernet, IPv4 (no options), TCP base header
_TS_PREFIX_SUM = int.from_bytes(_TS_ONLY_PREFIX, "big")


def _build_common_tcp_frame(
    src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes, seg: TcpSegment, ttl: int, tos: int, ident: int
) -> bytes:
    """:func:`build_tcp_frame` for every established-state segment (no options or timestamps alone, untagged):
    the same bytes, with one header pack and the addresses summed once for both checksums."""
    opts = seg.options
    payload = seg.payload
    if opts is NO_OPTIONS:
        optbytes = b""
        optsum = 0
        hlen = 20
    else:
        tsval, tsecr = opts.timestamp  # type: ignore[misc]
        optbytes = _TS_ONLY_PREFIX + _TS_PAIR.pack(tsval, tsecr)
        optsum = _TS_PREFIX_SUM + tsval + tsecr  # congruent to the option words (2**32 == 1 mod 0xFFFF)
        hlen = 32
    tcp_len = hlen + len(payload)
    total = 20 + tcp_len
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram too long: {total}")
    sport = seg.src_port
    dport = seg.dst_port
    seq = seg.seq
    ack = seg.ack
    flags = seg.flags & 0xFF
    window = seg.window
    urg = seg.urgent_pointer
    ips = _from_bytes(src_ip, "big") + _from_bytes(dst_ip, "big")
    initial = ips + 6 + tcp_len + sport + dport + seq + ack + (hlen << 10) + flags + window + urg + optsum
    value = _from_bytes(payload, "big")  # internet_checksum(payload, initial), inlined (initial is never 0)
    if len(payload) & 1:
        value <<= 8
    if len(payload) > 512:
        value = fold16(value)
    r = (value % 0xFFFF + initial) % 0xFFFF
    csum = 0xFFFF - r if r else 0
    r = (0x4500 + tos + total + ident + 0x4000 + (ttl << 8) + IPPROTO_TCP + ips) % 0xFFFF
    header = _ETH_IP_TCP.pack(
        dst_mac,
        src_mac,
        ETH_P_IP,
        0x45,
        tos,
        total,
        ident,
        0x4000,  # DF
        ttl,
        IPPROTO_TCP,
        0xFFFF - r if r else 0,
        src_ip,
        dst_ip,
        sport,
        dport,
        seq,
        ack,
        hlen << 2,
        flags,
        window,
        csum,
        urg,
    )
    return b"".join((header, optbytes, payload))


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
