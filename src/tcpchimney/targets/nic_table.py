"""The NIC's connection lookup: a 4-tuple peeked from fixed frame offsets, before any full parse.

Key layout (12 bytes, as it sits in a frame from the peer): remote IP, local IP, remote port, local port.  Frames the
full parser would refuse anyway (IP options, fragments) never match, so they go up the ordinary path untouched.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

_ETH_IP = b"\x08\x00"
_ETH_VLAN = b"\x81\x00"


def connection_key(local_ip: bytes, remote_ip: bytes, local_port: int, remote_port: int) -> bytes:
    """The key a frame *from the peer* of this connection yields in :func:`peek_tcp_key`."""
    return remote_ip + local_ip + remote_port.to_bytes(2, "big") + local_port.to_bytes(2, "big")


def peek_tcp_key(frame: bytes) -> bytes | None:
    """The 4-tuple key of an IPv4/TCP frame (optionally 802.1Q tagged) without IP options or fragmentation."""
    eth_type = frame[12:14]
    if eth_type == _ETH_IP:
        ip = 14
    elif eth_type == _ETH_VLAN and frame[16:18] == _ETH_IP:
        ip = 18
    else:
        return None
    if len(frame) < ip + 24 or frame[ip] != 0x45 or frame[ip + 9] != 6:
        return None  # not IPv4 with a 20-byte header, or not TCP
    if frame[ip + 6] & 0x3F or frame[ip + 7]:
        return None  # MF set or a fragment offset: reassembly is the host's job
    return frame[ip + 12 : ip + 20] + frame[ip + 20 : ip + 24]


class ConnectionTable(Generic[T]):
    """4-tuple key -> connection context.  ``bool(table)`` is the fast-path test (no connections: no peek)."""

    __slots__ = ("by_key",)

    def __init__(self) -> None:
        self.by_key: dict[bytes, T] = {}  # read directly on the receive hot path

    def __bool__(self) -> bool:
        return bool(self.by_key)

    def __len__(self) -> int:
        return len(self.by_key)

    def __contains__(self, key: bytes) -> bool:
        return key in self.by_key

    def add(self, key: bytes, value: T) -> None:
        self.by_key[key] = value

    def remove(self, key: bytes) -> None:
        self.by_key.pop(key, None)

    def get(self, key: bytes) -> T | None:
        return self.by_key.get(key)

    def lookup(self, frame: bytes) -> T | None:
        key = peek_tcp_key(frame)
        return None if key is None else self.by_key.get(key)
