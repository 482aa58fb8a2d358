"""Sans-IO TCP engine (RFC 9293 with RFC 5961, 7323, 6298, 5681/6582, 2018).

API CONTRACT (other modules are written against exactly this; keep it stable):

    conn = TcpConnection.connect(config, local_port, remote_port, iss, now)          # -> SYN_SENT, SYN queued
    conn = TcpConnection.accept(config, syn, iss, now)                                # from a LISTEN socket: -> SYN_RCVD
    conn = TcpConnection.from_state(config, const, cached, delegated,
                                    send_data=b"...", recv_buffered=b"...", now=now)  # continue a handed-over connection
    const, cached, delegated, send_data, recv_buffered = conn.export_state(now)       # hand it over (see below)

    conn.handle_segment(seg, now)      # a TcpSegment that arrived for this connection
    conn.handle_timer(now)             # call when now >= conn.next_timer()
    conn.next_timer() -> float | None  # earliest deadline (absolute, same clock as `now`)
    conn.send(data)                    # append to the send stream (never refuses; flow control is the caller's)
    conn.read(max_bytes=-1) -> bytes   # consume in-order received data (opens the receive window)
    conn.close()                       # graceful: FIN after all queued data
    conn.abort()                       # RST, -> CLOSED
    conn.segments_to_send(now) -> list[TcpSegment]   # drain everything that should go on the wire now
    conn.pop_events() -> list[TcpEvent]               # drain events, in order

Time `now` is float seconds on any monotonic clock (virtual in simulation).  No sockets, threads, or clocks inside.

export_state(now) semantics (the chimney hand-over):
  * send_data = every byte of the send stream from SND.UNA onward (sent-unacked then never-sent), excluding SYN/FIN.
  * recv_buffered = in-order bytes received and ACKed but not yet read().
  * delegated.snd_una/snd_nxt/snd_max/rcv_nxt are the real sequence numbers; rcv_nxt counts a received FIN.
  * after export_state the exporting object must not be used again (ownership moved).
from_state(...) continues from exactly those values: same sequence space, timers restarted from the delegated
TimeoutDelta values, RTT estimators from SRtt/RttVar, and the data given.  No byte is resent that the peer ACKed
and no received byte is delivered twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tcpchimney.tcp.state import TcpCached, TcpConst, TcpDelegated, TcpState
from tcpchimney.wire.tcp import TcpSegment


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Per-stack TCP settings (the host's knobs; constant for a connection's life)."""

    mss: int = 1460  # MSS we advertise (interface MTU - 40)
    rcv_buf: int = 262144  # receive buffer: the most unread bytes we hold / window we offer
    window_scale: bool = True
    timestamps: bool = True
    sack: bool = True
    nagle: bool = True
    delayed_ack: float = 0.040  # seconds; 0 disables delayed ACK
    initial_rto: float = 1.0
    min_rto: float = 0.200
    max_rto: float = 60.0
    max_retransmits: int = 15  # then the connection is aborted with TcpTimedOut
    syn_retries: int = 6
    time_wait: float = 60.0  # 2*MSL
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    persist_min: float = 0.5
    initial_cwnd_segments: int = 10  # RFC 6928


# ---- events (pop_events) -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcpEvent:
    """Base class of everything the engine tells its owner."""


@dataclass(frozen=True, slots=True)
class TcpConnected(TcpEvent):
    """Reached ESTABLISHED."""


@dataclass(frozen=True, slots=True)
class TcpDataReceived(TcpEvent):
    """New in-order bytes are readable; `available` is the total now readable."""

    available: int


@dataclass(frozen=True, slots=True)
class TcpSendAcked(TcpEvent):
    """SND.UNA advanced; `acked` payload bytes newly acknowledged, `snd_una` the new value."""

    acked: int
    snd_una: int


@dataclass(frozen=True, slots=True)
class TcpPeerClosed(TcpEvent):
    """The peer's FIN was received in order (all data before it is readable)."""


@dataclass(frozen=True, slots=True)
class TcpReset(TcpEvent):
    """An acceptable RST arrived; the connection is CLOSED."""


@dataclass(frozen=True, slots=True)
class TcpTimedOut(TcpEvent):
    """Retransmissions (or keepalive probes) ran out; the connection was aborted."""


@dataclass(frozen=True, slots=True)
class TcpClosed(TcpEvent):
    """The connection reached CLOSED normally (after TIME_WAIT or LAST_ACK)."""


@dataclass(frozen=True, slots=True)
class TcpUrgentData(TcpEvent):
    """A segment carried URG; the urgent byte is delivered inline (RFC 6093)."""

    urgent_seq: int


@dataclass(frozen=True, slots=True)
class TcpRetransmitted(TcpEvent):
    """A segment was retransmitted (`timeout` True for RTO, False for fast retransmit)."""

    timeout: bool


@dataclass(slots=True)
class TcpStats:
    """Counters that detectors and benchmarks read."""

    segments_in: int = 0
    segments_out: int = 0
    bytes_in: int = 0  # payload bytes accepted in order
    bytes_out: int = 0  # payload bytes put on the wire (incl. retransmissions)
    retransmitted_segments: int = 0
    timeouts: int = 0
    fast_retransmits: int = 0
    out_of_order_segments: int = 0
    duplicate_segments: int = 0
    challenge_acks: int = 0
    dropped_segments: dict[str, int] = field(default_factory=dict)  # reason -> count
    last_activity: float = 0.0  # time of last segment in or data queued/read


class TcpConnection:
    """One TCP connection's state machine.  See the module docstring for the API contract."""

    state: TcpState
    stats: TcpStats
    config: TcpConfig
    local_port: int
    remote_port: int

    @classmethod
    def connect(cls, config: TcpConfig, local_port: int, remote_port: int, iss: int, now: float) -> TcpConnection:
        raise NotImplementedError

    @classmethod
    def accept(cls, config: TcpConfig, syn: TcpSegment, iss: int, now: float) -> TcpConnection:
        raise NotImplementedError

    @classmethod
    def from_state(
        cls,
        config: TcpConfig,
        const: TcpConst,
        cached: TcpCached,
        delegated: TcpDelegated,
        *,
        send_data: bytes,
        recv_buffered: bytes,
        now: float,
        send_closed: bool = False,
    ) -> TcpConnection:
        """Continue a connection from handed-over state.

        `send_closed` means the application already closed the send half: a FIN goes after send_data if it has not
        been sent yet (delegated.fin_sent tells whether it was).
        """
        raise NotImplementedError

    def export_state(self, now: float) -> tuple[TcpConst, TcpCached, TcpDelegated, bytes, bytes]:
        raise NotImplementedError

    # --- inputs ---
    def handle_segment(self, seg: TcpSegment, now: float) -> None:
        raise NotImplementedError

    def handle_timer(self, now: float) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, max_bytes: int = -1) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def update_cached(self, cached: TcpCached, now: float) -> None:
        """Apply a host update of the cached variables (keepalive, Nagle, InitialRcvWnd, MaxRT, TTL...)."""
        raise NotImplementedError

    # --- outputs ---
    def next_timer(self) -> float | None:
        raise NotImplementedError

    def segments_to_send(self, now: float) -> list[TcpSegment]:
        raise NotImplementedError

    def pop_events(self) -> list[TcpEvent]:
        raise NotImplementedError

    # --- read-only views ---
    @property
    def snd_una(self) -> int:
        raise NotImplementedError

    @property
    def snd_nxt(self) -> int:
        raise NotImplementedError

    @property
    def rcv_nxt(self) -> int:
        raise NotImplementedError

    @property
    def readable(self) -> int:
        """Bytes that read() would return now."""
        raise NotImplementedError

    @property
    def unacked_send_bytes(self) -> int:
        """Payload bytes queued and not yet acknowledged (sent or not)."""
        raise NotImplementedError

    @property
    def send_closed(self) -> bool:
        """close() was called (or the state implies our FIN is queued/sent)."""
        raise NotImplementedError
