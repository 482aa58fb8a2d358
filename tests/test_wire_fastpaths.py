"""The per-packet fast paths produce exactly what the general codec produces (and decline everything else)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpchimney.wire.checksum import fold16, internet_checksum
from tcpchimney.wire.drops import DropCounter
from tcpchimney.wire.frame import TcpFrame, build_tcp_frame, parse_frame, parse_tcp_fast, safe_parse
from tcpchimney.wire.ipv4 import IPPROTO_TCP, ipv4_header_bytes
from tcpchimney.wire.tcp import NO_OPTIONS, TcpOptions, TcpSegment, tcp_header_bytes

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
options = st.one_of(
    st.just(NO_OPTIONS),
    st.builds(lambda a, b: TcpOptions(timestamp=(a, b)), u32, u32),
    st.builds(lambda m, ts: TcpOptions(mss=m, timestamp=ts), u16, st.tuples(u32, u32)),
    st.builds(lambda l, r: TcpOptions(sack_blocks=((l, r),), timestamp=(1, 2)), u32, u32),
)
segments = st.builds(
    TcpSegment,
    u16,
    u16,
    u32,
    u32,
    st.integers(0, 0xFF),
    u16,
    st.binary(max_size=1600),
    options,
    u16,
)


def _general(seg: TcpSegment, src: bytes, dst: bytes, ttl: int, tos: int, ident: int) -> bytes:
    tcp = tcp_header_bytes(seg, src, dst)
    ip = ipv4_header_bytes(src, dst, IPPROTO_TCP, len(tcp) + len(seg.payload), ttl, tos, ident, True)
    return MAC_B + MAC_A + b"\x08\x00" + ip + tcp + seg.payload


@settings(max_examples=300, deadline=None)
@given(segments, st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(1, 255), u16)
def test_build_tcp_frame_matches_the_general_encoding(
    seg: TcpSegment, src: bytes, dst: bytes, ttl: int, ident: int
) -> None:
    frame = build_tcp_frame(MAC_A, MAC_B, src, dst, seg, ttl=ttl, tos=0x10, ident=ident)
    assert frame == _general(seg, src, dst, ttl, 0x10, ident)
    hit = parse_tcp_fast(frame)
    parsed = parse_frame(frame)
    assert isinstance(parsed, TcpFrame)
    assert hit == (src, dst, parsed.seg)
    assert parsed.seg == seg


@settings(max_examples=300, deadline=None)
@given(segments, st.integers(0, 10_000), st.integers(1, 255), st.booleans())
def test_parse_tcp_fast_agrees_with_safe_parse_on_damaged_frames(
    seg: TcpSegment, seed: int, xor: int, verify: bool
) -> None:
    rng = random.Random(seed)
    frame = bytearray(build_tcp_frame(MAC_A, MAC_B, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", seg))
    for _ in range(rng.randrange(1, 3)):
        frame[rng.randrange(min(len(frame), 80))] ^= xor
    if rng.random() < 0.3:
        del frame[rng.randrange(len(frame)) :]
    data = bytes(frame)
    hit = parse_tcp_fast(data, verify)
    drops = DropCounter()
    parsed = safe_parse(data, drops, verify)
    if hit is not None:  # whatever the fast path takes, the full parser takes identically
        assert isinstance(parsed, TcpFrame)
        assert hit == (parsed.ip.src, parsed.ip.dst, parsed.seg)
    elif isinstance(parsed, TcpFrame):  # declined: only frames the fast path does not cover
        assert data[12:14] != b"\x08\x00" or len(data) < 54


def test_parse_tcp_fast_declines_other_frames() -> None:
    seg = TcpSegment(1, 2, 3, 4, 0x10, 5, b"x")
    frame = build_tcp_frame(MAC_A, MAC_B, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", seg)
    assert parse_tcp_fast(frame) is not None
    assert parse_tcp_fast(bytearray(frame)) is None  # type: ignore[arg-type]
    tagged = build_tcp_frame(MAC_A, MAC_B, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", seg, vlan=5)
    assert parse_tcp_fast(tagged) is None and isinstance(parse_frame(tagged), TcpFrame)
    bad_ip_csum = bytearray(frame)
    bad_ip_csum[24] ^= 1
    assert parse_tcp_fast(bytes(bad_ip_csum)) is None
    assert parse_tcp_fast(bytes(bad_ip_csum), verify_checksums=False) is not None
    fragment = bytearray(frame)
    fragment[20] |= 0x20  # MF
    assert parse_tcp_fast(bytes(fragment), verify_checksums=False) is None


def _reference_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 word by word (the fast one folds big values before its division)."""
    if len(data) % 2:
        data += b"\x00"
    total = initial + sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 70_000), st.integers(0, 2**40), st.sampled_from(["random", "zero", "ones"]), st.randoms())
def test_checksum_of_large_data_matches_reference(n: int, initial: int, fill: str, rng: random.Random) -> None:
    data = rng.randbytes(n) if fill == "random" else bytes(n) if fill == "zero" else b"\xff" * n
    assert internet_checksum(data, initial) == _reference_checksum(data, initial)


def test_fold16_is_congruent_and_small() -> None:
    rng = random.Random(5)
    for bits in (0, 1, 16, 4096, 4097, 11584, 71584, 524288):
        for v in (rng.getrandbits(bits) if bits else 0, (1 << bits) - 1):
            f = fold16(v)
            assert f % 0xFFFF == v % 0xFFFF and (f == 0) == (v == 0) and f.bit_length() <= 4096 + 1
