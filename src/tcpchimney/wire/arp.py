"""ARP for Ethernet / IPv4 (RFC 826)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tcpchimney.wire.errors import DecodeError

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_LEN = 28

_ARP = struct.Struct("!HHBBH6s4s6s4s")
_HW_ETHER = 1
_PROTO_IP = 0x0800


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


def arp_request(sender_mac: bytes, sender_ip: bytes, target_ip: bytes) -> ArpPacket:
    """A who-has request (target MAC zero, as Linux sends it)."""
    return ArpPacket(ARP_REQUEST, sender_mac, sender_ip, b"\x00" * 6, target_ip)


def arp_reply_to(request: ArpPacket, my_mac: bytes) -> ArpPacket:
    """The is-at reply answering ``request`` for its target IP."""
    return ArpPacket(ARP_REPLY, my_mac, request.target_ip, request.sender_mac, request.sender_ip)


def encode_arp(pkt: ArpPacket) -> bytes:
    return _ARP.pack(_HW_ETHER, _PROTO_IP, 6, 4, pkt.op, pkt.sender_mac, pkt.sender_ip, pkt.target_mac, pkt.target_ip)


def decode_arp(data: bytes, offset: int = 0) -> ArpPacket:
    """Decode the ARP packet at ``offset`` (trailing Ethernet padding is ignored)."""
    if len(data) - offset < ARP_LEN:
        raise DecodeError("arp-truncated", f"{len(data) - offset} bytes")
    htype, ptype, hlen, plen, op, smac, sip, tmac, tip = _ARP.unpack_from(data, offset)
    if htype != _HW_ETHER or ptype != _PROTO_IP or hlen != 6 or plen != 4:
        raise DecodeError("arp-unsupported", f"htype={htype} ptype={ptype:#x} hlen={hlen} plen={plen}")
    if op not in (ARP_REQUEST, ARP_REPLY):
        raise DecodeError("arp-bad-op", f"op={op}")
    return ArpPacket(op, smac, sip, tmac, tip)
