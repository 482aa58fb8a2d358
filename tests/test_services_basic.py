"""Echo, discard, sink and source on real asyncio loopback streams (127.0.0.1, ephemeral ports)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tcpchimney.services import (
    ServiceRegistry,
    make_handler,
    pseudo_random_bytes,
    pseudo_random_chunks,
    pseudo_random_sha256,
    start_services,
)
from tcpchimney.services.source import BadRequest, parse_count

T = 10.0  # generous per-operation timeout so a broken service fails instead of hanging


async def _serve(handler: Callable[[Any, Any], Awaitable[None]]) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def _wait_finished(registry: ServiceRegistry, n: int) -> None:
    for _ in range(500):
        if len(registry.finished) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(registry.finished)} of {n} connections finished")


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def test_pseudo_random_is_prefix_stable_and_seeded() -> None:
    big = pseudo_random_bytes(200_000, seed=5)
    assert len(big) == 200_000
    assert pseudo_random_bytes(70_001, seed=5) == big[:70_001]
    assert pseudo_random_bytes(10, seed=6) != big[:10]
    assert pseudo_random_sha256(123_456, seed=5) == hashlib.sha256(big[:123_456]).hexdigest()
    assert pseudo_random_bytes(0) == b""
    assert all(len(c) <= 64 * 1024 for c in pseudo_random_chunks(300_000))
    with pytest.raises(ValueError):
        next(pseudo_random_chunks(-1))


def test_echo_returns_every_byte_and_registers() -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await _serve(make_handler("echo", reg))
        payload = pseudo_random_bytes(300_000, seed=1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.read(), T)  # to EOF: the server closes after our EOF
        await sender
        writer.close()
        assert got == payload
        await _wait_finished(reg, 1)
        (r,) = reg.results("echo")
        assert (r.bytes_in, r.bytes_out, r.status) == (300_000, 300_000, "done")
        assert r.peer.startswith("127.0.0.1:")
        server.close()
        await server.wait_closed()

    run(main())


def test_discard_counts_and_sends_nothing() -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await _serve(make_handler("discard", reg))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x" * 50_000)
        await writer.drain()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), T) == b""
        writer.close()
        await _wait_finished(reg, 1)
        assert reg.results()[0].bytes_in == 50_000
        assert reg.summary()["totals"]["discard"]["bytes_in"] == 50_000
        server.close()

    run(main())


@pytest.mark.parametrize("size", [0, 1, 65_536, 250_001])
def test_sink_answers_count_and_sha256_after_half_close(size: int) -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await _serve(make_handler("sink", reg))
        data = pseudo_random_bytes(size, seed=size)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        line = await asyncio.wait_for(reader.readline(), T)
        assert await asyncio.wait_for(reader.read(), T) == b""  # then the server closes
        writer.close()
        digest = hashlib.sha256(data).hexdigest()
        assert line == f"{size} {digest}\n".encode()
        await _wait_finished(reg, 1)
        r = reg.results("sink")[0]
        assert (r.bytes_in, r.sha256_in, r.status) == (size, digest, "done")
        server.close()

    run(main())


def test_sink_survives_a_client_that_closes_completely() -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await _serve(make_handler("sink", reg))
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"abc")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await _wait_finished(reg, 1)
        r = reg.results()[0]
        assert r.bytes_in == 3 and r.sha256_in == hashlib.sha256(b"abc").hexdigest()
        server.close()

    run(main())


@pytest.mark.parametrize("size", [0, 5, 1_000_000])
def test_source_sends_n_seeded_bytes_then_closes(size: int) -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await _serve(make_handler("source", reg, seed=42))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"{size}\n".encode())
        await writer.drain()
        got = await asyncio.wait_for(reader.read(), T)
        writer.close()
        assert got == pseudo_random_bytes(size, seed=42)
        await _wait_finished(reg, 1)
        r = reg.results("source")[0]
        assert r.bytes_out == size
        assert r.sha256_out == hashlib.sha256(got).hexdigest()
        assert r.extra["requested"] == size
        server.close()

    run(main())


def test_source_refuses_a_bad_count_line() -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await _serve(make_handler("source", reg))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"lots\n")
        await writer.drain()
        got = await asyncio.wait_for(reader.read(), T)
        writer.close()
        assert got.startswith(b"error:")
        await _wait_finished(reg, 1)
        assert reg.results()[0].status.startswith("error")
        assert reg.summary()["totals"]["source"]["errors"] == 1
        server.close()

    run(main())


def test_parse_count() -> None:
    assert parse_count(b"17\r\n") == 17
    for bad in (b"", b"-1\n", b"1e3\n", b"99999999999999999999999\n", b"12 34\n"):
        with pytest.raises(BadRequest):
            parse_count(bad)


def test_registry_keeps_open_and_bounded_finished() -> None:
    class W:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("10.0.0.1", 1234) if name == "peername" else None

    reg = ServiceRegistry(keep=3)
    results = [reg.start("echo", W()) for _ in range(5)]
    assert len(reg.open) == 5 and results[0].peer == "10.0.0.1:1234" and results[0].local == "?"
    for r in results[:4]:
        reg.finish(r)
    reg.finish(results[0], "ignored: already finished")
    assert [r.id for r in reg.results()] == [2, 3, 4, 5]
    assert reg.get(5) is results[4] and reg.get(1) is None
    assert reg.summary() == {
        "open": 1,
        "totals": {"echo": {"connections": 4, "errors": 0, "bytes_in": 0, "bytes_out": 0}},
    }
    with pytest.raises(ValueError):
        make_handler("chargen", reg)


def test_start_services_skips_disabled_ports() -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        started: list[int] = []
        servers: list[asyncio.AbstractServer] = []

        async def start(handler: Callable[[Any, Any], Awaitable[None]], port: int) -> asyncio.AbstractServer:
            started.append(port)
            srv = await asyncio.start_server(handler, "127.0.0.1", 0)
            servers.append(srv)
            return srv

        out = await start_services(start, {"echo": 7, "discard": 0, "http": 80}, reg, http_root=".")
        assert sorted(out) == ["echo", "http"] and started == [7, 80]
        for s in servers:
            s.close()

    run(main())
