"""Bidirectional transfers whose every byte is checked: the evidence that no byte is lost, duplicated or reordered.

Each transfer opens one connection from the host to the peer; both sides write a seeded pseudo-random stream at a
paced rate, read everything they get, and close once they have written all.  At the end each side must have read
exactly the other side's stream.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tcpchimney.clock import Scheduler
from tcpchimney.host.sockets import TcpSocket
from tcpchimney.host.stack import HostStack

WRITE_CHUNK = 32 * 1024
SEND_HIGH_WATER = 256 * 1024
PACE_INTERVAL = 0.002
_ABNORMAL = ("reset", "timeout")


@dataclass
class Endpoint:
    """One side of a transfer: what it must send, what it got, and how it ended."""

    to_send: bytes
    sock: TcpSocket | None = None
    written: int = 0
    received: bytearray = field(default_factory=bytearray)
    eof: bool = False
    closed_reason: str | None = None
    close_called: bool = False


@dataclass
class Transfer:
    index: int
    port: int
    client: Endpoint
    server: Endpoint
    started: float = 0.0
    linger: float = 0.0
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def reset(self) -> bool:
        return self.client.closed_reason in _ABNORMAL or self.server.closed_reason in _ABNORMAL

    def mismatched_bytes(self) -> int:
        """Bytes that differ from what the other side sent (missing, extra or wrong)."""
        return _mismatch(self.client.to_send, self.server.received) + _mismatch(
            self.server.to_send, self.client.received
        )

    def verified_bytes(self) -> int:
        ok = 0
        for sent, got in ((self.client.to_send, self.server.received), (self.server.to_send, self.client.received)):
            if bytes(got) == sent:
                ok += len(sent)
        return ok

    def summary(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "up_bytes": len(self.client.to_send),
            "down_bytes": len(self.server.to_send),
            "up_sha256": hashlib.sha256(bytes(self.server.received)).hexdigest(),
            "down_sha256": hashlib.sha256(bytes(self.client.received)).hexdigest(),
            "exact": self.mismatched_bytes() == 0,
            "finished": self.finished,
            "reset": self.reset,
        }


def _mismatch(sent: bytes, got: bytearray) -> int:
    if len(got) == len(sent) and got == sent:
        return 0
    common = min(len(sent), len(got))
    # Count differing positions in the common part in chunks (cheap enough for test sizes) plus the length gap.
    differing = 0
    step = 65536
    for i in range(0, common, step):
        a = sent[i : i + step]
        b = bytes(got[i : i + step])
        if a != b:
            differing += sum(1 for x, y in zip(a, b, strict=True) if x != y)
    return differing + abs(len(sent) - len(got))


class TransferSet:
    """Drives many transfers between `host` (client side) and `peer` (server side)."""

    def __init__(
        self,
        scheduler: Scheduler,
        host: HostStack,
        peer: HostStack,
        peer_ip: str,
        rng: random.Random,
        *,
        base_port: int = 5000,
        on_done: Callable[[Transfer], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.host = host
        self.peer = peer
        self.peer_ip = peer_ip
        self.rng = rng
        self.base_port = base_port
        self.transfers: list[Transfer] = []
        self.on_done = on_done
        self._by_port: dict[int, Transfer] = {}
        self._finished = 0  # transfers whose `finished` _check set: all_done is read after every clock event

    def start(self, up_bytes: int, down_bytes: int, linger: float = 0.0) -> Transfer:
        """Open a connection and move the bytes; `linger` keeps both sides quiet that long before closing."""
        index = len(self.transfers)
        port = self.base_port + index
        t = Transfer(
            index=index,
            port=port,
            client=Endpoint(self.rng.randbytes(up_bytes)),
            server=Endpoint(self.rng.randbytes(down_bytes)),
            started=self.scheduler.now(),
            linger=linger,
        )
        self.transfers.append(t)
        self._by_port[port] = t
        self.peer.listen(port, functools.partial(self._accepted, t))
        sock = self.host.connect(self.peer_ip, port)
        self._attach(t, t.client, sock)
        return t

    def _accepted(self, t: Transfer, sock: TcpSocket) -> None:
        if t.server.sock is None:
            self._attach(t, t.server, sock)

    def _attach(self, t: Transfer, end: Endpoint, sock: TcpSocket) -> None:
        end.sock = sock
        sock.on_readable = lambda: self._read(t, end)
        sock.on_closed = lambda reason: self._closed(t, end, reason)
        self._pump(t, end)

    def _pump(self, t: Transfer, end: Endpoint) -> None:
        sock = end.sock
        if sock is None or end.close_called or end.closed_reason is not None:
            return
        while end.written < len(end.to_send) and sock.send_buffered < SEND_HIGH_WATER:
            chunk = end.to_send[end.written : end.written + WRITE_CHUNK]
            sock.write(chunk)
            end.written += len(chunk)
        if end.written >= len(end.to_send):
            if t.linger > 0 and self.scheduler.now() < t.started + t.linger:
                self.scheduler.call_at(t.started + t.linger, self._pump, t, end)
                return
            end.close_called = True
            sock.close()
        else:
            self.scheduler.call_later(PACE_INTERVAL, self._pump, t, end)

    def _read(self, t: Transfer, end: Endpoint) -> None:
        sock = end.sock
        if sock is None:
            return
        data = sock.read()
        if data:
            end.received += data
        if sock.at_eof:
            end.eof = True
        self._check(t)

    def _closed(self, t: Transfer, end: Endpoint, reason: str) -> None:
        end.closed_reason = reason
        if end.sock is not None:
            data = end.sock.read()
            if data:
                end.received += data
            if end.sock.at_eof:
                end.eof = True
        self._check(t)

    def _check(self, t: Transfer) -> None:
        if t.finished is not None:
            return
        complete = t.client.eof and t.server.eof and t.client.close_called and t.server.close_called
        if complete or t.reset:
            t.finished = self.scheduler.now()
            self._finished += 1
            if self.on_done is not None:
                self.on_done(t)

    @property
    def all_done(self) -> bool:
        return self._finished == len(self.transfers)

    def totals(self) -> dict[str, int]:
        sent = sum(len(t.client.to_send) + len(t.server.to_send) for t in self.transfers)
        return {
            "bytes_sent": sent,
            "bytes_verified": sum(t.verified_bytes() for t in self.transfers),
            "mismatched_bytes": sum(t.mismatched_bytes() for t in self.transfers if not t.reset),
        }
