"""Failover bookkeeping of a team: one record per member failure, with the times the benchmark reports.

The sequence itself (reference section 6, our inference from the PAUSE / UPLOAD_ALL / RESUME pages) is driven by
``TeamTarget``: member lost -> OFFLOAD_PAUSE + UPLOAD_ALL up -> the host terminates every connection through the
team (each terminate goes to the member that holds it) -> once no object is offloaded through the team and no state
operation is in flight -> OFFLOAD_RESUME, and the host re-queries the (now smaller) capabilities.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FailoverRecord:
    member: int
    reason: str  # "carrier", "expired", "sync-cleared", "defaulted", "admin", "hardware", "nic-upload-all"
    t_detect: float  # virtual time the team noticed the loss
    cpu_detect: float  # time.process_time() then
    connections: int  # TCP connections offloaded through the team at that moment
    on_member: int  # of which on the failed member
    t_host_owns_all: float | None = None  # last TCP terminate completed (every connection is the host's again)
    cpu_host_owns_all: float | None = None
    t_resume: float | None = None
    cpu_resume: float | None = None
    merged: list[int] = field(default_factory=list)  # further members lost during the same UPLOAD_ALL window

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FailoverLog:
    """Open failover (at most one: a second loss inside the window joins it) and the history."""

    def __init__(self) -> None:
        self.records: list[FailoverRecord] = []
        self.open: FailoverRecord | None = None

    def start(self, member: int, reason: str, now: float, connections: int, on_member: int) -> FailoverRecord:
        if self.open is not None:
            self.open.merged.append(member)
            return self.open
        rec = FailoverRecord(member, reason, now, time.process_time(), connections, on_member)
        self.records.append(rec)
        self.open = rec
        return rec

    def tcp_drained(self, now: float) -> None:
        rec = self.open
        if rec is not None and rec.t_host_owns_all is None:
            rec.t_host_owns_all = now
            rec.cpu_host_owns_all = time.process_time()

    def resumed(self, now: float) -> None:
        rec = self.open
        if rec is None:
            return
        self.tcp_drained(now)
        rec.t_resume = now
        rec.cpu_resume = time.process_time()
        self.open = None
