"""The HTTP/1.1 file server on real asyncio loopback streams."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable
from pathlib import Path

import pytest

from tcpchimney.services import ServiceRegistry, make_handler, pseudo_random_bytes
from tcpchimney.services.http import HttpError, resolve_path, virtual_bytes_count

T = 10.0


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    status_line = await asyncio.wait_for(reader.readline(), T)
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    for _ in range(100):
        line = (await asyncio.wait_for(reader.readline(), T)).decode().rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = b""
    if not head_only:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), T)
    return status, headers, body


class Site:
    """A document root with a file, an index, and a secret next to the root."""

    def __init__(self, tmp: Path) -> None:
        self.outside = tmp / "secret.txt"
        self.outside.write_text("top secret\n")
        self.root = tmp / "www"
        (self.root / "docs").mkdir(parents=True)
        (self.root / "hello.txt").write_text("hello, chimney\n")
        (self.root / "docs" / "index.html").write_text("<h1>docs</h1>\n")
        (self.root / "empty").mkdir()
        (self.root / "big.bin").write_bytes(pseudo_random_bytes(700_000, seed=3))
        (self.root / "escape").symlink_to(self.outside)


async def start(site: Site, reg: ServiceRegistry) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(make_handler("http", reg, root=str(site.root), seed=9), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def finished(reg: ServiceRegistry, n: int) -> None:
    for _ in range(500):
        if len(reg.finished) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("connection not finished")


def test_get_head_404_and_keep_alive_on_one_connection(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await start(site, reg)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        host = f"Host: 127.0.0.1:{port}\r\n"
        # Three requests pipelined on one connection, then one more after the answers.
        writer.write(
            f"GET /hello.txt HTTP/1.1\r\n{host}\r\n"
            f"HEAD /big.bin HTTP/1.1\r\n{host}\r\n"
            f"GET /nope.txt HTTP/1.1\r\n{host}\r\n".encode()
        )
        await writer.drain()
        st, hd, body = await read_response(reader)
        assert (st, body) == (200, b"hello, chimney\n")
        assert hd["content-length"] == "15" and hd["content-type"].startswith("text/plain")
        assert hd["connection"] == "keep-alive"
        st, hd, body = await read_response(reader, head_only=True)
        assert (st, hd["content-length"], body) == (200, "700000", b"")
        st, hd, body = await read_response(reader)
        assert st == 404 and hd["connection"] == "keep-alive"
        writer.write(f"GET /docs/ HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
        await writer.drain()
        st, hd, body = await read_response(reader)
        assert (st, body, hd["connection"]) == (200, b"<h1>docs</h1>\n", "close")
        assert await asyncio.wait_for(reader.read(), T) == b""  # closed after Connection: close
        writer.close()
        await finished(reg, 1)
        r = reg.results("http")[0]
        assert r.requests == 4 and r.status == "done"
        server.close()

    run(main())


def test_large_file_and_virtual_bytes(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await start(site, reg)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        st, hd, body = await read_response(reader)
        assert st == 200 and body == (site.root / "big.bin").read_bytes()
        assert hd["content-type"] == "application/octet-stream"
        st, hd, body = await read_response(reader)
        assert st == 200 and body == pseudo_random_bytes(1_000_000, seed=9)
        writer.write(b"HEAD /bytes/77 HTTP/1.0\r\n\r\n")  # HTTP/1.0: closes after the answer
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), T)
        assert status_line.startswith(b"HTTP/1.1 200")
        rest = await asyncio.wait_for(reader.read(), T)
        assert b"Content-Length: 77\r\n" in rest and rest.endswith(b"\r\n\r\n")  # no body for HEAD
        writer.close()
        await finished(reg, 1)
        assert reg.results()[0].sha256_out == hashlib.sha256(pseudo_random_bytes(1_000_000, seed=9)).hexdigest()
        server.close()

    run(main())


@pytest.mark.parametrize(
    "target",
    ["/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/docs/%2E%2E/%2e%2e/secret.txt", "/escape"],
)
def test_traversal_is_refused(tmp_path: Path, target: str) -> None:
    site = Site(tmp_path)

    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await start(site, reg)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        st, _, body = await read_response(reader)
        assert st in (400, 403, 404)
        assert b"secret" not in body
        writer.close()
        server.close()

    run(main())


def test_errors_methods_and_malformed_requests(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def main() -> None:
        reg = ServiceRegistry()
        server, port = await start(site, reg)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A POST body must be skipped, not read as the next request.
        writer.write(b"POST /hello.txt HTTP/1.1\r\nContent-Length: 9\r\n\r\nGET / XYZGET /empty HTTP/1.1\r\n\r\n")
        await writer.drain()
        st, hd, _ = await read_response(reader)
        assert st == 405 and hd["allow"] == "GET, HEAD"
        st, _, _ = await read_response(reader)
        assert st == 404  # a directory without index.html
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        st, hd, _ = await read_response(reader)
        assert st == 400 and hd["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), T) == b""
        writer.close()
        server.close()

    run(main())


def test_resolve_path_and_virtual_count(tmp_path: Path) -> None:
    site = Site(tmp_path)
    assert resolve_path(site.root, "/hello.txt?x=1") == (site.root / "hello.txt").resolve()
    assert resolve_path(site.root, "/docs").name == "index.html"
    assert resolve_path(site.root, "http://example/hello.txt").name == "hello.txt"
    for bad, status in (("/../secret.txt", 403), ("/a%00b", 400), ("/x\\..\\y", 400), ("/%ff", 400), ("/nope", 404)):
        with pytest.raises(HttpError) as err:
            resolve_path(site.root, bad)
        assert err.value.status == status, bad
    assert virtual_bytes_count("/bytes/12?x") == 12 and virtual_bytes_count("/hello") is None
    with pytest.raises(HttpError):
        virtual_bytes_count("/bytes/-3")
    if os.geteuid() != 0:  # root reads anything: the permission check only means something for other users
        (site.root / "hello.txt").chmod(0)
        with pytest.raises(HttpError):
            resolve_path(site.root, "/hello.txt")
