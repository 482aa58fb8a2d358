"""Bulk transfers in both directions through loss, duplication and reordering."""

from __future__ import annotations

import random

import pytest

from tcp_harness import Harness, Impairments, aborted, make_pair
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.tcp.state import TcpState


def all_closed(h: Harness) -> bool:
    return all(ep.conn is not None and ep.conn.state == TcpState.CLOSED for ep in h.eps)


@pytest.mark.parametrize(
    ("loss", "dup", "reorder", "seed", "size_a", "size_b"),
    [
        (0.0, 0.0, 0.0, 1, 5_000_000, 2_000_000),
        (0.02, 0.02, 0.1, 2, 3_000_000, 1_000_000),
        (0.05, 0.05, 0.2, 3, 2_000_000, 2_000_000),
        (0.10, 0.0, 0.3, 4, 2_000_000, 500_000),
        (0.20, 0.05, 0.2, 5, 2_000_000, 1_000_000),
        (0.20, 0.10, 0.5, 6, 1_000_000, 2_000_000),
    ],
)
def test_bulk_transfer_is_exact(loss: float, dup: float, reorder: float, seed: int, size_a: int, size_b: int) -> None:
    rng = random.Random(seed)
    h = make_pair(imp=Impairments(loss=loss, dup=dup, reorder=reorder, jitter=0.03, seed=seed))
    a, b = h.eps
    a.data = rng.randbytes(size_a)
    b.data = rng.randbytes(size_b)
    a.close_when_done = b.close_when_done = True
    assert h.run(all_closed, max_time=1500)
    assert b.received == a.data and a.received == b.data
    assert not aborted(a) and not aborted(b)
    if loss == 0 and dup == 0:
        assert a.conn is not None and a.conn.stats.retransmitted_segments == 0
        assert h.now < 65.0  # 7 MB at 20 ms RTT plus a 60 s TIME_WAIT
    else:
        assert a.conn is not None and a.conn.stats.retransmitted_segments > 0


@pytest.mark.parametrize("mss", [536, 8960])
def test_bulk_other_mss_and_no_options(mss: int) -> None:
    cfg = TcpConfig(mss=mss, timestamps=False, sack=False, window_scale=False, rcv_buf=65535)
    h = make_pair(cfg, cfg, Impairments(loss=0.03, reorder=0.1, jitter=0.02, seed=mss))
    a, b = h.eps
    a.data = random.Random(mss).randbytes(1_000_000)
    a.close_when_done = b.close_when_done = True
    assert h.run(all_closed, max_time=1500)
    assert b.received == a.data


def test_slow_reader_small_buffer() -> None:
    h = make_pair(TcpConfig(), TcpConfig(rcv_buf=8192), Impairments(loss=0.05, seed=9))
    a, b = h.eps
    a.data = random.Random(9).randbytes(300_000)
    b.read_chunk = 1000
    a.close_when_done = b.close_when_done = True
    assert h.run(all_closed, max_time=3000)
    assert b.received == a.data


def test_sequence_numbers_wrap_around() -> None:
    h = make_pair(
        imp=Impairments(loss=0.05, dup=0.02, reorder=0.2, jitter=0.02, seed=11), iss_a=0xFFFFF000, iss_b=0xFFFFFFFE
    )
    a, b = h.eps
    rng = random.Random(11)
    a.data, b.data = rng.randbytes(400_000), rng.randbytes(300_000)
    a.close_when_done = b.close_when_done = True
    wrapped: list[int] = []
    h.tap = lambda i, s: wrapped.append(s.seq) if s.seq < 0x1000_0000 else None
    assert h.run(all_closed, max_time=1500)
    assert b.received == a.data and a.received == b.data and wrapped
