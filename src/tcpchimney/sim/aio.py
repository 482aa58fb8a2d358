"""A deterministic asyncio event loop whose time is a ``VirtualClock``.

``loop.time()`` is ``clock.now()``.  The selector never blocks: whenever asyncio has nothing ready, it runs the
clock's events in order until one of them makes an asyncio callback ready or the next asyncio timer is due, and then
moves the clock to that timer.  Virtual seconds pass in no wall time, and asyncio timers and clock callbacks
interleave in one total order (clock events due at the same instant as an asyncio timer run first).

Exceptions raised by clock callbacks propagate out of ``run_until_complete`` (they are not swallowed by asyncio's
exception handler), so a broken simulation fails loudly.  Real I/O is only polled, never waited for: threads and
executors are not supported (their completion would look like a deadlock).
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from tcpchimney.clock import VirtualClock

T = TypeVar("T")


class SimulationDeadlock(RuntimeError):
    """Asyncio is waiting, but neither asyncio nor the virtual clock has anything scheduled."""


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector (for asyncio's self-pipe) and advances virtual time instead of blocking."""

    def __init__(self, clock: VirtualClock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock
        self._loop: VirtualTimeEventLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or (timeout is not None and timeout <= 0):
            return events
        loop = self._loop
        assert loop is not None
        clock = self._clock
        # asyncio's private queues: the ready deque and the timer heap (head is never cancelled here because
        # BaseEventLoop._run_once pops cancelled heads before calling select()).
        ready = loop._ready  # type: ignore[attr-defined]
        scheduled = loop._scheduled  # type: ignore[attr-defined]
        limit: float | None = scheduled[0]._when if scheduled else None
        while not ready:
            deadline = clock.next_deadline()
            if deadline is None or (limit is not None and deadline > limit):
                break
            clock.step()
        if ready or loop._stopping:  # type: ignore[attr-defined]
            return []
        if limit is not None:
            clock.run_until(limit)  # nothing is due before `limit`: this only moves the time
            return []
        raise SimulationDeadlock("simulation deadlock: nothing scheduled")


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time; see the module docstring."""

    def __init__(self, clock: VirtualClock) -> None:
        selector = _VirtualSelector(clock)
        super().__init__(selector)
        selector._loop = self
        self.clock = clock
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.clock.now()


def run_sim(clock: VirtualClock, coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run ``coro`` on a fresh ``VirtualTimeEventLoop`` over ``clock`` and close the loop.

    ``timeout`` is in virtual seconds; exceeding it raises ``TimeoutError``.  A deadlock (nothing left to run while
    the coroutine still waits) raises ``SimulationDeadlock``.
    """
    loop = VirtualTimeEventLoop(clock)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    # A task that ignores cancellation and waits forever deadlocks: nothing more can be done about it.
    with contextlib.suppress(SimulationDeadlock):
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
