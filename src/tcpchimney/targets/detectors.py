"""Per-connection detectors that decide when an offload target asks for an upload (reference 3.2).

The detectors only *decide*; ``SoftToe`` indicates the RETRIEVE (it knows the half-closed ban, the rate limit and
what a mandatory reason stops).  Counters come from the engine's ``TcpStats`` and from the target's own I/O
bookkeeping, so a detector fires only on what really happened on the connection.

Optional reasons (LOW_ACTIVITY, HIGH_DROP_RATE, SMALL_IO, NO_BUFFER_PREPOSTING, HIGH_OUT_OF_ORDER_PACKETS) are
checked by a periodic sweep (ratios over a tumbling window with a minimum sample count) or at the event that feeds
them (receive posts).  Mandatory ones (RECEIVED_URGENT_DATA, TIMEOUT_EXPIRATION, UPLOAD_REQUESTED) are raised by
``SoftToe`` at the event itself; their switches live here too so any of them can be disabled.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.tcp.engine import TcpStats


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of every detector; each detector can be switched off with its ``*_enabled`` flag."""

    sweep_interval: float = 1.0  # seconds between periodic checks (only while connections are offloaded)
    repeat_interval: float = 30.0  # the same optional reason is indicated at most once per this many seconds

    low_activity_enabled: bool = True
    idle_timeout: float = 120.0  # no payload in or out for this long -> LOW_ACTIVITY

    high_drop_rate_enabled: bool = True
    drop_window: float = 5.0  # tumbling window (seconds)
    drop_min_segments: int = 50  # segments sent in the window before the ratio means anything
    drop_ratio: float = 0.10  # retransmitted / sent

    out_of_order_enabled: bool = True
    ooo_window: float = 5.0
    ooo_min_segments: int = 50  # segments received in the window
    ooo_ratio: float = 0.20  # out-of-order / received

    small_io_enabled: bool = True
    small_io_bytes: int = 1024  # a non-zero receive post smaller than this is "small"
    small_io_count: int = 16  # that many small posts in a row -> SMALL_IO

    no_buffer_preposting_enabled: bool = True
    no_buffer_timeout: float = 2.0  # data waiting, no post and indications refused for this long

    urgent_data_enabled: bool = True  # RECEIVED_URGENT_DATA (mandatory): off = URG handled inline by the engine
    timeout_expiration_enabled: bool = True  # TIMEOUT_EXPIRATION (mandatory) when retransmissions run out
    upload_requested_enabled: bool = True  # UPLOAD_REQUESTED (mandatory) when buffered bytes exceed buffer_bytes

    send_backlog_enabled: bool = True  # SEND_BACKLOG_CHANGE events
    send_backlog_min_interval: float = 1.0  # throttle: at most one event per this many seconds per connection
    send_backlog_min_change: float = 0.25  # and only when the value moved by at least this fraction
    send_backlog_horizon: float = 0.25  # backlog = ACK rate * horizon (bandwidth x delay estimate)
    send_backlog_min: int = 16 * 1024
    send_backlog_max: int = 4 * 1024 * 1024


class ConnectionDetectors:
    """Detector state of one offloaded connection."""

    __slots__ = (
        "cfg",
        "drop_base_retx",
        "drop_base_sent",
        "drop_window_start",
        "last_fired",
        "last_payload",
        "last_payload_time",
        "ooo_base_in",
        "ooo_base_ooo",
        "ooo_window_start",
        "small_posts",
        "starved_since",
    )

    def __init__(self, cfg: DetectorConfig, stats: TcpStats, now: float) -> None:
        self.cfg = cfg
        self.last_fired: dict[UploadReason, float] = {}
        self.last_payload = stats.bytes_in + stats.bytes_out
        self.last_payload_time = now
        self.drop_window_start = now
        self.drop_base_sent = stats.segments_out
        self.drop_base_retx = stats.retransmitted_segments
        self.ooo_window_start = now
        self.ooo_base_in = stats.segments_in
        self.ooo_base_ooo = stats.out_of_order_segments
        self.small_posts = 0
        self.starved_since: float | None = None

    # ---- rate limit ---------------------------------------------------------------------------------------
    def allowed(self, reason: UploadReason, now: float) -> bool:
        """Optional reasons repeat at most once per ``repeat_interval``."""
        last = self.last_fired.get(reason)
        return last is None or now - last >= self.cfg.repeat_interval

    def fired(self, reason: UploadReason, now: float) -> None:
        self.last_fired[reason] = now

    # ---- event-fed detectors ----------------------------------------------------------------------------
    def on_receive_post(self, capacity: int) -> UploadReason | None:
        """SMALL_IO: ``small_io_count`` non-zero posts smaller than ``small_io_bytes`` in a row."""
        cfg = self.cfg
        if not cfg.small_io_enabled or capacity == 0:  # zero-byte posts only re-enable indications
            return None
        if capacity < cfg.small_io_bytes:
            self.small_posts += 1
            if self.small_posts >= cfg.small_io_count:
                self.small_posts = 0
                return UploadReason.SMALL_IO
        else:
            self.small_posts = 0
        return None

    def set_starved(self, starved: bool, now: float) -> None:
        """Data is waiting while no receive is posted and indications are refused (NO_BUFFER_PREPOSTING)."""
        if starved:
            if self.starved_since is None:
                self.starved_since = now
        else:
            self.starved_since = None

    # ---- periodic sweep -----------------------------------------------------------------------------------
    def sweep(self, stats: TcpStats, now: float) -> list[UploadReason]:
        """Every optional reason whose condition holds now (the caller applies the rate limit and the ban)."""
        cfg = self.cfg
        found: list[UploadReason] = []
        payload = stats.bytes_in + stats.bytes_out
        if payload != self.last_payload:
            self.last_payload = payload
            self.last_payload_time = now
        elif cfg.low_activity_enabled and now - self.last_payload_time >= cfg.idle_timeout:
            found.append(UploadReason.LOW_ACTIVITY)
        if cfg.high_drop_rate_enabled:
            sent = stats.segments_out - self.drop_base_sent
            retx = stats.retransmitted_segments - self.drop_base_retx
            if sent >= cfg.drop_min_segments and retx >= cfg.drop_ratio * sent:
                found.append(UploadReason.HIGH_DROP_RATE)
                self._reset_drop(stats, now)
            elif now - self.drop_window_start >= cfg.drop_window:
                self._reset_drop(stats, now)
        if cfg.out_of_order_enabled:
            received = stats.segments_in - self.ooo_base_in
            ooo = stats.out_of_order_segments - self.ooo_base_ooo
            if received >= cfg.ooo_min_segments and ooo >= cfg.ooo_ratio * received:
                found.append(UploadReason.HIGH_OUT_OF_ORDER_PACKETS)
                self._reset_ooo(stats, now)
            elif now - self.ooo_window_start >= cfg.ooo_window:
                self._reset_ooo(stats, now)
        if (
            cfg.no_buffer_preposting_enabled
            and self.starved_since is not None
            and now - self.starved_since >= cfg.no_buffer_timeout
        ):
            found.append(UploadReason.NO_BUFFER_PREPOSTING)
        return found

    def _reset_drop(self, stats: TcpStats, now: float) -> None:
        self.drop_window_start = now
        self.drop_base_sent = stats.segments_out
        self.drop_base_retx = stats.retransmitted_segments

    def _reset_ooo(self, stats: TcpStats, now: float) -> None:
        self.ooo_window_start = now
        self.ooo_base_in = stats.segments_in
        self.ooo_base_ooo = stats.out_of_order_segments


class BacklogEstimator:
    """SEND_BACKLOG_CHANGE: min(ACK rate x horizon, clamp) with a throttle (reference 3.3).

    The value depends on how fast the peer acknowledges, never on how many bytes are posted.
    """

    __slots__ = ("cfg", "last_acked", "last_sample", "last_sent_time", "last_value")

    def __init__(self, cfg: DetectorConfig, now: float) -> None:
        self.cfg = cfg
        self.last_acked = 0
        self.last_sample = now
        self.last_sent_time: float | None = None
        self.last_value = 0

    def sample(self, acked_total: int, now: float) -> int | None:
        """Return a new backlog value to indicate, or None when it should be suppressed."""
        cfg = self.cfg
        elapsed = now - self.last_sample
        if not cfg.send_backlog_enabled or elapsed <= 0:
            return None
        rate = (acked_total - self.last_acked) / elapsed
        self.last_acked = acked_total
        self.last_sample = now
        if rate <= 0:
            return None  # idle: nothing to learn about the path
        value = int(min(max(rate * cfg.send_backlog_horizon, cfg.send_backlog_min), cfg.send_backlog_max))
        if self.last_sent_time is not None and now - self.last_sent_time < cfg.send_backlog_min_interval:
            return None
        old = self.last_value
        if old and abs(value - old) < cfg.send_backlog_min_change * old:
            return None
        self.last_value = value
        self.last_sent_time = now
        return value
