"""LACPDU wire codec (IEEE 802.1AX Link Aggregation Control Protocol, a Slow Protocol).

Frame: destination ``01:80:c2:00:00:02``, ethertype ``0x8809``, then 110 bytes of payload::

    subtype=1  version=1
    TLV 1 (len 20) actor:   system priority, system MAC, key, port priority, port number, state, 3 reserved
    TLV 2 (len 20) partner: same layout
    TLV 3 (len 16) collector: max delay, 12 reserved
    TLV 0 (len 0)  terminator, 50 reserved

The decoder is strict about the parts every implementation agrees on (subtype, the three fixed TLVs and, for version
1, the terminator) and ignores reserved bytes and trailing Ethernet padding, as 802.1AX asks receivers to do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntFlag

from tcpchimney.wire.errors import DecodeError

SLOW_PROTOCOLS_ETHERTYPE = 0x8809
SLOW_PROTOCOLS_MAC = bytes.fromhex("0180c2000002")
LACP_SUBTYPE = 1
LACP_VERSION = 1
LACPDU_LEN = 110  # payload bytes after the Ethernet header
LACP_FRAME_LEN = 14 + LACPDU_LEN

TLV_TERMINATOR = 0
TLV_ACTOR = 1
TLV_PARTNER = 2
TLV_COLLECTOR = 3


class LacpState(IntFlag):
    """The state octet of an actor/partner TLV (bit 0 first)."""

    ACTIVITY = 0x01  # active LACP (else passive)
    TIMEOUT = 0x02  # short timeout (fast periodic) requested
    AGGREGATION = 0x04  # aggregatable (else individual)
    SYNCHRONIZATION = 0x08  # in sync: attached to the right aggregator
    COLLECTING = 0x10
    DISTRIBUTING = 0x20
    DEFAULTED = 0x40  # partner info is the administrative default
    EXPIRED = 0x80  # receive machine is in EXPIRED


@dataclass(frozen=True, slots=True)
class LacpInfo:
    """One actor or partner TLV.  ``state`` is a ``LacpState`` bit set (a plain int is accepted)."""

    system_priority: int
    system: bytes  # 6-byte MAC
    key: int
    port_priority: int
    port: int
    state: int

    def has(self, bits: int) -> bool:
        """All of ``bits`` are set in ``state``."""
        return self.state & bits == bits

    def with_state(self, state: int) -> LacpInfo:
        return replace(self, state=state)

    def same_identity(self, other: LacpInfo) -> bool:
        """Same port of the same system with the same key and the same aggregatability (802.1AX update_Selected)."""
        return (
            self.port == other.port
            and self.port_priority == other.port_priority
            and self.system == other.system
            and self.system_priority == other.system_priority
            and self.key == other.key
            and (self.state ^ other.state) & LacpState.AGGREGATION == 0
        )


NULL_INFO = LacpInfo(0, b"\x00" * 6, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class LacpDu:
    actor: LacpInfo
    partner: LacpInfo
    collector_max_delay: int = 0
    version: int = LACP_VERSION


# subtype, version, then per info TLV: type, len, sys prio, sys, key, port prio, port, state, 3 reserved
_HEAD = struct.Struct("!BB")
_INFO_TLV = struct.Struct("!BBH6sHHHB3x")
_COLLECTOR_TLV = struct.Struct("!BBH12x")
_TERMINATOR = struct.Struct("!BB")
_ACTOR_OFF = _HEAD.size
_PARTNER_OFF = _ACTOR_OFF + _INFO_TLV.size
_COLLECTOR_OFF = _PARTNER_OFF + _INFO_TLV.size
_TERMINATOR_OFF = _COLLECTOR_OFF + _COLLECTOR_TLV.size
_RESERVED_LEN = LACPDU_LEN - _TERMINATOR_OFF - _TERMINATOR.size  # 50
assert _RESERVED_LEN == 50


def _check_info(info: LacpInfo, which: str) -> None:
    if len(info.system) != 6:
        raise ValueError(f"{which} system must be a 6-byte MAC")
    for name in ("system_priority", "key", "port_priority", "port"):
        value = getattr(info, name)
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{which} {name} {value} out of range")
    if not 0 <= info.state <= 0xFF:
        raise ValueError(f"{which} state {info.state} out of range")


def _pack_info(tlv: int, info: LacpInfo) -> bytes:
    return _INFO_TLV.pack(
        tlv, 20, info.system_priority, info.system, info.key, info.port_priority, info.port, int(info.state)
    )


def encode_lacpdu(pdu: LacpDu) -> bytes:
    """The 110-byte LACPDU payload (no Ethernet header)."""
    _check_info(pdu.actor, "actor")
    _check_info(pdu.partner, "partner")
    if not 0 <= pdu.collector_max_delay <= 0xFFFF:
        raise ValueError("collector max delay out of range")
    if not 1 <= pdu.version <= 0xFF:
        raise ValueError("bad LACP version")
    return b"".join(
        (
            _HEAD.pack(LACP_SUBTYPE, pdu.version),
            _pack_info(TLV_ACTOR, pdu.actor),
            _pack_info(TLV_PARTNER, pdu.partner),
            _COLLECTOR_TLV.pack(TLV_COLLECTOR, 16, pdu.collector_max_delay),
            _TERMINATOR.pack(TLV_TERMINATOR, 0),
            bytes(_RESERVED_LEN),
        )
    )


def encode_lacp_frame(pdu: LacpDu, src_mac: bytes) -> bytes:
    """A whole Ethernet frame (no FCS) carrying ``pdu`` from ``src_mac`` to the Slow Protocols group address."""
    if len(src_mac) != 6:
        raise ValueError("source MAC must be 6 bytes")
    return b"".join((SLOW_PROTOCOLS_MAC, src_mac, SLOW_PROTOCOLS_ETHERTYPE.to_bytes(2, "big"), encode_lacpdu(pdu)))


def _unpack_info(data: bytes, offset: int, tlv: int, which: str) -> LacpInfo:
    kind, length, sys_prio, system, key, port_prio, port, state = _INFO_TLV.unpack_from(data, offset)
    if kind != tlv or length != 20:
        raise DecodeError("lacp-bad-tlv", f"{which} TLV type {kind} length {length}")
    return LacpInfo(sys_prio, system, key, port_prio, port, state)


def decode_lacpdu(data: bytes, offset: int = 0) -> LacpDu:
    """Decode the LACPDU payload at ``offset`` (just after the ethertype); raises ``DecodeError``."""
    if len(data) - offset < LACPDU_LEN:
        raise DecodeError("lacp-truncated", f"{len(data) - offset} bytes")
    subtype, version = _HEAD.unpack_from(data, offset)
    if subtype != LACP_SUBTYPE:
        raise DecodeError("lacp-bad-subtype", f"subtype {subtype}")  # e.g. 2 = Marker protocol
    if version < 1:
        raise DecodeError("lacp-bad-version", f"version {version}")
    actor = _unpack_info(data, offset + _ACTOR_OFF, TLV_ACTOR, "actor")
    partner = _unpack_info(data, offset + _PARTNER_OFF, TLV_PARTNER, "partner")
    kind, length, max_delay = _COLLECTOR_TLV.unpack_from(data, offset + _COLLECTOR_OFF)
    if kind != TLV_COLLECTOR or length != 16:
        raise DecodeError("lacp-bad-tlv", f"collector TLV type {kind} length {length}")
    if version == 1:
        # Version 2+ may carry more TLVs here; only a version-1 PDU must end with the terminator.
        kind, length = _TERMINATOR.unpack_from(data, offset + _TERMINATOR_OFF)
        if kind != TLV_TERMINATOR or length != 0:
            raise DecodeError("lacp-bad-tlv", f"terminator TLV type {kind} length {length}")
    return LacpDu(actor, partner, max_delay, version)


def decode_lacp_frame(frame: bytes) -> tuple[bytes, LacpDu]:
    """(source MAC, LACPDU) of an untagged Ethernet frame; ``DecodeError`` when it is not a well-formed LACPDU."""
    if len(frame) < 14:
        raise DecodeError("eth-truncated", f"{len(frame)} bytes")
    if frame[0:6] != SLOW_PROTOCOLS_MAC:
        raise DecodeError("lacp-bad-dst", frame[0:6].hex(":"))
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype != SLOW_PROTOCOLS_ETHERTYPE:
        raise DecodeError("lacp-bad-ethertype", f"{ethertype:#06x}")
    return frame[6:12], decode_lacpdu(frame, 14)


def is_slow_protocols_frame(frame: bytes) -> bool:
    """Cheap pre-filter for a receive path: an untagged frame with the Slow Protocols ethertype."""
    return len(frame) >= 14 and frame[12] == 0x88 and frame[13] == 0x09
