"""IPv4 header codec.  Options and fragments are rejected by policy (the stack never creates either)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tcpchimney.wire._fast import frozen_builder
from tcpchimney.wire.errors import DecodeError

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV4_HLEN = 20

_IP = struct.Struct("!BBHHHBBH4s4s")
_DF = 0x4000
_MF = 0x2000
_OFFSET_MASK = 0x1FFF
_from_bytes = int.from_bytes


@dataclass(frozen=True, slots=True)
class IPv4Header:
    src: bytes
    dst: bytes
    protocol: int
    ttl: int
    tos: int
    ident: int
    dont_fragment: bool
    total_length: int


_make_header = frozen_builder(IPv4Header)


def ipv4_header_bytes(
    src: bytes, dst: bytes, protocol: int, payload_len: int, ttl: int, tos: int, ident: int, dont_fragment: bool
) -> bytes:
    """The 20-byte header with its checksum filled in."""
    total = IPV4_HLEN + payload_len
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram too long: {total}")
    frag = _DF if dont_fragment else 0
    # Sum the header words arithmetically (a 4-byte address as one int is congruent to its two words).
    r = (
        0x4500 + tos + total + ident + frag + (ttl << 8) + protocol + _from_bytes(src, "big") + _from_bytes(dst, "big")
    ) % 0xFFFF
    # The sum is never zero (version word), so a multiple of 0xFFFF means checksum 0.
    return _IP.pack(0x45, tos, total, ident, frag, ttl, protocol, 0xFFFF - r if r else 0, src, dst)


def encode_ipv4(
    src: bytes,
    dst: bytes,
    protocol: int,
    payload: bytes,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    dont_fragment: bool = True,
) -> bytes:
    return ipv4_header_bytes(src, dst, protocol, len(payload), ttl, tos, ident, dont_fragment) + payload


def parse_ipv4_at(data: bytes, off: int, end: int, verify_checksum: bool = True) -> tuple[IPv4Header, int, int]:
    """Parse the header at ``data[off:end]``; return it with the payload bounds ``(start, stop)`` in ``data``.

    ``stop`` honours the total length, so Ethernet padding after the datagram is excluded.
    """
    avail = end - off
    if avail < IPV4_HLEN:
        raise DecodeError("ipv4-truncated", f"{avail} bytes")
    vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = _IP.unpack_from(data, off)
    if vihl >> 4 != 4:
        raise DecodeError("ipv4-version", f"version {vihl >> 4}")
    hlen = (vihl & 0x0F) << 2
    if hlen < IPV4_HLEN:
        raise DecodeError("ipv4-bad-header-length", f"IHL {hlen >> 2}")
    if hlen > avail:
        raise DecodeError("ipv4-truncated", f"header {hlen} > {avail} bytes")
    # A valid header's words sum to 0xFFFF (one's complement), i.e. a non-zero multiple of 0xFFFF.
    if verify_checksum and _from_bytes(data[off : off + hlen], "big") % 0xFFFF:
        raise DecodeError("ipv4-bad-checksum")
    if total < hlen or total > avail:
        raise DecodeError("ipv4-bad-total-length", f"total length {total}, header {hlen}, have {avail}")
    if hlen != IPV4_HLEN:
        raise DecodeError("ipv4-options", f"{hlen - IPV4_HLEN} option bytes")
    if frag & (_MF | _OFFSET_MASK):
        raise DecodeError("ipv4-fragment", f"flags/offset {frag:#06x}")
    hdr = _make_header(src, dst, proto, ttl, tos, ident, bool(frag & _DF), total)
    return hdr, off + hlen, off + total


def decode_ipv4(data: bytes, verify_checksum: bool = True) -> tuple[IPv4Header, bytes]:
    """Header and payload (trimmed to the total length)."""
    hdr, start, stop = parse_ipv4_at(data, 0, len(data), verify_checksum)
    return hdr, data[start:stop]
