"""RFC 5961 (blind RST / SYN / ACK injection) and RFC 7323 PAWS checks."""

from __future__ import annotations

from tcp_harness import established, make_pair
from tcpchimney.tcp.engine import TcpConfig, TcpConnection, TcpDataReceived, TcpReset
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.tcp import ACK, PSH, RST, SYN, TcpOptions, TcpSegment


def pair(**cfg: object) -> tuple[TcpConnection, TcpConnection, float]:
    c = TcpConfig(**cfg)  # type: ignore[arg-type]
    h = make_pair(c, c)
    assert h.run(established, max_time=5)
    h.run(max_time=h.now + 1)  # settle
    a, b = h.eps[0].conn, h.eps[1].conn
    assert a is not None and b is not None
    a.pop_events()
    b.pop_events()
    return a, b, h.now


def seg_to(
    b: TcpConnection, seq: int, ack: int, flags: int, payload: bytes = b"", ts: tuple[int, int] | None = None
) -> TcpSegment:
    opts = TcpOptions(timestamp=ts) if ts is not None else TcpOptions()
    return TcpSegment(b.remote_port, b.local_port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 1000, payload, opts)


def test_rst_exactly_at_rcv_nxt_resets() -> None:
    _a, b, now = pair()
    b.handle_segment(seg_to(b, b.rcv_nxt, 0, RST), now)
    assert b.state == TcpState.CLOSED
    assert any(isinstance(e, TcpReset) for e in b.pop_events())
    assert b.segments_to_send(now) == []


def test_in_window_rst_gets_challenge_ack_and_no_reset() -> None:
    _a, b, now = pair()
    b.handle_segment(seg_to(b, b.rcv_nxt + 100, 0, RST), now)
    assert b.state == TcpState.ESTABLISHED
    out = b.segments_to_send(now)
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == b.rcv_nxt
    assert b.stats.challenge_acks == 1
    assert not any(isinstance(e, TcpReset) for e in b.pop_events())


def test_out_of_window_rst_is_dropped_silently() -> None:
    _a, b, now = pair()
    b.handle_segment(seg_to(b, b.rcv_nxt - 10, 0, RST), now)
    b.handle_segment(seg_to(b, b.rcv_nxt + (1 << 30), 0, RST), now)
    assert b.state == TcpState.ESTABLISHED
    assert b.segments_to_send(now) == [] and b.stats.challenge_acks == 0


def test_syn_in_synchronized_state_gets_challenge_ack() -> None:
    _a, b, now = pair()
    for seq in (b.rcv_nxt, b.rcv_nxt + 5, b.rcv_nxt - 1000):
        b.handle_segment(seg_to(b, seq, 0, SYN), now)
    assert b.state == TcpState.ESTABLISHED
    out = b.segments_to_send(now)
    assert out and all(s.flags == ACK and s.ack == b.rcv_nxt for s in out)
    assert b.stats.challenge_acks >= 2


def test_ack_outside_acceptable_range_is_dropped_with_challenge_ack() -> None:
    _a, b, now = pair()
    b.send(b"z" * 100)
    b.segments_to_send(now)
    una = b.snd_una
    # acks data never sent: dropped, including its payload
    b.handle_segment(seg_to(b, b.rcv_nxt, una + 5000, ACK | PSH, b"data"), now)
    assert b.readable == 0 and b.snd_una == una
    out = b.segments_to_send(now)
    assert len(out) == 1 and out[0].flags & ACK and not out[0].payload
    # far too old ACK (below SND.UNA - MAX.SND.WND): dropped + challenge ACK
    b.handle_segment(seg_to(b, b.rcv_nxt, una - (1 << 24), ACK | PSH, b"data"), now)
    assert b.readable == 0
    assert len(b.segments_to_send(now)) == 1
    assert b.stats.challenge_acks == 2
    # an old but acceptable ACK still delivers the data
    b.handle_segment(seg_to(b, b.rcv_nxt, una - 10, ACK | PSH, b"data"), now)
    assert b.readable == 4


def test_challenge_acks_are_rate_limited() -> None:
    _a, b, now = pair()
    for k in range(200):
        b.handle_segment(seg_to(b, b.rcv_nxt + 1 + k, 0, RST), now)
    sent = len(b.segments_to_send(now))
    assert 1 <= sent <= 20
    assert b.stats.dropped_segments.get("challenge_ack_limited", 0) == 200 - sent
    # a second later the budget is back
    b.handle_segment(seg_to(b, b.rcv_nxt + 1, 0, RST), now + 1.0)
    assert len(b.segments_to_send(now + 1.0)) == 1


def test_paws_drops_old_timestamp_and_acks() -> None:
    a, b, now = pair()
    a.send(b"fresh")
    segs = a.segments_to_send(now)
    assert segs[0].options.timestamp is not None
    tsval = segs[0].options.timestamp[0]
    b.handle_segment(segs[0], now)
    assert b.read() == b"fresh"
    b.segments_to_send(now + 1)
    b.pop_events()
    old = TcpSegment(
        b.remote_port,
        b.local_port,
        b.rcv_nxt,
        b.snd_max,
        ACK | PSH,
        1000,
        b"stale",
        TcpOptions(timestamp=((tsval - 50) & 0xFFFFFFFF, 0)),
    )
    b.handle_segment(old, now + 1)
    assert b.readable == 0 and b.stats.dropped_segments.get("paws") == 1
    out = b.segments_to_send(now + 1)
    assert len(out) == 1 and out[0].ack == b.rcv_nxt
    assert not any(isinstance(e, TcpDataReceived) for e in b.pop_events())
    # the same data with a current timestamp is accepted
    ok = TcpSegment(
        b.remote_port,
        b.local_port,
        b.rcv_nxt,
        b.snd_max,
        ACK | PSH,
        1000,
        b"stale",
        TcpOptions(timestamp=((tsval + 5) & 0xFFFFFFFF, 0)),
    )
    b.handle_segment(ok, now + 1)
    assert b.read() == b"stale"


def test_rst_in_syn_sent_needs_acceptable_ack() -> None:
    c = TcpConnection.connect(TcpConfig(), 1, 2, 1000, 0.0)
    c.segments_to_send(0.0)
    c.handle_segment(TcpSegment(2, 1, 0, 5000, RST | ACK, 0), 0.01)  # wrong ack: ignored
    assert c.state == TcpState.SYN_SENT
    c.handle_segment(TcpSegment(2, 1, 0, 1001, RST | ACK, 0), 0.02)
    assert c.state == TcpState.CLOSED
    assert any(isinstance(e, TcpReset) for e in c.pop_events())
