"""The application's view: non-blocking callback sockets (usable directly from simulator scripts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tcpchimney.host.connection import Connection
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.addr import ip_to_str

if TYPE_CHECKING:
    from tcpchimney.host.stack import HostStack


class TcpSocket:
    """One TCP connection as the application sees it, wherever it runs (host engine or offload target).

    ``write`` queues (never blocks or refuses); ``read`` returns what is there.  Callbacks: ``on_readable()`` when
    new data or EOF is there, ``on_connected()`` once established, ``on_writable()`` when queued data was
    acknowledged, ``on_closed(reason)`` once with "closed", "reset" or "timeout".
    """

    __slots__ = (
        "_conn",
        "_host",
        "bytes_read",
        "bytes_written",
        "on_closed",
        "on_connected",
        "on_readable",
        "on_writable",
    )

    def __init__(self, host: HostStack, conn: Connection) -> None:
        self._host = host
        self._conn = conn
        self.on_readable: Callable[[], None] | None = None
        self.on_connected: Callable[[], None] | None = None
        self.on_closed: Callable[[str], None] | None = None
        self.on_writable: Callable[[], None] | None = None
        self.bytes_written = 0
        self.bytes_read = 0

    # -- data -------------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._host._sock_write(self._conn, bytes(data))

    def read(self, max_bytes: int = -1) -> bytes:
        return self._host._sock_read(self._conn, max_bytes)

    @property
    def readable(self) -> int:
        c = self._conn
        eng = c.engine
        return len(c.rx_buf) + (eng.readable if eng is not None else 0)

    @property
    def at_eof(self) -> bool:
        """The peer closed (or the connection is gone) and everything received has been read."""
        c = self._conn
        return (c.peer_closed or c.close_reason is not None) and self.readable == 0

    def close(self) -> None:
        self._host._sock_close(self._conn)

    def abort(self) -> None:
        self._host._sock_abort(self._conn)

    # -- introspection ------------------------------------------------------------------------------------------
    @property
    def state(self) -> TcpState:
        return self._conn.state

    @property
    def owner(self) -> str:
        return self._conn.owner

    @property
    def key(self) -> tuple[str, int, str, int]:
        k = self._conn.key
        return (ip_to_str(k[0]), k[1], ip_to_str(k[2]), k[3])

    @property
    def local_address(self) -> tuple[str, int]:
        k = self._conn.key
        return (ip_to_str(k[0]), k[1])

    @property
    def remote_address(self) -> tuple[str, int]:
        k = self._conn.key
        return (ip_to_str(k[2]), k[3])

    @property
    def send_buffered(self) -> int:
        """Bytes written and not yet acknowledged by the peer, wherever they are."""
        c = self._conn
        eng = c.engine
        n = sum(len(n.data) - n.offset for n in c.send_nbls) + sum(len(w) for w in c.pending_writes)
        if eng is not None:
            n += eng.unacked_send_bytes
        return n

    @property
    def closed_reason(self) -> str | None:
        return self._conn.close_reason

    @property
    def connection(self) -> Connection:
        return self._conn

    def __repr__(self) -> str:
        return f"TcpSocket({self._conn.label}, {self.state.name}, owner={self.owner})"


class Listener:
    """A listening port: every connection that reaches ESTABLISHED is handed to ``on_accept(sock)``."""

    def __init__(self, host: HostStack, port: int, on_accept: Callable[[TcpSocket], None], backlog: int) -> None:
        self._host = host
        self.port = port
        self.on_accept = on_accept
        self.backlog = backlog
        self.pending = 0  # half-open connections not yet handed over
        self.closed = False
        self.accepted = 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._host._unlisten(self)

    def __repr__(self) -> str:
        return f"Listener(port={self.port}, pending={self.pending}, accepted={self.accepted})"
