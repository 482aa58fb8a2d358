"""TCP segment codec (sans-IO): a ``TcpSegment`` value and its encoding with the pseudo-header checksum."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tcpchimney.wire._fast import frozen_builder
from tcpchimney.wire.checksum import internet_checksum
from tcpchimney.wire.errors import DecodeError

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80


@dataclass(frozen=True, slots=True)
class TcpOptions:
    """The options the engine uses.  ``None`` / empty means absent."""

    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()  # (left edge, right edge) pairs
    timestamp: tuple[int, int] | None = None  # (TSval, TSecr)


NO_OPTIONS = TcpOptions()


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """One TCP segment as the engine sees it (no IP addresses: the connection knows them)."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int  # the raw 16-bit field, before scaling
    payload: bytes = b""
    options: TcpOptions = NO_OPTIONS
    urgent_pointer: int = 0

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload plus one for SYN and one for FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)


# ---------------------------------------------------------------------------------------------------------------
# Codec.  Options are laid out as Linux does, every item NOP-padded to a 4-byte boundary:
#   MSS | SACK-permitted+timestamps (or NOP NOP + either) | NOP + window scale | NOP NOP + SACK blocks
# SACK blocks that do not fit in the 40-byte option space are dropped from the end (RFC 2018: the first block
# reports the most recent data, so keep it).

TCP_HLEN = 20
TCP_MAX_OPTIONS = 40

_TCP = struct.Struct("!HHIIBBHHH")
_TS = struct.Struct("!II")
_MSS = struct.Struct("!H")
_BLOCK = struct.Struct("!II")
_TS_ONLY_PREFIX = b"\x01\x01\x08\x0a"
_SACKP_TS_PREFIX = b"\x04\x02\x08\x0a"
_from_bytes = int.from_bytes

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8


_make_segment = frozen_builder(TcpSegment)
_make_options = frozen_builder(TcpOptions)
_ts_options: dict[tuple[int, int], TcpOptions] = {}  # recent timestamp-only options values, by (TSval, TSecr)


def encode_tcp_options(opts: TcpOptions) -> bytes:
    """The option bytes (a multiple of 4 long, at most 40)."""
    if opts is NO_OPTIONS:
        return b""
    parts: list[bytes] = []
    if opts.mss is not None:
        parts.append(b"\x02\x04" + _MSS.pack(opts.mss))
    if opts.timestamp is not None:
        prefix = _SACKP_TS_PREFIX if opts.sack_permitted else _TS_ONLY_PREFIX
        parts.append(prefix + _TS.pack(opts.timestamp[0], opts.timestamp[1]))
    elif opts.sack_permitted:
        parts.append(b"\x01\x01\x04\x02")
    if opts.window_scale is not None:
        parts.append(b"\x01\x03\x03" + bytes((opts.window_scale,)))
    if opts.sack_blocks:
        used = sum(len(p) for p in parts)
        room = (TCP_MAX_OPTIONS - used - 4) // 8
        blocks = opts.sack_blocks[:room] if room > 0 else ()
        if blocks:
            parts.append(
                b"\x01\x01\x05" + bytes((2 + 8 * len(blocks),)) + b"".join(_BLOCK.pack(l, r) for l, r in blocks)
            )
    out = b"".join(parts)
    if len(out) > TCP_MAX_OPTIONS:
        raise ValueError(f"TCP options too long ({len(out)} bytes)")
    return out


def tcp_header_bytes(seg: TcpSegment, src_ip: bytes, dst_ip: bytes, checksum: bool = True) -> bytes:
    """Header (with options and checksum) for ``seg``; the payload is not copied (the checksum covers it).

    ``checksum=False`` leaves the field 0, like a NIC with transmit checksum offload before it fills it in; only
    for links whose receivers parse with ``verify_checksums=False``.
    """
    opts = seg.options
    if opts is NO_OPTIONS:
        optbytes = b""
    elif (
        opts.timestamp is not None
        and opts.mss is None
        and opts.window_scale is None
        and not opts.sack_permitted
        and not opts.sack_blocks
    ):
        # Fast path: timestamps on every established-state segment.
        optbytes = _TS_ONLY_PREFIX + _TS.pack(opts.timestamp[0], opts.timestamp[1])
    else:
        optbytes = encode_tcp_options(opts)
    hlen = TCP_HLEN + len(optbytes)
    payload = seg.payload
    sport = seg.src_port
    dport = seg.dst_port
    seq = seg.seq
    ack = seg.ack
    flags = seg.flags & 0xFF
    window = seg.window
    urg = seg.urgent_pointer
    if not checksum:
        return _TCP.pack(sport, dport, seq, ack, hlen << 2, flags, window, 0, urg) + optbytes
    # Pseudo-header (src, dst, proto 6, length) + header words + payload, summed without packing twice: a 32-bit
    # field as one int is congruent to its two words, and the even-length parts may be summed (see checksum.py).
    initial = (
        _from_bytes(src_ip, "big")
        + _from_bytes(dst_ip, "big")
        + 6
        + hlen
        + len(payload)
        + sport
        + dport
        + seq
        + ack
        + (hlen << 10)
        + flags
        + window
        + urg
    )
    if optbytes:
        initial += _from_bytes(optbytes, "big")
    csum = internet_checksum(payload, initial)
    return _TCP.pack(sport, dport, seq, ack, hlen << 2, flags, window, csum, urg) + optbytes


def encode_tcp(seg: TcpSegment, src_ip: bytes, dst_ip: bytes) -> bytes:
    """The full TCP segment (header, options, payload) with the pseudo-header checksum."""
    return tcp_header_bytes(seg, src_ip, dst_ip) + seg.payload


def decode_tcp_options(data: bytes, off: int, end: int) -> TcpOptions:
    """Parse ``data[off:end]``; unknown options are skipped, malformed lengths raise ``tcp-bad-option``."""
    mss: int | None = None
    wscale: int | None = None
    sack_ok = False
    blocks: tuple[tuple[int, int], ...] = ()
    ts: tuple[int, int] | None = None
    i = off
    while i < end:
        kind = data[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise DecodeError("tcp-bad-option", f"option {kind} has no length byte")
        olen = data[i + 1]
        if olen < 2 or i + olen > end:
            raise DecodeError("tcp-bad-option", f"option {kind} length {olen}")
        if kind == OPT_MSS:
            if olen != 4:
                raise DecodeError("tcp-bad-option", f"MSS length {olen}")
            mss = (data[i + 2] << 8) | data[i + 3]
        elif kind == OPT_WSCALE:
            if olen != 3:
                raise DecodeError("tcp-bad-option", f"window scale length {olen}")
            wscale = data[i + 2]
        elif kind == OPT_SACK_PERMITTED:
            if olen != 2:
                raise DecodeError("tcp-bad-option", f"SACK-permitted length {olen}")
            sack_ok = True
        elif kind == OPT_TIMESTAMP:
            if olen != 10:
                raise DecodeError("tcp-bad-option", f"timestamp length {olen}")
            ts = _TS.unpack_from(data, i + 2)
        elif kind == OPT_SACK:
            if olen < 10 or (olen - 2) % 8:
                raise DecodeError("tcp-bad-option", f"SACK length {olen}")
            blocks = tuple(_BLOCK.unpack_from(data, j) for j in range(i + 2, i + olen, 8))
        i += olen
    if mss is None and wscale is None and not sack_ok and not blocks and ts is None:
        return NO_OPTIONS
    return TcpOptions(mss, wscale, sack_ok, blocks, ts)


def parse_tcp_at(
    data: bytes, off: int, end: int, src_ip: bytes, dst_ip: bytes, verify_checksum: bool = True
) -> TcpSegment:
    """Decode the segment occupying ``data[off:end]`` (avoids slicing the whole segment out first)."""
    length = end - off
    if length < TCP_HLEN:
        raise DecodeError("tcp-truncated", f"{length} bytes")
    sport, dport, seq, ack, doff, flags, window, _csum, urg = _TCP.unpack_from(data, off)
    hlen = (doff >> 4) << 2
    if hlen < TCP_HLEN or hlen > length:
        raise DecodeError("tcp-bad-offset", f"data offset {hlen >> 2} for {length} bytes")
    pstart = off + hlen
    payload = data[pstart:end]
    if verify_checksum:
        initial = (
            _from_bytes(src_ip, "big") + _from_bytes(dst_ip, "big") + 6 + length + _from_bytes(data[off:pstart], "big")
        )
        if internet_checksum(payload, initial) != 0:
            raise DecodeError("tcp-bad-checksum")
    if hlen == TCP_HLEN:
        opts = NO_OPTIONS
    elif hlen == 32 and data[off + 20 : off + 24] == _TS_ONLY_PREFIX:
        # Timestamps alone (every established-state segment): segments of a burst share their (TSval, TSecr), so
        # the immutable options value is shared too.
        ts = _TS.unpack_from(data, off + 24)
        cached = _ts_options.get(ts)
        if cached is None:
            if len(_ts_options) >= 64:
                _ts_options.clear()
            cached = _ts_options[ts] = _make_options(None, None, False, (), ts)
        opts = cached
    else:
        opts = decode_tcp_options(data, off + TCP_HLEN, pstart)
    return _make_segment(sport, dport, seq, ack, flags, window, payload, opts, urg)


def decode_tcp(data: bytes, src_ip: bytes, dst_ip: bytes, verify_checksum: bool = True) -> TcpSegment:
    return parse_tcp_at(data, 0, len(data), src_ip, dst_ip, verify_checksum)
