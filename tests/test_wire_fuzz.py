"""safe_parse never raises: random bytes and mutated valid frames always parse or become exactly one counted drop,
and the drop is always a decoder's named reason (a "malformed-*" reason would mean a decoder bug)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpchimney.wire.addr import BROADCAST_MAC
from tcpchimney.wire.arp import arp_request
from tcpchimney.wire.drops import DropCounter
from tcpchimney.wire.frame import build_arp_frame, build_icmp_frame, build_tcp_frame, safe_parse
from tcpchimney.wire.icmp import IcmpEcho, IcmpMessage
from tcpchimney.wire.tcp import ACK, PSH, SYN, TcpOptions, TcpSegment

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])

VALID_FRAMES = [
    build_tcp_frame(
        MAC_A, MAC_B, IP_A, IP_B, TcpSegment(1, 2, 3, 0, SYN, 100, options=TcpOptions(1460, 7, True, (), (1, 0)))
    ),
    build_tcp_frame(
        MAC_A,
        MAC_B,
        IP_A,
        IP_B,
        TcpSegment(1, 2, 3, 4, ACK | PSH, 100, b"x" * 64, TcpOptions(sack_blocks=((5, 9),), timestamp=(1, 2))),
        vlan=5,
    ),
    build_tcp_frame(MAC_A, MAC_B, IP_A, IP_B, TcpSegment(1, 2, 3, 4, ACK, 100, b"odd")),
    build_arp_frame(MAC_A, BROADCAST_MAC, arp_request(MAC_A, IP_A, IP_B)),
    build_icmp_frame(MAC_A, MAC_B, IP_A, IP_B, IcmpEcho(8, 0, 1, 2, b"ping")),
    build_icmp_frame(MAC_A, MAC_B, IP_A, IP_B, IcmpMessage(3, 4, b"\x00\x00\x05\xdc" + bytes(28))),
]


def check(frame: bytes, verify: bool) -> None:
    drops = DropCounter()
    result = safe_parse(frame, drops, verify)
    if result is None:
        assert drops.total == 1
        (reason,) = drops.as_dict()
        assert not reason.startswith("malformed-"), reason
    else:
        assert drops.total == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_random_bytes(frame: bytes, verify: bool) -> None:
    check(frame, verify)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 200), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 200), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 200), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 200), st.integers(0, 255)),
)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(VALID_FRAMES),
    st.lists(mutation, min_size=1, max_size=4),
    st.binary(max_size=8),
    st.booleans(),
)
def test_mutated_valid_frames(frame: bytes, mutations: list[tuple[str, int, int]], tail: bytes, verify: bool) -> None:
    data = bytearray(frame)
    for op, pos, value in mutations:
        pos %= len(data) + 1
        if op == "flip" and pos < len(data):
            data[pos] ^= value
        elif op == "set" and pos < len(data):
            data[pos] = value
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data.insert(pos, value)
        if not data:
            break
    check(bytes(data) + tail, verify)


def test_valid_frames_parse() -> None:
    for frame in VALID_FRAMES:
        drops = DropCounter()
        assert safe_parse(frame, drops) is not None
        assert drops.total == 0
