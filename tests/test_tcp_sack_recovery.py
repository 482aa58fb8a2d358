"""Loss recovery with a SACK scoreboard (RFC 2018, RFC 6675), tail loss probes (RFC 8985) and hand-over."""

from __future__ import annotations

import dataclasses
import random

from tcp_harness import Harness, Impairments, established, make_pair, transfer_done
from tcpchimney.tcp.engine import TcpConfig, TcpConnection
from tcpchimney.wire.tcp import TcpSegment


def pair(segments: int, cwnd_segments: int) -> tuple[TcpConnection, TcpConnection, float, list[TcpSegment]]:
    """An established A -> B pair (driven by hand from here on) with `segments` full segments of data queued at A,
    and A's first flight (`cwnd_segments` of them)."""
    h = make_pair(TcpConfig(initial_cwnd_segments=cwnd_segments), TcpConfig(rcv_buf=1 << 20))
    assert h.run(established, max_time=5)
    h.run(max_time=h.now + 1)
    a, b = h.eps[0].conn, h.eps[1].conn
    assert a is not None and b is not None and a.sack_enabled
    now = h.now
    a.send(random.Random(segments).randbytes(segments * 1448))
    flight = a.segments_to_send(now)
    assert len(flight) == cwnd_segments
    return a, b, now, flight


def deliver(b: TcpConnection, segs: list[TcpSegment], now: float) -> list[TcpSegment]:
    """Feed segments to B; return the ACKs it sends, one list entry per segment it emits."""
    acks: list[TcpSegment] = []
    for s in segs:
        b.handle_segment(s, now)
        acks += b.segments_to_send(now)
    return acks


def sacked_ranges(acks: list[TcpSegment]) -> list[tuple[int, int]]:
    return [blk for ack in acks for blk in ack.options.sack_blocks]


def inside(seq: int, end: int, ranges: list[tuple[int, int]]) -> bool:
    return any(((seq - s) & 0xFFFFFFFF) < 0x80000000 and ((e - end) & 0xFFFFFFFF) < 0x80000000 for s, e in ranges)


def test_holes_are_retransmitted_in_order_and_sacked_data_never() -> None:
    a, b, now, flight = pair(30, 30)  # no data beyond this flight: no new data interleaves the recovery
    lost = {3, 9, 15}
    acks = deliver(b, [s for i, s in enumerate(flight) if i not in lost], now)
    top = a.snd_max
    out: list[TcpSegment] = []
    seen: list[TcpSegment] = []
    t = now + 0.02
    for ack in acks:
        seen.append(ack)
        a.handle_segment(ack, t)
        for s in a.segments_to_send(t):
            if ((s.seq - top) & 0xFFFFFFFF) >= 0x80000000:  # below the old SND.MAX: a retransmission
                assert not inside(s.seq, (s.seq + len(s.payload)) & 0xFFFFFFFF, sacked_ranges(seen))
                out.append(s)
    assert [s.seq for s in out[:3]] == [flight[i].seq for i in sorted(lost)]
    assert [s.payload for s in out[:3]] == [flight[i].payload for i in sorted(lost)]
    # with no new data to send, the holes are followed by at most the one rescue retransmission (RFC 6675 rule 4)
    assert [s.seq for s in out[3:]] in ([], [flight[-1].seq])
    assert a.in_recovery and a.stats.timeouts == 0 and a.stats.retransmitted_segments == len(out)
    # the retransmissions fill the holes; their ACK ends the recovery
    final = deliver(b, out, t + 0.01)
    assert b.rcv_nxt == top
    for ack in final:
        a.handle_segment(ack, t + 0.02)
    assert a.snd_una == top and not a.in_recovery


def test_pipe_counts_unsacked_not_lost_plus_retransmitted_and_limits_sending() -> None:
    a, b, now, flight = pair(40, 10)
    smss = len(flight[0].payload)
    acks = deliver(b, flight[1:], now)  # segment 0 lost: nine duplicate ACKs with growing SACK blocks
    assert len(acks) == 9
    t = now + 0.02
    new_bytes = 0
    for ack in acks:
        was = a.in_recovery
        top = a.snd_max
        a.handle_segment(ack, t)
        out = a.segments_to_send(t)
        if not a.in_recovery:
            continue
        sent = sum(len(s.payload) for s in out if s.seq != flight[0].seq)
        if not was:
            # entry: 1-3 SACKed, so segment 0 is lost (RFC 6675 IsLost) and retransmitted; pipe is what lies above
            # the SACKed blocks plus that retransmission; cwnd = ssthresh = FlightSize / 2
            assert out and out[0].seq == flight[0].seq
            assert a.pipe == ((a.snd_max - flight[4].seq) & 0xFFFFFFFF) + smss
            assert a.cwnd == max(((top - flight[0].seq) & 0xFFFFFFFF) // 2, 2 * smss)
        elif sent:
            # new data only while cwnd - pipe >= SMSS (before the send)
            assert a.pipe - sent <= a.cwnd - smss
        else:
            assert a.pipe > a.cwnd - smss
        new_bytes += sent
    assert new_bytes > 0  # the SACKs clocked out new data during the recovery
    assert a.in_recovery and a.stats.retransmitted_segments == 1 and a.stats.timeouts == 0


def test_several_losses_in_one_window_recover_without_rto() -> None:
    h = make_pair(imp=Impairments(seed=1))
    a, b = h.eps
    a.data = random.Random(5).randbytes(600_000)
    dropped: set[int] = set()
    sent_data = 0

    def drop(i: int, s: TcpSegment) -> bool:
        nonlocal sent_data
        if i != 0 or not s.payload or s.seq in dropped:
            return False
        sent_data += 1
        if sent_data in (60, 63, 67, 70, 78):  # five losses in one window of slow start
            dropped.add(s.seq)
            return True
        return False

    h.drop_filter = drop
    assert h.run(transfer_done, max_time=60)
    assert b.received == a.data and len(dropped) == 5
    assert a.conn is not None
    assert a.conn.stats.timeouts == 0
    assert a.conn.stats.fast_retransmits == 1  # one recovery episode
    assert a.conn.stats.retransmitted_segments == 5  # nothing SACKed went again


def test_lost_retransmission_is_sent_again_without_rto() -> None:
    h = make_pair(imp=Impairments(seed=2))
    a, b = h.eps
    a.data = random.Random(6).randbytes(800_000)
    first: dict[int, int] = {}
    n = 0

    def drop(i: int, s: TcpSegment) -> bool:
        nonlocal n
        if i != 0 or not s.payload:
            return False
        first[s.seq] = first.get(s.seq, 0) + 1
        n += 1
        return n == 80 or (first[s.seq] == 2 and len([c for c in first.values() if c > 1]) == 1)

    h.drop_filter = drop
    assert h.run(transfer_done, max_time=60)
    assert b.received == a.data and max(first.values()) == 3
    assert a.conn is not None and a.conn.stats.timeouts == 0


def test_tail_loss_is_probed_before_the_rto() -> None:
    h = make_pair(TcpConfig(tail_loss_probe=True), imp=Impairments(seed=3))
    a, b = h.eps
    a.data = random.Random(7).randbytes(140 * 1448)
    last = (1000 + 1 + len(a.data) - 2 * 1448) & 0xFFFFFFFF
    dropped: list[int] = []

    def drop(i: int, s: TcpSegment) -> bool:
        # lose the last two segments of the transfer the first time they are sent
        if i == 0 and s.payload and ((s.seq - last) & 0xFFFFFFFF) < 3000 and s.seq not in dropped:
            dropped.append(s.seq)
            return True
        return False

    h.drop_filter = drop
    assert h.run(transfer_done, max_time=60)
    assert b.received == a.data and len(dropped) == 2
    assert a.conn is not None and a.conn.stats.timeouts == 0


def test_sack_recovery_through_random_loss_is_exact() -> None:
    for seed, loss in ((21, 0.01), (22, 0.05), (23, 0.2)):
        h = make_pair(imp=Impairments(loss=loss, reorder=0.1, jitter=0.01, seed=seed))
        a, b = h.eps
        rng = random.Random(seed)
        a.data, b.data = rng.randbytes(300_000), rng.randbytes(100_000)
        assert h.run(transfer_done, max_time=1500)
        assert b.received == a.data and a.received == b.data


def test_handover_between_fast_retransmit_trigger_and_send_still_sends_it() -> None:
    a, b, now, flight = pair(10, 10)
    acks = deliver(b, flight[1:], now)
    t = now + 0.02
    for ack in acks[:3]:
        a.handle_segment(ack, t)  # the third duplicate ACK triggers the fast retransmit...
    assert a.in_recovery
    const, cached, delegated, send_data, recv = a.export_state(t)  # ... but the hand-over comes first
    assert delegated.dup_ack_count >= 3
    c = TcpConnection.from_state(a.config, const, cached, delegated, send_data=send_data, recv_buffered=recv, now=t)
    out = c.segments_to_send(t)
    assert [s.seq for s in out if s.payload][:1] == [flight[0].seq]
    assert c.stats.timeouts == 0


def run_with_receiver_handover(h: Harness) -> None:
    """Hand B over in the middle of a recovery: it drops its out-of-order data (reneges on its SACKs)."""
    a, b = h.eps
    done = False

    def step(hh: Harness) -> None:
        nonlocal done
        if not done and a.conn is not None and a.conn.in_recovery and b.conn is not None and b.conn.ooo_bytes:
            hh.handover(1)
            done = True

    assert h.run(transfer_done, max_time=600, on_step=step)
    assert done and b.received == a.data


def test_receiver_reneging_after_handover_is_recovered() -> None:
    h = make_pair(imp=Impairments(loss=0.03, seed=4))
    a, _ = h.eps
    a.data = random.Random(8).randbytes(400_000)
    run_with_receiver_handover(h)


def test_spurious_rto_is_undone_by_the_timestamp_echo() -> None:
    a, b, now, flight = pair(20, 10)
    acks = deliver(b, flight, now)  # everything arrives, but the ACKs are held up past the RTO
    assert acks and a.stats.timeouts == 0
    cwnd = a.cwnd
    t = now
    for _ in range(5):
        nt = a.next_timer()
        assert nt is not None
        t = nt
        a.handle_timer(t)
        a.segments_to_send(t)
        if a.stats.timeouts:
            break
    assert a.stats.timeouts == 1 and a.cwnd < cwnd
    for ack in acks:
        a.handle_segment(ack, t + 0.001)
    assert a.stats.spurious_timeouts == 1 and a.cwnd >= cwnd
    out = a.segments_to_send(t + 0.001)
    top = flight[-1].seq + len(flight[-1].payload)
    assert out and all(((s.seq - top) & 0xFFFFFFFF) < 0x80000000 for s in out)  # new data, no go-back-N


def test_real_rto_is_not_undone() -> None:
    a, b, now, flight = pair(20, 10)
    t = now
    while not a.stats.timeouts:
        nt = a.next_timer()
        assert nt is not None and nt < now + 5
        t = nt
        a.handle_timer(t)
        out = a.segments_to_send(t)
    # everything was lost; the retransmission after the RTO gets through and is ACKed
    acks = deliver(b, out, t + 0.01)
    for ack in acks:
        a.handle_segment(ack, t + 0.02)
    assert a.stats.spurious_timeouts == 0 and a.cwnd <= 2 * len(flight[0].payload)


def test_congestion_avoidance_counts_bytes_so_delayed_acks_do_not_halve_growth() -> None:
    a, b, now, flight = pair(40, 20)
    const, cached, delegated, send_data, recv = a.export_state(now)
    # continue in congestion avoidance: ssthresh below cwnd
    c = TcpConnection.from_state(
        a.config,
        const,
        cached,
        dataclasses.replace(delegated, ssthresh=2 * 1448),
        send_data=send_data,
        recv_buffered=recv,
        now=now,
    )
    cwnd = c.cwnd
    assert cwnd == 20 * len(flight[0].payload)
    acks = deliver(b, flight, now)
    assert len(acks) <= len(flight) // 2 + 1  # the receiver ACKs every second segment
    for ack in acks:
        c.handle_segment(ack, now + 0.02)
    # a whole window ACKed in congestion avoidance: cwnd grew by about one SMSS (not half of one)
    assert cwnd + 0.9 * 1448 <= c.cwnd <= cwnd + 1.1 * 1448
