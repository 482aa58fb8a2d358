"""Small TCP services (echo, discard, sink, source, HTTP) written against the asyncio-streams shape only.

Each service is ``async def serve_xxx(reader, writer, ...)`` and uses nothing but ``reader.read / readexactly /
readline / at_eof`` and ``writer.write / drain / close / wait_closed / get_extra_info``, so the same code runs on
real asyncio streams and on the host stack's streams (``HostStack.start_server``).  What each connection did is
recorded in a ``ServiceRegistry`` (``chimney ctl stats`` / ``results`` list it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

SOURCE_CHUNK = 64 * 1024  # the generator's block size: the byte stream for a seed never depends on N
DEFAULT_SEED = 0x7C41
DEFAULT_PORTS = {"echo": 7, "discard": 9, "sink": 5001, "source": 5002, "http": 80}


class StreamReaderLike(Protocol):
    async def read(self, n: int = -1) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...

    async def readline(self) -> bytes: ...

    def at_eof(self) -> bool: ...


class StreamWriterLike(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


Handler = Callable[[Any, Any], Awaitable[None]]


# ---------------------------------------------------------------------------------------------- pseudo-random bytes
def pseudo_random_chunks(n: int, seed: int = DEFAULT_SEED) -> Iterator[bytes]:
    """The first ``n`` bytes of the stream of ``random.Random(seed)``, in blocks of ``SOURCE_CHUNK`` bytes.

    Blocks are always drawn whole (and the last one sliced), so the first k bytes are the same for every n >= k:
    a client can verify any download with ``pseudo_random_sha256(n, seed)``.
    """
    if n < 0:
        raise ValueError("byte count must be >= 0")
    rng = random.Random(seed)
    left = n
    while left > 0:
        block = rng.randbytes(SOURCE_CHUNK)
        if left < SOURCE_CHUNK:
            block = block[:left]
        left -= len(block)
        yield block


def pseudo_random_bytes(n: int, seed: int = DEFAULT_SEED) -> bytes:
    return b"".join(pseudo_random_chunks(n, seed))


def pseudo_random_sha256(n: int, seed: int = DEFAULT_SEED) -> str:
    h = hashlib.sha256()
    for block in pseudo_random_chunks(n, seed):
        h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- registry
def _addr(writer: Any, name: str) -> str:
    try:
        info = writer.get_extra_info(name)
    except Exception:
        return "?"
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return "?" if info is None else str(info)


@dataclass(slots=True)
class ConnectionResult:
    """What one service connection did (kept by the ``ServiceRegistry``)."""

    id: int
    service: str
    peer: str
    local: str
    started: float
    finished: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    sha256_in: str | None = None  # of everything received (sink, discard)
    sha256_out: str | None = None  # of everything sent (source; http /bytes/N)
    requests: int = 0  # HTTP requests answered
    status: str = "open"  # open | done | error: <text>
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "peer": self.peer,
            "local": self.local,
            "started": self.started,
            "finished": self.finished,
            "duration": None if self.finished is None else round(self.finished - self.started, 6),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "sha256_in": self.sha256_in,
            "sha256_out": self.sha256_out,
            "requests": self.requests,
            "status": self.status,
            **self.extra,
        }


class ServiceRegistry:
    """Per-connection results of every service (open ones, and the last ``keep`` finished ones)."""

    def __init__(self, keep: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self._ids = itertools.count(1)
        self._clock = clock
        self.open: dict[int, ConnectionResult] = {}
        self.finished: deque[ConnectionResult] = deque(maxlen=keep)
        self.totals: dict[str, dict[str, int]] = {}

    def start(self, service: str, writer: Any) -> ConnectionResult:
        r = ConnectionResult(
            id=next(self._ids),
            service=service,
            peer=_addr(writer, "peername"),
            local=_addr(writer, "sockname"),
            started=self._clock(),
        )
        self.open[r.id] = r
        return r

    def finish(self, r: ConnectionResult, error: BaseException | str | None = None) -> None:
        if r.finished is not None:
            return
        r.finished = self._clock()
        if error is not None:
            r.status = f"error: {error if isinstance(error, str) else type(error).__name__ + ': ' + str(error)}"
        elif r.status == "open":
            r.status = "done"
        self.open.pop(r.id, None)
        self.finished.append(r)
        t = self.totals.setdefault(r.service, {"connections": 0, "errors": 0, "bytes_in": 0, "bytes_out": 0})
        t["connections"] += 1
        t["errors"] += r.status.startswith("error")
        t["bytes_in"] += r.bytes_in
        t["bytes_out"] += r.bytes_out

    def get(self, result_id: int) -> ConnectionResult | None:
        r = self.open.get(result_id)
        if r is not None:
            return r
        return next((x for x in self.finished if x.id == result_id), None)

    def results(self, service: str | None = None) -> list[ConnectionResult]:
        out = sorted([*self.finished, *self.open.values()], key=lambda r: r.id)
        return [r for r in out if service is None or r.service == service]

    def summary(self) -> dict[str, Any]:
        return {"open": len(self.open), "totals": {k: dict(v) for k, v in self.totals.items()}}


async def close_writer(writer: Any) -> None:
    """Close and wait, ignoring a peer that is already gone."""
    with contextlib.suppress(Exception):
        writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def service_session(
    service: str, writer: Any, registry: ServiceRegistry | None
) -> AsyncIterator[ConnectionResult | None]:
    """One connection of a service: yields its registry result (None without a registry); a connection error in
    the body ends it quietly and is recorded; the writer is always closed and the result finished."""
    result = registry.start(service, writer) if registry is not None else None
    error: BaseException | None = None
    try:
        yield result
    except (ConnectionError, OSError) as exc:
        error = exc
    finally:
        await close_writer(writer)
        if result is not None and registry is not None:
            registry.finish(result, error)


# ---------------------------------------------------------------------------------------------- starting services
StartServer = Callable[[Handler, int], Awaitable[Any]]


def make_handler(service: str, registry: ServiceRegistry, **options: Any) -> Handler:
    """The ``(reader, writer)`` callback of one service, bound to ``registry`` and its options."""
    from tcpchimney.services.discard import serve_discard
    from tcpchimney.services.echo import serve_echo
    from tcpchimney.services.http import serve_http
    from tcpchimney.services.sink import serve_sink
    from tcpchimney.services.source import serve_source

    table: dict[str, Callable[..., Awaitable[None]]] = {
        "echo": serve_echo,
        "discard": serve_discard,
        "sink": serve_sink,
        "source": serve_source,
        "http": serve_http,
    }
    if service not in table:
        raise ValueError(f"unknown service {service!r} (known: {', '.join(table)})")
    return functools.partial(table[service], registry=registry, **options)


async def start_services(
    start_server: StartServer,
    ports: dict[str, int],
    registry: ServiceRegistry,
    *,
    http_root: str | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Start every service with a port > 0 through ``start_server(handler, port)``; returns {service: server}.

    ``start_server`` is ``HostStack.start_server`` or, for real sockets, a wrapper around ``asyncio.start_server``.
    """
    servers: dict[str, Any] = {}
    for service, port in ports.items():
        if not port:
            continue
        opts: dict[str, Any] = {}
        if service in ("source", "http"):
            opts["seed"] = seed
        if service == "http":
            opts["root"] = http_root
        servers[service] = await start_server(make_handler(service, registry, **opts), port)
    return servers
