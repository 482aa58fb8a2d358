"""What a SoftToe reports about itself: counters and one row per offloaded connection."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.tcp.state import TcpState


@dataclass(slots=True)
class SoftToeStats:
    """Counters of one NIC (read by tests, ``chimney ctl`` and the demo)."""

    frames_in: int = 0
    frames_out: int = 0
    frames_passed_up: int = 0  # ordinary receive path (not an offloaded connection, or stopped/terminating)
    frames_dropped: int = 0  # unparsable frames of offloaded connections, or link down
    offloaded_segments_in: int = 0
    offloaded_segments_out: int = 0  # wire segments (after MTU splitting)
    offloaded_bytes_in: int = 0  # payload
    offloaded_bytes_out: int = 0
    segments_split: int = 0
    initiates: int = 0
    initiate_failures: int = 0
    terminates: int = 0
    updates: int = 0
    invalidates: int = 0
    queries: int = 0
    retrieves: Counter[str] = field(default_factory=Counter)  # reason name -> indications
    retrieves_deferred: int = 0
    retrieves_suppressed: int = 0  # optional reasons dropped by the half-closed ban
    retrieves_rate_limited: int = 0
    hardware_failures: int = 0
    aborts_indicated: int = 0
    disconnects_indicated: int = 0
    backlog_events: int = 0
    io_rejected: int = 0  # I/O completed UPLOAD_IN_PROGRESS / REQUEST_ABORTED / INVALID_STATE on arrival
    tx_suppressed: int = 0  # segments not sent because the connection depends on invalidated state

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["retrieves"] = dict(self.retrieves)
        return out


@dataclass(frozen=True, slots=True)
class NicConnectionInfo:
    handle: Any
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: TcpState
    bytes_in: int
    bytes_out: int
    since: float
    stopped_reason: UploadReason | None = None
