"""LACPDU codec: a hand-assembled byte vector, round trips, and rejection of malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpchimney.team.lacpdu import (
    LACP_FRAME_LEN,
    LACPDU_LEN,
    SLOW_PROTOCOLS_MAC,
    LacpDu,
    LacpInfo,
    LacpState,
    decode_lacp_frame,
    decode_lacpdu,
    encode_lacp_frame,
    encode_lacpdu,
    is_slow_protocols_frame,
)
from tcpchimney.wire.errors import DecodeError

# Assembled field by field from the 802.1AX layout (not produced by the encoder).
KNOWN_HEX = (
    "0101"  # subtype LACP, version 1
    "0114"
    "8000"
    "001122334455"
    "0011"
    "0080"
    "0005"
    "3d"
    "000000"  # actor TLV
    "0214"
    "fffe"
    "02aabbccddee"
    "0001"
    "ffff"
    "0002"
    "3f"
    "000000"  # partner TLV
    "0310"
    "0000"
    + "00" * 12  # collector TLV
    + "0000"  # terminator
    + "00" * 50  # reserved
)
KNOWN = bytes.fromhex(KNOWN_HEX)
KNOWN_PDU = LacpDu(
    actor=LacpInfo(0x8000, bytes.fromhex("001122334455"), 0x11, 0x80, 5, 0x3D),
    partner=LacpInfo(0xFFFE, bytes.fromhex("02aabbccddee"), 1, 0xFFFF, 2, 0x3F),
)
SRC = bytes.fromhex("02aabbccdd01")


def test_known_vector_layout() -> None:
    assert len(KNOWN) == LACPDU_LEN == 110
    assert encode_lacpdu(KNOWN_PDU) == KNOWN
    assert decode_lacpdu(KNOWN) == KNOWN_PDU


def test_state_bits_match_the_standard() -> None:
    state = KNOWN_PDU.actor.state
    expected = (
        LacpState.ACTIVITY
        | LacpState.AGGREGATION
        | LacpState.SYNCHRONIZATION
        | LacpState.COLLECTING
        | LacpState.DISTRIBUTING
    )
    assert state == expected
    assert not KNOWN_PDU.actor.has(LacpState.TIMEOUT)
    assert KNOWN_PDU.partner.has(LacpState.TIMEOUT | LacpState.ACTIVITY)
    assert [int(b) for b in LacpState] == [1, 2, 4, 8, 16, 32, 64, 128]


def test_frame_wrapping() -> None:
    frame = encode_lacp_frame(KNOWN_PDU, SRC)
    assert len(frame) == LACP_FRAME_LEN == 124
    assert frame[:6] == SLOW_PROTOCOLS_MAC == bytes.fromhex("0180c2000002")
    assert frame[6:12] == SRC
    assert frame[12:14] == b"\x88\x09"
    assert frame[14:] == KNOWN
    assert is_slow_protocols_frame(frame)
    assert decode_lacp_frame(frame) == (SRC, KNOWN_PDU)
    # Trailing padding (e.g. a NIC that pads further) is ignored.
    assert decode_lacp_frame(frame + bytes(20)) == (SRC, KNOWN_PDU)


def test_reserved_bytes_are_ignored() -> None:
    raw = bytearray(KNOWN)
    raw[19] = 0xAA  # actor reserved
    raw[-1] = 0x55  # trailing reserved
    assert decode_lacpdu(bytes(raw)) == KNOWN_PDU


_u16 = st.integers(0, 0xFFFF)
_info = st.builds(LacpInfo, _u16, st.binary(min_size=6, max_size=6), _u16, _u16, _u16, st.integers(0, 0xFF))


@given(_info, _info, _u16)
def test_round_trip(actor: LacpInfo, partner: LacpInfo, delay: int) -> None:
    pdu = LacpDu(actor, partner, delay)
    data = encode_lacpdu(pdu)
    assert len(data) == LACPDU_LEN
    assert decode_lacpdu(data) == pdu
    assert decode_lacp_frame(encode_lacp_frame(pdu, SRC)) == (SRC, pdu)


@pytest.mark.parametrize("length", [0, 1, 2, 21, 60, 109])
def test_truncated(length: int) -> None:
    with pytest.raises(DecodeError) as err:
        decode_lacpdu(KNOWN[:length])
    assert err.value.reason == "lacp-truncated"


def _patched(offset: int, value: int) -> bytes:
    raw = bytearray(KNOWN)
    raw[offset] = value
    return bytes(raw)


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (0, 2, "lacp-bad-subtype"),  # Marker protocol
        (0, 0, "lacp-bad-subtype"),
        (1, 0, "lacp-bad-version"),
        (2, 2, "lacp-bad-tlv"),  # actor TLV type
        (3, 19, "lacp-bad-tlv"),  # actor length
        (22, 1, "lacp-bad-tlv"),  # partner TLV type
        (23, 21, "lacp-bad-tlv"),  # partner length
        (42, 4, "lacp-bad-tlv"),  # collector type
        (43, 15, "lacp-bad-tlv"),  # collector length
        (58, 5, "lacp-bad-tlv"),  # terminator type
        (59, 1, "lacp-bad-tlv"),  # terminator length
    ],
)
def test_malformed_fields(offset: int, value: int, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_lacpdu(_patched(offset, value))
    assert err.value.reason == reason


def test_version_2_may_carry_more_tlvs_before_the_terminator() -> None:
    raw = bytearray(_patched(1, 2))
    raw[58:60] = b"\x04\x10"  # some later-version TLV where v1 has the terminator
    pdu = decode_lacpdu(bytes(raw))
    assert pdu.version == 2
    assert pdu.actor == KNOWN_PDU.actor


def test_frame_level_rejections() -> None:
    frame = encode_lacp_frame(KNOWN_PDU, SRC)
    with pytest.raises(DecodeError, match="lacp-bad-dst"):
        decode_lacp_frame(b"\xff" * 6 + frame[6:])
    with pytest.raises(DecodeError, match="lacp-bad-ethertype"):
        decode_lacp_frame(frame[:12] + b"\x08\x00" + frame[14:])
    with pytest.raises(DecodeError, match="eth-truncated"):
        decode_lacp_frame(frame[:10])
    assert not is_slow_protocols_frame(frame[:12] + b"\x08\x00")


@pytest.mark.parametrize(
    "bad",
    [
        LacpDu(LacpInfo(0x10000, SRC, 1, 1, 1, 0), KNOWN_PDU.partner),
        LacpDu(LacpInfo(1, b"\x00" * 5, 1, 1, 1, 0), KNOWN_PDU.partner),
        LacpDu(KNOWN_PDU.actor, LacpInfo(1, SRC, 1, 1, 1, 0x100)),
        LacpDu(KNOWN_PDU.actor, KNOWN_PDU.partner, collector_max_delay=-1),
        LacpDu(KNOWN_PDU.actor, KNOWN_PDU.partner, version=0),
    ],
)
def test_encoder_rejects_out_of_range(bad: LacpDu) -> None:
    with pytest.raises(ValueError):
        encode_lacpdu(bad)


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        pdu = decode_lacpdu(data)
    except DecodeError:
        return
    assert decode_lacpdu(encode_lacpdu(pdu)) == pdu  # whatever is accepted re-encodes to the same fields
