"""Discard (RFC 863, port 9): everything received is thrown away; the connection closes after the peer's EOF."""

from __future__ import annotations

from typing import Any

from tcpchimney.services import ServiceRegistry, close_writer

READ_SIZE = 256 * 1024


async def serve_discard(reader: Any, writer: Any, *, registry: ServiceRegistry | None = None) -> None:
    result = registry.start("discard", writer) if registry is not None else None
    error: BaseException | None = None
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            if result is not None:
                result.bytes_in += len(data)
    except (ConnectionError, OSError) as exc:
        error = exc
    finally:
        await close_writer(writer)
        if result is not None and registry is not None:
            registry.finish(result, error)
