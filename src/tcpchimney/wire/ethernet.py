"""Ethernet II framing with optional 802.1Q tag."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tcpchimney.wire._fast import frozen_builder
from tcpchimney.wire.errors import DecodeError

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_HLEN = 14
ETH_VLAN_HLEN = 18

_ETH = struct.Struct("!6s6sH")
_TYPE = struct.Struct("!H")
_TAG = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """``ethertype`` is the inner type when an 802.1Q tag was present; ``vlan`` is its VLAN ID (0: untagged or
    priority-only, i.e. not significant, matching the neighbor state's ``VlanId`` convention)."""

    dst: bytes
    src: bytes
    ethertype: int
    vlan: int = 0


make_ethernet_header = frozen_builder(EthernetHeader)  # positional: dst, src, ethertype, vlan


def encode_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int = 0) -> bytes:
    """Header + payload; an 802.1Q tag (priority 0) is inserted when ``vlan`` is non-zero."""
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    if vlan:
        if not 0 < vlan < 4095:
            raise ValueError(f"bad VLAN id {vlan}")
        return b"".join((dst, src, _TAG.pack(ETH_P_8021Q, vlan), _TYPE.pack(ethertype), payload))
    return b"".join((dst, src, _TYPE.pack(ethertype), payload))


def parse_ethernet_header(frame: bytes) -> tuple[EthernetHeader, int]:
    """The header and the offset of the payload in ``frame`` (no payload copy)."""
    if len(frame) < ETH_HLEN:
        raise DecodeError("eth-truncated", f"{len(frame)} bytes")
    dst, src, ethertype = _ETH.unpack_from(frame)
    if ethertype == ETH_P_8021Q:
        if len(frame) < ETH_VLAN_HLEN:
            raise DecodeError("eth-truncated", "802.1Q tag cut short")
        tci, ethertype = _TAG.unpack_from(frame, ETH_HLEN)
        return make_ethernet_header(dst, src, ethertype, tci & 0x0FFF), ETH_VLAN_HLEN
    return make_ethernet_header(dst, src, ethertype, 0), ETH_HLEN


def decode_ethernet(frame: bytes) -> tuple[EthernetHeader, bytes]:
    """Header and payload (which may include trailing Ethernet padding; upper layers trim it)."""
    eth, off = parse_ethernet_header(frame)
    return eth, frame[off:]
