"""A simulated point-to-point Ethernet link with netem-like impairments, driven by a ``VirtualClock``.

Every random decision (loss, duplication, reordering, corruption, jitter) is drawn from the ``random.Random`` given
to the link, in the order frames are transmitted, so the same seed gives the same run byte for byte.

Per-frame cost on the unimpaired path is one heap push on the clock and one callback at delivery time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Literal

from tcpchimney.clock import VirtualClock
from tcpchimney.links.base import FrameReceiver, LinkListener

CaptureFn = Callable[[bytes, float, str], None]
"""``capture(frame, timestamp, direction)``; direction is ``"ab"`` or ``"ba"``.  ``PcapWriter.write`` style sinks
can be adapted with ``lambda frame, ts, _dir: writer.write(frame, ts)``."""


@dataclass(frozen=True, slots=True)
class Impairments:
    """What happens to frames in one direction.  Probabilities are per frame, in ``[0, 1]``.

    - ``delay``: one-way propagation delay in seconds.
    - ``jitter``: a uniform extra delay in ``[0, jitter)`` per frame.  Jitter never reorders frames by itself (a
      frame is never delivered before the one sent ahead of it); use ``reorder`` for that.
    - ``reorder``: probability that a frame is held back by an extra ``reorder_delay`` so later frames overtake it.
    - ``duplicate``: probability that a second identical copy is delivered right after the first.
    - ``corrupt``: probability that one random byte of the frame gets a random non-zero XOR.
    - ``rate_bps``: line rate for serialization delay (FIFO per direction); ``None`` means infinitely fast.
    - ``queue_bytes``: with ``rate_bps``, tail-drop frames that would make the transmit backlog exceed this.
    """

    delay: float = 0.0005
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.002
    corrupt: float = 0.0
    rate_bps: float | None = None
    queue_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if self.delay < 0 or self.jitter < 0 or self.reorder_delay < 0:
            raise ValueError("delay, jitter and reorder_delay must be >= 0")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError("rate_bps must be > 0 or None")
        if self.queue_bytes is not None and self.queue_bytes < 0:
            raise ValueError("queue_bytes must be >= 0 or None")

    @property
    def is_ideal(self) -> bool:
        """Only a fixed delay: the fast path with no random draws."""
        return (
            self.jitter == 0.0
            and self.loss == 0.0
            and self.duplicate == 0.0
            and self.reorder == 0.0
            and self.corrupt == 0.0
            and self.rate_bps is None
        )


@dataclass(slots=True)
class LinkStats:
    """Counters for one direction.  ``frames``/``bytes`` count what was offered to the link."""

    frames: int = 0
    bytes: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0


class SimLinkEnd:
    """One end of a ``SimLink`` (a ``LinkPort``).  It owns the state of the direction that leaves it."""

    __slots__ = (
        "_busy_until",
        "_capture_dir",
        "_ideal",
        "_imp",
        "_last_arrival",
        "_link",
        "_listener",
        "_receiver",
        "direction",
        "name",
        "peer",
        "stats",
    )

    def __init__(self, link: SimLink, name: str, direction: str, impairments: Impairments) -> None:
        self._link = link
        self.name = name
        self.direction = direction  # "ab" for end a, "ba" for end b: the direction of frames transmitted here
        self.peer: SimLinkEnd = self  # set by SimLink once both ends exist
        self.stats = LinkStats()
        self._receiver: FrameReceiver | None = None
        self._listener: LinkListener | None = None
        self._imp = impairments
        self._ideal = impairments.is_ideal
        self._busy_until = 0.0  # when the serializer of this direction is free (rate_bps)
        self._last_arrival = 0.0  # keeps jitter from reordering
        self._capture_dir = direction

    # -- LinkPort -------------------------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return self._link._up

    def set_receiver(self, receiver: FrameReceiver) -> None:
        self._receiver = receiver

    def set_link_listener(self, listener: LinkListener) -> None:
        self._listener = listener

    def transmit(self, frame: bytes) -> None:
        link = self._link
        stats = self.stats
        stats.frames += 1
        stats.bytes += len(frame)
        if not link._up:
            stats.dropped += 1
            return
        clock = link._clock
        if link._capture is not None and link._capture_at == "tx":
            link._capture(frame, clock._now, self.direction)
        if self._ideal:
            clock.call_at(clock._now + self._imp.delay, self.peer._deliver, frame, link._epoch)
            return
        self._transmit_impaired(frame)

    # -- internals -----------------------------------------------------------------------------------------
    def _transmit_impaired(self, frame: bytes) -> None:
        link = self._link
        clock = link._clock
        rng = link._rng
        imp = self._imp
        stats = self.stats
        now = clock._now
        # Serialization (FIFO): the frame leaves the sender when the serializer finishes it.
        if imp.rate_bps is not None:
            start = self._busy_until if self._busy_until > now else now
            if imp.queue_bytes is not None and (start - now) * imp.rate_bps / 8.0 + len(frame) > imp.queue_bytes:
                stats.dropped += 1  # tail drop: the transmit queue is full
                return
            self._busy_until = start + len(frame) * 8.0 / imp.rate_bps
            departure = self._busy_until
        else:
            departure = now
        # Random draws in a fixed order so runs reproduce exactly.
        if imp.loss and rng.random() < imp.loss:
            stats.dropped += 1
            return
        if imp.corrupt and frame and rng.random() < imp.corrupt:
            buf = bytearray(frame)
            buf[rng.randrange(len(buf))] ^= rng.randrange(1, 256)
            frame = bytes(buf)
            stats.corrupted += 1
        arrival = departure + imp.delay
        if imp.jitter:
            arrival += rng.random() * imp.jitter
        if imp.reorder and rng.random() < imp.reorder:
            # Held back: does not move _last_arrival, so later frames may overtake it.
            arrival += imp.reorder_delay
            stats.reordered += 1
        else:
            if arrival < self._last_arrival:
                arrival = self._last_arrival
            self._last_arrival = arrival
        deliver = self.peer._deliver
        epoch = link._epoch
        clock.call_at(arrival, deliver, frame, epoch)
        if imp.duplicate and rng.random() < imp.duplicate:
            stats.duplicated += 1
            clock.call_at(arrival, deliver, frame, epoch)

    def _deliver(self, frame: bytes, epoch: int) -> None:
        # Runs on the receiving end; counters belong to the peer's (sending) direction.
        link = self._link
        stats = self.peer.stats
        if epoch != link._epoch:
            stats.dropped += 1  # the carrier went down while this frame was in flight
            return
        stats.delivered += 1
        if link._capture is not None and link._capture_at == "rx":
            link._capture(frame, link._clock._now, self.peer.direction)
        receiver = self._receiver
        if receiver is not None:
            receiver(frame)

    def _set_impairments(self, impairments: Impairments) -> None:
        self._imp = impairments
        self._ideal = impairments.is_ideal

    def _reset_queue(self) -> None:
        now = self._link._clock._now
        self._busy_until = now
        self._last_arrival = now

    def _notify(self, up: bool) -> None:
        if self._listener is not None:
            self._listener(up)

    def __repr__(self) -> str:
        return f"SimLinkEnd({self.name!r}, up={self.up})"


class SimLink:
    """A full-duplex point-to-point link between ``link.a`` and ``link.b``.

    ``impairments_ab`` applies to frames sent from ``a`` to ``b``; ``impairments_ba`` (default: the same) to the
    reverse direction.  ``capture(frame, timestamp, direction)`` sees every frame offered to the link
    (``capture_at="tx"``, including ones that will be lost) or every frame delivered (``capture_at="rx"``, after
    corruption).
    """

    def __init__(
        self,
        clock: VirtualClock,
        rng: Random,
        impairments_ab: Impairments,
        impairments_ba: Impairments | None = None,
        name: str = "link",
        capture: CaptureFn | None = None,
        capture_at: Literal["tx", "rx"] = "tx",
    ) -> None:
        if capture_at not in ("tx", "rx"):
            raise ValueError("capture_at must be 'tx' or 'rx'")
        self.name = name
        self._clock = clock
        self._rng = rng
        self._up = True
        self._epoch = 0  # bumped on carrier loss: deliveries scheduled in an older epoch are dropped
        self._capture = capture
        self._capture_at = capture_at
        self.a = SimLinkEnd(self, f"{name}.a", "ab", impairments_ab)
        self.b = SimLinkEnd(self, f"{name}.b", "ba", impairments_ba if impairments_ba is not None else impairments_ab)
        self.a.peer = self.b
        self.b.peer = self.a

    @property
    def up(self) -> bool:
        return self._up

    @property
    def stats_ab(self) -> LinkStats:
        return self.a.stats

    @property
    def stats_ba(self) -> LinkStats:
        return self.b.stats

    @property
    def impairments_ab(self) -> Impairments:
        return self.a._imp

    @property
    def impairments_ba(self) -> Impairments:
        return self.b._imp

    def set_capture(self, capture: CaptureFn | None, capture_at: Literal["tx", "rx"] = "tx") -> None:
        if capture_at not in ("tx", "rx"):
            raise ValueError("capture_at must be 'tx' or 'rx'")
        self._capture = capture
        self._capture_at = capture_at

    def set_impairments(self, ab: Impairments, ba: Impairments | None = None) -> None:
        """Change impairments mid-run (``ba`` defaults to ``ab``).  Frames already in flight keep their schedule."""
        self.a._set_impairments(ab)
        self.b._set_impairments(ba if ba is not None else ab)

    def set_up(self, up: bool) -> None:
        """Carrier down/up.  Going down drops every frame in flight; listeners of both ends are called from the
        clock (not synchronously), ``a`` first.  Setting the current state again does nothing."""
        if up == self._up:
            return
        self._up = up
        if not up:
            self._epoch += 1
        self.a._reset_queue()
        self.b._reset_queue()
        clock = self._clock
        clock.call_soon(self.a._notify, up)
        clock.call_soon(self.b._notify, up)

    def __repr__(self) -> str:
        return f"SimLink({self.name!r}, up={self._up})"
