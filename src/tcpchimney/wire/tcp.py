"""TCP segment codec (sans-IO): a ``TcpSegment`` value and its encoding with the pseudo-header checksum."""

from __future__ import annotations

from dataclasses import dataclass

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
