"""asyncio-style streams on top of ``TcpSocket`` (``open_connection`` / ``start_server``).

Futures belong to the running asyncio loop: on a real wire the stack runs on an ``AsyncioScheduler``, in
simulation on ``sim.aio.VirtualTimeEventLoop`` whose time is the ``VirtualClock``'s.  Socket callbacks resolve the
futures; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tcpchimney.host.sockets import Listener, TcpSocket

if TYPE_CHECKING:
    from tcpchimney.host.stack import HostStack

DRAIN_HIGH_WATER = 256 * 1024


class _Waiter:
    """One pending future that socket callbacks wake (all waiters on a stream share it)."""

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None

    def wake(self) -> None:
        fut = self._fut
        if fut is not None:
            self._fut = None
            if not fut.done():
                fut.set_result(None)

    async def wait(self) -> None:
        if self._fut is None or self._fut.done():
            self._fut = asyncio.get_running_loop().create_future()
        await self._fut


class StreamReader:
    """The reading half: ``read``, ``readexactly``, ``readline``, ``readuntil``, ``at_eof``."""

    def __init__(self, sock: TcpSocket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._waiter = _Waiter()

    def _fill(self) -> None:
        data = self._sock.read()
        if data:
            self._buf += data

    def _done(self) -> bool:
        return self._sock.at_eof

    def _error(self) -> None:
        reason = self._sock.closed_reason
        if reason in ("reset", "timeout") and not self._buf and self._sock.readable == 0:
            if reason == "reset":
                raise ConnectionResetError("connection reset by peer")
            raise TimeoutError("connection timed out")

    def at_eof(self) -> bool:
        self._fill()
        return not self._buf and self._done()

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if n < 0:
            while True:
                self._fill()
                if self._done():
                    break
                self._error()
                await self._waiter.wait()
            out = bytes(self._buf)
            self._buf.clear()
            return out
        while True:
            self._fill()
            if self._buf:
                out = bytes(self._buf[:n])
                del self._buf[:n]
                return out
            if self._done():
                return b""
            self._error()
            await self._waiter.wait()

    async def readexactly(self, n: int) -> bytes:
        while True:
            self._fill()
            if len(self._buf) >= n:
                out = bytes(self._buf[:n])
                del self._buf[:n]
                return out
            if self._done():
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, n)
            self._error()
            await self._waiter.wait()

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        start = 0
        while True:
            self._fill()
            i = self._buf.find(separator, start)
            if i >= 0:
                end = i + len(separator)
                out = bytes(self._buf[:end])
                del self._buf[:end]
                return out
            start = max(0, len(self._buf) - len(separator) + 1)
            if self._done():
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, None)
            self._error()
            await self._waiter.wait()

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial


class StreamWriter:
    """The writing half: ``write``, ``drain``, ``close``, ``wait_closed``, ``get_extra_info``."""

    def __init__(self, sock: TcpSocket, reader: StreamReader) -> None:
        self._sock = sock
        self._reader = reader
        self._waiter = _Waiter()
        self._closed = asyncio.get_running_loop().create_future()

    @property
    def socket(self) -> TcpSocket:
        return self._sock

    def write(self, data: bytes) -> None:
        self._sock.write(data)

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self._sock.write(line)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._sock.close()

    async def drain(self) -> None:
        while self._sock.send_buffered > DRAIN_HIGH_WATER:
            reason = self._sock.closed_reason
            if reason is not None:
                if reason != "closed":
                    raise ConnectionResetError(f"connection {reason}")
                return
            await self._waiter.wait()

    def close(self) -> None:
        self._sock.close()
        self._check_closed()

    def is_closing(self) -> bool:
        return self._sock.connection.app_closed or self._sock.closed_reason is not None

    async def wait_closed(self) -> None:
        self._check_closed()
        await asyncio.shield(self._closed)

    def _check_closed(self) -> None:
        # "Closed" for the writer: our FIN is acknowledged (nothing of ours left in flight), or the connection is gone.
        done = self._sock.closed_reason is not None or (self.is_closing() and self._sock.send_buffered == 0)
        if done and not self._closed.done():
            self._closed.set_result(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._sock.remote_address
        if name == "sockname":
            return self._sock.local_address
        if name == "socket":
            return self._sock
        return default


def _attach(sock: TcpSocket) -> tuple[StreamReader, StreamWriter]:
    reader = StreamReader(sock)
    writer = StreamWriter(sock, reader)

    def readable() -> None:
        reader._waiter.wake()

    def writable() -> None:
        writer._waiter.wake()
        writer._check_closed()

    def closed(_reason: str) -> None:
        reader._waiter.wake()
        writer._waiter.wake()
        writer._check_closed()

    sock.on_readable = readable
    sock.on_writable = writable
    sock.on_closed = closed
    return reader, writer


async def open_connection(host: HostStack, ip: str, port: int) -> tuple[StreamReader, StreamWriter]:
    loop = asyncio.get_running_loop()
    sock = host.connect(ip, port)
    fut: asyncio.Future[None] = loop.create_future()

    def connected() -> None:
        if not fut.done():
            fut.set_result(None)

    def failed(reason: str) -> None:
        if not fut.done():
            exc: Exception = (
                ConnectionRefusedError(f"connect to {ip}:{port} refused")
                if reason == "reset"
                else TimeoutError(f"connect to {ip}:{port} timed out")
                if reason == "timeout"
                else ConnectionError(f"connect to {ip}:{port} failed: {reason}")
            )
            fut.set_exception(exc)

    sock.on_connected = connected
    sock.on_closed = failed
    await fut
    return _attach(sock)


class Server:
    """What ``start_server`` returns: ``close()``, ``wait_closed()``, ``port``, and ``async with``."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.port = listener.port
        self._tasks: set[asyncio.Task[Any]] = set()

    def close(self) -> None:
        self._listener.close()

    def is_serving(self) -> bool:
        return not self._listener.closed

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    host: HostStack,
    client_connected_cb: Callable[[StreamReader, StreamWriter], Awaitable[None] | None],
    port: int,
    backlog: int = 128,
) -> Server:
    loop = asyncio.get_running_loop()
    server: Server

    def on_accept(sock: TcpSocket) -> None:
        reader, writer = _attach(sock)
        result = client_connected_cb(reader, writer)
        if inspect.isawaitable(result):
            task = loop.create_task(_as_coro(result))
            server._tasks.add(task)
            task.add_done_callback(server._tasks.discard)

    server = Server(host.listen(port, on_accept, backlog))
    return server


async def _as_coro(aw: Awaitable[None]) -> None:
    await aw
