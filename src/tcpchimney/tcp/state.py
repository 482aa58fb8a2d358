"""The TCP connection variables split the way the chimney splits them (reference section 1.3/1.4).

Const never changes, cached is owned by the host (changed only by an update), delegated is owned by whoever runs the
connection and is handed over at offload and returned at terminate.  All three are plain values: handing a
connection to another owner means handing over these three values plus the send and receive bytes, nothing else.

Times cross the interface in clock ticks (``TICKS_PER_SECOND``), ``SRtt`` scaled by 8 and ``RttVar`` by 4, and a
stopped timer is ``TIMER_STOPPED`` (0xFFFFFFFF, "-1"), exactly as in ``TCP_OFFLOAD_STATE_DELEGATED``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

TICKS_PER_SECOND = 1000
"""``TicksPerSecond`` of ``NDIS_TCP_CONNECTION_OFFLOAD_PARAMETERS``: one tick is one millisecond here."""

TIMER_STOPPED = 0xFFFFFFFF
"""``TimeoutDelta`` of a timer that is not running (-1 as a ULONG)."""


class TcpState(IntEnum):
    """``TCP_OFFLOAD_CONNECTION_STATE``: RFC 9293 states with the NDIS numbers."""

    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RCVD = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


OFFLOADABLE_STATES = frozenset(
    {
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT_1,
        TcpState.FIN_WAIT_2,
        TcpState.CLOSE_WAIT,
        TcpState.CLOSING,
        TcpState.LAST_ACK,
    }
)
"""States in which the host may initiate an offload (reference 1.5)."""

RETRIEVE_FORBIDDEN_STATES = frozenset({TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2, TcpState.CLOSE_WAIT})
"""States in which a target must not indicate TcpIndicateRetrieve (reference 3.3, invariant 13)."""

# TCP_OFFLOAD_STATE_CONST.Flags
TCP_FLAG_TIMESTAMP_ENABLED = 0x01
TCP_FLAG_SACK_ENABLED = 0x02
TCP_FLAG_WINDOW_SCALING_ENABLED = 0x04

# TCP_OFFLOAD_STATE_CACHED.Flags
TCP_FLAG_KEEP_ALIVE_ENABLED = 0x01
TCP_FLAG_NAGLING_ENABLED = 0x02
TCP_FLAG_KEEP_ALIVE_RESTART = 0x04
TCP_FLAG_MAX_RT_RESTART = 0x08
TCP_FLAG_UPDATE_RCV_WND = 0x10


@dataclass(frozen=True, slots=True)
class TcpConst:
    """``TCP_OFFLOAD_STATE_CONST`` plus the addresses (which NDIS keeps in the path object)."""

    flags: int
    local_port: int
    remote_port: int
    snd_wind_scale: int  # shift applied to windows the peer advertises
    rcv_wind_scale: int  # shift we apply to windows we advertise
    remote_mss: int
    hash_value: int = 0

    @property
    def timestamps(self) -> bool:
        return bool(self.flags & TCP_FLAG_TIMESTAMP_ENABLED)

    @property
    def sack(self) -> bool:
        return bool(self.flags & TCP_FLAG_SACK_ENABLED)

    @property
    def window_scaling(self) -> bool:
        return bool(self.flags & TCP_FLAG_WINDOW_SCALING_ENABLED)


@dataclass(frozen=True, slots=True)
class TcpCached:
    """``TCP_OFFLOAD_STATE_CACHED``: the host owns these; a target changes them only when told by an update."""

    flags: int = TCP_FLAG_NAGLING_ENABLED
    initial_rcv_wnd: int = 262144
    rcv_indication_size: int = 0
    ka_probe_count: int = 0
    ka_timeout: int = 7_200_000  # ticks
    ka_interval: int = 1_000  # ticks
    max_rt: int = 0  # ticks; 0 = global default, 0xFFFFFFFF = unlimited
    flow_label: int = 0
    ttl_or_hop_limit: int = 64
    tos_or_traffic_class: int = 0
    user_priority: int = 0

    @property
    def keepalive(self) -> bool:
        return bool(self.flags & TCP_FLAG_KEEP_ALIVE_ENABLED)

    @property
    def nagling(self) -> bool:
        return bool(self.flags & TCP_FLAG_NAGLING_ENABLED)


@dataclass(frozen=True, slots=True)
class TimerState:
    """``{ProbeCount|Count; TimeoutDelta}`` of the keepalive and retransmit timers."""

    count: int = 0
    timeout_delta: int = TIMER_STOPPED  # ticks until it fires, TIMER_STOPPED when not running

    @property
    def running(self) -> bool:
        return self.timeout_delta != TIMER_STOPPED


@dataclass(frozen=True, slots=True)
class TcpDelegated:
    """``TCP_OFFLOAD_STATE_DELEGATED``: owned by whoever runs the connection, returned at terminate.

    Sequence numbers are unsigned 32-bit values.  ``srtt`` is in ticks scaled by 8, ``rttvar`` in ticks scaled by 4.
    """

    state: TcpState
    rcv_nxt: int
    rcv_wnd: int
    snd_una: int
    snd_nxt: int
    snd_max: int
    snd_wnd: int
    max_snd_wnd: int
    send_wl1: int
    cwnd: int
    ssthresh: int
    srtt: int = 0
    rttvar: int = 0
    ts_recent: int = 0
    ts_recent_age: int = 0
    ts_time: int = 0
    total_rt: int = 0
    dup_ack_count: int = 0
    snd_wnd_probe_count: int = 0
    keepalive: TimerState = field(default_factory=TimerState)
    retransmit: TimerState = field(default_factory=TimerState)
    # Extensions the NDIS struct has no field for but a faithful hand-over needs: SND.WL2 and the FIN bookkeeping.
    send_wl2: int = 0
    fin_sent: bool = False  # our FIN occupies sequence number snd_max - 1
    fin_received: bool = False  # the peer's FIN occupies sequence number rcv_nxt - 1

    def with_changes(self, **changes: object) -> TcpDelegated:
        return replace(self, **changes)  # type: ignore[arg-type]


def seq_le(a: int, b: int) -> bool:
    """a <= b in 32-bit sequence space."""
    return ((b - a) & 0xFFFFFFFF) < 0x80000000


def seq_lt(a: int, b: int) -> bool:
    """a < b in 32-bit sequence space."""
    return a != b and seq_le(a, b)


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed distance in sequence space."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d
