"""Echo (RFC 862, port 7): every byte received is sent back; the connection closes after the peer's EOF."""

from __future__ import annotations

from typing import Any

from tcpchimney.services import ServiceRegistry, close_writer

READ_SIZE = 64 * 1024


async def serve_echo(reader: Any, writer: Any, *, registry: ServiceRegistry | None = None) -> None:
    result = registry.start("echo", writer) if registry is not None else None
    error: BaseException | None = None
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
            if result is not None:
                result.bytes_in += len(data)
                result.bytes_out += len(data)
    except (ConnectionError, OSError) as exc:
        error = exc
    finally:
        await close_writer(writer)
        if result is not None and registry is not None:
            registry.finish(result, error)
