"""TCP codec: a known SYN vector, exact round trips, option layout and every drop reason."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpchimney.wire.checksum import internet_checksum, pseudo_header_sum
from tcpchimney.wire.errors import DecodeError
from tcpchimney.wire.tcp import (
    ACK,
    FIN,
    NO_OPTIONS,
    PSH,
    SYN,
    TcpOptions,
    TcpSegment,
    decode_tcp,
    encode_tcp,
    encode_tcp_options,
    tcp_header_bytes,
)

IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])

# A SYN laid out as Linux sends it, written field by field.  The checksum 0xc598 was computed independently with
# a word-by-word RFC 1071 sum over pseudo-header (10.0.0.1 -> 10.0.0.2, proto 6, length 40) + segment.
KNOWN_SYN = bytes.fromhex(
    "c350 0050"  # ports 50000 -> 80
    "01020304"  # seq
    "00000000"  # ack
    "a0 02"  # data offset 10 words, flags SYN
    "faf0"  # window 64240
    "c598"  # checksum
    "0000"  # urgent pointer
    "020405b4"  # MSS 1460
    "0402 080a 0000abcd 00000000"  # SACK permitted, timestamps (TSval 0xabcd, TSecr 0)
    "01 030307"  # NOP, window scale 7
)
KNOWN_SYN_SEG = TcpSegment(
    src_port=50000,
    dst_port=80,
    seq=0x01020304,
    ack=0,
    flags=SYN,
    window=64240,
    options=TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamp=(0xABCD, 0)),
)


def with_checksum(segment: bytes, src: bytes = IP_A, dst: bytes = IP_B) -> bytes:
    """Fill the checksum field of a hand-made segment."""
    seg = segment[:16] + b"\x00\x00" + segment[18:]
    csum = internet_checksum(seg, pseudo_header_sum(src, dst, 6, len(seg)))
    return seg[:16] + csum.to_bytes(2, "big") + seg[18:]


def raw_segment(options: bytes, payload: bytes = b"", doff: int | None = None) -> bytes:
    if doff is None:
        doff = (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", 1234, 80, 1, 2, doff << 4, ACK, 1000, 0, 0)
    return with_checksum(hdr + options + payload)


def test_known_syn_decodes() -> None:
    assert decode_tcp(KNOWN_SYN, IP_A, IP_B) == KNOWN_SYN_SEG


def test_known_syn_encodes_byte_exact() -> None:
    assert encode_tcp(KNOWN_SYN_SEG, IP_A, IP_B) == KNOWN_SYN


def test_checksum_covers_pseudo_header() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_tcp(KNOWN_SYN, IP_A, bytes([10, 0, 0, 3]))
    assert exc.value.reason == "tcp-bad-checksum"


u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
options_st = st.builds(
    TcpOptions,
    mss=st.none() | u16,
    window_scale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=3).map(tuple),
    timestamp=st.none() | st.tuples(u32, u32),
)
segment_st = st.builds(
    TcpSegment,
    src_port=u16,
    dst_port=u16,
    seq=u32,
    ack=u32,
    flags=st.integers(0, 0xFF),
    window=u16,
    payload=st.binary(max_size=200),
    options=options_st,
    urgent_pointer=u16,
)


def fits(opts: TcpOptions) -> bool:
    """Whether every SACK block fits next to the other options (otherwise the encoder trims them)."""
    fixed = (4 if opts.mss is not None else 0) + (12 if opts.timestamp else 4 if opts.sack_permitted else 0)
    fixed += 4 if opts.window_scale is not None else 0
    return not opts.sack_blocks or fixed + 4 + 8 * len(opts.sack_blocks) <= 40


@settings(max_examples=300, deadline=None)
@given(seg=segment_st, src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4))
def test_round_trip(seg: TcpSegment, src: bytes, dst: bytes) -> None:
    data = encode_tcp(seg, src, dst)
    assert (len(data) - len(seg.payload)) % 4 == 0
    assert len(data) - len(seg.payload) <= 60
    decoded = decode_tcp(data, src, dst)
    if fits(seg.options):
        assert decoded == seg
    else:
        assert decoded.options.sack_blocks == seg.options.sack_blocks[: len(decoded.options.sack_blocks)]
        assert decoded.options.sack_blocks  # trimmed, not dropped
    # re-encoding the decoded segment reproduces the bytes exactly
    assert encode_tcp(decoded, src, dst) == data


def test_common_option_layouts() -> None:
    assert encode_tcp_options(NO_OPTIONS) == b""
    assert encode_tcp_options(TcpOptions()) == b""
    assert encode_tcp_options(TcpOptions(timestamp=(1, 2))) == bytes.fromhex("0101080a 00000001 00000002")
    assert encode_tcp_options(TcpOptions(sack_permitted=True)) == bytes.fromhex("01010402")
    assert encode_tcp_options(TcpOptions(sack_blocks=((10, 20),))) == bytes.fromhex("0101050a 0000000a 00000014")


def test_sack_blocks_trimmed_to_option_space() -> None:
    blocks = ((1, 2), (3, 4), (5, 6), (7, 8))
    with_ts = encode_tcp_options(TcpOptions(sack_blocks=blocks, timestamp=(9, 9)))
    assert len(with_ts) == 40  # 12 timestamp + 4 + 3 blocks
    without_ts = encode_tcp_options(TcpOptions(sack_blocks=blocks))
    assert len(without_ts) == 36  # all four fit
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, options=TcpOptions(sack_blocks=blocks, timestamp=(9, 9)))
    decoded = decode_tcp(encode_tcp(seg, IP_A, IP_B), IP_A, IP_B)
    assert decoded.options.sack_blocks == blocks[:3]
    assert decoded.options.timestamp == (9, 9)


def test_payload_flags_and_urgent() -> None:
    seg = TcpSegment(1, 2, 0xFFFFFFFF, 7, ACK | PSH | FIN, 0, b"odd-length", urgent_pointer=3)
    decoded = decode_tcp(encode_tcp(seg, IP_A, IP_B), IP_A, IP_B)
    assert decoded == seg and decoded.seg_len == len(b"odd-length") + 1


def test_checksum_disabled_header() -> None:
    hdr = tcp_header_bytes(KNOWN_SYN_SEG, IP_A, IP_B, checksum=False)
    assert hdr[16:18] == b"\x00\x00"
    assert hdr[:16] == KNOWN_SYN[:16] and hdr[18:] == KNOWN_SYN[18:]
    assert decode_tcp(hdr, IP_A, IP_B, verify_checksum=False) == KNOWN_SYN_SEG


def test_unknown_options_skipped_and_eol_stops() -> None:
    unknown = bytes.fromhex("1e04abcd 020405b4")  # kind 30 len 4 (skipped), then MSS
    assert decode_tcp(raw_segment(unknown), IP_A, IP_B).options == TcpOptions(mss=1460)
    after_eol = bytes.fromhex("00 000000 020405b4")  # EOL: the MSS after it is padding, not an option
    assert decode_tcp(raw_segment(after_eol), IP_A, IP_B).options == NO_OPTIONS
    nops = bytes.fromhex("01010101")
    assert decode_tcp(raw_segment(nops, b"data"), IP_A, IP_B).payload == b"data"


@pytest.mark.parametrize(
    "options",
    [
        "02020000",  # MSS with length 2 (needs 4)
        "01010108",  # last byte is a kind with no length byte
        "1e010000",  # unknown option with length 1 (< 2)
        "1e080000",  # unknown option running past the header
        "02030000",  # MSS length 3
        "03040700",  # window scale length 4
        "04030000",  # SACK-permitted length 3
        "080800000000000001010101",  # timestamp length 8
        "050b" + "00" * 9 + "00",  # SACK length 11 (not 2 + 8n)
        "05020000",  # SACK with no blocks
    ],
)
def test_bad_options(options: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_tcp(raw_segment(bytes.fromhex(options)), IP_A, IP_B)
    assert exc.value.reason == "tcp-bad-option"


def test_structural_drop_reasons() -> None:
    good = encode_tcp(TcpSegment(1, 2, 3, 4, ACK, 5, b"payload"), IP_A, IP_B)
    with pytest.raises(DecodeError) as exc:
        decode_tcp(good[:19], IP_A, IP_B)
    assert exc.value.reason == "tcp-truncated"
    for doff in (0, 4, 15):  # below 5 words, or beyond the 27 bytes we have
        with pytest.raises(DecodeError) as exc:
            decode_tcp(raw_segment(b"", b"payload", doff=doff), IP_A, IP_B)
        assert exc.value.reason == "tcp-bad-offset"
    flipped = good[:-1] + bytes([good[-1] ^ 0x80])
    with pytest.raises(DecodeError) as exc:
        decode_tcp(flipped, IP_A, IP_B)
    assert exc.value.reason == "tcp-bad-checksum"
    assert decode_tcp(flipped, IP_A, IP_B, verify_checksum=False).payload == b"payloa" + bytes([ord("d") ^ 0x80])


def test_other_stacks_option_layouts_decode() -> None:
    # Windows-style SYN layout: MSS, NOP, window scale, NOP, NOP, SACK-permitted.
    windows = bytes.fromhex("020405b4 01030308 01010402")
    assert decode_tcp(raw_segment(windows), IP_A, IP_B).options == TcpOptions(
        mss=1460, window_scale=8, sack_permitted=True
    )
    # macOS-style: timestamps then SACK-permitted, EOL padding at the end.
    macos = bytes.fromhex("020405b4 01030306 0101080a 00000001 00000000 04020000")
    assert decode_tcp(raw_segment(macos), IP_A, IP_B).options == TcpOptions(1460, 6, True, (), (1, 0))
