"""VirtualTimeEventLoop: asyncio on virtual time, interleaved with VirtualClock callbacks."""

from __future__ import annotations

import asyncio

import pytest

from tcpchimney.clock import AsyncioScheduler, VirtualClock
from tcpchimney.sim.aio import SimulationDeadlock, VirtualTimeEventLoop, run_sim
from tcpchimney.sim.link import Impairments
from tcpchimney.sim.network import SimNetwork


def test_sleep_advances_virtual_time_only() -> None:
    clock = VirtualClock()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        assert loop.time() == clock.now()
        await asyncio.sleep(3600.0)
        return loop.time()

    assert run_sim(clock, main(), timeout=7200.0) == 3600.0
    assert clock.now() == 3600.0


def test_clock_callbacks_and_coroutines_interleave_in_time_order() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []
    for t in (0.5, 1.5, 2.5):
        clock.call_at(t, lambda t=t: log.append((f"clock{t}", clock.now())))

    async def worker(name: str, period: float, n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(period)
            log.append((name, clock.now()))

    async def main() -> None:
        await asyncio.gather(worker("w1", 1.0, 3), worker("w2", 0.7, 3))

    run_sim(clock, main(), timeout=10.0)
    times = [t for _, t in log]
    assert times == sorted(times)
    names = [n for n, _ in log]
    assert names == ["clock0.5", "w2", "w1", "w2", "clock1.5", "w1", "w2", "clock2.5", "w1"]


def test_future_resolved_by_clock_event() -> None:
    clock = VirtualClock()

    async def main() -> tuple[int, float]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        clock.call_later(2.0, fut.set_result, 7)
        value = await fut
        return value, clock.now()

    assert run_sim(clock, main(), timeout=10.0) == (7, 2.0)


def test_virtual_timeout_raises_timeout_error() -> None:
    clock = VirtualClock()

    async def main() -> None:
        await asyncio.sleep(100.0)

    with pytest.raises(TimeoutError):
        run_sim(clock, main(), timeout=5.0)
    assert clock.now() == pytest.approx(5.0)


def test_deadlock_is_reported_not_hung() -> None:
    clock = VirtualClock()

    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    loop = VirtualTimeEventLoop(clock)
    try:
        with pytest.raises(SimulationDeadlock, match="simulation deadlock: nothing scheduled"):
            loop.run_until_complete(main())
    finally:
        loop.close()
    assert issubclass(SimulationDeadlock, RuntimeError)


def test_exception_in_clock_callback_propagates() -> None:
    clock = VirtualClock()

    def boom() -> None:
        raise ValueError("boom")

    clock.call_at(1.0, boom)

    async def main() -> None:
        await asyncio.sleep(2.0)

    with pytest.raises(ValueError, match="boom"):
        run_sim(clock, main(), timeout=10.0)


def test_asyncio_scheduler_on_virtual_loop_uses_virtual_time() -> None:
    clock = VirtualClock()

    async def main() -> list[float]:
        sched = AsyncioScheduler(asyncio.get_running_loop())
        fired: list[float] = []
        done = asyncio.Event()
        sched.call_later(1.25, lambda: fired.append(sched.now()))
        sched.call_later(1.5, lambda: fired.append(-1.0)).cancel()
        sched.call_soon(lambda: fired.append(-2.0)).cancel()
        sched.call_later(2.0, done.set)
        await done.wait()
        return fired

    assert run_sim(clock, main(), timeout=10.0) == [1.25]


def _ping_pong(seed: int) -> list[tuple[float, bytes]]:
    """Two coroutines exchange frames over a lossy SimLink, retrying on a virtual timer."""
    net = SimNetwork(seed)
    link = net.link(Impairments(delay=0.003, jitter=0.001, loss=0.3))
    log: list[tuple[float, bytes]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        inbox_b: asyncio.Queue[bytes] = asyncio.Queue()
        inbox_a: asyncio.Queue[bytes] = asyncio.Queue()
        link.b.set_receiver(inbox_b.put_nowait)
        link.a.set_receiver(inbox_a.put_nowait)

        async def echo() -> None:
            while True:
                frame = await inbox_b.get()
                log.append((loop.time(), b"b<" + frame))
                link.b.transmit(frame)

        echo_task = asyncio.create_task(echo())
        for i in range(20):
            frame = i.to_bytes(2, "big") * 30
            while True:
                link.a.transmit(frame)
                try:
                    got = await asyncio.wait_for(inbox_a.get(), 0.02)
                except TimeoutError:
                    log.append((loop.time(), b"retry"))
                    continue
                log.append((loop.time(), b"a<" + got))
                if got == frame:
                    break
        echo_task.cancel()

    run_sim(net.clock, main(), timeout=60.0)
    return log


def test_two_runs_are_identical() -> None:
    first = _ping_pong(3)
    assert any(entry == b"retry" for _, entry in first)  # the loss path was exercised
    assert first == _ping_pong(3)
    assert first != _ping_pong(4)
