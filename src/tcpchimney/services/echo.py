"""Echo (RFC 862, port 7): every byte received is sent back; the connection closes after the peer's EOF."""

from __future__ import annotations

from typing import Any

from tcpchimney.services import ServiceRegistry, service_session

READ_SIZE = 64 * 1024


async def serve_echo(reader: Any, writer: Any, *, registry: ServiceRegistry | None = None) -> None:
    async with service_session("echo", writer, registry) as result:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
            if result is not None:
                result.bytes_in += len(data)
                result.bytes_out += len(data)
