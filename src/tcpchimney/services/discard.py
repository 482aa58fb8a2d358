"""Discard (RFC 863, port 9): everything received is thrown away; the connection closes after the peer's EOF."""

from __future__ import annotations

from typing import Any

from tcpchimney.services import ServiceRegistry, service_session

READ_SIZE = 256 * 1024


async def serve_discard(reader: Any, writer: Any, *, registry: ServiceRegistry | None = None) -> None:
    async with service_session("discard", writer, registry) as result:
        while data := await reader.read(READ_SIZE):
            if result is not None:
                result.bytes_in += len(data)
