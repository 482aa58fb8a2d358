"""Segment size: header options come out of the MSS, so no segment is ever larger than MSS + 20 on the wire."""

from __future__ import annotations

import random

import pytest

from tcp_harness import Harness, Impairments, make_pair
from tcpchimney.tcp import engine
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.tcp import SYN, TcpSegment, encode_tcp

_IP = b"\x0a\x00\x00\x01"


def _closed(h: Harness) -> bool:
    return all(ep.conn is not None and ep.conn.state == TcpState.CLOSED for ep in h.eps)


@pytest.mark.parametrize(("mss", "timestamps", "seed"), [(1460, True, 1), (1460, False, 2), (536, True, 3)])
def test_no_segment_exceeds_mss_with_sack_blocks_under_loss(mss: int, timestamps: bool, seed: int) -> None:
    cfg = TcpConfig(mss=mss, timestamps=timestamps, sack=True)
    h = make_pair(cfg, cfg, Impairments(loss=0.05, reorder=0.1, jitter=0.02, seed=seed))
    a, b = h.eps
    rng = random.Random(seed)
    # both directions carry data, so data segments also carry SACK blocks for the holes the loss makes
    a.data = rng.randbytes(400_000)
    b.data = rng.randbytes(400_000)
    a.close_when_done = b.close_when_done = True
    sizes: list[int] = []
    with_sack_and_data = [0]

    def tap(_i: int, seg: TcpSegment) -> None:
        if seg.flags & SYN:
            return
        sizes.append(len(encode_tcp(seg, _IP, _IP)))
        if seg.payload and seg.options.sack_blocks:
            with_sack_and_data[0] += 1

    h.tap = tap
    assert h.run(_closed, max_time=1500)
    assert b.received == a.data and a.received == b.data
    assert with_sack_and_data[0] > 0  # the case under test happened
    assert max(sizes) <= mss + 20
    assert a.conn is not None and b.conn is not None
    assert a.conn.sack_enabled and a.conn.ts_enabled == timestamps
    # connections without out-of-order data share empty lists: reordering and loss must never have filled them
    assert engine._NO_OOO == [] and engine._NO_SACKED == []


def test_full_segments_use_the_whole_mss_without_sack_blocks() -> None:
    cfg = TcpConfig(mss=1460)
    h = make_pair(cfg, cfg)
    a, b = h.eps
    a.data = bytes(100_000)
    a.close_when_done = b.close_when_done = True
    sizes: list[int] = []
    h.tap = lambda i, seg: sizes.append(len(seg.payload)) if i == 0 else None
    assert h.run(_closed, max_time=200)
    assert max(sizes) == 1460 - 12  # timestamps cost 12 bytes of every segment
