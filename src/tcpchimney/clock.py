"""Injected time.  Everything that needs "now" or a timer takes a ``Scheduler``.

``VirtualClock`` drives the simulator (time only moves when the clock is run, so runs are deterministic);
``AsyncioScheduler`` drives a real wire on the loop's monotonic clock.  The same stack code runs on both.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol


class TimerHandle:
    """A scheduled callback that can be cancelled."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # A cancelled handle may wait in a heap until its time: let go of what it would have run (often a bound
        # method and the objects in args) so that those are freed now.
        self.callback = _cancelled
        self.args = ()


def _cancelled(*_args: Any) -> None:
    """Stands in for the callback of a cancelled handle (never run: schedulers skip cancelled handles)."""


class Scheduler(Protocol):
    def now(self) -> float: ...

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> TimerHandle: ...

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle: ...


class VirtualClock:
    """A discrete-event scheduler: callbacks run in (time, insertion) order; time jumps between events."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self.events_run = 0
        self._compact_at = 1024  # heap size at which cancelled entries are swept out

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        if when < self._now:
            when = self._now
        handle = TimerHandle(when, callback, args)
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), handle))
        if len(heap) > self._compact_at:
            self._compact()
        return handle

    def _compact(self) -> None:
        """Drop cancelled entries (re-armed timers leave many behind); amortised O(1) per push.

        The list is changed in place because ``run_until`` holds it; the (when, seq) order is unchanged.
        """
        heap = self._heap
        heap[:] = [e for e in heap if not e[2].cancelled]
        heapq.heapify(heap)
        self._compact_at = max(1024, 2 * len(heap))

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.call_at(self._now, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.call_at(self._now + max(0.0, delay), callback, *args)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def step(self) -> bool:
        """Run the next callback; False when nothing is scheduled."""
        heap = self._heap
        while heap:
            when, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            self._now = when
            self.events_run += 1
            handle.callback(*handle.args)
            return True
        return False

    def run_until(self, deadline: float, stop: Callable[[], bool] | None = None) -> None:
        """Run every callback due up to `deadline` (or until `stop()` is true), then set the time to `deadline`."""
        heap = self._heap
        while heap:
            when, _, handle = heap[0]
            if handle.cancelled:
                heapq.heappop(heap)
                continue
            if when > deadline:
                break
            heapq.heappop(heap)
            self._now = when
            self.events_run += 1
            handle.callback(*handle.args)
            if stop is not None and stop():
                return
        self._now = max(self._now, deadline)

    def run_until_idle(self, limit: float = float("inf")) -> None:
        """Run until nothing is scheduled or the virtual time would pass `limit`."""
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > limit:
                return
            self.step()


class AsyncioScheduler:
    """A ``Scheduler`` on a running asyncio loop (monotonic clock): used on a real wire."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_event_loop()

    def now(self) -> float:
        return self._loop.time()

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        handle = _AsyncioTimerHandle(when, callback, args)
        handle._inner = self._loop.call_at(when, _run_unless_cancelled, handle)
        return handle

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        handle = _AsyncioTimerHandle(self._loop.time(), callback, args)
        handle._inner = self._loop.call_soon(_run_unless_cancelled, handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.call_at(self._loop.time() + max(0.0, delay), callback, *args)


class _AsyncioTimerHandle(TimerHandle):
    """Also cancels the asyncio handle, so a cancelled timer leaves the loop's heap.

    (``TimerHandle`` has ``__slots__``, so ``cancel`` cannot be replaced per instance.)"""

    __slots__ = ("_inner",)

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__(when, callback, args)
        self._inner: asyncio.Handle | None = None

    def cancel(self) -> None:
        super().cancel()
        if self._inner is not None:
            self._inner.cancel()


def _run_unless_cancelled(handle: TimerHandle) -> None:
    if not handle.cancelled:
        handle.callback(*handle.args)
