"""The asyncio streams API of the host, in simulation (``sim.aio.VirtualTimeEventLoop`` on the VirtualClock)."""

from __future__ import annotations

import asyncio

import pytest

from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.sim.aio import run_sim
from test_host_support import HOST_IP, PEER_IP, make_pair, pattern


async def _echo(reader, writer) -> None:  # type: ignore[no-untyped-def]
    while True:
        line = await reader.readline()
        if not line:
            break
        writer.write(line.upper())
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("offload", [False, True])
def test_echo_server_and_client(offload: bool) -> None:
    pair = make_pair(policy=OffloadPolicy(enabled=offload, offload_after=0.0))

    async def main() -> list[bytes]:
        server = await pair.peer.start_server(_echo, 7)
        reader, writer = await pair.host.open_connection(PEER_IP, 7)
        assert writer.get_extra_info("peername") == (PEER_IP, 7)
        assert writer.get_extra_info("sockname")[0] == HOST_IP
        got = []
        for i in range(5):
            writer.write(f"line {i}\n".encode())
            await writer.drain()
            got.append(await reader.readline())
        writer.close()
        await writer.wait_closed()
        assert await reader.read() == b""
        assert reader.at_eof()
        server.close()
        await server.wait_closed()
        return got

    got = run_sim(pair.clock, main(), timeout=30.0)
    assert got == [f"LINE {i}\n".encode() for i in range(5)]
    assert pair.violations() == []
    if offload:
        assert pair.host.stats["offloads"] >= 1


def test_bulk_readexactly_with_offload_in_the_middle() -> None:
    pair = make_pair()
    blob = pattern(500_000, 31)

    async def sender(reader, writer) -> None:  # type: ignore[no-untyped-def]
        for i in range(0, len(blob), 50_000):
            writer.write(blob[i : i + 50_000])
            await writer.drain()
        writer.close()

    async def main() -> bytes:
        await pair.peer.start_server(sender, 9000)
        reader, writer = await pair.host.open_connection(PEER_IP, 9000)
        first = await reader.readexactly(100_000)
        pair.host.offload(writer.get_extra_info("socket"))
        rest = await reader.read()
        with pytest.raises(asyncio.IncompleteReadError):
            await reader.readexactly(1)
        return first + rest

    assert run_sim(pair.clock, main(), timeout=60.0) == blob
    assert pair.host.stats["offloads"] == 1
    assert pair.violations() == []


def test_open_connection_refused() -> None:
    pair = make_pair()

    async def main() -> None:
        with pytest.raises(ConnectionRefusedError):
            await pair.host.open_connection(PEER_IP, 1)

    run_sim(pair.clock, main(), timeout=10.0)
