"""Address helpers.  Internally addresses are ``bytes`` (4-byte IPv4, 6-byte MAC); strings only at the edges."""

from __future__ import annotations

import ipaddress

BROADCAST_MAC = b"\xff\xff\xff\xff\xff\xff"
ZERO_MAC = b"\x00\x00\x00\x00\x00\x00"


def ip_to_bytes(s: str) -> bytes:
    """Dotted-quad string to 4 bytes (strict: rejects short forms like ``"10.1"``)."""
    return ipaddress.IPv4Address(s).packed


def ip_to_str(b: bytes) -> str:
    if len(b) != 4:
        raise ValueError(f"IPv4 address must be 4 bytes, got {len(b)}")
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


def mac_to_bytes(s: str) -> bytes:
    """``"02:00:00:00:00:01"`` (``-`` also accepted as separator) to 6 bytes."""
    parts = s.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"bad MAC address {s!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {s!r}") from None


def mac_to_str(b: bytes) -> str:
    if len(b) != 6:
        raise ValueError(f"MAC address must be 6 bytes, got {len(b)}")
    return ":".join(f"{x:02x}" for x in b)


def ip_in_subnet(ip: bytes, net: bytes, prefix_len: int) -> bool:
    """True if ``ip`` lies in ``net/prefix_len`` (host bits of ``net`` are ignored)."""
    if not 0 <= prefix_len <= 32:
        raise ValueError(f"bad prefix length {prefix_len}")
    shift = 32 - prefix_len
    return (int.from_bytes(ip, "big") >> shift) == (int.from_bytes(net, "big") >> shift)
