"""SimLink: delays, impairments, carrier changes, determinism."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from tcpchimney.clock import VirtualClock
from tcpchimney.sim.link import Impairments, SimLink


def make(imp: Impairments, seed: int = 1, ba: Impairments | None = None) -> tuple[VirtualClock, SimLink]:
    clock = VirtualClock()
    return clock, SimLink(clock, random.Random(seed), imp, ba)


def collect(clock: VirtualClock, link: SimLink) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
    at_b: list[tuple[float, bytes]] = []
    at_a: list[tuple[float, bytes]] = []
    link.b.set_receiver(lambda f: at_b.append((clock.now(), f)))
    link.a.set_receiver(lambda f: at_a.append((clock.now(), f)))
    return at_a, at_b


def frames(n: int, size: int = 60) -> list[bytes]:
    return [i.to_bytes(4, "big") * (size // 4) for i in range(n)]


def test_ideal_link_delivers_in_order_after_delay_both_ways() -> None:
    clock, link = make(Impairments(delay=0.01), ba=Impairments(delay=0.02))
    at_a, at_b = collect(clock, link)
    sent = frames(5)
    for f in sent:
        link.a.transmit(f)
    link.b.transmit(b"reply")
    clock.run_until(0.005)
    assert at_b == [] and at_a == []
    clock.run_until_idle()
    assert [f for _, f in at_b] == sent
    assert all(t == pytest.approx(0.01) for t, _ in at_b)
    assert at_a == [(pytest.approx(0.02), b"reply")]
    assert link.stats_ab.frames == 5 and link.stats_ab.delivered == 5 and link.stats_ab.bytes == 5 * 60
    assert link.stats_ba.frames == 1 and link.stats_ba.delivered == 1


def test_ends_implement_linkport_shape() -> None:
    _, link = make(Impairments())
    for end in (link.a, link.b):
        assert end.up is True
        assert isinstance(end.name, str) and end.name
    assert link.a.name != link.b.name


def test_no_receiver_is_not_an_error() -> None:
    clock, link = make(Impairments())
    link.a.transmit(b"x" * 20)
    clock.run_until_idle()
    assert link.stats_ab.delivered == 1


def test_rate_serializes_fifo() -> None:
    # 1000-byte frames at 8 Mb/s take 1 ms each to serialize.
    clock, link = make(Impairments(delay=0.0, rate_bps=8_000_000))
    _, at_b = collect(clock, link)
    sent = frames(4, 1000)
    for f in sent:
        link.a.transmit(f)
    clock.run_until_idle()
    assert [f for _, f in at_b] == sent
    assert [t for t, _ in at_b] == pytest.approx([0.001, 0.002, 0.003, 0.004])
    # The serializer is idle again: a later frame only pays its own serialization time.
    link.a.transmit(sent[0])
    start = clock.now() + 1.0
    clock.run_until(start)
    link.a.transmit(sent[0])
    clock.run_until_idle()
    assert at_b[-1][0] == pytest.approx(start + 0.001)


def test_rate_queue_tail_drops() -> None:
    clock, link = make(Impairments(delay=0.0, rate_bps=8_000_000, queue_bytes=2500))
    _, at_b = collect(clock, link)
    for f in frames(5, 1000):
        link.a.transmit(f)
    clock.run_until_idle()
    # Backlog before each frame: 0, 1000, 2000 (+1000 > 2500 -> drop), ...
    assert len(at_b) == 2
    assert link.stats_ab.dropped == 3


def test_loss_all_and_none() -> None:
    clock, link = make(Impairments(loss=1.0))
    _, at_b = collect(clock, link)
    for f in frames(10):
        link.a.transmit(f)
    clock.run_until_idle()
    assert at_b == [] and link.stats_ab.dropped == 10 and link.stats_ab.frames == 10


def test_loss_rate_is_roughly_right() -> None:
    clock, link = make(Impairments(loss=0.2), seed=7)
    _, at_b = collect(clock, link)
    for f in frames(2000):
        link.a.transmit(f)
    clock.run_until_idle()
    assert 300 < link.stats_ab.dropped < 500
    assert len(at_b) + link.stats_ab.dropped == 2000


def test_duplicate_delivers_two_copies() -> None:
    clock, link = make(Impairments(duplicate=1.0))
    _, at_b = collect(clock, link)
    sent = frames(3)
    for f in sent:
        link.a.transmit(f)
    clock.run_until_idle()
    assert [f for _, f in at_b] == [sent[0], sent[0], sent[1], sent[1], sent[2], sent[2]]
    assert link.stats_ab.duplicated == 3 and link.stats_ab.delivered == 6


def test_corrupt_flips_exactly_one_byte() -> None:
    clock, link = make(Impairments(corrupt=1.0))
    _, at_b = collect(clock, link)
    sent = frames(50, 100)
    for f in sent:
        link.a.transmit(f)
    clock.run_until_idle()
    assert link.stats_ab.corrupted == 50
    for (_, got), orig in zip(at_b, sent, strict=True):
        assert len(got) == len(orig)
        assert sum(1 for x, y in zip(got, orig, strict=True) if x != y) == 1


def test_reorder_lets_later_frames_overtake() -> None:
    clock, link = make(Impairments(delay=0.001, reorder=0.3, reorder_delay=0.005), seed=3)
    _, at_b = collect(clock, link)
    sent = frames(200)
    for f in sent:
        link.a.transmit(f)
        clock.run_until(clock.now() + 0.0001)
    clock.run_until_idle()
    got = [f for _, f in at_b]
    assert sorted(got) == sorted(sent)
    assert got != sent
    assert link.stats_ab.reordered > 0


def test_jitter_varies_delay_but_keeps_order() -> None:
    clock, link = make(Impairments(delay=0.001, jitter=0.01), seed=5)
    _, at_b = collect(clock, link)
    sent = frames(100)
    for f in sent:
        link.a.transmit(f)
        clock.run_until(clock.now() + 0.0001)
    clock.run_until_idle()
    assert [f for _, f in at_b] == sent
    times = [t for t, _ in at_b]
    assert times == sorted(times)
    gaps = {round(t2 - t1, 9) for t1, t2 in itertools.pairwise(times)}
    assert len(gaps) > 10  # not a constant delay


def test_carrier_down_drops_in_flight_and_notifies_both_ends_later() -> None:
    clock, link = make(Impairments(delay=0.01))
    _, at_b = collect(clock, link)
    events: list[tuple[str, bool, float]] = []
    link.a.set_link_listener(lambda up: events.append(("a", up, clock.now())))
    link.b.set_link_listener(lambda up: events.append(("b", up, clock.now())))
    link.a.transmit(b"in flight".ljust(60, b"\0"))
    clock.run_until(0.005)
    link.set_up(False)
    assert events == []  # scheduled, not synchronous
    assert not link.a.up and not link.b.up
    link.a.transmit(b"while down".ljust(60, b"\0"))
    clock.run_until(0.1)
    assert at_b == []
    assert events == [("a", False, 0.005), ("b", False, 0.005)]
    assert link.stats_ab.dropped == 2
    link.set_up(True)
    link.set_up(True)  # idempotent: no second notification
    clock.run_until(0.2)
    assert events[2:] == [("a", True, 0.1), ("b", True, 0.1)]
    link.a.transmit(b"after".ljust(60, b"\0"))
    clock.run_until_idle()
    assert [f[:5] for _, f in at_b] == [b"after"]


def test_carrier_flap_while_in_flight_still_drops() -> None:
    clock, link = make(Impairments(delay=0.01))
    _, at_b = collect(clock, link)
    link.a.transmit(b"x" * 60)
    clock.run_until(0.001)
    link.set_up(False)
    clock.run_until(0.002)
    link.set_up(True)
    clock.run_until_idle()
    assert at_b == []


def test_set_impairments_mid_run() -> None:
    clock, link = make(Impairments(delay=0.01))
    _, at_b = collect(clock, link)
    link.a.transmit(b"1" * 60)
    link.set_impairments(Impairments(delay=0.0, loss=1.0), Impairments(delay=0.002))
    link.a.transmit(b"2" * 60)
    clock.run_until_idle()
    assert [f[:1] for _, f in at_b] == [b"1"]  # the frame in flight keeps its schedule
    assert link.impairments_ba.delay == 0.002


def test_capture_tx_and_rx() -> None:
    clock = VirtualClock()
    tx: list[tuple[bytes, float, str]] = []
    link = SimLink(
        clock,
        random.Random(0),
        Impairments(delay=0.01, loss=1.0),
        Impairments(delay=0.02),
        capture=lambda f, t, d: tx.append((f, t, d)),
    )
    link.a.transmit(b"lost" * 15)
    link.b.transmit(b"back" * 15)
    clock.run_until_idle()
    assert tx == [(b"lost" * 15, 0.0, "ab"), (b"back" * 15, 0.0, "ba")]
    rx: list[tuple[bytes, float, str]] = []
    link.set_capture(lambda f, t, d: rx.append((f, t, d)), capture_at="rx")
    link.a.transmit(b"lost" * 15)
    link.b.transmit(b"back" * 15)
    clock.run_until_idle()
    assert rx == [(b"back" * 15, pytest.approx(clock.now()), "ba")]


def test_invalid_impairments_rejected() -> None:
    with pytest.raises(ValueError):
        Impairments(loss=1.5)
    with pytest.raises(ValueError):
        Impairments(delay=-1)
    with pytest.raises(ValueError):
        Impairments(rate_bps=0)


def _run(seed: int) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]], str]:
    imp = Impairments(delay=0.001, jitter=0.002, loss=0.1, duplicate=0.05, reorder=0.1, corrupt=0.05, rate_bps=1e8)
    clock, link = make(imp, seed=seed)
    at_a, at_b = collect(clock, link)
    for i, f in enumerate(frames(300, 200)):
        (link.a if i % 3 else link.b).transmit(f)
        clock.run_until(clock.now() + 0.00005)
    clock.run_until_idle()
    return at_a, at_b, repr((link.stats_ab, link.stats_ba))


def test_same_seed_same_run_byte_for_byte() -> None:
    first = _run(11)
    assert first == _run(11)
    assert first != _run(12)


def test_capture_into_pcap_writer(tmp_path: Path) -> None:
    from tcpchimney.trace.pcap import PcapWriter, read_pcap

    clock = VirtualClock()
    path = tmp_path / "link.pcap"
    with PcapWriter(path) as writer:
        link = SimLink(
            clock,
            random.Random(0),
            Impairments(delay=0.01),
            capture=lambda f, t, _d: writer.write(f, t),
            capture_at="rx",
        )
        sent = frames(3)
        for f in sent:
            link.a.transmit(f)
            clock.run_until(clock.now() + 0.001)
        clock.run_until_idle()
    records = read_pcap(path)
    assert [f for _, f in records] == sent
    assert [t for t, _ in records] == pytest.approx([0.01, 0.011, 0.012])
