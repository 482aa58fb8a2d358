"""The host's record of one TCP connection: who runs it now and everything the host keeps meanwhile.

While the host runs it (``mode == SOFTWARE``) ``engine`` is a ``TcpConnection``.  While a target runs it the record
keeps the chimney bookkeeping: the target's context, the send NBLs posted and not yet completed, data delivered
by the target that the application has not read yet, and what to do when it comes back.  The record itself is the
``ndis_offload_handle`` of the TCP block, so the target names the connection with it in indications.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcpchimney.chimney.objects import NetBufferList
from tcpchimney.clock import TimerHandle
from tcpchimney.host.interfaces import Interface
from tcpchimney.tcp.engine import TcpConnection
from tcpchimney.tcp.state import TcpCached, TcpConst, TcpDelegated, TcpState
from tcpchimney.wire.addr import ip_to_str
from tcpchimney.wire.tcp import TcpSegment

if TYPE_CHECKING:
    from tcpchimney.host.offload import PathRecord
    from tcpchimney.host.sockets import Listener, TcpSocket

Key = tuple[bytes, int, bytes, int]  # local ip, local port, remote ip, remote port

# mode
SOFTWARE = 0  # the host's engine runs it
OFFLOADING = 1  # initiate in flight: the host has exported it; writes and frames are queued
OFFLOADED = 2  # the target runs it
TERMINATING = 3  # terminate in flight: writes and frames are queued
CLOSED = 4  # gone (closed, reset, timed out)

MODE_NAMES = {
    SOFTWARE: "software",
    OFFLOADING: "offloading",
    OFFLOADED: "offloaded",
    TERMINATING: "terminating",
    CLOSED: "closed",
}


class Connection:
    __slots__ = (
        "abort_nbl",
        "accepted",
        "app_aborted",
        "app_closed",
        "backlog",
        "busy",
        "cached",
        "close_reason",
        "const",
        "context",
        "disconnect_nbl",
        "disconnect_status",
        "engine",
        "established_at",
        "export",
        "fin_acked",
        "fin_in_export",
        "iface",
        "key",
        "label",
        "listener",
        "mode",
        "next_hop",
        "no_offload_until",
        "notify_scheduled",
        "off_state",
        "offload_requested",
        "offload_target",
        "owner",
        "path",
        "peer_aborted",
        "peer_closed",
        "pending_frames",
        "pending_writes",
        "policy_timer",
        "repost",
        "rx_buf",
        "rx_refused",
        "send_nbls",
        "sock",
        "terminate_after_offload",
        "terminate_by",
        "terminate_reason",
        "terminate_scheduled",
        "timer",
        "timer_when",
        "waiting_bytes",
        "watchdog",
    )

    def __init__(self, key: Key, iface: Interface, next_hop: bytes) -> None:
        self.key = key
        self.iface = iface
        self.next_hop = next_hop
        self.label = f"{ip_to_str(key[0])}:{key[1]}>{ip_to_str(key[2])}:{key[3]}"
        self.engine: TcpConnection | None = None
        self.mode = SOFTWARE
        self.sock: TcpSocket | None = None
        self.listener: Listener | None = None
        self.accepted = False
        self.established_at: float | None = None
        self.timer: TimerHandle | None = None
        self.timer_when = 0.0
        self.busy = False  # inside _service: nested calls from application callbacks are folded in
        # application side
        self.rx_buf = bytearray()  # delivered by a target (or left from an earlier offload), older than the engine's
        self.app_closed = False
        self.app_aborted = False
        self.peer_closed = False  # the peer's FIN has been received in order (EOF after rx data)
        self.peer_aborted = False
        self.close_reason: str | None = None
        # offload bookkeeping
        self.offload_target: int | None = None
        self.owner = "host"  # "host" or the name of the target that runs it (changes when an operation completes)
        self.context: Any = None
        self.path: PathRecord | None = None
        self.const: TcpConst | None = None
        self.cached: TcpCached | None = None
        self.export: tuple[TcpConst, TcpCached, TcpDelegated, bytes, bytes] | None = None
        self.send_nbls: list[NetBufferList] = []  # posted, not completed SUCCESS/REQUEST_ABORTED, in post order
        self.pending_writes: list[bytes] = []
        self.pending_frames: list[tuple[bytes, TcpSegment]] = []
        self.rx_refused = False
        self.disconnect_nbl: NetBufferList | None = None
        self.disconnect_status: int | None = None
        self.abort_nbl: NetBufferList | None = None
        self.fin_acked = False
        self.fin_in_export = False  # the application had closed before the export: no disconnect is posted
        self.notify_scheduled = False
        self.off_state = TcpState.CLOSED  # best knowledge of the TCP state while a target runs it
        self.backlog = 0  # last SEND_BACKLOG_CHANGE
        self.terminate_scheduled = False
        self.terminate_after_offload: tuple[str, str] | None = None
        self.terminate_by = ""
        self.terminate_reason = ""
        self.watchdog: TimerHandle | None = None
        self.no_offload_until = 0.0
        self.offload_requested: int | None = None  # explicit host.offload(): target id, honoured when possible
        self.waiting_bytes = False
        self.policy_timer: TimerHandle | None = None
        self.repost = False  # a zero-byte receive post is scheduled

    @property
    def state(self) -> TcpState:
        if self.engine is not None:
            return self.engine.state
        if self.mode == CLOSED:
            return TcpState.CLOSED
        return self.off_state

    @property
    def mode_name(self) -> str:
        return MODE_NAMES[self.mode]

    def remaining_send(self) -> bytes:
        """Bytes of the posted send NBLs that were not completed SUCCESS or REQUEST_ABORTED, in post order."""
        return b"".join(n.data[n.offset :] for n in self.send_nbls)

    def __repr__(self) -> str:
        return f"Connection({self.label}, {self.mode_name}, {self.state.name})"
