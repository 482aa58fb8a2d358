"""The fast big-integer Internet checksum agrees with a word-by-word RFC 1071 reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpchimney.wire.checksum import internet_checksum, pseudo_header_sum


def reference_checksum(data: bytes, initial_words: tuple[int, ...] = ()) -> int:
    """Straightforward RFC 1071: add 16-bit words, fold carries, complement."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(initial_words)
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def words(b: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_matches_reference(data: bytes) -> None:
    assert internet_checksum(data) == reference_checksum(data)


@settings(max_examples=200, deadline=None)
@given(
    src=st.binary(min_size=4, max_size=4),
    dst=st.binary(min_size=4, max_size=4),
    proto=st.integers(0, 255),
    data=st.binary(max_size=200),
)
def test_pseudo_header_initial_matches_reference(src: bytes, dst: bytes, proto: int, data: bytes) -> None:
    pseudo = src + dst + bytes((0, proto)) + len(data).to_bytes(2, "big")
    expected = reference_checksum(data, words(pseudo))
    assert internet_checksum(data, pseudo_header_sum(src, dst, proto, len(data))) == expected
    # and the same as checksumming the concatenation
    assert internet_checksum(pseudo + data) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b if len(b) % 2 == 0 else b + b"\x00"))
def test_data_plus_its_checksum_verifies(data: bytes) -> None:
    csum = internet_checksum(data)
    assert internet_checksum(data + csum.to_bytes(2, "big")) == 0


def test_edge_representations() -> None:
    # All-zero input: folded sum 0, checksum 0xFFFF (never 0 for nothing).
    assert internet_checksum(b"") == 0xFFFF == reference_checksum(b"")
    assert internet_checksum(b"\x00\x00\x00\x00") == 0xFFFF
    # Sum of words is exactly 0xFFFF: one's-complement "negative zero", checksum 0.
    assert internet_checksum(b"\xff\xff") == 0 == reference_checksum(b"\xff\xff")
    # A multiple of 0xFFFF from carries: 0xFFFF + 0xFFFF folds to 0xFFFF -> checksum 0.
    assert internet_checksum(b"\xff\xff\xff\xff") == 0 == reference_checksum(b"\xff\xff\xff\xff")
    assert internet_checksum(b"\x80\x00\x7f\xff") == 0 == reference_checksum(b"\x80\x00\x7f\xff")
    # Odd length pads with a trailing zero byte (the last byte is the high half of a word).
    assert internet_checksum(b"\x01") == 0xFEFF == reference_checksum(b"\x01")


def test_rfc1071_example() -> None:
    # RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 -> sum ddf2 (after folding), checksum 220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
