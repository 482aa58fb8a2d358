"""virtio_net_hdr helpers of TapLink (pure functions: no namespace needed)."""

from __future__ import annotations

import struct

import pytest

from tcpchimney.links.tap import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
    complete_checksum,
    gso_header_for,
    segment_tcpv4,
)
from tcpchimney.wire.frame import TcpFrame, build_icmp_frame, build_tcp_frame, parse_frame
from tcpchimney.wire.icmp import ICMP_ECHO_REQUEST, IcmpEcho
from tcpchimney.wire.tcp import ACK, CWR, FIN, PSH, TcpOptions, TcpSegment

SRC_MAC, DST_MAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
SRC_IP, DST_IP = bytes([10, 77, 0, 2]), bytes([10, 77, 0, 1])


def big_frame(payload: bytes, flags: int = ACK | PSH | FIN, ts: bool = True) -> bytes:
    opts = TcpOptions(timestamp=(1, 2)) if ts else TcpOptions()
    seg = TcpSegment(1234, 80, 0xFFFFF000, 77, flags, 500, payload, opts)
    return build_tcp_frame(SRC_MAC, DST_MAC, SRC_IP, DST_IP, seg, ident=0xFFFE)


@pytest.mark.parametrize("ts", [True, False])
def test_segment_tcpv4_cuts_like_tso(ts: bool) -> None:
    payload = bytes(range(256)) * 40 + b"tail"  # 10244 bytes
    mss = 1448 if ts else 1460
    segs = segment_tcpv4(big_frame(payload, ACK | PSH | FIN | CWR, ts), mss)
    assert len(segs) == -(-len(payload) // mss)
    parsed = [parse_frame(s) for s in segs]  # verifies IPv4 and TCP checksums
    assert all(isinstance(p, TcpFrame) for p in parsed)
    tcp = [p for p in parsed if isinstance(p, TcpFrame)]
    assert b"".join(p.seg.payload for p in tcp) == payload
    assert all(len(p.seg.payload) == mss for p in tcp[:-1])
    assert [p.seg.seq for p in tcp] == [(0xFFFFF000 + i * mss) & 0xFFFFFFFF for i in range(len(tcp))]
    assert [p.ip.ident for p in tcp][:3] == [0xFFFE, 0xFFFF, 0]
    assert tcp[0].seg.flags & CWR and not any(p.seg.flags & CWR for p in tcp[1:])
    assert tcp[-1].seg.flags & (FIN | PSH) == FIN | PSH
    assert not any(p.seg.flags & (FIN | PSH) for p in tcp[:-1])
    assert all(p.seg.options == tcp[0].seg.options for p in tcp)
    assert all(len(s) <= 14 + 1500 for s in segs)


def test_segment_small_frame_is_unchanged() -> None:
    frame = big_frame(b"x" * 100)
    assert segment_tcpv4(frame, 1448) == [frame]


def test_gso_header_and_partial_checksum_round_trip() -> None:
    frame = big_frame(b"\xab" * 30001 + b"!", ACK | CWR)
    out = gso_header_for(frame, 1500)
    assert out is not None
    hdr, partial = out
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack("<BBHHHH", hdr)
    assert flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert gso_type == VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN
    assert (csum_start, csum_offset) == (34, 16)
    assert hdr_len == 34 + 32  # TCP header with the timestamp option
    assert gso_size == 1500 - 20 - 32
    assert partial != frame and len(partial) == len(frame)
    # What the kernel does with NEEDS_CSUM gives back the fully checksummed frame.
    assert complete_checksum(partial, csum_start, csum_offset) == frame


def test_gso_header_refuses_non_tcp() -> None:
    icmp = build_icmp_frame(SRC_MAC, DST_MAC, SRC_IP, DST_IP, IcmpEcho(ICMP_ECHO_REQUEST, 0, 1, 1, b"p" * 3000))
    assert gso_header_for(icmp, 1500) is None


def test_complete_checksum_ignores_trailing_padding_and_rejects_bad_offsets() -> None:
    frame = big_frame(b"abc", ts=False)
    out = gso_header_for(frame, 1500)
    assert out is not None
    _, partial = out
    assert complete_checksum(partial + b"\0" * 7, 34, 16) == frame + b"\0" * 7
    with pytest.raises(ValueError):
        complete_checksum(partial, len(partial), 16)
