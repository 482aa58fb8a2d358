"""THE HAND-OVER: export_state() / from_state() must continue a connection so that the peer notices nothing."""

from __future__ import annotations

import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcp_harness import Harness, Impairments, aborted, established, make_pair
from tcpchimney.tcp.engine import TcpClosed, TcpConfig, TcpConnection, TcpTimedOut
from tcpchimney.tcp.state import TIMER_STOPPED, TcpState
from tcpchimney.wire.tcp import ACK, FIN, TcpSegment

ALL_STATES_SEEN: set[TcpState] = set()


def all_closed(h: Harness) -> bool:
    return all(ep.conn is not None and ep.conn.state == TcpState.CLOSED and not ep.conn.readable for ep in h.eps)


def run_with_handovers(
    seed: int,
    size_a: int,
    size_b: int,
    loss: float,
    handover_times: list[tuple[float, int]],
    cap_a: int,
    cap_b: int,
    close_a: float,
    close_b: float,
    rcv_buf_b: int = 262144,
    read_chunk: int = -1,
    read_interval: float = 0.002,
) -> Harness:
    rng = random.Random(seed)
    h = make_pair(
        TcpConfig(time_wait=60.0, syn_retries=20),  # 20% loss: make a legit give-up astronomically unlikely
        TcpConfig(time_wait=60.0, rcv_buf=rcv_buf_b),
        Impairments(loss=loss, dup=0.03, reorder=0.2, jitter=0.03, seed=seed),
    )
    a, b = h.eps
    a.data, b.data = rng.randbytes(size_a), rng.randbytes(size_b)
    a.send_cap, b.send_cap = cap_a, cap_b
    a.write_chunk = b.write_chunk = 3000
    a.read_chunk = b.read_chunk = read_chunk  # small reads leave received-unread data to hand over
    if read_chunk > 0:
        a.read_interval = b.read_interval = read_interval  # slow enough readers close the window: persist runs
    a.close_when_done = b.close_when_done = True
    a.close_at, b.close_at = close_a, close_b
    pending = sorted(handover_times)

    def on_step(h: Harness) -> None:
        while pending and h.now >= pending[0][0]:
            _, i = pending.pop(0)
            c = h.eps[i].conn
            if c is not None:
                ALL_STATES_SEEN.add(c.state)
                h.handover(i)

    assert h.run(all_closed, max_time=3000, on_step=on_step), [ep.conn.state for ep in h.eps if ep.conn]
    # exactly the bytes sent, in order, nothing twice (the harness also checked every read as it happened)
    assert b.received == a.data and a.received == b.data
    for me, peer in ((a, b), (b, a)):
        if aborted(me):
            # Legit only at the very end: our FIN's ACKs were all lost and the peer's TIME_WAIT already ran out.
            assert isinstance(me.events[-1], TcpTimedOut) and TcpState.FIN_WAIT_2 not in me.states_seen
            assert TcpClosed in peer.event_types() and TcpState.TIME_WAIT in peer.states_seen
    return h


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    size_a=st.integers(0, 200_000),
    size_b=st.integers(0, 200_000),
    loss=st.sampled_from([0.0, 0.02, 0.1, 0.2]),
    handovers=st.lists(
        st.tuples(st.one_of(st.floats(0, 3), st.floats(0, 60)), st.integers(0, 1)), min_size=1, max_size=12
    ),
    cap_a=st.sampled_from([3000, 20000, 100000]),
    cap_b=st.sampled_from([3000, 20000, 100000]),
    close_a=st.floats(0, 4),
    close_b=st.floats(0, 4),
    rcv_buf_b=st.sampled_from([4096, 65535, 262144]),
    read_chunk=st.sampled_from([-1, 500, 3000]),
    read_interval=st.sampled_from([0.002, 0.05]),
)
def test_handover_property(
    seed: int,
    size_a: int,
    size_b: int,
    loss: float,
    handovers: list[tuple[float, int]],
    cap_a: int,
    cap_b: int,
    close_a: float,
    close_b: float,
    rcv_buf_b: int,
    read_chunk: int,
    read_interval: float,
) -> None:
    run_with_handovers(
        seed, size_a, size_b, loss, handovers, cap_a, cap_b, close_a, close_b, rcv_buf_b, read_chunk, read_interval
    )


def test_handover_covers_every_state() -> None:
    """Deterministic sweep: many hand-overs at random times reach every state a connection passes through."""
    for seed in range(40):
        rng = random.Random(seed)
        times = [(rng.uniform(0, 2) if rng.random() < 0.7 else rng.uniform(0, 40), rng.randrange(2)) for _ in range(15)]
        run_with_handovers(
            seed,
            rng.randrange(100_000),
            rng.randrange(100_000),
            [0.0, 0.1][seed % 2],
            times,
            20000,
            20000,
            rng.uniform(0, 2),
            rng.uniform(0, 2),
            65535,
            rng.choice([-1, 700]),
        )
    wanted = {
        TcpState.SYN_SENT,
        TcpState.SYN_RCVD,
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT_1,
        TcpState.FIN_WAIT_2,
        TcpState.CLOSE_WAIT,
        TcpState.LAST_ACK,
        TcpState.TIME_WAIT,
        TcpState.CLOSED,
    }
    assert wanted <= ALL_STATES_SEEN


def _established_pair() -> Harness:
    h = make_pair(TcpConfig(time_wait=30.0), TcpConfig(time_wait=30.0))
    assert h.run(established, max_time=5)
    return h


def test_export_import_round_trip_is_identity() -> None:
    h = _established_pair()
    a, b = h.eps
    a.data = b"k" * 100_000
    h.run(lambda h: len(b.received) > 30_000, max_time=10)
    c = a.conn
    assert c is not None
    const, cached, deleg, sd, rb = c.export_state(h.now)
    c2 = TcpConnection.from_state(c.config, const, cached, deleg, send_data=sd, recv_buffered=rb, now=h.now)
    const2, cached2, deleg2, sd2, rb2 = c2.export_state(h.now)
    assert (const2, cached2, sd2, rb2) == (const, cached, sd, rb)
    assert deleg2 == deleg
    # and a little later on another clock: timers keep their remaining time, TsTime advances with the clock
    c3 = TcpConnection.from_state(c.config, const, cached, deleg, send_data=sd, recv_buffered=rb, now=1000.0)
    d3 = c3.export_state(1000.25)[2]
    assert d3.ts_time == (deleg.ts_time + 250) & 0xFFFFFFFF
    if deleg.retransmit.running:
        assert d3.retransmit.timeout_delta == max(0, deleg.retransmit.timeout_delta - 250)
    assert d3.srtt == deleg.srtt and d3.rttvar == deleg.rttvar


def test_time_wait_remainder_survives_handover() -> None:
    h = _established_pair()
    a, b = h.eps
    a.close_when_done = True
    b.close_when_done = True
    assert h.run(lambda h: a.conn is not None and a.conn.state == TcpState.TIME_WAIT, max_time=10)
    t_tw = h.now
    h.advance(h.now + 10)
    h.handover(0)
    assert a.conn is not None and a.conn.state == TcpState.TIME_WAIT
    assert h.run(lambda h: a.conn is not None and a.conn.state == TcpState.CLOSED, max_time=100)
    assert abs((h.now - t_tw) - 30.0) < 0.05


def test_unacked_fin_is_resent_by_new_owner() -> None:
    h = _established_pair()
    a, b = h.eps
    a.data = b"fin-test" * 10
    a.close_when_done = True
    h.drop_filter = lambda i, s: i == 0  # everything A sends is lost
    assert h.run(
        lambda h: a.conn is not None and a.conn.state == TcpState.FIN_WAIT_1 and a.conn.snd_max != a.conn.snd_una,
        max_time=5,
    )
    c = a.conn
    assert c is not None
    const, cached, deleg, sd, rb = c.export_state(h.now)
    assert deleg.fin_sent and deleg.snd_max == (deleg.snd_una + len(sd) + 1) & 0xFFFFFFFF
    a.conn = TcpConnection.from_state(c.config, const, cached, deleg, send_data=sd, recv_buffered=rb, now=h.now)
    h.drop_filter = None
    fins: list[int] = []
    h.tap = lambda i, s: fins.append(s.seq) if i == 0 and s.flags & FIN else None
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSE_WAIT, max_time=30)
    assert b.received == a.data and fins


def test_rewound_snd_nxt_is_resent_first() -> None:
    h = _established_pair()
    a, b = h.eps
    a.data = b"R" * 30000
    h.drop_filter = lambda i, s: i == 0 and bool(s.payload)
    h.run(lambda h: a.conn is not None and a.conn.stats.timeouts >= 1, max_time=10)
    c = a.conn
    assert c is not None and c.snd_nxt != c.snd_max
    una = c.snd_una
    h.handover(0)
    h.drop_filter = None
    first: list[int] = []
    h.tap = lambda i, s: first.append(s.seq) if i == 0 and s.payload else None
    assert h.run(lambda h: len(b.received) == 30000, max_time=30)
    assert first[0] == una and b.received == a.data


def test_handover_in_syn_sent_and_syn_rcvd() -> None:
    h = make_pair()
    a, b = h.eps
    h.handover(0)  # before the SYN was even sent
    assert a.conn is not None and a.conn.state == TcpState.SYN_SENT
    h.drop_filter = lambda i, s: i == 1  # SYN-ACKs lost: B stays in SYN_RCVD
    h.run(lambda h: b.conn is not None, max_time=5)
    h.handover(1)
    h.handover(0)
    assert b.conn is not None and b.conn.state == TcpState.SYN_RCVD
    h.drop_filter = None
    assert h.run(established, max_time=30)
    a.data, b.data = b"a" * 5000, b"b" * 7000
    assert h.run(lambda h: len(a.received) == 7000 and len(b.received) == 5000, max_time=30)


def test_delayed_ack_is_flushed_at_export() -> None:
    h = _established_pair()
    a, b = (ep.conn for ep in h.eps)
    assert a is not None and b is not None
    a.send(b"x" * 100)
    for s in a.segments_to_send(h.now):
        b.handle_segment(s, h.now)
    assert b.segments_to_send(h.now) == []  # ACK delayed
    deleg = b.export_state(h.now)[2]
    (ack,) = b.segments_to_send(h.now)
    assert ack.flags == ACK and ack.ack == deleg.rcv_nxt


def test_exported_timers_use_ndis_encoding() -> None:
    h = _established_pair()
    c = h.eps[0].conn
    assert c is not None
    d = c.export_state(h.now)[2]
    assert d.retransmit.timeout_delta == TIMER_STOPPED and d.keepalive.timeout_delta == TIMER_STOPPED
    assert d.srtt > 0 and d.state == TcpState.ESTABLISHED


def test_from_state_with_send_closed_sends_fin_after_data() -> None:
    h = _established_pair()
    a, b = h.eps
    c = a.conn
    assert c is not None
    c.send(b"tail")
    a.data, a.written = b"tail", 4  # the app's view: it wrote "tail", then closed
    const, cached, deleg, sd, rb = c.export_state(h.now)
    assert deleg.state == TcpState.ESTABLISHED and sd == b"tail"
    a.conn = TcpConnection.from_state(
        c.config, const, cached, deleg, send_data=sd, recv_buffered=rb, now=h.now, send_closed=True
    )
    assert a.conn.state == TcpState.FIN_WAIT_1 and a.conn.send_closed
    assert h.run(lambda h: b.conn is not None and b.conn.state == TcpState.CLOSE_WAIT, max_time=10)
    assert b.received == b"tail"
    assert h.run(lambda h: a.conn is not None and a.conn.state == TcpState.FIN_WAIT_2, max_time=10)


def test_export_from_closed_and_aborted_connection() -> None:
    h = _established_pair()
    c = h.eps[0].conn
    assert c is not None
    c.abort()
    (rst,) = c.segments_to_send(h.now)
    assert rst.flags & 0x04
    const, cached, deleg, sd, rb = c.export_state(h.now)
    assert deleg.state == TcpState.CLOSED
    c2 = TcpConnection.from_state(c.config, const, cached, deleg, send_data=sd, recv_buffered=rb, now=h.now)
    assert c2.state == TcpState.CLOSED and c2.next_timer() is None and c2.segments_to_send(h.now) == []


CONFIGS = st.builds(
    TcpConfig,
    mss=st.sampled_from([536, 1460, 8960]),
    rcv_buf=st.sampled_from([2000, 8192, 65535, 262144, 1 << 21]),
    window_scale=st.booleans(),
    timestamps=st.booleans(),
    sack=st.booleans(),
    nagle=st.booleans(),
    delayed_ack=st.sampled_from([0.0, 0.04, 0.2]),
    syn_retries=st.just(20),
    max_retransmits=st.just(30),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    ca=CONFIGS,
    cb=CONFIGS,
    new_owner=CONFIGS,
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    dup=st.sampled_from([0.0, 0.1]),
    reorder=st.sampled_from([0.0, 0.3]),
    size_a=st.integers(0, 150_000),
    size_b=st.integers(0, 150_000),
    handovers=st.lists(st.tuples(st.floats(0, 20), st.integers(0, 1)), max_size=10),
    read_chunk=st.sampled_from([-1, 700]),
    iss=st.sampled_from([(1000, 5_000_000), (0xFFFF0000, 0xFFFFFFF0)]),  # the second pair wraps around 2**32
)
def test_handover_property_mixed_configs(
    seed: int,
    ca: TcpConfig,
    cb: TcpConfig,
    new_owner: TcpConfig,
    loss: float,
    dup: float,
    reorder: float,
    size_a: int,
    size_b: int,
    handovers: list[tuple[float, int]],
    read_chunk: int,
    iss: tuple[int, int],
) -> None:
    """Options on or off, tiny or huge buffers, and a new owner whose own settings differ (another NIC)."""
    rng = random.Random(seed)
    h = make_pair(
        ca, cb, Impairments(loss=loss, dup=dup, reorder=reorder, jitter=0.05, seed=seed), iss_a=iss[0], iss_b=iss[1]
    )
    a, b = h.eps
    a.data, b.data = rng.randbytes(size_a), rng.randbytes(size_b)
    a.send_cap = b.send_cap = 50000
    a.write_chunk = b.write_chunk = 7000
    a.read_chunk = b.read_chunk = read_chunk
    if read_chunk > 0:
        a.read_interval = b.read_interval = 0.003
    a.close_when_done = b.close_when_done = True
    a.close_at, b.close_at = rng.uniform(0, 3), rng.uniform(0, 3)
    pending = sorted(handovers)

    def on_step(h: Harness) -> None:
        while pending and h.now >= pending[0][0]:
            _, i = pending.pop(0)
            if h.eps[i].conn is not None:
                if rng.random() < 0.5:
                    h.eps[i].config = new_owner
                h.handover(i)

    assert h.run(all_closed, max_time=5000, on_step=on_step)
    assert b.received == a.data and a.received == b.data


def test_handover_during_zero_window_persist_keeps_probing_with_backoff() -> None:
    h = make_pair(TcpConfig(), TcpConfig(rcv_buf=8192))
    assert h.run(established, max_time=5)
    a, b = h.eps
    b.reading = False
    a.data = bytes(range(256)) * 200
    probes: list[float] = []

    def tap(i: int, s: TcpSegment) -> None:
        if i == 0 and a.conn is not None and not s.payload and s.seq == (a.conn.snd_una - 1) & 0xFFFFFFFF:
            probes.append(h.now)

    h.tap = tap
    h.advance(h.now + 5)
    assert a.conn is not None and a.conn.snd_wnd == 0 and len(probes) >= 2
    for _ in range(3):
        d = a.conn.export_state(h.now + a.clock_offset)[2]
        assert d.retransmit.running and d.snd_wnd == 0 and d.snd_wnd_probe_count >= 1
        h.handover(0)  # (exporting twice is harmless: the first export above was only a look)
        h.advance(h.now + 7)
    gaps = [y - x for x, y in itertools.pairwise(probes)]
    assert all(g2 >= g1 - 1e-6 for g1, g2 in itertools.pairwise(gaps))  # the backoff survived the hand-overs
    b.reading = True
    assert h.run(lambda h: len(b.received) == len(a.data), max_time=h.now + 120)
    assert b.received == a.data
