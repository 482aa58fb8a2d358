"""ICMP: echo request/reply in full; every other type as a generic (type, code, rest) message."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tcpchimney.wire.checksum import internet_checksum
from tcpchimney.wire.errors import DecodeError

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_CODE_FRAG_NEEDED = 4  # with ICMP_DEST_UNREACH: carries the next-hop MTU (path MTU discovery)
ICMP_HLEN = 8

_ECHO = struct.Struct("!BBHHH")
_HDR = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class IcmpEcho:
    type: int  # ICMP_ECHO_REQUEST or ICMP_ECHO_REPLY
    code: int
    ident: int
    seq: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """Any non-echo message; ``rest`` is everything after the 4-byte type/code/checksum."""

    type: int
    code: int
    rest: bytes

    @property
    def next_hop_mtu(self) -> int | None:
        """For "fragmentation needed" (type 3 code 4), the MTU from RFC 1191; otherwise None."""
        if self.type == ICMP_DEST_UNREACH and self.code == ICMP_CODE_FRAG_NEEDED and len(self.rest) >= 4:
            return int.from_bytes(self.rest[2:4], "big")
        return None


def echo_reply_to(request: IcmpEcho) -> IcmpEcho:
    return IcmpEcho(ICMP_ECHO_REPLY, 0, request.ident, request.seq, request.payload)


def encode_icmp_echo(echo: IcmpEcho) -> bytes:
    hdr = _ECHO.pack(echo.type, echo.code, 0, echo.ident, echo.seq)
    csum = internet_checksum(echo.payload, int.from_bytes(hdr, "big"))
    return _ECHO.pack(echo.type, echo.code, csum, echo.ident, echo.seq) + echo.payload


def encode_icmp(msg: IcmpEcho | IcmpMessage) -> bytes:
    """Encode either kind of message."""
    if isinstance(msg, IcmpEcho):
        return encode_icmp_echo(msg)
    hdr = _HDR.pack(msg.type, msg.code, 0)
    csum = internet_checksum(msg.rest, int.from_bytes(hdr, "big"))
    return _HDR.pack(msg.type, msg.code, csum) + msg.rest


def decode_icmp(data: bytes, verify_checksum: bool = True) -> IcmpEcho | IcmpMessage:
    if len(data) < ICMP_HLEN:
        raise DecodeError("icmp-truncated", f"{len(data)} bytes")
    if verify_checksum and internet_checksum(data) != 0:
        raise DecodeError("icmp-bad-checksum")
    typ, code, _csum, ident, seq = _ECHO.unpack_from(data)
    if typ in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
        return IcmpEcho(typ, code, ident, seq, data[ICMP_HLEN:])
    return IcmpMessage(typ, code, data[4:])
