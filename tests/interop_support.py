"""Shared pieces of the real-wire interop tests (tests/test_interop_*.py): skip rule, world, churn, wire checks."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from netns_support import IN_CI as IN_CI  # re-exported for the interop tests
from netns_support import needs, netns_missing
from tcpchimney.chimney.constants import UploadReason
from tcpchimney.scenario.wire_world import WireWorld
from tcpchimney.services import ServiceRegistry, start_services
from tcpchimney.targets.softtoe import RetrieveForbidden
from tcpchimney.trace.tshark import WireAnalysis, analyze

T = TypeVar("T")

SERVICE_PORTS = {"echo": 7, "discard": 9, "sink": 5001, "source": 5002, "http": 8080}


def skip_reason() -> str | None:
    if (missing := netns_missing()) is not None:
        return missing
    if shutil.which("tshark") is None:
        return "needs tshark (apt-get install tshark)"
    if shutil.which("nft") is None:
        return "needs nft (apt-get install nftables)"
    return None


NETNS = needs("real wire", skip_reason())

LINKS = pytest.mark.parametrize("link", ["tap", "veth"])


def run(coro: Awaitable[T], timeout: float = 120.0) -> T:
    """Run one test coroutine on a fresh loop with a wall-clock bound."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def with_services(world: WireWorld, **kwargs: Any) -> ServiceRegistry:
    registry = ServiceRegistry()
    await start_services(lambda h, p: world.host.start_server(h, p), SERVICE_PORTS, registry, **kwargs)
    return registry


@dataclass
class Churn:
    """Counts of what a ``churn`` task did."""

    retrieves: int = 0
    terminates: int = 0
    refused: int = 0
    rounds: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


async def churn(
    world: WireWorld,
    stop: asyncio.Event,
    *,
    interval: float = 0.15,
    reasons: Iterable[UploadReason] = (UploadReason.LOW_ACTIVITY, UploadReason.UPLOAD_REQUESTED),
    host_terminate_every: int = 3,
    max_rounds: int = 2000,
) -> Churn:
    """Until ``stop``: every ``interval`` make the NIC request retrieval of each offloaded connection (cycling
    ``reasons``); every ``host_terminate_every``-th round the host terminates them instead.  The policy then
    offloads them again, so each connection moves between host and NIC many times mid-transfer."""
    out = Churn()
    cycle = list(reasons)
    for n in range(max_rounds):
        if stop.is_set():
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            break
        out.rounds += 1
        for sock in world.offloaded():
            handle = world.host.offload_handle(sock)
            if handle is None:
                continue
            if host_terminate_every and n % host_terminate_every == host_terminate_every - 1:
                world.host.terminate(sock, "test")
                out.terminates += 1
                continue
            reason = cycle[(n + out.retrieves) % len(cycle)]
            try:
                world.nic.request_retrieve(handle, reason)
            except (RetrieveForbidden, KeyError):
                out.refused += 1
                continue
            out.retrieves += 1
            out.reasons[reason.name] = out.reasons.get(reason.name, 0) + 1
    return out


async def churning(world: WireWorld, body: Callable[[], Awaitable[T]], **kwargs: Any) -> tuple[T, Churn]:
    """Run ``body()`` while ``churn`` runs; stop the churn when the body is done."""
    stop = asyncio.Event()
    task = asyncio.create_task(churn(world, stop, **kwargs))
    try:
        result = await body()
    finally:
        stop.set()
        counts = await task
    return result, counts


def wire_check(pcap: str, ours: str, *, allow_rst: bool = False) -> WireAnalysis:
    """tshark's verdict on a capture; fails the test on any problem."""
    res = analyze(pcap, ours)
    assert res.packets_from_ours > 0, "nothing from our stack in the capture"
    problems = res.problems(allow_rst=allow_rst)
    assert not problems, "; ".join(problems)
    return res


def assert_clean(world: WireWorld) -> None:
    """No contract violations recorded by the mediator or the host."""
    assert world.host.violations == [], world.host.violations[:5]
    assert list(world.host.chimney.violations) == [], list(world.host.chimney.violations)[:5]
