"""The offload target's internal state tree (reference 1.2): TCP -> path -> neighbor, "inverted".

A context object *is* the PVOID the target writes into ``ContextSlot.value``; later operations and I/O name the
object with it.  Plain ``__slots__`` classes: the data path touches them on every segment.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tcpchimney.chimney.objects import NeighborCached, NeighborConst, NetBufferList, PathCached, PathConst
from tcpchimney.clock import TimerHandle
from tcpchimney.targets.detectors import BacklogEstimator, ConnectionDetectors
from tcpchimney.tcp.engine import TcpConnection
from tcpchimney.tcp.state import TcpCached, TcpConst, TcpState


class NeighborContext:
    __slots__ = ("cached", "confirmed_at", "const", "handle", "paths", "valid")

    def __init__(self, handle: Any, const: NeighborConst, cached: NeighborCached, now: float) -> None:
        self.handle = handle
        self.const = const
        self.cached = cached
        self.confirmed_at = now  # NIC time of the last reachability confirmation (a frame from the neighbor)
        self.valid = True
        self.paths: list[PathContext] = []

    @property
    def src_mac(self) -> bytes:
        return self.const.dl_source_address

    @property
    def dst_mac(self) -> bytes:
        return self.cached.dl_destination_address

    def __repr__(self) -> str:
        return f"NeighborContext({self.dst_mac.hex(':')}, paths={len(self.paths)}, valid={self.valid})"


class PathContext:
    __slots__ = ("cached", "const", "handle", "neighbor", "tcps", "valid")

    def __init__(self, handle: Any, const: PathConst, cached: PathCached, neighbor: NeighborContext) -> None:
        self.handle = handle
        self.const = const
        self.cached = cached
        self.neighbor = neighbor
        self.valid = True
        # insertion-ordered set: removing one of thousands of connections on a path is O(1), not a list scan
        self.tcps: dict[TcpContext, None] = {}

    @property
    def src(self) -> bytes:
        return self.const.source_address

    @property
    def dst(self) -> bytes:
        return self.const.destination_address

    @property
    def usable(self) -> bool:
        """Nothing this connection depends on was invalidated."""
        return self.valid and self.neighbor.valid

    def __repr__(self) -> str:
        return f"PathContext({self.src.hex()}->{self.dst.hex()}, mtu={self.cached.path_mtu}, tcps={len(self.tcps)})"


class SendRecord:
    """One posted send NBL and where its bytes sit in the connection's send stream (offsets from the initiate)."""

    __slots__ = ("end", "nbl", "orig_offset", "start")

    def __init__(self, nbl: NetBufferList, start: int, end: int) -> None:
        self.nbl = nbl
        self.start = start
        self.end = end
        self.orig_offset = nbl.offset


class PostRecord:
    """One posted receive NBL being filled (chunks are joined once, at completion)."""

    __slots__ = ("chunks", "filled", "nbl")

    def __init__(self, nbl: NetBufferList) -> None:
        self.nbl = nbl
        self.chunks: list[bytes] = []
        self.filled = 0


class TcpContext:
    """One offloaded connection: the engine that runs it plus the chimney bookkeeping around it."""

    __slots__ = (
        "aborted",
        "acked",
        "appended",
        "backlog",
        "buffered",
        "cached",
        "const",
        "detectors",
        "disc_end",
        "disc_start",
        "disconnect",
        "disconnect_indicated",
        "engine",
        "handle",
        "hold",
        "hw_failed",
        "in_service",
        "indicate_enabled",
        "initiated",
        "key",
        "last_state",
        "last_una",
        "path",
        "peer_fin",
        "pending_reason",
        "posts",
        "push_deadline",
        "push_seen",
        "sends",
        "service_again",
        "service_scheduled",
        "since",
        "stop_reason",
        "stopped",
        "terminating",
        "timer",
        "timer_when",
        "tx_blocked",
    )

    def __init__(
        self,
        handle: Any,
        path: PathContext,
        const: TcpConst,
        cached: TcpCached,
        engine: TcpConnection,
        key: bytes,
        detectors: ConnectionDetectors,
        backlog: BacklogEstimator | None,
        now: float,
    ) -> None:
        self.handle = handle
        self.path = path
        self.const = const
        self.cached = cached
        self.engine = engine
        self.key = key
        self.since = now
        self.detectors = detectors
        # None: created by the first sweep that samples it, as BacklogEstimator(detectors.cfg, since) (the same state
        # it would have had from the start); an idle connection then keeps one object fewer alive.
        self.backlog = backlog
        # send stream bookkeeping: offsets count payload bytes from SND.UNA at the initiate
        # The two queues are created on first use (None until then; never replaced once they exist, so a caller's
        # alias stays valid): an idle connection needs neither, and each is one more object for the cyclic GC.
        self.sends: deque[SendRecord] | None = None
        self.appended = 0
        self.acked = 0
        self.last_una = engine.snd_una
        # receive delivery
        self.posts: deque[PostRecord] | None = None
        self.hold = b""  # bytes read from the engine for an indication the host did not (fully) accept
        self.indicate_enabled = True
        self.push_seen = False
        self.push_deadline: float | None = None
        self.peer_fin = False
        self.disconnect_indicated = False
        # disconnect request (graceful data travels in the stream between disc_start and disc_end)
        self.disconnect: NetBufferList | None = None
        self.disc_start = 0
        self.disc_end = 0
        # lifecycle
        self.initiated = False  # the initiate completion has returned: indications allowed
        self.terminating = False
        self.stopped = False  # a mandatory retrieve was indicated: segments go up the ordinary path
        self.stop_reason: int | None = None
        self.pending_reason: int | None = None  # mandatory reason deferred by the half-closed ban
        self.aborted = False  # RST received or abortive disconnect: I/O completes REQUEST_ABORTED
        self.hw_failed = False
        self.tx_blocked = False  # depends on an invalidated neighbor/path: nothing more goes on the wire
        self.last_state: TcpState = engine.state
        self.buffered = 0  # bytes this connection holds (for the NIC-wide buffer budget)
        # scheduling
        self.timer: TimerHandle | None = None
        self.timer_when: float | None = None
        self.service_scheduled = False
        self.in_service = False
        self.service_again = False

    @property
    def gone(self) -> bool:
        return self.terminating

    def __repr__(self) -> str:
        return f"TcpContext({self.const.local_port}->{self.const.remote_port}, {self.engine.state.name})"
