"""Source: the client sends a decimal byte count line ``"N\\n"``; the server sends N pseudo-random bytes and closes.

The bytes are ``pseudo_random_chunks(N, seed)``, so the client can check them with ``pseudo_random_sha256``; the
digest of what was sent is registered too.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tcpchimney.services import DEFAULT_SEED, ServiceRegistry, close_writer, pseudo_random_chunks

MAX_LINE = 64
MAX_BYTES = 1 << 40


class BadRequest(ValueError):
    pass


def parse_count(line: bytes) -> int:
    text = line.strip()
    if not text or len(text) > 20 or not text.isdigit():
        raise BadRequest(f"expected a decimal byte count line, got {line[:MAX_LINE]!r}")
    n = int(text)
    if n > MAX_BYTES:
        raise BadRequest(f"byte count {n} exceeds {MAX_BYTES}")
    return n


async def serve_source(
    reader: Any, writer: Any, *, registry: ServiceRegistry | None = None, seed: int = DEFAULT_SEED
) -> None:
    result = registry.start("source", writer) if registry is not None else None
    error: BaseException | str | None = None
    try:
        line = await reader.readline()
        if result is not None:
            result.bytes_in = len(line)
        try:
            n = parse_count(line)
        except BadRequest as exc:
            error = str(exc)
            writer.write(f"error: {exc}\n".encode())
            await writer.drain()
            return
        h = hashlib.sha256()
        for block in pseudo_random_chunks(n, seed):
            h.update(block)
            writer.write(block)
            await writer.drain()
            if result is not None:
                result.bytes_out += len(block)
        if result is not None:
            result.sha256_out = h.hexdigest()
            result.extra["requested"] = n
    except (ConnectionError, OSError, ValueError) as exc:
        error = exc
    finally:
        await close_writer(writer)
        if result is not None and registry is not None:
            registry.finish(result, error)
