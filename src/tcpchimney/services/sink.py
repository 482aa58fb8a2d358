"""Sink: reads to EOF, hashing; then answers ``"<bytes> <sha256>\\n"`` and closes.

The answer can only be read by a client that half-closed (shut down its sending side and kept reading); for a
client that closed completely the write fails quietly.  Either way the count and digest are in the registry.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from tcpchimney.services import ServiceRegistry, service_session

READ_SIZE = 256 * 1024


async def serve_sink(reader: Any, writer: Any, *, registry: ServiceRegistry | None = None) -> None:
    async with service_session("sink", writer, registry) as result:
        h = hashlib.sha256()
        count = 0
        try:
            while data := await reader.read(READ_SIZE):
                h.update(data)
                count += len(data)
                if result is not None:
                    result.bytes_in = count
        except (ConnectionError, OSError):
            if result is not None:
                result.sha256_in = h.hexdigest()  # of what did arrive
            raise
        digest = h.hexdigest()
        if result is not None:
            result.sha256_in = digest
        line = f"{count} {digest}\n".encode()
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(line)
            await writer.drain()
            if result is not None:
                result.bytes_out = len(line)
