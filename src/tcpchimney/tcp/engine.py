"""Sans-IO TCP engine (RFC 9293 with RFC 5961, 7323, 6298, 5681/6582, 2018).

API CONTRACT (other modules are written against exactly this; keep it stable):

    conn = TcpConnection.connect(config, local_port, remote_port, iss, now)          # -> SYN_SENT, SYN queued
    conn = TcpConnection.accept(config, syn, iss, now)                               # from a LISTEN socket: -> SYN_RCVD
    conn = TcpConnection.from_state(config, const, cached, delegated,
                                    send_data=b"...", recv_buffered=b"...", now=now)  # continue a handed-over conn
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

Implementation notes (what the NDIS struct does not spell out; both sides of a hand-over use this engine):
  * export_state first flushes a pending delayed ACK into the output queue (reference 7.1: "before completing the
    terminate, send any delayed ACK"), so the exporter's segments_to_send(now) may be drained once more after it.
    Out-of-order (only SACKed) data is dropped, as 7.1 requires.  Any state may be exported, CLOSED included.
  * Retransmit.TimeoutDelta also carries the remaining 2MSL time in TIME_WAIT and the persist (zero-window probe)
    timer when nothing is outstanding; Retransmit.Count is the RTO backoff exponent, SndWndProbeCount the persist one.
  * TsTime is our current TSval; the new owner derives its TS clock offset from it so TSval stays monotonic on
    any clock.  TsRecentAge is converted back to the time TS.Recent was stored.
  * The receive window's right edge is rcv_nxt + RcvWnd and never moves left, also across a hand-over.
  * send_closed (or a FIN state, or fin_sent) says the app closed: ESTABLISHED/CLOSE_WAIT then become
    FIN_WAIT_1/LAST_ACK as the CLOSE call would have done; in SYN_RCVD the FIN waits for the handshake.
  * SYN_SENT exports the options we offered in TcpConst (nothing is negotiated yet); the new owner re-offers them.
  * RTT samples use Karn's rule (one timed segment, never a retransmitted one); TSecr is not used for RTT because a
    peer's TS.Recent goes stale while it holds a hole (RFC 7323 4.3) and its echoes would inflate the RTO.
  * Loss recovery: with SACK information the sender keeps a scoreboard and recovers per RFC 6675 (IsLost, pipe,
    NextSeg rules 1-4 with one rescue retransmission, cwnd = ssthresh, no inflation); it enters recovery on 3 dup
    ACKs or as soon as IsLost(SND.UNA) holds, and early (RFC 5827) when a flight of at most 4 segments has only its
    first segment unSACKed.  A retransmission is deemed lost again when more than 2 SMSS of data sent after it are
    SACKed.  Without SACK information it is RFC 6582 NewReno.  A tail loss probe (RFC 8985 7, the last segment
    again after 2 * SRTT) turns most tail losses into SACK recovery instead of an RTO.  After an RTO the scoreboard
    is kept and go-back-N skips SACKed data; a peer that reneges (ACKs up to a SACKed block, e.g. after its own
    hand-over dropped out-of-order data) is detected and the scoreboard dropped.  An RTO whose first new ACK echoes
    a TSval from before it was spurious (Eifel, RFC 3522/4015): cwnd and ssthresh are restored.
  * None of that is hand-over state: the scoreboard, probe and undo information are dropped (the new owner starts
    with an empty scoreboard).  A connection in fast recovery exports DupAckCount >= 3, and a new owner that imports
    DupAckCount >= 3 retransmits SND.UNA at once (the exporter may have triggered that retransmission without
    sending it; at worst the segment goes twice) instead of waiting for an RTO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tcpchimney.tcp.state import (
    TCP_FLAG_KEEP_ALIVE_ENABLED,
    TCP_FLAG_KEEP_ALIVE_RESTART,
    TCP_FLAG_MAX_RT_RESTART,
    TCP_FLAG_NAGLING_ENABLED,
    TCP_FLAG_SACK_ENABLED,
    TCP_FLAG_TIMESTAMP_ENABLED,
    TCP_FLAG_UPDATE_RCV_WND,
    TCP_FLAG_WINDOW_SCALING_ENABLED,
    TICKS_PER_SECOND,
    TIMER_STOPPED,
    TcpCached,
    TcpConst,
    TcpDelegated,
    TcpState,
    TimerState,
)
from tcpchimney.wire._fast import frozen_builder
from tcpchimney.wire.tcp import ACK, FIN, NO_OPTIONS, PSH, RST, SYN, URG, TcpOptions, TcpSegment


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
    # RFC 8985 tail loss probe.  Off by default: against a Linux peer with 100 connections being handed around it
    # produced late probes after the FIN was acknowledged (see the closing note); on in the loss-recovery tests.
    tail_loss_probe: bool = False


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
    spurious_timeouts: int = 0  # RTOs undone because the ACK echoed a timestamp from before them (RFC 3522)
    out_of_order_segments: int = 0
    duplicate_segments: int = 0
    challenge_acks: int = 0
    dropped_segments: dict[str, int] = field(default_factory=dict)  # reason -> count
    last_activity: float = 0.0  # time of last segment in or data queued/read


# per-segment values built positionally without the frozen-dataclass __init__ (same objects, half the cost)
_new_segment = frozen_builder(TcpSegment)
_new_options = frozen_builder(TcpOptions)
_new_data_received = frozen_builder(TcpDataReceived)
_new_send_acked = frozen_builder(TcpSendAcked)

# state constants as plain module globals: enum attribute lookups are slow on the per-segment path
_CLOSED = TcpState.CLOSED
_LISTEN = TcpState.LISTEN
_SYN_SENT = TcpState.SYN_SENT
_SYN_RCVD = TcpState.SYN_RCVD
_ESTABLISHED = TcpState.ESTABLISHED
_FIN_WAIT_1 = TcpState.FIN_WAIT_1
_FIN_WAIT_2 = TcpState.FIN_WAIT_2
_CLOSE_WAIT = TcpState.CLOSE_WAIT
_CLOSING = TcpState.CLOSING
_LAST_ACK = TcpState.LAST_ACK
_TIME_WAIT = TcpState.TIME_WAIT
_M = 0xFFFFFFFF
# Most connections never hold out-of-order data or SACK information: they share these empty lists (fewer objects
# per connection for the garbage collector).  Never add to them: the two places that add swap in a list first.
_NO_OOO: list[list[Any]] = []
_NO_SACKED: list[list[int]] = []
# Likewise an idle connection holds no event or output list: these shared empty ones stand in until the first
# event / segment (_event, _queue and _out_list swap in a list of its own; nothing else may append).
_NO_EVENTS: list[TcpEvent] = []
_NO_OUT: list[TcpSegment] = []
_SYN_STATES = (_SYN_SENT, _SYN_RCVD)
_DATA_RCV_STATES = frozenset({_ESTABLISHED, _FIN_WAIT_1, _FIN_WAIT_2})
_SEND_STATES = frozenset({_ESTABLISHED, _CLOSE_WAIT, _FIN_WAIT_1, _CLOSING, _LAST_ACK})
_FIN_QUEUED_STATES = frozenset({_FIN_WAIT_1, _FIN_WAIT_2, _CLOSING, _LAST_ACK, _TIME_WAIT})
_ACK_ONLY_STATES = frozenset({_CLOSE_WAIT, _CLOSING, _LAST_ACK, _TIME_WAIT})
_KEEPALIVE_STATES = frozenset({_ESTABLISHED, _CLOSE_WAIT})
# header prediction: states where an in-order plain ACK (with data, except in CLOSE_WAIT) needs no full check;
# a half-closed bulk transfer spends its life in FIN_WAIT_2 / CLOSE_WAIT
_FAST_STATES = frozenset({_ESTABLISHED, _FIN_WAIT_2, _CLOSE_WAIT})
_FAST_MASK = SYN | RST | FIN | URG | ACK  # header prediction wants exactly ACK among these
_MAX_WSCALE = 14
_TS_OPT_LEN = 12  # NOP NOP TS(10): what the timestamp option costs every segment
_CHALLENGE_ACK_LIMIT = 10  # per connection per second (RFC 5961 section 7)
_INFINITE_SSTHRESH = 0x7FFFFFFF
_DEFAULT_REMOTE_MSS = 536
_PAWS_IDLE_LIMIT = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent older than 24 days is invalid


_new_delegated = frozen_builder(TcpDelegated)
_new_const = frozen_builder(TcpConst)
_new_timer = frozen_builder(TimerState)
# stopped timers (the common case when handing an idle connection over) are immutable values: share them
_STOPPED_TIMERS = tuple(_new_timer(count, TIMER_STOPPED) for count in range(256))
_cached_by_config: dict[TcpConfig, TcpCached] = {}


def _default_cached(config: TcpConfig) -> TcpCached:
    """The cached variables a new connection starts from (one immutable value per config, shared)."""
    cached = _cached_by_config.get(config)
    if cached is None:
        if len(_cached_by_config) >= 64:
            _cached_by_config.clear()
        cached = _cached_by_config[config] = TcpCached(
            flags=(TCP_FLAG_NAGLING_ENABLED if config.nagle else 0)
            | (TCP_FLAG_KEEP_ALIVE_ENABLED if config.keepalive else 0),
            initial_rcv_wnd=config.rcv_buf,
            ka_probe_count=config.keepalive_probes,
            ka_timeout=_ticks(config.keepalive_idle),
            ka_interval=_ticks(config.keepalive_interval),
        )
    return cached


def _signed(d: int) -> int:
    d &= _M
    return d - 0x100000000 if d >= 0x80000000 else d


def _ticks(delta: float) -> int:
    t = int(delta * TICKS_PER_SECOND + 0.5)
    return 0 if t < 0 else min(t, 0xFFFFFFFE)


class TcpConnection:
    """One TCP connection's state machine.  See the module docstring for the API contract.

    Internally every sequence number is an unbounded int ("absolute"): incoming 32-bit values are unwrapped relative
    to RCV.NXT / SND.UNA, outgoing ones are masked.  That keeps every comparison a plain integer comparison.
    The send stream is one bytearray starting at sequence ``_sbuf_seq``; ACKed bytes are deleted from its front
    (CPython makes that O(1) amortised).  The receive side is a bytearray of in-order unread bytes plus a sorted list
    of out-of-order blocks.
    """

    # no per-instance __dict__: one object per connection instead of two (10,000-connection uploads are GC-bound)
    __slots__ = (
        "_ack_now",
        "_cached",
        "_challenge_count",
        "_challenge_window",
        "_closed",
        "_cwnd",
        "_delack_at",
        "_dupacks",
        "_events",
        "_fin_received",
        "_fin_sent",
        "_in_recovery",
        "_irs",
        "_iss",
        "_ka_at",
        "_ka_count",
        "_ka_enabled",
        "_ka_idle",
        "_ka_interval",
        "_ka_probes",
        "_last_ack_sent",
        "_limited_transmit",
        "_max_rt_ticks",
        "_max_snd_wnd",
        "_nagle",
        "_offer_flags",
        "_ooo",
        "_ooo_fin",
        "_ooo_last",
        "_opt_cache",
        "_opt_tsecr",
        "_opt_tsval",
        "_out",
        "_persist_at",
        "_persist_count",
        "_persist_force",
        "_rbuf",
        "_rcv_adv",
        "_rcv_buf",
        "_rcv_nxt",
        "_rcv_up",
        "_rcv_wscale",
        "_recover",
        "_remote_mss",
        "_rescue_done",
        "_rexmit_count",
        "_rexmit_start",
        "_rexmit_una",
        "_rto",
        "_rto_at",
        "_rto_force",
        "_rto_undo",
        "_rtt_seq",
        "_rtt_time",
        "_rttvar",
        "_rxt_log",
        "_sack_ok",
        "_sack_rec",
        "_sack_rexmit_hi",
        "_sacked",
        "_sbuf",
        "_sbuf_seq",
        "_smss",
        "_snd_max",
        "_snd_nxt",
        "_snd_una",
        "_snd_wl1",
        "_snd_wl2",
        "_snd_wnd",
        "_snd_wscale",
        "_srtt",
        "_ssthresh",
        "_syn_needed",
        "_tlp_at",
        "_tlp_out",
        "_total_rt_base",
        "_ts_offset",
        "_ts_ok",
        "_ts_recent",
        "_ts_recent_time",
        "_ts_recent_valid",
        "_tw_at",
        "_unacked_bytes",
        "_wscale_ok",
        "config",
        "local_port",
        "remote_port",
        "state",
        "stats",
    )

    state: TcpState
    stats: TcpStats
    config: TcpConfig
    local_port: int
    remote_port: int

    def __init__(self, config: TcpConfig, local_port: int, remote_port: int, now: float) -> None:
        self.config = config
        self.local_port = local_port
        self.remote_port = remote_port
        self.state = _CLOSED
        self.stats = TcpStats(last_activity=now)
        self._events: list[TcpEvent] = _NO_EVENTS
        self._out: list[TcpSegment] = _NO_OUT
        # negotiated options
        self._ts_ok = False
        self._sack_ok = False
        self._wscale_ok = False
        self._snd_wscale = 0
        self._rcv_wscale = 0
        self._offer_flags = 0  # what our SYN offered (TcpConst flags) while SYN_SENT
        self._remote_mss = _DEFAULT_REMOTE_MSS
        self._smss = _DEFAULT_REMOTE_MSS  # payload bytes per full segment
        # send side
        self._iss = 0
        self._snd_una = 0
        self._snd_nxt = 0
        self._snd_max = 0
        self._snd_wnd = 0
        self._max_snd_wnd = 0
        self._snd_wl1 = 0
        self._snd_wl2 = 0
        self._sbuf = bytearray()
        self._sbuf_seq = 0  # sequence number of _sbuf[0]
        self._closed = False  # application closed the send half: FIN at _sbuf_seq + len(_sbuf)
        self._fin_sent = False
        self._syn_needed = False
        # receive side
        self._irs = 0
        self._rcv_nxt = 0
        self._rcv_adv = 0  # right edge we advertised: never moves left
        self._rcv_buf = config.rcv_buf
        self._rbuf = bytearray()
        # sorted [start, end, bytearray] blocks above RCV.NXT; the shared empty list until the first block arrives
        # (only _insert_ooo adds to it, and it swaps in a list of its own first)
        self._ooo: list[list[Any]] = _NO_OOO
        self._ooo_last: tuple[int, int] | None = None  # block holding the most recent out-of-order arrival
        self._ooo_fin: int | None = None  # sequence number of an out-of-order FIN
        self._fin_received = False
        self._rcv_up = 0  # highest urgent pointer reported
        self._last_ack_sent = 0
        # ACK generation
        self._ack_now = False
        self._delack_at: float | None = None
        self._unacked_bytes = 0
        self._challenge_window = -1
        self._challenge_count = 0
        # timestamps
        self._ts_offset = 1
        self._ts_recent = 0
        self._ts_recent_time = now
        self._ts_recent_valid = False
        self._opt_cache = NO_OPTIONS
        self._opt_tsval = -1
        self._opt_tsecr = -1
        # RTT / RTO (seconds)
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto = config.initial_rto
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self._rexmit_count = 0
        self._rexmit_start: float | None = None  # when the current segment was first retransmitted
        self._total_rt_base = 0.0
        self._rto_at: float | None = None
        # congestion control
        self._cwnd = 0
        self._ssthresh = _INFINITE_SSTHRESH
        self._dupacks = 0
        self._limited_transmit = 0  # extra window for RFC 3042 limited transmit
        self._in_recovery = False
        self._recover = 0
        self._rexmit_una = False  # a fast retransmit of SND.UNA is due
        # SACK scoreboard: sorted [start, end) above SND.UNA; shared empty list until _update_scoreboard adds one
        self._sacked: list[list[int]] = _NO_SACKED
        self._sack_rexmit_hi = 0  # HighRxt (RFC 6675): holes below this were already retransmitted in this recovery
        self._sack_rec = False  # this recovery is RFC 6675 (pipe / NextSeg) rather than NewReno
        self._rescue_done = False  # RFC 6675 rescue retransmission already sent in this recovery
        # retransmissions of this SACK recovery as [start, end, SND.MAX when sent]; shared empty list until needed
        self._rxt_log: list[list[int]] = _NO_SACKED
        # tail loss probe (RFC 8985 7): not handed over (the new owner starts without one, which is allowed)
        self._tlp_at: float | None = None
        self._tlp_out = False  # a probe is out; no other until SND.UNA advances
        # Eifel detection (RFC 3522/4015): (cwnd, ssthresh, our TSval) when the first RTO of an episode fired
        self._rto_undo: tuple[int, int, int] | None = None
        # persist / keepalive / time-wait
        self._persist_at: float | None = None
        self._persist_count = 0
        self._persist_force = False
        self._rto_force = False
        self._nagle = config.nagle
        self._ka_enabled = config.keepalive
        self._ka_idle = config.keepalive_idle
        self._ka_interval = config.keepalive_interval
        self._ka_probes = config.keepalive_probes
        self._ka_count = 0
        self._ka_at: float | None = None
        self._tw_at: float | None = None
        self._max_rt_ticks = 0
        self._cached = _default_cached(config)

    # ================================================================================================ constructors

    def _our_wscale(self) -> int:
        s = 0
        while s < _MAX_WSCALE and (self._rcv_buf >> s) > 0xFFFF:
            s += 1
        return s

    def _offer_options(self) -> TcpOptions:
        c = self.config
        return TcpOptions(
            mss=c.mss,
            window_scale=self._rcv_wscale if self._offer_flags & TCP_FLAG_WINDOW_SCALING_ENABLED else None,
            sack_permitted=bool(self._offer_flags & TCP_FLAG_SACK_ENABLED),
            timestamp=None,  # filled per segment
        )

    def _negotiate(self, opts: TcpOptions) -> None:
        """Apply the peer's SYN options against what we offer."""
        self._remote_mss = opts.mss if opts.mss else _DEFAULT_REMOTE_MSS
        if self._offer_flags & TCP_FLAG_WINDOW_SCALING_ENABLED and opts.window_scale is not None:
            self._wscale_ok = True
            self._snd_wscale = min(opts.window_scale, _MAX_WSCALE)
        else:
            self._wscale_ok = False
            self._snd_wscale = 0
            self._rcv_wscale = 0
        self._ts_ok = bool(self._offer_flags & TCP_FLAG_TIMESTAMP_ENABLED) and opts.timestamp is not None
        self._sack_ok = bool(self._offer_flags & TCP_FLAG_SACK_ENABLED) and opts.sack_permitted
        self._set_smss()

    def _set_smss(self) -> None:
        m = min(self._remote_mss, self.config.mss)
        if self._ts_ok:
            m -= _TS_OPT_LEN
        self._smss = max(m, 64)

    def _init_offer(self) -> None:
        c = self.config
        self._offer_flags = (
            (TCP_FLAG_WINDOW_SCALING_ENABLED if c.window_scale else 0)
            | (TCP_FLAG_TIMESTAMP_ENABLED if c.timestamps else 0)
            | (TCP_FLAG_SACK_ENABLED if c.sack else 0)
        )
        self._rcv_wscale = self._our_wscale() if c.window_scale else 0

    @classmethod
    def connect(cls, config: TcpConfig, local_port: int, remote_port: int, iss: int, now: float) -> TcpConnection:
        self = cls(config, local_port, remote_port, now)
        self._init_offer()
        iss &= _M
        self._iss = self._snd_una = self._snd_nxt = self._snd_max = iss
        self._sbuf_seq = iss + 1
        self._recover = iss
        self._cwnd = self._initial_cwnd()
        self.state = _SYN_SENT
        self._syn_needed = True
        return self

    @classmethod
    def accept(cls, config: TcpConfig, syn: TcpSegment, iss: int, now: float) -> TcpConnection:
        self = cls(config, syn.dst_port, syn.src_port, now)
        self._init_offer()
        self._negotiate(syn.options)
        iss &= _M
        self._iss = self._snd_una = self._snd_nxt = self._snd_max = iss
        self._sbuf_seq = iss + 1
        self._recover = iss
        self._irs = syn.seq & _M
        self._rcv_nxt = self._irs + 1
        self._rcv_adv = self._rcv_nxt
        self._snd_wnd = syn.window  # never scaled in a SYN
        self._max_snd_wnd = syn.window
        self._snd_wl1 = self._irs
        self._snd_wl2 = iss
        if self._ts_ok and syn.options.timestamp is not None:
            self._ts_recent = syn.options.timestamp[0]
            self._ts_recent_time = now
            self._ts_recent_valid = True
        self._cwnd = self._initial_cwnd()
        self.state = _SYN_RCVD
        self._syn_needed = True
        self.stats.segments_in += 1
        return self

    def _initial_cwnd(self) -> int:
        return max(self.config.initial_cwnd_segments, 1) * self._smss

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

        Timer encoding beyond NDIS: in TIME_WAIT the remaining 2MSL time travels in Retransmit.TimeoutDelta, and
        while a zero-window persist timer runs (nothing outstanding) it travels there too with SndWndProbeCount.
        """
        d = delegated
        self = cls(config, const.local_port, const.remote_port, now)
        st = d.state if type(d.state) is TcpState else TcpState(d.state)  # (an enum call costs a microsecond)
        self.state = st
        self._offer_flags = const.flags
        self._ts_ok = const.timestamps
        self._sack_ok = const.sack
        self._wscale_ok = const.window_scaling
        self._snd_wscale = const.snd_wind_scale
        self._rcv_wscale = const.rcv_wind_scale
        self._remote_mss = const.remote_mss or _DEFAULT_REMOTE_MSS
        self._set_smss()
        self._apply_cached(cached, now, initial=True)
        # send sequence space
        una = d.snd_una & _M
        self._snd_una = una
        self._snd_nxt = una + ((d.snd_nxt - una) & _M)
        self._snd_max = una + ((d.snd_max - una) & _M)
        if self._snd_max < self._snd_nxt:
            self._snd_max = self._snd_nxt
        syn_unacked = st in _SYN_STATES
        if syn_unacked:
            self._iss = una
        self._fin_sent = d.fin_sent
        self._closed = send_closed or d.fin_sent or st in _FIN_QUEUED_STATES
        if self._closed:
            # the application closed but the state was recorded before close() moved it (RFC 9293 CLOSE call)
            if st == _ESTABLISHED:
                self.state = st = _FIN_WAIT_1
            elif st == _CLOSE_WAIT:
                self.state = st = _LAST_ACK
        self._sbuf = bytearray(send_data)
        if d.fin_sent:
            self._sbuf_seq = self._snd_max - 1 - len(send_data)
        else:
            self._sbuf_seq = una + (1 if syn_unacked else 0)
        self._snd_wnd = d.snd_wnd
        self._max_snd_wnd = max(d.max_snd_wnd, d.snd_wnd)
        self._snd_wl2 = una + _signed(d.send_wl2 - una)
        self._cwnd = d.cwnd if d.cwnd > 0 else self._initial_cwnd()
        self._ssthresh = d.ssthresh if d.ssthresh > 0 else _INFINITE_SSTHRESH
        self._dupacks = d.dup_ack_count
        self._recover = una
        if self._dupacks >= 3:
            self._in_recovery = True
            self._recover = self._snd_max
            # the exporter may have triggered the fast retransmit without sending it yet: send it (again) now
            # rather than only after the next RTO; at worst one duplicate of an unacknowledged segment
            self._rexmit_una = self._snd_max > una and st in _SEND_STATES
        # receive sequence space
        self._rcv_nxt = d.rcv_nxt & _M
        self._irs = self._rcv_nxt - 1
        self._rcv_adv = self._rcv_nxt + d.rcv_wnd
        self._last_ack_sent = self._rcv_nxt
        self._rcv_up = self._rcv_nxt
        self._snd_wl1 = self._rcv_nxt + _signed(d.send_wl1 - self._rcv_nxt)
        self._rbuf = bytearray(recv_buffered)
        self._fin_received = d.fin_received
        if st == _SYN_SENT:
            self._rcv_nxt = self._rcv_adv = self._last_ack_sent = 0  # nothing known about the peer yet
        # RTT estimator
        if d.srtt > 0:
            self._srtt = d.srtt / 8.0 / TICKS_PER_SECOND
            self._rttvar = d.rttvar / 4.0 / TICKS_PER_SECOND
        self._rto = self._compute_rto()
        # timestamps: keep TSval monotonic by continuing the exporter's clock
        self._ts_offset = (d.ts_time - int(now * TICKS_PER_SECOND)) & _M
        self._ts_recent = d.ts_recent & _M
        self._ts_recent_time = now - d.ts_recent_age / TICKS_PER_SECOND
        self._ts_recent_valid = self._ts_ok and st != _SYN_SENT
        # timers
        rt = d.retransmit
        self._rexmit_count = rt.count
        self._total_rt_base = d.total_rt / TICKS_PER_SECOND
        if d.total_rt:
            self._rexmit_start = now - self._total_rt_base
        self._persist_count = d.snd_wnd_probe_count
        if rt.running:
            at = now + rt.timeout_delta / TICKS_PER_SECOND
            if st == _TIME_WAIT:
                self._tw_at = at
            elif st in _SYN_STATES or self._snd_max > self._snd_una:
                self._rto_at = at
            else:
                self._persist_at = at
        elif st == _TIME_WAIT:
            self._tw_at = now + config.time_wait
        if st in _SYN_STATES and self._snd_max == self._snd_una:
            self._syn_needed = True
        ka = d.keepalive
        self._ka_count = ka.count
        if ka.running:
            self._ka_at = now + ka.timeout_delta / TICKS_PER_SECOND
        elif self._ka_enabled and st in _KEEPALIVE_STATES:
            self._ka_at = now + self._ka_idle
        return self

    def _apply_cached(self, cached: TcpCached, now: float, initial: bool = False) -> None:
        self._cached = cached
        self._nagle = cached.nagling
        self._ka_enabled = cached.keepalive
        self._ka_idle = cached.ka_timeout / TICKS_PER_SECOND
        self._ka_interval = cached.ka_interval / TICKS_PER_SECOND
        self._ka_probes = cached.ka_probe_count or self.config.keepalive_probes
        self._max_rt_ticks = cached.max_rt
        if initial:
            return
        if cached.flags & TCP_FLAG_KEEP_ALIVE_RESTART:
            self._ka_count = 0
            self._ka_at = None
        if cached.flags & TCP_FLAG_MAX_RT_RESTART:
            self._rexmit_start = None
            self._total_rt_base = 0.0
        if cached.flags & TCP_FLAG_UPDATE_RCV_WND and cached.initial_rcv_wnd > 0:
            self._rcv_buf = cached.initial_rcv_wnd
            self._ack_now = True
        if not self._ka_enabled:
            self._ka_at = None
        elif self._ka_at is None and self.state in _KEEPALIVE_STATES:
            self._ka_at = now + self._ka_idle

    def export_state(self, now: float) -> tuple[TcpConst, TcpCached, TcpDelegated, bytes, bytes]:
        """Hand the connection over (see the module docstring).

        A pending delayed ACK is flushed first (reference 7.1: "before completing the terminate, send any delayed
        ACK"): it is left in the output queue, so the caller may drain ``segments_to_send`` once more.  Out-of-order
        (SACKed-only) data is dropped, as the reference requires.
        """
        st = self.state
        if (st in _DATA_RCV_STATES or st in _ACK_ONLY_STATES) and (self._ack_now or self._delack_at is not None):
            self._emit_ack(now)
        self._ooo.clear()
        self._ooo_fin = None
        if st == _SYN_SENT:
            flags = self._offer_flags
            snd_scale = 0
        else:
            flags = (
                (TCP_FLAG_TIMESTAMP_ENABLED if self._ts_ok else 0)
                | (TCP_FLAG_SACK_ENABLED if self._sack_ok else 0)
                | (TCP_FLAG_WINDOW_SCALING_ENABLED if self._wscale_ok else 0)
            )
            snd_scale = self._snd_wscale
        const = _new_const(flags, self.local_port, self.remote_port, snd_scale, self._rcv_wscale, self._remote_mss, 0)
        if st == _TIME_WAIT:
            rt = _new_timer(0, _ticks(self._tw_at - now)) if self._tw_at is not None else _STOPPED_TIMERS[0]
        elif self._rto_at is not None:
            rt = _new_timer(min(self._rexmit_count, 255), _ticks(self._rto_at - now))
        elif self._persist_at is not None:
            rt = _new_timer(min(self._rexmit_count, 255), _ticks(self._persist_at - now))
        else:
            rt = _STOPPED_TIMERS[min(self._rexmit_count, 255)]
        ka_count = min(self._ka_count, 255)
        ka = _new_timer(ka_count, _ticks(self._ka_at - now)) if self._ka_at is not None else _STOPPED_TIMERS[ka_count]
        srtt = self._srtt
        total_rt = 0
        if self._rexmit_start is not None:
            total_rt = _ticks(now - self._rexmit_start)
        deleg = _new_delegated(
            st,
            self._rcv_nxt & _M,
            max(0, self._rcv_adv - self._rcv_nxt),
            self._snd_una & _M,
            self._snd_nxt & _M,
            self._snd_max & _M,
            self._snd_wnd,
            self._max_snd_wnd,
            self._snd_wl1 & _M,
            min(self._cwnd, _M),
            min(self._ssthresh, _M),
            0 if srtt is None else max(1, min(0xFFFF, int(srtt * TICKS_PER_SECOND * 8 + 0.5))),
            0 if srtt is None else min(0xFFFF, int(self._rttvar * TICKS_PER_SECOND * 4 + 0.5)),
            self._ts_recent,
            _ticks(now - self._ts_recent_time),
            self._ts_now(now),
            total_rt,
            min(self._dupacks, 255) if not self._in_recovery else max(min(self._dupacks, 255), 3),
            min(self._persist_count, 255),
            ka,
            rt,
            self._snd_wl2 & _M,
            self._fin_sent,
            self._fin_received,
        )
        return const, self._cached, deleg, bytes(self._sbuf), bytes(self._rbuf)

    # ================================================================================================ app calls

    def send(self, data: bytes) -> None:
        if not data:
            return
        if self._closed or self.state == _CLOSED or self.state == _TIME_WAIT:
            d = self.stats.dropped_segments
            d["send_after_close"] = d.get("send_after_close", 0) + 1
            return
        self._sbuf += data

    def read(self, max_bytes: int = -1) -> bytes:
        buf = self._rbuf
        n = len(buf)
        if n == 0:
            return b""
        if 0 <= max_bytes < n:
            n = max_bytes
            data = bytes(buf[:n])
            del buf[:n]
        else:
            data = bytes(buf)
            buf.clear()
        # Window update when reading reopened a (mostly) closed window by enough (RFC 1122 receiver SWS avoidance);
        # while the advertised window is still more than half the buffer the next regular ACK carries it.
        if self.state in _DATA_RCV_STATES:
            free = self._rcv_buf - len(buf)
            cur = self._rcv_adv - self._rcv_nxt
            if free - cur >= min(self._rcv_buf // 2, self._smss) and 2 * cur <= self._rcv_buf:
                self._ack_now = True
        return data

    def close(self) -> None:
        st = self.state
        if st in (_SYN_SENT, _CLOSED, _LISTEN):
            self._to_closed(None)
            return
        if self._closed:
            return
        self._closed = True
        # In SYN_RCVD the FIN waits for the handshake: the ACK of our SYN then moves us to FIN_WAIT_1.
        if st == _ESTABLISHED:
            self.state = _FIN_WAIT_1
        elif st == _CLOSE_WAIT:
            self.state = _LAST_ACK

    def abort(self) -> None:
        st = self.state
        if st not in (_CLOSED, _SYN_SENT, _LISTEN, _TIME_WAIT):
            self._queue(self._make(self._snd_nxt, RST | ACK, b"", None, rst=True))
        self._to_closed(None)

    def update_cached(self, cached: TcpCached, now: float) -> None:
        """Apply a host update of the cached variables (keepalive, Nagle, InitialRcvWnd, MaxRT, TTL...)."""
        self._apply_cached(cached, now)

    # ================================================================================================ views

    def next_timer(self) -> float | None:
        # called after every segment: plain comparisons, no tuple to build and iterate
        t = self._rto_at
        x = self._delack_at
        if x is not None and (t is None or x < t):
            t = x
        x = self._persist_at
        if x is not None and (t is None or x < t):
            t = x
        x = self._ka_at
        if x is not None and (t is None or x < t):
            t = x
        x = self._tw_at
        if x is not None and (t is None or x < t):
            t = x
        x = self._tlp_at
        if x is not None and (t is None or x < t):
            t = x
        return t

    def pop_events(self) -> list[TcpEvent]:
        ev = self._events
        if not ev:
            return []  # never hand out the shared _NO_EVENTS
        self._events = _NO_EVENTS
        return ev

    def _event(self, event: TcpEvent) -> None:
        ev = self._events
        if ev is _NO_EVENTS:
            ev = self._events = []
        ev.append(event)

    def _queue(self, seg: TcpSegment) -> None:
        self._out_list().append(seg)

    def _out_list(self) -> list[TcpSegment]:
        """The output queue, swapping in a list of its own for the shared empty one."""
        out = self._out
        if out is _NO_OUT:
            out = self._out = []
        return out

    @property
    def snd_una(self) -> int:
        return self._snd_una & _M

    @property
    def snd_nxt(self) -> int:
        return self._snd_nxt & _M

    @property
    def snd_max(self) -> int:
        return self._snd_max & _M

    @property
    def rcv_nxt(self) -> int:
        return self._rcv_nxt & _M

    @property
    def rcv_wnd(self) -> int:
        """Window currently advertised (right edge minus RCV.NXT)."""
        return max(0, self._rcv_adv - self._rcv_nxt)

    @property
    def readable(self) -> int:
        return len(self._rbuf)

    @property
    def unacked_send_bytes(self) -> int:
        return len(self._sbuf)

    @property
    def send_closed(self) -> bool:
        return self._closed

    @property
    def srtt(self) -> float | None:
        return self._srtt

    @property
    def rto(self) -> float:
        return self._rto

    @property
    def cwnd(self) -> int:
        return self._cwnd

    @property
    def pipe(self) -> int:
        """Bytes estimated in flight: RFC 6675 pipe during SACK recovery, else SND.MAX - SND.UNA."""
        if not self._sack_rec:
            return self._snd_max - self._snd_una
        return self._pipe(self._lost_edge())

    @property
    def in_recovery(self) -> bool:
        """Fast recovery (RFC 6675 with SACK information, RFC 6582 without) is running."""
        return self._in_recovery

    @property
    def snd_wnd(self) -> int:
        return self._snd_wnd

    @property
    def ts_enabled(self) -> bool:
        return self._ts_ok

    @property
    def sack_enabled(self) -> bool:
        return self._sack_ok

    @property
    def snd_wscale(self) -> int:
        return self._snd_wscale

    @property
    def rcv_wscale(self) -> int:
        return self._rcv_wscale

    @property
    def remote_mss(self) -> int:
        return self._remote_mss

    @property
    def ooo_bytes(self) -> int:
        return sum(b[1] - b[0] for b in self._ooo)

    # ================================================================================================ helpers

    def _ts_now(self, now: float) -> int:
        return (int(now * TICKS_PER_SECOND) + self._ts_offset) & _M

    def _compute_rto(self) -> float:
        c = self.config
        if self._srtt is None:
            rto = c.initial_rto
        else:
            rto = self._srtt + max(1.0 / TICKS_PER_SECOND, 4.0 * self._rttvar)
        if rto < c.min_rto:
            rto = c.min_rto
        return min(rto, c.max_rto)

    def _current_rto(self) -> float:
        rto = self._rto * (1 << min(self._rexmit_count, 30))
        return min(rto, self.config.max_rto)

    def _rtt_sample(self, r: float) -> None:
        if r < 0:
            return
        if self._srtt is None:
            self._srtt = r
            self._rttvar = r / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - r)
            self._srtt = 0.875 * self._srtt + 0.125 * r
        self._rto = self._compute_rto()

    def _to_closed(self, event: TcpEvent | None) -> None:
        self.state = _CLOSED
        self._rto_at = self._delack_at = self._persist_at = self._ka_at = self._tw_at = None
        self._ack_now = False
        self._rexmit_una = False
        self._syn_needed = False
        if event is not None:
            self._event(event)

    def _window_field(self) -> int:
        """The 16-bit window field for a non-SYN segment; keeps the advertised right edge from moving left."""
        s = self._rcv_wscale
        nxt = self._rcv_nxt
        cur = self._rcv_adv - nxt
        free = self._rcv_buf - len(self._rbuf)
        if free - cur >= min(self._rcv_buf >> 1, self._smss):
            wnd = free
        else:
            wnd = cur
        if wnd < cur:
            wnd = cur
        field = (wnd + (1 << s) - 1) >> s if wnd == cur else wnd >> s
        if (field << s) < cur:
            field = (cur + (1 << s) - 1) >> s
        if field > 0xFFFF:
            field = 0xFFFF
        edge = nxt + (field << s)
        if edge > self._rcv_adv:
            self._rcv_adv = edge
        return field

    def _make(self, seq: int, flags: int, payload: bytes, now: float | None, rst: bool = False) -> TcpSegment:
        """Build one outgoing segment with ACK, window, timestamps and SACK as negotiated."""
        if flags & ACK:
            window = self._window_field() if not rst else 0
            ack = self._rcv_nxt & _M
            self._last_ack_sent = self._rcv_nxt
        else:
            window = 0
            ack = 0
        if self._ts_ok and now is not None:
            tsval = (int(now * TICKS_PER_SECOND) + self._ts_offset) & _M
            if self._sack_ok and self._ooo:
                opts = _new_options(None, None, False, self._sack_blocks(), (tsval, self._ts_recent))
            elif tsval == self._opt_tsval and self._ts_recent == self._opt_tsecr:
                opts = self._opt_cache  # same millisecond, same echo: reuse the (immutable) options value
            else:
                opts = self._opt_cache = _new_options(None, None, False, (), (tsval, self._ts_recent))
                self._opt_tsval = tsval
                self._opt_tsecr = self._ts_recent
        elif self._sack_ok and self._ooo:
            opts = TcpOptions(sack_blocks=self._sack_blocks())
        else:
            opts = NO_OPTIONS
        return _new_segment(self.local_port, self.remote_port, seq & _M, ack, flags, window, payload, opts, 0)

    def _sack_opt_len(self) -> int:
        """Bytes the SACK option adds to a segment sent now (NOP NOP kind len + 8 per block; 0 without SACK)."""
        if not self._sack_ok or not self._ooo:
            return 0
        return 4 + 8 * min(len(self._ooo), 3 if self._ts_ok else 4)

    def _sack_blocks(self) -> tuple[tuple[int, int], ...]:
        limit = 3 if self._ts_ok else 4
        blocks: list[tuple[int, int]] = []
        last = self._ooo_last
        if last is not None:
            for b in self._ooo:
                if b[0] <= last[0] and last[1] <= b[1]:
                    blocks.append((b[0] & _M, b[1] & _M))
                    break
        for b in reversed(self._ooo):
            if len(blocks) >= limit:
                break
            t = (b[0] & _M, b[1] & _M)
            if t not in blocks:
                blocks.append(t)
        return tuple(blocks)

    def _emit_ack(self, now: float) -> None:
        # SND.MAX, not SND.NXT: after an RTO rewound SND.NXT the peer may already hold more (BSD does the same)
        self._queue(self._make(self._snd_max, ACK, b"", now))
        self.stats.segments_out += 1
        self._ack_now = False
        self._delack_at = None
        self._unacked_bytes = 0

    def _challenge_ack(self, now: float) -> None:
        sec = int(now)
        if sec != self._challenge_window:
            self._challenge_window = sec
            self._challenge_count = 0
        if self._challenge_count >= _CHALLENGE_ACK_LIMIT:
            self._drop("challenge_ack_limited")
            return
        self._challenge_count += 1
        self.stats.challenge_acks += 1
        self._emit_ack(now)

    def _drop(self, reason: str) -> None:
        d = self.stats.dropped_segments
        d[reason] = d.get(reason, 0) + 1

    def _send_rst_for(self, seg: TcpSegment) -> None:
        """Reply to an unacceptable segment with a RST (RFC 9293 reset generation)."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            self._queue(TcpSegment(self.local_port, self.remote_port, seg.ack, 0, RST, 0))
        else:
            self._queue(TcpSegment(self.local_port, self.remote_port, 0, (seg.seq + seg.seg_len) & _M, RST | ACK, 0))
        self.stats.segments_out += 1

    # ================================================================================================ input

    def handle_segment(self, seg: TcpSegment, now: float) -> None:
        st = self.state
        stats = self.stats
        stats.segments_in += 1
        stats.last_activity = now
        if st in (_CLOSED, _LISTEN):
            self._drop("closed")
            return
        if st == _SYN_SENT:
            self._input_syn_sent(seg, now)
            return
        flags = seg.flags
        if flags & _FAST_MASK == ACK and st in _FAST_STATES and self._fast_path(seg, now):
            return
        rcv_nxt = self._rcv_nxt
        seq = rcv_nxt + _signed(seg.seq - rcv_nxt)
        plen = len(seg.payload)
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        # --- PAWS (RFC 7323 5.3)
        ts = seg.options.timestamp if self._ts_ok else None
        if ts is not None and self._ts_recent_valid and not flags & RST:
            behind = (self._ts_recent - ts[0]) & _M
            if 0 < behind < 0x80000000:  # SEG.TSval < TS.Recent
                if now - self._ts_recent_time > _PAWS_IDLE_LIMIT:
                    self._ts_recent_valid = False
                else:
                    self._drop("paws")
                    self._emit_ack(now)
                    return
        # --- sequence acceptability (RFC 9293 3.10.7.4 first check)
        rcv_wnd = self._rcv_adv - rcv_nxt
        if rcv_wnd < 0:
            rcv_wnd = 0
        if flags & RST:
            if st == _TIME_WAIT:
                # RFC 1337: a RST must not end TIME_WAIT early (e.g. the closed peer's answer to a duplicated ACK)
                self._drop("rst_in_time_wait")
                return
            self._input_rst(seq, now)
            return
        if seg_len == 0:
            ok = seq == rcv_nxt if rcv_wnd == 0 else rcv_nxt <= seq < rcv_nxt + rcv_wnd
        elif rcv_wnd == 0:
            ok = False
        else:
            end = seq + seg_len - 1
            ok = (rcv_nxt <= seq < rcv_nxt + rcv_wnd) or (rcv_nxt <= end < rcv_nxt + rcv_wnd)
        if not ok and not (flags & SYN and st == _SYN_RCVD):
            if seg_len and seq + seg_len <= rcv_nxt:
                stats.duplicate_segments += 1
            self._drop("out_of_window")
            if seg_len == 0 and seq < rcv_nxt and not flags & ACK:
                return
            if st == _SYN_RCVD:
                return
            if st == _TIME_WAIT and flags & FIN:
                self._tw_at = now + self.config.time_wait  # a retransmitted FIN restarts the 2MSL wait
            self._emit_ack(now)
            return
        # --- SYN (RFC 5961 4.2)
        if flags & SYN:
            if st == _SYN_RCVD and seq == self._irs:
                if not flags & ACK:
                    self._syn_needed = True  # a retransmitted SYN: resend our SYN-ACK
                    return
                # simultaneous open: the peer's SYN-ACK; treat the ACK below
                if ts is not None:
                    self._ts_recent = ts[0]
                    self._ts_recent_time = now
                    self._ts_recent_valid = True
            else:
                self._challenge_ack(now)
                return
        # --- ACK
        if not flags & ACK:
            self._drop("no_ack")
            return
        # timestamps: update TS.Recent (RFC 7323 4.3)
        if (
            ts is not None
            and seq <= self._last_ack_sent
            and (not self._ts_recent_valid or ((ts[0] - self._ts_recent) & _M) < 0x80000000)
        ):
            self._ts_recent = ts[0]
            self._ts_recent_time = now
            self._ts_recent_valid = True
        if self._ka_at is not None or self._ka_enabled:
            self._ka_count = 0
            self._ka_at = now + self._ka_idle if (self._ka_enabled and self.state in _KEEPALIVE_STATES) else None
        una = self._snd_una
        ack = una + _signed(seg.ack - una)
        if st == _SYN_RCVD:
            if una < ack <= self._snd_max:
                self.state = st = _ESTABLISHED if not self._closed else _FIN_WAIT_1
                self._syn_needed = False
                self._snd_wnd = seg.window << self._snd_wscale
                self._max_snd_wnd = max(self._max_snd_wnd, self._snd_wnd)
                self._snd_wl1 = seq
                self._snd_wl2 = ack
                self._event(TcpConnected())
                if self._ka_enabled and st in _KEEPALIVE_STATES:
                    self._ka_at = now + self._ka_idle
            else:
                self._send_rst_for(seg)
                return
        if ack > self._snd_max:
            self._challenge_ack(now)
            return
        if ack < una - self._max_snd_wnd:
            self._challenge_ack(now)
            return
        self._input_ack(seg, seq, ack, plen, flags, ts, now)
        st = self.state
        if st == _CLOSED:
            return
        if st == _TIME_WAIT:
            if flags & FIN:
                self._tw_at = now + self.config.time_wait
                self._emit_ack(now)
            return
        # --- URG (RFC 6093: data inline, just report the pointer)
        if flags & URG and seg.urgent_pointer and st in _DATA_RCV_STATES:
            up = seq + seg.urgent_pointer
            if up > self._rcv_up:
                self._rcv_up = up
                self._event(TcpUrgentData((up - 1) & _M))
        # --- data and FIN
        if st in _DATA_RCV_STATES:
            if plen or flags & FIN:
                self._input_data(seg.payload, seq, plen, bool(flags & FIN), bool(flags & PSH), now)
        elif flags & FIN and seq + plen == self._rcv_nxt - 1 and self._fin_received:
            self._ack_now = True  # retransmitted FIN: re-ACK it
        elif plen and seq < self._rcv_nxt:
            stats.duplicate_segments += 1
            self._ack_now = True

    def _fast_path(self, seg: TcpSegment, now: float) -> bool:
        """Header prediction for _FAST_STATES: in-order (or no) data with a plain ACK.  False = take the full path.

        Does exactly what the full path would do for such a segment, minus the checks that cannot fail.
        """
        rcv_nxt = self._rcv_nxt
        if seg.seq != rcv_nxt & _M or self._ooo or self._ooo_fin is not None:
            return False
        plen = len(seg.payload)
        if plen and (plen > self._rcv_adv - rcv_nxt or self.state == _CLOSE_WAIT):
            return False
        ts = None
        if self._ts_ok:
            ts = seg.options.timestamp
            if ts is not None:
                d = (ts[0] - self._ts_recent) & _M
                if d >= 0x80000000 and self._ts_recent_valid:
                    return False  # PAWS candidate
                if rcv_nxt <= self._last_ack_sent:
                    self._ts_recent = ts[0]
                    self._ts_recent_time = now
                    self._ts_recent_valid = True
        una = self._snd_una
        d = (seg.ack - una) & _M
        if d >= 0x80000000 or una + d > self._snd_max:
            return False  # old or impossible ACK: full checks
        if self._ka_enabled or self._ka_at is not None:
            self._ka_count = 0
            self._ka_at = now + self._ka_idle if (self._ka_enabled and self.state in _KEEPALIVE_STATES) else None
        self._input_ack(seg, rcv_nxt, una + d, plen, ACK, ts, now)
        if plen and self.state in _DATA_RCV_STATES:
            self._rbuf += seg.payload
            self._rcv_nxt = rcv_nxt + plen
            self.stats.bytes_in += plen
            self._event(_new_data_received(len(self._rbuf)))
            if self._ack_now or self.config.delayed_ack <= 0:
                self._ack_now = True
            else:
                self._unacked_bytes += plen
                if self._unacked_bytes >= 2 * self._smss:
                    self._ack_now = True
                elif self._delack_at is None:
                    self._delack_at = now + self.config.delayed_ack
        return True

    def _input_rst(self, seq: int, now: float) -> None:
        rcv_nxt = self._rcv_nxt
        if seq == rcv_nxt:
            self._drop_all_data()
            self._to_closed(TcpReset())
            return
        wnd = max(self._rcv_adv - rcv_nxt, 1)
        if rcv_nxt < seq < rcv_nxt + wnd:
            self._challenge_ack(now)
        else:
            self._drop("rst_out_of_window")

    def _drop_all_data(self) -> None:
        self._ooo.clear()

    def _input_syn_sent(self, seg: TcpSegment, now: float) -> None:
        flags = seg.flags
        iss = self._iss
        ack = iss + _signed(seg.ack - iss)
        if flags & ACK and (ack <= iss or ack > self._snd_max):
            self._drop("bad_ack")
            self._send_rst_for(seg)
            return
        if flags & RST:
            if flags & ACK:
                self._to_closed(TcpReset())
            else:
                self._drop("rst_no_ack")
            return
        if not flags & SYN:
            self._drop("no_syn")
            return
        self._negotiate(seg.options)
        self._cwnd = self._initial_cwnd()
        self._irs = seg.seq & _M
        self._rcv_nxt = self._irs + 1
        self._rcv_adv = self._rcv_nxt
        self._rcv_up = self._rcv_nxt
        self._last_ack_sent = self._rcv_nxt
        ts = seg.options.timestamp if self._ts_ok else None
        if ts is not None:
            self._ts_recent = ts[0]
            self._ts_recent_time = now
            self._ts_recent_valid = True
        self._snd_wnd = seg.window
        self._max_snd_wnd = seg.window
        self._snd_wl1 = self._irs
        self._snd_wl2 = ack if flags & ACK else iss
        if flags & ACK:
            self._snd_una = ack
            if self._snd_nxt < ack:
                self._snd_nxt = ack
            self._syn_acked(ts, now)
            self.state = _ESTABLISHED if not self._closed else _FIN_WAIT_1
            self._syn_needed = False
            self._event(TcpConnected())
            self._ack_now = True
            if self._ka_enabled:
                self._ka_at = now + self._ka_idle
        else:
            # simultaneous open: SYN_RCVD, our SYN is repeated together with the ACK
            self.state = _SYN_RCVD
            self._syn_needed = True
            self._snd_nxt = iss
            self._rto_at = None

    def _syn_acked(self, ts: tuple[int, int] | None, now: float) -> None:
        """Take an RTT sample for the SYN (Karn: only if it was not retransmitted) and reset the RTO backoff."""
        if self._rexmit_count == 0 and self._rtt_seq is not None:
            self._rtt_sample(now - self._rtt_time)
        self._rtt_seq = None
        self._rexmit_count = 0
        self._rexmit_start = None
        self._rto_at = None
        if self._rexmit_count == 0 and self._srtt is None:
            self._rto = self._compute_rto()

    def _input_ack(
        self, seg: TcpSegment, seq: int, ack: int, plen: int, flags: int, ts: tuple[int, int] | None, now: float
    ) -> None:
        una = self._snd_una
        new_wnd = seg.window << self._snd_wscale
        # window update (RFC 9293: SND.WL1 / SND.WL2)
        wnd_changed = False
        if self._snd_wl1 < seq or (self._snd_wl1 == seq and self._snd_wl2 <= ack):
            if new_wnd != self._snd_wnd:
                wnd_changed = True
                if self._snd_wnd == 0 and new_wnd > 0:
                    self._persist_at = None
                    self._persist_count = 0
                elif new_wnd == 0:
                    self._tlp_at = None  # no probe into a closed window; the RTO (or persist timer) takes over
                self._snd_wnd = new_wnd
                if new_wnd > self._max_snd_wnd:
                    self._max_snd_wnd = new_wnd
            self._snd_wl1 = seq
            self._snd_wl2 = ack
        if self._sack_ok and seg.options.sack_blocks:
            self._update_scoreboard(seg.options.sack_blocks, ack)
        if ack > una:
            self._new_ack(ack, ts, now)
        elif ack == una and plen == 0 and not flags & (SYN | FIN) and not wnd_changed and self._snd_max > una:
            self._dup_ack()
        sk = self._sacked
        if sk:
            if sk[0][0] <= self._snd_una:
                # the peer reneged (it ACKed up to a block it had SACKed, e.g. after a hand-over dropped its
                # out-of-order data): forget the scoreboard and finish this recovery NewReno style
                sk.clear()
                if self._sack_rec:
                    self._sack_rec = False
                    self._rexmit_una = True
            elif (
                not self._in_recovery
                and self._snd_una >= self._recover
                and self._snd_nxt == self._snd_max
                and (
                    self._lost_edge() > self._snd_una
                    # RFC 5827 early retransmit: a small flight whose only unSACKed segment is the first one
                    or (
                        self._snd_max - self._snd_una <= 4 * self._smss + 1
                        and self._unsacked(self._snd_una, self._snd_max) <= self._smss + 1
                    )
                )
            ):
                self._enter_recovery()  # RFC 6675 5 (1): IsLost(SND.UNA) starts recovery before 3 dup ACKs

    def _new_ack(self, ack: int, ts: tuple[int, int] | None, now: float) -> None:
        una = self._snd_una
        acked = ack - una
        smss = self._smss
        # payload bytes acknowledged (the FIN is not payload)
        end = self._sbuf_seq + len(self._sbuf)
        top = ack if ack < end else end
        n = top - self._sbuf_seq
        if n > 0:
            del self._sbuf[:n]
            self._sbuf_seq = top
        self._snd_una = ack
        if self._snd_nxt < ack:
            self._snd_nxt = ack
        # RTT: Karn's rule on one timed segment per RTT.  TSecr samples are not used: with a hole in the other
        # direction the peer's TS.Recent goes stale (RFC 7323 4.3 only updates it in order) and echoes inflate RTO.
        if self._rtt_seq is not None and ack >= self._rtt_seq:
            self._rtt_sample(now - self._rtt_time)
            self._rtt_seq = None
        if self._rexmit_count:
            undo = self._rto_undo
            self._rto_undo = None
            if undo is not None and ts is not None and ((ts[1] - undo[2]) & _M) >= 0x80000000:
                # Eifel: this ACK echoes a TSval from before the RTO, so the original segment arrived and the
                # timeout was spurious: restore the window and send new data instead of going back N (RFC 4015)
                self._cwnd, self._ssthresh = undo[0], undo[1]
                if self._snd_nxt < self._snd_max:
                    self._snd_nxt = self._snd_max
                self._rto_force = False
                self.stats.spurious_timeouts += 1
        self._rexmit_count = 0
        self._rexmit_start = None
        self._total_rt_base = 0.0
        self._persist_count = 0
        # congestion control (RFC 5681 / 6582)
        if self._in_recovery:
            if ack >= self._recover:
                flight = self._snd_max - ack
                self._cwnd = min(self._ssthresh, max(flight, 0) + smss)
                self._in_recovery = False
                self._sack_rec = False
                self._rxt_log = _NO_SACKED
            elif self._sack_rec:
                pass  # RFC 6675: no window deflation; the pipe estimate decides what goes out next
            else:
                self._rexmit_una = True  # partial ACK: retransmit the next hole
                c = self._cwnd - acked + smss
                self._cwnd = c if c > smss else smss
        elif self._cwnd < self._ssthresh:
            # RFC 3465 byte counting (L = 2): a delayed ACK covering two segments grows cwnd by two
            self._cwnd += acked if acked < 2 * smss else 2 * smss
        else:
            # congestion avoidance by bytes acknowledged (RFC 5681 3.1 / RFC 3465): one SMSS per cwnd of ACKed
            # data, so a peer's delayed ACKs do not halve the growth
            self._cwnd += max(1, smss * acked // self._cwnd)
        self._dupacks = 0
        self._limited_transmit = 0
        if self._sacked:
            sk = self._sacked
            while sk and sk[0][1] <= ack:
                sk.pop(0)
            if sk and sk[0][0] < ack:
                sk[0][0] = ack
        # timers
        self._tlp_out = False
        if ack >= self._snd_max:
            self._rto_at = self._tlp_at = None
        elif not self._in_recovery or self._rexmit_una or self._sack_rec:
            self._rto_at = now + self._current_rto()
            if self._sack_ok:
                self._arm_tlp(now)
        if n > 0:
            self._event(_new_send_acked(n, ack & _M))
        # our FIN acknowledged?
        if self._fin_sent and ack == end + 1:
            st = self.state
            if st == _FIN_WAIT_1:
                self.state = _FIN_WAIT_2
            elif st == _CLOSING:
                self._enter_time_wait(now)
            elif st == _LAST_ACK:
                self._to_closed(TcpClosed())

    def _dup_ack(self) -> None:
        self._dupacks += 1
        smss = self._smss
        if self._dupacks < 3 and not self._in_recovery:
            self._limited_transmit = self._dupacks * smss  # RFC 3042: one new segment per early dup ACK
            return
        if self._in_recovery:
            if self._dupacks > 3 and not self._sack_rec:
                self._cwnd += smss
                if self._sacked:
                    self._rexmit_una = True  # SACK-aware: fill the next hole each dup ACK
            return
        if self._dupacks == 3 and self._snd_una >= self._recover and self._snd_nxt == self._snd_max:
            self._enter_recovery()

    def _enter_recovery(self) -> None:
        """Fast retransmit / fast recovery: RFC 6675 (pipe) with a SACK scoreboard, RFC 6582 NewReno without."""
        smss = self._smss
        una = self._snd_una
        self._ssthresh = max((self._snd_max - una) // 2, 2 * smss)
        self._recover = self._snd_max
        self._in_recovery = True
        self._sack_rexmit_hi = una
        self._limited_transmit = 0
        self._rexmit_una = True
        self.stats.fast_retransmits += 1
        self._tlp_at = None
        if self._sack_ok and self._sacked:
            self._sack_rec = True
            self._rescue_done = False
            self._rxt_log = _NO_SACKED
            self._cwnd = self._ssthresh
        else:
            self._sack_rec = False
            self._cwnd = self._ssthresh + 3 * smss

    def _lost_edge(self) -> int:
        """The sequence number below which every unSACKed byte counts as lost (RFC 6675 IsLost: more than
        2 * SMSS bytes, or 3 discontiguous blocks, SACKed above it); SND.UNA when nothing is."""
        sk = self._sacked
        una = self._snd_una
        if len(sk) >= 3:
            edge = sk[-3][0]  # 3 discontiguous SACKed blocks above: DupThresh
        else:
            edge = una
        need = 2 * self._smss + 1
        for s, e in reversed(sk):
            if e - s >= need:
                x = e - need  # [x, top) holds exactly `need` SACKed bytes (no hole lies in [s, x))
                return x if x > edge else edge
            need -= e - s
        return edge

    def _pipe(self, edge: int) -> int:
        """RFC 6675 pipe: unSACKed bytes not deemed lost, plus retransmitted ones (a retransmitted byte that is not
        deemed lost counts twice)."""
        una = self._snd_una
        hi = self._sack_rexmit_hi
        pipe = self._unsacked(edge if edge > una else una, self._snd_max)
        if hi > una:
            pipe += self._unsacked(una, hi)
        return pipe

    def _unsacked(self, a: int, b: int) -> int:
        """Bytes in [a, b) not covered by the scoreboard."""
        if b <= a:
            return 0
        n = b - a
        for s, e in self._sacked:
            if e <= a:
                continue
            if s >= b:
                break
            n -= (e if e < b else b) - (s if s > a else a)
        return n

    def _update_scoreboard(self, blocks: tuple[tuple[int, int], ...], ack: int) -> None:
        una = self._snd_una
        top = self._snd_max
        sk = self._sacked
        if sk is _NO_SACKED:
            sk = self._sacked = []
        if ack < una:
            ack = una  # an old (reordered) ACK: its blocks below SND.UNA say nothing new
        for left, right in blocks:
            s = una + _signed(left - una)
            e = una + _signed(right - una)
            if s < ack:
                s = ack
            if e > top:
                e = top
            if e <= s:
                continue
            # insert and merge
            i = 0
            while i < len(sk) and sk[i][1] < s:
                i += 1
            j = i
            while j < len(sk) and sk[j][0] <= e:
                s = min(s, sk[j][0])
                e = max(e, sk[j][1])
                j += 1
            sk[i:j] = [[s, e]]

    def _enter_time_wait(self, now: float) -> None:
        self.state = _TIME_WAIT
        self._rto_at = self._persist_at = self._ka_at = None
        self._tw_at = now + self.config.time_wait

    def _input_data(self, payload: bytes, seq: int, plen: int, fin: bool, psh: bool, now: float) -> None:
        rcv_nxt = self._rcv_nxt
        right = self._rcv_adv
        if right < rcv_nxt:
            right = rcv_nxt
        # trim to the window
        if seq < rcv_nxt:
            cut = rcv_nxt - seq
            if cut >= plen:
                # nothing new but perhaps the FIN right at RCV.NXT
                if plen:
                    self.stats.duplicate_segments += 1
                if not (fin and cut == plen) or self._fin_received:
                    self._ack_now = True
                    return
                payload = b""
                plen = 0
                seq = rcv_nxt
            else:
                payload = payload[cut:]
                plen -= cut
                seq = rcv_nxt
                self.stats.duplicate_segments += 1
        if seq + plen > right:
            keep = right - seq
            payload = payload[:keep] if keep > 0 else b""
            plen = len(payload)
            fin = False
        if seq == rcv_nxt:
            had_ooo = bool(self._ooo)
            if plen:
                self._rbuf += payload
                rcv_nxt += plen
                self.stats.bytes_in += plen
            if had_ooo:
                rcv_nxt = self._pull_ooo(rcv_nxt)
            self._rcv_nxt = rcv_nxt
            if fin or (self._ooo_fin is not None and self._ooo_fin == rcv_nxt):
                self._ooo_fin = None
                self._receive_fin(now)
            if plen or had_ooo:
                self._event(_new_data_received(len(self._rbuf)))
            if had_ooo or self.config.delayed_ack <= 0 or self._ack_now:
                self._ack_now = True
            else:
                self._unacked_bytes += plen
                if self._unacked_bytes >= 2 * self._smss:
                    self._ack_now = True
                elif self._delack_at is None:
                    self._delack_at = now + self.config.delayed_ack
        else:
            # out of order: queue it and ACK at once (with SACK blocks)
            self.stats.out_of_order_segments += 1
            if plen:
                self._insert_ooo(seq, payload)
            if fin:
                self._ooo_fin = seq + plen
            self._ack_now = True

    def _insert_ooo(self, seq: int, payload: bytes) -> None:
        end = seq + len(payload)
        q = self._ooo
        if q is _NO_OOO:
            q = self._ooo = []
        i = 0
        n = len(q)
        while i < n and q[i][1] < seq:
            i += 1
        if i < n:
            blk = q[i]
            if blk[0] <= seq:
                if end <= blk[1]:
                    self._ooo_last = (seq, end)
                    return  # nothing new
                if i + 1 == n or end < q[i + 1][0]:
                    # the common case: the segment extends a block to the right; grow it in place (no re-copy)
                    blk[2] += memoryview(payload)[blk[1] - seq :]
                    blk[1] = end
                    self._ooo_last = (seq, end)
                    return
        j = i
        s, e = seq, end
        while j < n and q[j][0] <= end:
            j += 1
        if i == j:
            q.insert(i, [s, e, bytearray(payload)])
        else:
            # merge blocks i..j-1 with the new data
            first = q[i]
            last = q[j - 1]
            s = min(seq, first[0])
            e = max(end, last[1])
            buf = bytearray(e - s)
            for b in q[i:j]:
                buf[b[0] - s : b[1] - s] = b[2]
            buf[seq - s : end - s] = payload
            q[i:j] = [[s, e, buf]]
        self._ooo_last = (seq, end)

    def _pull_ooo(self, rcv_nxt: int) -> int:
        q = self._ooo
        while q and q[0][0] <= rcv_nxt:
            s, e, buf = q.pop(0)
            if e > rcv_nxt:
                self._rbuf += memoryview(buf)[rcv_nxt - s :]
                self.stats.bytes_in += e - rcv_nxt
                rcv_nxt = e
        if not q:
            self._ooo_last = None
        return rcv_nxt

    def _receive_fin(self, now: float) -> None:
        if self._fin_received:
            return
        self._fin_received = True
        self._rcv_nxt += 1
        self._ooo.clear()
        self._ack_now = True
        self._event(TcpPeerClosed())
        st = self.state
        if st == _ESTABLISHED:
            self.state = _CLOSE_WAIT
        elif st == _FIN_WAIT_1:
            self.state = _CLOSING
        elif st == _FIN_WAIT_2:
            self._enter_time_wait(now)

    # ================================================================================================ timers

    def handle_timer(self, now: float) -> None:
        if self._tw_at is not None and now >= self._tw_at:
            self._tw_at = None
            self._to_closed(TcpClosed())
            return
        if self._delack_at is not None and now >= self._delack_at:
            self._delack_at = None
            self._ack_now = True
        if self._rto_at is not None and now >= self._rto_at:
            self._tlp_at = None
            self._on_rto(now)
            if self.state == _CLOSED:
                return
        if self._tlp_at is not None and now >= self._tlp_at:
            self._tlp_at = None
            self._on_tlp(now)
        if self._persist_at is not None and now >= self._persist_at:
            self._on_persist(now)
        if self._ka_at is not None and now >= self._ka_at:
            self._on_keepalive(now)

    def _retry_limit_hit(self, now: float) -> bool:
        if self.state in _SYN_STATES:
            return self._rexmit_count >= self.config.syn_retries
        max_rt = self._max_rt_ticks
        if max_rt == 0:
            return self._rexmit_count >= self.config.max_retransmits
        if max_rt == 0xFFFFFFFF:
            return False
        start = self._rexmit_start
        return start is not None and (now - start) * TICKS_PER_SECOND >= max_rt

    def _on_rto(self, now: float) -> None:
        self._rto_at = None
        if self._snd_max == self._snd_una and self.state not in _SYN_STATES:
            return
        if self._retry_limit_hit(now):
            self._to_closed(TcpTimedOut())
            return
        self.stats.timeouts += 1
        if self._rexmit_start is None:
            self._rexmit_start = now
        smss = self._smss
        if self._rexmit_count == 0 and self.state not in _SYN_STATES:
            self._rto_undo = (self._cwnd, self._ssthresh, self._ts_now(now)) if self._ts_ok else None
            flight = self._snd_max - self._snd_una
            self._ssthresh = max(flight // 2, 2 * smss)
        self._rexmit_count += 1
        self._cwnd = smss
        self._in_recovery = False
        self._sack_rec = False
        self._rxt_log = _NO_SACKED
        self._recover = self._snd_max
        self._dupacks = 0
        self._limited_transmit = 0
        # the scoreboard is kept: go-back-N skips SACKed data; SND.UNA itself always goes again, and a peer that
        # reneged is noticed when it ACKs up to a SACKed block (_input_ack clears the scoreboard then)
        self._rtt_seq = None
        self._rexmit_una = False
        self._rto_force = True
        self._snd_nxt = self._snd_una
        if self.state in _SYN_STATES:
            self._syn_needed = True
        self._event(TcpRetransmitted(True))
        self._rto_at = now + self._current_rto()

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 7.2: a probe 2 * SRTT after the last new data or ACK, when it comes before the RTO.  Without it a
        lost tail (or its lost ACKs) costs an RTO; with it the probe's SACK starts ordinary recovery.  Not used with
        one segment in flight (the peer may hold a delayed ACK for it) nor without SACK."""
        srtt = self._srtt
        rto_at = self._rto_at
        if (
            not self.config.tail_loss_probe
            or srtt is None
            or rto_at is None
            or not self._sack_ok
            or self._in_recovery
            or self._tlp_out
            or self._rexmit_count
            or self._snd_wnd == 0
            or self._snd_max - self._snd_una <= self._smss + 1
        ):
            self._tlp_at = None
            return
        at = now + (2 * srtt if srtt > 0.005 else 0.01)
        self._tlp_at = at if at < rto_at else None

    def _on_tlp(self, now: float) -> None:
        """Send the probe: the last segment again (RFC 8985 7.3 allows it; it needs no window)."""
        if self._in_recovery or self._snd_max <= self._snd_una or self.state not in _SEND_STATES:
            return
        end = self._sbuf_seq + len(self._sbuf)
        top = self._snd_max if self._snd_max < end else end
        smss = self._smss - self._sack_opt_len() if self._ooo else self._smss
        start = max(top - smss, self._snd_una, self._sbuf_seq)
        if self._retransmit(start, top - start, now):
            self._tlp_out = True
            self._rto_at = now + self._current_rto()

    def _on_persist(self, now: float) -> None:
        self._persist_at = None
        if self.state not in _SEND_STATES:
            return
        self._persist_count += 1
        if self._snd_wnd == 0:
            # zero-window probe: an old sequence number makes the peer answer with its current window
            self._queue(self._make(self._snd_una - 1, ACK, b"", now))
            self.stats.segments_out += 1
        else:
            self._persist_force = True
        interval = max(self.config.persist_min, self._rto) * (1 << min(self._persist_count, 16))
        self._persist_at = now + min(interval, self.config.max_rto)

    def _on_keepalive(self, now: float) -> None:
        self._ka_at = None
        if not self._ka_enabled or self.state not in _KEEPALIVE_STATES:
            return
        if self._snd_max > self._snd_una:
            self._ka_at = now + self._ka_idle  # data outstanding: the RTO watches the peer
            return
        if self._ka_count >= self._ka_probes:
            self._to_closed(TcpTimedOut())
            return
        self._ka_count += 1
        self._queue(self._make(self._snd_una - 1, ACK, b"", now))
        self.stats.segments_out += 1
        self._ka_at = now + self._ka_interval

    # ================================================================================================ output

    def segments_to_send(self, now: float) -> list[TcpSegment]:
        st = self.state
        if st != _CLOSED and st != _TIME_WAIT:
            self._output(now)
        elif st == _TIME_WAIT and self._ack_now:
            self._emit_ack(now)
        out = self._out
        if not out:
            return []  # never hand out the shared _NO_OUT
        self._out = _NO_OUT
        return out

    def _output(self, now: float) -> None:
        st = self.state
        if st in _SYN_STATES:
            if self._syn_needed:
                self._send_syn(now)
            elif self._ack_now and st == _SYN_RCVD:
                self._ack_now = False
            return
        nxt = self._snd_nxt
        end = self._sbuf_seq + len(self._sbuf)
        if (
            not self._rexmit_una
            and not self._sack_rec
            and (nxt > end or (nxt == end and not (self._closed and st in _SEND_STATES)))
        ):
            # Nothing to (re)send, no FIN due: what the loop below would conclude, without running it (the
            # receiving side of a bulk transfer comes here once per segment).
            self._persist_force = False
            self._rto_force = False
            if self._ack_now:
                self._emit_ack(now)
            if (
                self._snd_max == self._snd_una
                and self._rto_at is None
                and self._closed
                and not self._fin_sent
                and st in _SEND_STATES
            ):
                if self._persist_at is None:
                    interval = max(self.config.persist_min, self._rto) * (1 << min(self._persist_count, 16))
                    self._persist_at = now + min(interval, self.config.max_rto)
            else:
                self._persist_at = None
            return
        sent = False
        budget = -1  # >= 0: RFC 6675 recovery, what cwnd - pipe still allows of new data
        if self._sack_rec:
            budget, sent = self._sack_recovery_send(now)
        elif self._rexmit_una:
            self._rexmit_una = False
            sent = self._fast_retransmit(now)
        sbuf_seq = self._sbuf_seq
        end = sbuf_seq + len(self._sbuf)
        # payload per segment: the MSS minus the options this segment carries (timestamps are already out of
        # _smss; SACK blocks ride on data segments too while we hold out-of-order data)
        smss = self._smss - self._sack_opt_len() if self._ooo else self._smss
        closed = self._closed
        out = _NO_OUT  # the output queue, fetched (and made) at the first data segment of this burst
        stats = self.stats
        force = self._persist_force
        self._persist_force = False
        rto_force = self._rto_force
        self._rto_force = False
        shared: TcpSegment | None = None  # first data segment of this burst: the rest carry its ACK/window/options
        sacked = self._sacked
        while True:
            nxt = self._snd_nxt
            limit = 0
            if sacked and nxt < self._snd_max and nxt > self._snd_una:
                # go-back-N after an RTO: skip what the peer SACKed (it still holds it; reneging is detected)
                for bs, be in sacked:
                    if nxt < bs:
                        limit = bs
                        break
                    if nxt < be:
                        nxt = be
                self._snd_nxt = nxt
            avail = end - nxt
            if avail <= 0:
                if closed and nxt == end and st in _SEND_STATES:
                    # FIN alone
                    self._queue(self._make(nxt, FIN | ACK, b"", now))
                    stats.segments_out += 1
                    self._after_send(nxt, nxt + 1, now)
                    self._fin_sent = True
                    sent = True
                break
            if st not in _SEND_STATES:
                break
            cwnd = self._cwnd + self._limited_transmit
            wnd = self._snd_wnd if self._snd_wnd < cwnd else cwnd
            usable = self._snd_una + wnd - nxt
            if budget >= 0:
                # RFC 6675 recovery: cwnd - pipe (not cwnd - flight) limits new data, and only whole segments
                if budget < smss:
                    break
                usable = self._snd_una + self._snd_wnd - nxt
                if usable > budget:
                    usable = budget
            n = smss
            if avail < n:
                n = avail
            if limit and n > limit - nxt:
                n = limit - nxt
            if usable < n:
                if usable <= 0:
                    if force and self._snd_wnd > 0 and nxt == self._snd_una:
                        n = min(n, self._snd_wnd)
                    elif not (rto_force and nxt == self._snd_una and nxt < self._snd_max):
                        break  # (an RTO retransmits one segment even into a zero window: RFC 9293 3.8.6.1)
                else:
                    n = usable
            if n < smss and nxt >= self._snd_max and not force:
                # sender SWS avoidance and Nagle (RFC 9293 3.8.6.2.1 / RFC 896)
                if n == avail:
                    if self._nagle and self._snd_max > self._snd_una and not closed:
                        break
                elif n < (self._max_snd_wnd >> 1):
                    break
            force = False
            off = nxt - sbuf_seq
            payload = bytes(self._sbuf[off : off + n])
            fl = ACK
            seg_end = nxt + n
            if seg_end == end:
                fl |= PSH
                if closed and st in _SEND_STATES:
                    fl |= FIN
            if shared is None:
                shared = self._make(nxt, fl, payload, now)
                out = self._out_list()
                out.append(shared)
            else:
                # nothing on the receive side changes within one call: _make would compute the same fields again
                out.append(
                    _new_segment(
                        self.local_port,
                        self.remote_port,
                        nxt & _M,
                        shared.ack,
                        fl,
                        shared.window,
                        payload,
                        shared.options,
                        0,
                    )
                )
            stats.segments_out += 1
            stats.bytes_out += n
            if nxt < self._snd_max:
                stats.retransmitted_segments += 1
            if fl & FIN:
                self._after_send(nxt, seg_end + 1, now)
                self._fin_sent = True
                sent = True
                break
            self._after_send(nxt, seg_end, now)
            sent = True
            if budget > 0:
                budget -= n
        if sent:
            if self._tlp_at is None and self._sack_ok and not self._in_recovery:
                self._arm_tlp(now)  # (an ACK that advanced SND.UNA has just re-armed it otherwise)
            self._ack_now = False
            self._delack_at = None
            self._unacked_bytes = 0
        elif self._ack_now:
            self._emit_ack(now)
        # persist: data (or FIN) waits and nothing is in flight to clock it out
        if (
            self._snd_max == self._snd_una
            and self._rto_at is None
            and (self._snd_nxt < end or (closed and not self._fin_sent))
            and st in _SEND_STATES
        ):
            if self._persist_at is None:
                interval = max(self.config.persist_min, self._rto) * (1 << min(self._persist_count, 16))
                self._persist_at = now + min(interval, self.config.max_rto)
        else:
            self._persist_at = None

    def _after_send(self, seq: int, seq_end: int, now: float) -> None:
        self._snd_nxt = seq_end
        if seq_end > self._snd_max:
            if self._rtt_seq is None and self._rexmit_count == 0:
                self._rtt_seq = seq_end
                self._rtt_time = now
            self._snd_max = seq_end
        elif self._rtt_seq is not None and seq < self._rtt_seq:
            self._rtt_seq = None  # Karn: the timed segment was retransmitted
        if self._rto_at is None:
            self._rto_at = now + self._current_rto()
        self._persist_at = None

    def _sack_recovery_send(self, now: float) -> tuple[int, bool]:
        """RFC 6675 NextSeg while cwnd - pipe >= SMSS: lost holes (rule 1) first; then, if no new data can go
        (rule 2 is the caller's loop), other unSACKed holes (rule 3) and one rescue retransmission (rule 4).
        Returns (what cwnd - pipe leaves for new data, whether anything was sent)."""
        una = self._snd_una
        top = self._snd_max
        sk = self._sacked
        smss = self._smss - self._sack_opt_len() if self._ooo else self._smss
        edge = self._lost_edge()
        log = self._rxt_log
        if log:
            # a retransmission is lost again when enough data sent after it was SACKed (its hole is still open)
            keep = []
            for r in log:
                if r[1] <= una:
                    continue
                if r[2] <= edge and self._unsacked(r[0], r[1]):
                    if r[0] < self._sack_rexmit_hi:
                        self._sack_rexmit_hi = r[0] if r[0] > una else una
                    continue
                keep.append(r)
            self._rxt_log = log = keep
        hi = self._sack_rexmit_hi
        if hi < una:
            hi = self._sack_rexmit_hi = una
        budget = self._cwnd - self._pipe(edge)
        forced = self._rexmit_una  # the retransmission that enters recovery goes out whatever pipe says
        self._rexmit_una = False
        sent = False
        high_ack = sk[-1][1] if sk else una
        end = self._sbuf_seq + len(self._sbuf)
        new_data = self._snd_nxt < end and una + self._snd_wnd > self._snd_nxt
        seq = hi if hi > una else una
        for rule3 in (False, True):
            if rule3 and (new_data or seq >= high_ack):
                break
            while seq < high_ack and (forced or budget >= smss):
                # next hole at or above seq
                hole_end = high_ack
                for s, e in sk:
                    if seq < s:
                        hole_end = s
                        break
                    if seq < e:
                        seq = e
                if seq >= high_ack:
                    break
                if not rule3 and seq >= edge and not forced:
                    break
                n = min(smss, hole_end - seq)
                if not self._retransmit(seq, n, now):
                    break
                forced = False
                sent = True
                budget -= n
                if seq >= edge:
                    budget -= n  # a retransmitted non-lost segment counts twice in pipe
                seq += n
                self._sack_rexmit_hi = seq
        if not new_data and not self._rescue_done and (forced or budget >= smss) and top > high_ack:
            # rule 4: one rescue retransmission of the highest unSACKed data (tail loss) per recovery
            data_end = end if end < top else top
            start = max(data_end - smss, high_ack, una)
            if start < data_end or (self._fin_sent and top == end + 1):
                self._rescue_done = True
                if self._retransmit(start, data_end - start, now):
                    sent = True
                    budget -= data_end - start
        return (budget if budget > 0 else 0), sent

    def _retransmit(self, seq: int, n: int, now: float) -> bool:
        """Send [seq, seq + n) of the send stream again (with our FIN if it ends there and was sent)."""
        end = self._sbuf_seq + len(self._sbuf)
        if seq + n > end:
            n = end - seq
        fl = ACK
        if self._fin_sent and seq + n == end:
            fl |= FIN
        if n <= 0 and not fl & FIN:
            return False
        off = seq - self._sbuf_seq
        payload = bytes(self._sbuf[off : off + n]) if n > 0 else b""
        self._queue(self._make(seq, fl, payload, now))
        st = self.stats
        st.segments_out += 1
        st.bytes_out += n
        st.retransmitted_segments += 1
        if self._sack_rec:
            log = self._rxt_log
            if log is _NO_SACKED:
                log = self._rxt_log = []
            log.append([seq, seq + n, self._snd_max])
        if self._rtt_seq is not None and seq < self._rtt_seq:
            self._rtt_seq = None  # Karn
        if self._rto_at is None:
            self._rto_at = now + self._current_rto()
        self._event(TcpRetransmitted(False))
        return True

    def _fast_retransmit(self, now: float) -> bool:
        """Retransmit one segment: the first hole (SACK scoreboard) or SND.UNA (NewReno)."""
        una = self._snd_una
        if self._snd_max <= una:
            return False
        seq = una
        limit = self._snd_max
        sk = self._sacked
        if sk and self._in_recovery:
            # first hole at or above what we already retransmitted in this recovery
            seq = max(una, self._sack_rexmit_hi)
            for s, e in sk:
                if seq < s:
                    limit = s
                    break
                if seq < e:
                    seq = e
            else:
                if seq >= sk[-1][1]:
                    if self._dupacks > 3 and seq != una:
                        return False
                    seq = una
                    limit = sk[0][0] if sk[0][0] > una else self._snd_max
        end = self._sbuf_seq + len(self._sbuf)
        cap = self._smss - self._sack_opt_len() if self._ooo else self._smss
        n = min(cap, limit - seq, end - seq)
        fl = ACK
        if n <= 0:
            if self._fin_sent and seq == end:
                fl |= FIN
                n = 0
            else:
                return False
        off = seq - self._sbuf_seq
        payload = bytes(self._sbuf[off : off + n]) if n > 0 else b""
        if n > 0 and seq + n == end and self._fin_sent and limit > end:
            fl |= FIN
        self._queue(self._make(seq, fl, payload, now))
        st = self.stats
        st.segments_out += 1
        st.bytes_out += n
        st.retransmitted_segments += 1
        self._sack_rexmit_hi = seq + n
        if self._rtt_seq is not None and seq < self._rtt_seq:
            self._rtt_seq = None
        if self._rto_at is None:
            self._rto_at = now + self._current_rto()
        self._event(TcpRetransmitted(False))
        return True

    def _send_syn(self, now: float) -> None:
        self._syn_needed = False
        st = self.state
        c = self.config
        opts = self._offer_options()
        if st == _SYN_SENT:
            ts_on = bool(self._offer_flags & TCP_FLAG_TIMESTAMP_ENABLED)
            flags = SYN
            ack = 0
            ws = opts.window_scale
            sackp = opts.sack_permitted
        else:
            ts_on = self._ts_ok
            flags = SYN | ACK
            ack = self._rcv_nxt & _M
            ws = self._rcv_wscale if self._wscale_ok else None
            sackp = self._sack_ok
            self._last_ack_sent = self._rcv_nxt
        window = min(self._rcv_buf, 0xFFFF)
        if st == _SYN_RCVD:
            # the SYN's window is unscaled; the right edge it advertises counts as advertised
            edge = self._rcv_nxt + window
            if edge < self._rcv_adv:
                window = self._rcv_adv - self._rcv_nxt
            else:
                self._rcv_adv = edge
        ts = (self._ts_now(now), self._ts_recent if st == _SYN_RCVD else 0) if ts_on else None
        seg = TcpSegment(
            self.local_port,
            self.remote_port,
            self._iss & _M,
            ack,
            flags,
            min(window, 0xFFFF),
            b"",
            TcpOptions(mss=c.mss, window_scale=ws, sack_permitted=sackp, timestamp=ts),
        )
        self._queue(seg)
        self.stats.segments_out += 1
        if self._snd_max > self._iss:
            self.stats.retransmitted_segments += 1
            self._rtt_seq = None  # Karn: no RTT sample from a retransmitted SYN
        else:
            self._rtt_seq = self._iss + 1
            self._rtt_time = now
        self._snd_nxt = self._iss + 1
        if self._snd_max < self._snd_nxt:
            self._snd_max = self._snd_nxt
        if self._rto_at is None:
            self._rto_at = now + self._current_rto()
        self._ack_now = False
        self._delack_at = None
