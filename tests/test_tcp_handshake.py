"""Connection setup and teardown: handshakes, option negotiation, close sequences, TIME_WAIT."""

from __future__ import annotations

from tcp_harness import Endpoint, Harness, Impairments, established, make_pair
from tcpchimney.tcp.engine import (
    TcpClosed,
    TcpConfig,
    TcpConnected,
    TcpConnection,
    TcpPeerClosed,
    TcpReset,
    TcpTimedOut,
)
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.tcp import ACK, RST, SYN, TcpSegment


def all_closed(h: Harness) -> bool:
    return all(ep.conn is not None and ep.conn.state == TcpState.CLOSED for ep in h.eps)


def test_active_passive_handshake_negotiates_all_options() -> None:
    h = make_pair(TcpConfig(mss=1460, rcv_buf=1 << 20), TcpConfig(mss=8960, rcv_buf=65535))
    assert h.run(established, max_time=5)
    a, b = (ep.conn for ep in h.eps)
    assert a is not None and b is not None
    assert TcpConnected in h.eps[0].event_types() and TcpConnected in h.eps[1].event_types()
    assert a.ts_enabled and b.ts_enabled and a.sack_enabled and b.sack_enabled
    assert a.remote_mss == 8960 and b.remote_mss == 1460
    assert a.rcv_wscale == 5 and b.snd_wscale == 5  # 1 MiB needs a shift of 5
    assert b.rcv_wscale == 0 and a.snd_wscale == 0
    assert a.snd_una == 1001 and b.rcv_nxt == 1001
    assert b.snd_una == 5_000_001 and a.rcv_nxt == 5_000_001


def test_options_not_offered_are_not_used() -> None:
    h = make_pair(TcpConfig(), TcpConfig(window_scale=False, timestamps=False, sack=False))
    assert h.run(established, max_time=5)
    for ep in h.eps:
        c = ep.conn
        assert c is not None
        assert not c.ts_enabled and not c.sack_enabled and c.snd_wscale == 0 and c.rcv_wscale == 0
    # without window scaling the advertised window fits 16 bits, and data still flows
    h.eps[0].data = bytes(range(256)) * 1000
    assert h.run(lambda h: len(h.eps[1].received) == 256000, max_time=30)


def test_syn_lost_is_retransmitted_then_times_out() -> None:
    h = make_pair(TcpConfig(syn_retries=3, initial_rto=1.0))
    h.drop_filter = lambda i, seg: True  # black hole
    syns: list[float] = []
    h.tap = lambda i, seg: syns.append(h.now) if seg.flags & SYN else None
    h.run(max_time=100)
    a = h.eps[0].conn
    assert a is not None and a.state == TcpState.CLOSED
    assert TcpTimedOut in h.eps[0].event_types()
    assert syns == [0.0, 1.0, 3.0, 7.0]  # exponential backoff 1, 2, 4 s, then the limit


def test_lost_syn_ack_recovers() -> None:
    h = make_pair()
    dropped: list[object] = []

    def drop_first_synack(i: int, seg: object) -> bool:
        if i == 1 and not dropped:
            dropped.append(seg)
            return True
        return False

    h.drop_filter = drop_first_synack
    assert h.run(established, max_time=10)
    assert dropped


def test_simultaneous_open() -> None:
    cfg = TcpConfig()
    a = Endpoint("A", cfg)
    b = Endpoint("B", cfg)
    h = Harness(a, b, Impairments(delay=0.05))
    a.conn = TcpConnection.connect(cfg, 1111, 2222, 100, 0.0)
    b.conn = TcpConnection.connect(cfg, 2222, 1111, 90000, 0.0)
    assert h.run(established, max_time=5)
    assert TcpState.SYN_RCVD in a.states_seen and TcpState.SYN_RCVD in b.states_seen
    assert a.conn.ts_enabled and b.conn.sack_enabled
    a.data, b.data = b"x" * 50000, b"y" * 70000
    a.close_when_done = b.close_when_done = True
    assert h.run(all_closed, max_time=200)
    assert a.received == b.data and b.received == a.data


def test_active_close_time_wait_then_closed() -> None:
    cfg = TcpConfig(time_wait=5.0)
    h = make_pair(cfg, cfg)
    a, b = h.eps
    a.data = b"hello" * 1000
    a.close_when_done = True
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSE_WAIT, max_time=10)
    assert TcpPeerClosed in b.event_types()
    b.close_when_done = True
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSED, max_time=20)
    assert a.conn is not None and a.conn.state == TcpState.TIME_WAIT
    assert TcpState.FIN_WAIT_2 in a.states_seen and TcpState.LAST_ACK in b.states_seen
    t_closed_b = h.now
    assert h.run(lambda h: a.conn is not None and a.conn.state == TcpState.CLOSED, max_time=30)
    assert 5.0 - 0.1 <= h.now - t_closed_b <= 5.0 + 0.1
    assert a.event_types()[-1] is TcpClosed and b.event_types()[-1] is TcpClosed
    assert b.received == a.data


def test_simultaneous_close_goes_through_closing() -> None:
    cfg = TcpConfig(time_wait=2.0)
    h = make_pair(cfg, cfg)
    assert h.run(established, max_time=5)
    a, b = h.eps
    assert a.conn is not None and b.conn is not None
    a.conn.close()
    b.conn.close()
    assert a.conn.state == b.conn.state == TcpState.FIN_WAIT_1
    assert h.run(all_closed, max_time=20)
    for ep in (a, b):
        assert TcpState.CLOSING in ep.states_seen and TcpState.TIME_WAIT in ep.states_seen
        assert TcpState.FIN_WAIT_2 not in ep.states_seen
        assert ep.event_types()[-1] is TcpClosed


def test_time_wait_reacks_retransmitted_fin() -> None:
    cfg = TcpConfig(time_wait=10.0)
    h = make_pair(cfg, cfg)
    a, b = h.eps
    a.close_when_done = True
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSE_WAIT, max_time=5)
    b.close_when_done = True
    acks: list[int] = []
    # lose A's first ACK of B's FIN: B retransmits FIN, A (in TIME_WAIT) must ACK again

    def lose_first_ack(i: int, seg: TcpSegment) -> bool:
        if i == 0 and not acks and seg.flags & ACK and b.conn is not None and b.conn.state == TcpState.LAST_ACK:
            acks.append(1)
            return True
        return False

    h.drop_filter = lose_first_ack
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSED, max_time=20)
    assert a.conn is not None and a.conn.state == TcpState.TIME_WAIT
    assert acks and b.conn is not None and b.conn.stats.timeouts >= 1


def test_close_in_syn_sent_closes_at_once() -> None:
    c = TcpConnection.connect(TcpConfig(), 1, 2, 0, 0.0)
    assert [s.flags for s in c.segments_to_send(0.0)] == [SYN]
    c.close()
    assert c.state == TcpState.CLOSED and c.next_timer() is None


def test_close_in_syn_rcvd_sends_fin_after_handshake() -> None:
    h = make_pair()
    a, b = h.eps
    h.drop_filter = lambda i, seg: i == 1  # keep B in SYN_RCVD for a while
    assert h.run(lambda h: b.conn is not None, max_time=1)
    assert b.conn is not None and b.conn.state == TcpState.SYN_RCVD
    b.conn.send(b"early")
    b.data, b.written = b"early", 5
    b.conn.close()
    assert b.conn.state == TcpState.SYN_RCVD
    h.drop_filter = None
    assert h.run(lambda h: a.conn is not None and a.conn.state == TcpState.CLOSE_WAIT, max_time=30)
    assert a.received == b"early"
    assert TcpState.FIN_WAIT_1 in b.states_seen or b.conn.state in (TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2)


def test_rst_in_time_wait_is_ignored_rfc1337() -> None:
    cfg = TcpConfig(time_wait=5.0)
    h = make_pair(cfg, cfg)
    a, b = h.eps
    a.close_when_done = True
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSE_WAIT, max_time=5)
    b.close_when_done = True
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSED, max_time=20)
    ca, cb = a.conn, b.conn
    assert ca is not None and cb is not None and ca.state == TcpState.TIME_WAIT
    # what the closed peer answers to a duplicated final ACK: a RST at exactly RCV.NXT (the most acceptable one)
    for flags in (RST, RST | ACK):
        rst = TcpSegment(cb.local_port, ca.local_port, ca.rcv_nxt, ca.snd_nxt, flags, 0)
        h.inject(0, rst)
        h.advance(h.now + 0.5)
        assert ca.state == TcpState.TIME_WAIT
        assert not any(isinstance(e, TcpReset) for e in a.events)
    assert ca.stats.dropped_segments.get("rst_in_time_wait") == 2
    t0 = h.now
    assert h.run(lambda h: ca.state == TcpState.CLOSED, max_time=30)
    assert h.now - t0 <= 5.0 and a.event_types()[-1] is TcpClosed  # TIME_WAIT ran out normally
