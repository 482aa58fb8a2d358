"""Flow control and timers: persist, keepalive, Nagle, delayed ACK, window updates, URG, RTO and its limit."""

from __future__ import annotations

import itertools

from tcp_harness import Harness, established, make_pair
from tcpchimney.tcp.engine import (
    TcpConfig,
    TcpConnection,
    TcpRetransmitted,
    TcpTimedOut,
    TcpUrgentData,
)
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.tcp import ACK, PSH, URG, TcpSegment


def setup(ca: TcpConfig | None = None, cb: TcpConfig | None = None) -> Harness:
    h = make_pair(ca, cb)
    assert h.run(established, max_time=5)
    h.run(max_time=h.now + 1)
    return h


def test_zero_window_persist_probes_back_off_and_transfer_resumes() -> None:
    h = setup(TcpConfig(), TcpConfig(rcv_buf=16384))
    a, b = h.eps
    b.reading = False
    a.data = bytes(range(256)) * 400  # 100 KiB
    probes: list[float] = []

    def tap(i: int, s: TcpSegment) -> None:
        if i == 0 and a.conn is not None and not s.payload and s.seq == (a.conn.snd_una - 1) & 0xFFFFFFFF:
            probes.append(h.now)

    h.tap = tap
    h.run(max_time=h.now + 40)
    assert b.conn is not None and b.conn.readable >= 16384 - 2 * 1448
    assert a.conn is not None and a.conn.snd_wnd == 0 and a.conn.state == TcpState.ESTABLISHED
    assert len(probes) >= 4
    gaps = [y - x for x, y in itertools.pairwise(probes)]
    assert all(g2 >= g1 * 1.5 for g1, g2 in itertools.pairwise(gaps))  # exponential backoff
    b.reading = True
    b.received += b.conn.read()
    assert h.run(lambda h: len(b.received) == len(a.data), max_time=h.now + 200)
    assert b.received == a.data


def test_keepalive_probes_then_times_out_when_peer_vanishes() -> None:
    cfg = TcpConfig(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0, keepalive_probes=3)
    h = setup(cfg, TcpConfig())
    a, _ = h.eps
    probes: list[float] = []
    h.tap = lambda i, s: probes.append(h.now) if i == 0 else None
    # peer alive: probes are answered and the connection survives
    assert h.run(lambda h: len(probes) >= 3 and not h._heap, max_time=h.now + 60)
    assert a.conn is not None and a.conn.state == TcpState.ESTABLISHED
    # peer gone
    probes.clear()
    h.drop_filter = lambda i, s: True
    h.run(max_time=h.now + 100)
    assert a.conn.state == TcpState.CLOSED and TcpTimedOut in a.event_types()
    assert len(probes) == 3
    assert [round(y - x, 3) for x, y in itertools.pairwise(probes)] == [2.0, 2.0]


def test_keepalive_disabled_sends_nothing() -> None:
    h = setup()
    sent: list[TcpSegment] = []
    h.tap = lambda i, s: sent.append(s)
    h.run(max_time=h.now + 10000)
    assert sent == [] and h.eps[0].conn is not None and h.eps[0].conn.next_timer() is None


def _small_writes(nagle: bool) -> list[TcpSegment]:
    h = setup(TcpConfig(nagle=nagle), TcpConfig(delayed_ack=0.2))
    a = h.eps[0].conn
    assert a is not None
    out: list[TcpSegment] = []
    for k in range(10):
        a.send(b"%d" % k)
        out += a.segments_to_send(h.now)
    return out


def test_nagle_holds_small_segments_while_data_is_unacked() -> None:
    assert [s.payload for s in _small_writes(True)] == [b"0"]


def test_nagle_off_sends_every_small_write() -> None:
    assert [s.payload for s in _small_writes(False)] == [b"%d" % k for k in range(10)]


def test_nagle_coalesces_after_ack() -> None:
    h = setup(TcpConfig(nagle=True), TcpConfig())
    a, b = h.eps
    a.data = b"".join(b"%03d" % k for k in range(100))
    a.write_chunk = 3
    payloads: list[int] = []
    h.tap = lambda i, s: payloads.append(len(s.payload)) if i == 0 and s.payload else None
    assert h.run(lambda h: len(b.received) == 300, max_time=h.now + 10)
    assert len(payloads) < 10 and max(payloads) > 3


def test_delayed_ack_single_segment_waits_two_segments_ack_at_once() -> None:
    h = setup(TcpConfig(), TcpConfig(delayed_ack=0.1))
    a, b = (ep.conn for ep in h.eps)
    assert a is not None and b is not None
    now = h.now
    a.send(b"x" * 100)
    (s1,) = a.segments_to_send(now)
    b.handle_segment(s1, now)
    assert b.segments_to_send(now) == []
    assert b.next_timer() == now + 0.1
    b.handle_timer(now + 0.1)
    (ack,) = b.segments_to_send(now + 0.1)
    assert ack.ack == b.rcv_nxt
    # two full segments: ACK at once
    a.send(b"y" * 4000)
    segs = a.segments_to_send(now + 0.2)
    assert len(segs) >= 2
    b.handle_segment(segs[0], now + 0.2)
    assert b.segments_to_send(now + 0.2) == []
    b.handle_segment(segs[1], now + 0.2)
    out = b.segments_to_send(now + 0.2)
    assert len(out) == 1 and out[0].ack == (segs[1].seq + len(segs[1].payload)) & 0xFFFFFFFF


def test_out_of_order_segment_is_acked_at_once_with_sack() -> None:
    h = setup(TcpConfig(), TcpConfig(delayed_ack=0.1))
    a, b = (ep.conn for ep in h.eps)
    assert a is not None and b is not None
    now = h.now
    a.send(b"q" * 5000)
    segs = a.segments_to_send(now)
    assert len(segs) == 3  # three full segments; Nagle holds the 656-byte tail
    b.handle_segment(segs[2], now)
    (ack,) = b.segments_to_send(now)
    s2 = segs[2]
    assert ack.ack == segs[0].seq
    assert ack.options.sack_blocks == ((s2.seq, (s2.seq + len(s2.payload)) & 0xFFFFFFFF),)
    b.handle_segment(segs[1], now)
    (ack,) = b.segments_to_send(now)
    assert ack.options.sack_blocks[0] == (segs[1].seq, (s2.seq + len(s2.payload)) & 0xFFFFFFFF)
    b.handle_segment(segs[0], now)
    (ack,) = b.segments_to_send(now)  # filling the hole is acked at once
    assert ack.ack == (s2.seq + len(s2.payload)) & 0xFFFFFFFF and ack.options.sack_blocks == ()
    assert b.read() == b"q" * (3 * 1448)


def test_window_update_when_reader_drains_buffer() -> None:
    h = setup(TcpConfig(), TcpConfig(rcv_buf=20000))
    a, b = h.eps
    b.reading = False
    a.data = b"w" * 20000
    h.run(max_time=h.now + 5)
    assert b.conn is not None and b.conn.rcv_wnd == 0
    got = b.conn.read(5000)  # 5000 >= 1 MSS: a window update goes out
    out = b.conn.segments_to_send(h.now)
    assert len(got) == 5000 and len(out) == 1 and out[0].window > 0
    got2 = b.conn.read(100)  # tiny read: no update (receiver SWS avoidance)
    assert len(got2) == 100 and b.conn.segments_to_send(h.now) == []


def test_urgent_data_is_delivered_inline_and_reported() -> None:
    h = setup()
    a, b = (ep.conn for ep in h.eps)
    assert a is not None and b is not None
    seg = TcpSegment(
        b.remote_port, b.local_port, b.rcv_nxt, b.snd_una, ACK | PSH | URG, 1000, b"abcdef", urgent_pointer=4
    )
    b.handle_segment(seg, h.now)
    assert b.read() == b"abcdef"
    urg = [e for e in b.pop_events() if isinstance(e, TcpUrgentData)]
    assert urg == [TcpUrgentData((seg.seq + 3) & 0xFFFFFFFF)]


def test_rto_backs_off_exponentially_and_gives_up() -> None:
    cfg = TcpConfig(max_retransmits=4, min_rto=0.2, initial_rto=1.0)
    h = setup(cfg, TcpConfig())
    a = h.eps[0]
    assert a.conn is not None
    rto0 = a.conn.rto
    h.drop_filter = lambda i, s: True
    sends: list[float] = []
    h.tap = lambda i, s: sends.append(h.now) if i == 0 and s.payload else None
    a.data = b"r" * 1000
    h.run(max_time=h.now + 200)
    assert a.conn.state == TcpState.CLOSED and TcpTimedOut in a.event_types()
    assert a.event_types().count(TcpRetransmitted) == 4
    gaps = [y - x for x, y in itertools.pairwise(sends)]
    assert len(gaps) == 4
    for k, g in enumerate(gaps):
        assert abs(g - rto0 * 2**k) < 1e-6


def test_rto_is_clamped_to_max() -> None:
    cfg = TcpConfig(max_retransmits=12, max_rto=4.0)
    h = setup(cfg, TcpConfig())
    a = h.eps[0]
    h.drop_filter = lambda i, s: True
    sends: list[float] = []
    h.tap = lambda i, s: sends.append(h.now) if i == 0 and s.payload else None
    a.data = b"r" * 10
    h.run(max_time=h.now + 200)
    gaps = [y - x for x, y in itertools.pairwise(sends)]
    assert max(gaps) <= 4.0 + 1e-9 and abs(gaps[-1] - 4.0) < 1e-9


def test_send_respects_peer_window_and_initial_cwnd() -> None:
    h = setup(TcpConfig(initial_cwnd_segments=4), TcpConfig())
    a = h.eps[0].conn
    assert a is not None
    a.send(b"c" * 100000)
    segs = a.segments_to_send(h.now)
    assert len(segs) == 4 and all(len(s.payload) == 1448 for s in segs)


def test_send_after_close_is_ignored_not_sent() -> None:
    c = TcpConnection.connect(TcpConfig(), 1, 2, 0, 0.0)
    c.close()
    c.send(b"late")
    assert c.unacked_send_bytes == 0


def test_cached_max_rt_limits_retransmission_time() -> None:
    h = setup()
    a = h.eps[0]
    assert a.conn is not None
    from tcpchimney.tcp.state import TcpCached

    a.conn.update_cached(TcpCached(max_rt=3000), h.now)  # 3 s of retransmitting, then give up
    h.drop_filter = lambda i, s: True
    a.data = b"m" * 100
    start = h.now
    h.run(max_time=h.now + 100)
    assert a.conn.state == TcpState.CLOSED and TcpTimedOut in a.event_types()
    assert 3.0 <= h.now - start <= 3.0 + 4.0  # the first RTO firing after 3 s of retransmissions


def test_update_cached_turns_keepalive_on() -> None:
    from tcpchimney.tcp.state import TCP_FLAG_KEEP_ALIVE_ENABLED, TcpCached

    h = setup()
    a = h.eps[0]
    assert a.conn is not None and a.conn.next_timer() is None
    a.conn.update_cached(TcpCached(flags=TCP_FLAG_KEEP_ALIVE_ENABLED, ka_timeout=5000, ka_interval=1000), h.now)
    assert a.conn.next_timer() == h.now + 5.0


def test_shrinking_the_buffer_never_moves_the_right_edge_left() -> None:
    from tcpchimney.tcp.state import TCP_FLAG_UPDATE_RCV_WND, TcpCached

    h = setup()
    a, b = h.eps
    assert b.conn is not None
    b.conn.update_cached(TcpCached(flags=TCP_FLAG_UPDATE_RCV_WND, initial_rcv_wnd=4096), h.now)
    b.reading = False
    a.data = bytes(300_000)
    h.run(max_time=h.now + 30)  # the harness asserts the advertised right edge never moved left
    assert b.conn.rcv_wnd == 0 and 4096 <= b.conn.readable <= 262144 + 8
    b.reading = True
    assert h.run(lambda h: len(b.received) == 300_000, max_time=h.now + 100)


def test_rto_retransmits_into_a_shrunk_zero_window() -> None:
    h = setup()
    a, b = (ep.conn for ep in h.eps)
    assert a is not None and b is not None
    now = h.now
    a.send(b"s" * 3000)
    assert a.segments_to_send(now)  # sent and lost
    # the peer shrinks its window to zero without acknowledging anything (RFC 9293 discourages, but it happens)
    shrink = TcpSegment(b.local_port, b.remote_port, a.rcv_nxt, a.snd_una, ACK, 0)
    a.handle_segment(shrink, now)
    assert a.snd_wnd == 0
    t = a.next_timer()
    assert t is not None
    a.handle_timer(t)
    out = a.segments_to_send(t)
    assert len(out) == 1 and out[0].seq == a.snd_una and len(out[0].payload) > 0


def test_cached_nagling_flag_switches_nagle() -> None:
    from tcpchimney.tcp.state import TcpCached

    h = setup(TcpConfig(nagle=True), TcpConfig(delayed_ack=0.2))
    a = h.eps[0].conn
    assert a is not None
    a.update_cached(TcpCached(flags=0), h.now)  # NAGLING cleared
    out: list[TcpSegment] = []
    for k in range(5):
        a.send(b"%d" % k)
        out += a.segments_to_send(h.now)
    assert len(out) == 5
