"""A tiny deterministic back-to-back harness for the TCP engine (no other project code needed).

Two ``Endpoint``s (each wraps one ``TcpConnection`` plus a scripted application) exchange ``TcpSegment`` values
through a virtual-time heap with seeded loss, duplication and reordering.  The harness checks, as it runs, that
each application only ever reads a prefix of what the other side wrote (no loss, no duplication, no corruption)
and that the right edge of the window each side advertises never moves left, also across hand-overs.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpchimney.tcp.engine import (
    TcpConfig,
    TcpConnection,
    TcpEvent,
    TcpReset,
    TcpTimedOut,
)
from tcpchimney.tcp.state import TcpState, seq_diff
from tcpchimney.wire.tcp import ACK, RST, SYN, TcpSegment


@dataclass
class Impairments:
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0  # probability a segment gets extra delay
    delay: float = 0.010  # one-way base delay (s)
    jitter: float = 0.0  # uniform extra delay for reordered segments (s)
    seed: int = 0


@dataclass
class Endpoint:
    name: str
    config: TcpConfig
    conn: TcpConnection | None = None
    data: bytes = b""  # what the application writes, in order
    written: int = 0
    write_chunk: int = 65536
    send_cap: int = 1 << 20  # the app keeps at most this many unacked bytes queued
    close_when_done: bool = False
    close_called: bool = False
    close_at: float = 0.0  # ... but not before this time
    reading: bool = True
    read_chunk: int = -1
    read_interval: float = 0.0  # > 0: a slow reader, one read(read_chunk) per interval
    next_read: float = 0.0
    received: bytearray = field(default_factory=bytearray)
    events: list[TcpEvent] = field(default_factory=list)
    sent_segments: list[TcpSegment] = field(default_factory=list)
    keep_sent: bool = False
    adv_edge: int | None = None  # highest right edge advertised (32-bit), never to move left
    handovers: int = 0
    clock_offset: float = 0.0  # this owner's clock = harness time + offset (a new owner gets a new clock)
    listen_iss: int | None = None  # when set and conn is None, the first SYN is accepted
    states_seen: set[TcpState] = field(default_factory=set)

    def event_types(self) -> list[type]:
        return [type(e) for e in self.events]


class Harness:
    def __init__(self, a: Endpoint, b: Endpoint, imp: Impairments | None = None, now: float = 0.0) -> None:
        self.eps = [a, b]
        self.imp = imp or Impairments()
        self.rng = random.Random(self.imp.seed)
        self.now = now
        self._heap: list[tuple[float, int, int, TcpSegment]] = []
        self._n = 0
        self.delivered = 0
        self.drop_filter: Callable[[int, TcpSegment], bool] | None = None  # (from_index, seg) -> drop?
        self.tap: Callable[[int, TcpSegment], None] | None = None
        self.new_clock_on_handover = True

    # ---- wiring
    def peer(self, i: int) -> Endpoint:
        return self.eps[1 - i]

    def transmit(self, i: int, seg: TcpSegment, *, impair: bool = True) -> None:
        ep = self.eps[i]
        self._check_edge(ep, seg)
        if ep.keep_sent:
            ep.sent_segments.append(seg)
        if self.tap is not None:
            self.tap(i, seg)
        if self.drop_filter is not None and self.drop_filter(i, seg):
            return
        imp = self.imp
        rng = self.rng
        copies = 1
        if impair:
            if imp.loss and rng.random() < imp.loss:
                return
            if imp.dup and rng.random() < imp.dup:
                copies = 2
        for _ in range(copies):
            t = self.now + imp.delay
            if impair and imp.reorder and rng.random() < imp.reorder:
                t += rng.random() * imp.jitter
            self._n += 1
            heapq.heappush(self._heap, (t, self._n, 1 - i, seg))

    def inject(self, to: int, seg: TcpSegment, at: float | None = None) -> None:
        self._n += 1
        heapq.heappush(self._heap, (self.now if at is None else at, self._n, to, seg))

    def _check_edge(self, ep: Endpoint, seg: TcpSegment) -> None:
        if seg.flags & RST or not seg.flags & ACK or ep.conn is None:
            return
        scale = 0 if seg.flags & SYN else ep.conn.rcv_wscale
        edge = (seg.ack + (seg.window << scale)) & 0xFFFFFFFF
        if ep.adv_edge is not None:
            assert seq_diff(edge, ep.adv_edge) >= 0, f"{ep.name}: advertised right edge moved left"
            if seq_diff(edge, ep.adv_edge) <= 0:
                return
        ep.adv_edge = edge

    # ---- application
    def _app(self, i: int) -> bool:
        """Run endpoint i's application once; True if it read anything."""
        ep = self.eps[i]
        c = ep.conn
        if c is None:
            return False
        for ev in c.pop_events():
            ep.events.append(ev)
        st = c.state
        ep.states_seen.add(st)
        if st in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.SYN_SENT, TcpState.SYN_RCVD):
            while ep.written < len(ep.data) and c.unacked_send_bytes < ep.send_cap and not ep.close_called:
                n = min(ep.write_chunk, len(ep.data) - ep.written, ep.send_cap - c.unacked_send_bytes)
                c.send(ep.data[ep.written : ep.written + n])
                ep.written += n
            if (
                ep.close_when_done
                and not ep.close_called
                and ep.written == len(ep.data)
                and self.now >= ep.close_at
                and st in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)
            ):
                ep.close_called = True
                c.close()
        if ep.reading and c.readable and self.now >= ep.next_read:
            if ep.read_interval > 0:
                ep.next_read = self.now + ep.read_interval
            got = c.read(ep.read_chunk)
            peer = self.peer(i)
            off = len(ep.received)
            assert got == peer.data[off : off + len(got)], f"{ep.name}: received bytes differ from what was sent"
            ep.received += got
            return True
        return False

    def pump(self) -> None:
        for _ in range(100_000):
            busy = False
            for i in (0, 1):
                busy = self._app(i) or busy
                c = self.eps[i].conn
                if c is None:
                    continue
                segs = c.segments_to_send(self.now + self.eps[i].clock_offset)
                for s in segs:
                    self.transmit(i, s)
                busy = busy or bool(segs)
                busy = self._app(i) or busy
            if not busy:
                break

    # ---- hand-over
    def handover(self, i: int) -> None:
        ep = self.eps[i]
        old = ep.conn
        assert old is not None
        for ev in old.pop_events():
            ep.events.append(ev)
        const, cached, deleg, send_data, recv_buffered = old.export_state(self.now + ep.clock_offset)
        for s in old.segments_to_send(self.now + ep.clock_offset):  # the flushed delayed ACK
            self.transmit(i, s)
        # the exported send data is exactly the unacknowledged tail of what the app wrote
        assert send_data == ep.data[ep.written - len(send_data) : ep.written], f"{ep.name}: exported send data"
        if self.new_clock_on_handover:
            ep.clock_offset = self.rng.uniform(0.0, 100_000.0)
        new = TcpConnection.from_state(
            ep.config,
            const,
            cached,
            deleg,
            send_data=send_data,
            recv_buffered=recv_buffered,
            now=self.now + ep.clock_offset,
            send_closed=old.send_closed,
        )
        assert new.state == old.state
        assert new.readable == len(recv_buffered)
        ep.conn = new
        ep.handovers += 1

    # ---- main loop
    def next_time(self) -> float | None:
        t = self._heap[0][0] if self._heap else None
        for ep in self.eps:
            if ep.close_when_done and not ep.close_called and ep.close_at > self.now and (t is None or ep.close_at < t):
                t = ep.close_at  # the application's own timer
            c = ep.conn
            if (
                c is not None
                and ep.reading
                and c.readable
                and ep.next_read > self.now
                and (t is None or ep.next_read < t)
            ):
                t = ep.next_read  # the slow reader's next read
            if ep.conn is not None:
                x = ep.conn.next_timer()
                if x is not None:
                    x -= ep.clock_offset
                    if t is None or x < t:
                        t = x
        return t

    def step(self) -> bool:
        """Advance to the next event and process it; False when nothing is left to do."""
        self.pump()
        t = self.next_time()
        if t is None:
            return False
        if t > self.now:
            self.now = t
        heap = self._heap
        if heap and heap[0][0] <= self.now:
            _, _, to, seg = heapq.heappop(heap)
            ep = self.eps[to]
            c = ep.conn
            if c is not None:
                c.handle_segment(seg, self.now + ep.clock_offset)
                self.delivered += 1
            elif ep.listen_iss is not None and seg.flags & SYN and not seg.flags & (ACK | RST):
                # a passive opener: the first SYN creates the connection
                ep.conn = TcpConnection.accept(ep.config, seg, ep.listen_iss, self.now + ep.clock_offset)
                self.delivered += 1
        for ep in self.eps:
            c = ep.conn
            if c is not None:
                x = c.next_timer()
                local = self.now + ep.clock_offset
                if x is not None and x <= local + 1e-6:  # float slack: offsets are large
                    c.handle_timer(max(local, x))
        self.pump()
        return True

    def advance(self, to: float, max_steps: int = 1_000_000) -> None:
        """Process everything due up to time ``to`` (nothing later), then set the clock to ``to``."""
        for _ in range(max_steps):
            self.pump()
            t = self.next_time()
            if t is None or t > to:
                break
            self.step()
        self.now = max(self.now, to)

    def run(
        self,
        until: Callable[[Harness], bool] | None = None,
        max_time: float = 600.0,
        max_steps: int = 2_000_000,
        on_step: Callable[[Harness], None] | None = None,
    ) -> bool:
        """Run until ``until`` holds (True) or time/steps run out or nothing is left (False unless ``until``)."""
        for _ in range(max_steps):
            if until is not None and until(self):
                return True
            if on_step is not None:
                on_step(self)
            if not self.step():
                return until is None or until(self)
            if self.now > max_time:
                return until is not None and until(self)
        return False


def make_pair(
    ca: TcpConfig | None = None,
    cb: TcpConfig | None = None,
    imp: Impairments | None = None,
    *,
    iss_a: int = 1000,
    iss_b: int = 5_000_000,
    port_a: int = 40000,
    port_b: int = 80,
) -> Harness:
    """A connects to B (B accepts the first SYN it gets)."""
    ca = ca or TcpConfig()
    cb = cb or TcpConfig()
    a = Endpoint("A", ca)
    b = Endpoint("B", cb)
    h = Harness(a, b, imp)
    a.conn = TcpConnection.connect(ca, port_a, port_b, iss_a, h.now)
    b.listen_iss = iss_b
    return h


def established(h: Harness) -> bool:
    return all(ep.conn is not None and ep.conn.state == TcpState.ESTABLISHED for ep in h.eps)


def transfer_done(h: Harness) -> bool:
    a, b = h.eps
    return len(b.received) == len(a.data) and len(a.received) == len(b.data)


def aborted(ep: Endpoint) -> bool:
    return any(isinstance(e, (TcpReset, TcpTimedOut)) for e in ep.events)
