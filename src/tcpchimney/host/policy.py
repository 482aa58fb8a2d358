"""When the host offloads a connection and how it answers the target's requests (the host alone decides)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tcpchimney.chimney.constants import UploadReason


def _default_backoff() -> dict[UploadReason, float]:
    return {
        UploadReason.LOW_ACTIVITY: 5.0,
        UploadReason.HIGH_DROP_RATE: 5.0,
        UploadReason.SMALL_IO: 5.0,
        UploadReason.NO_BUFFER_PREPOSTING: 5.0,
        UploadReason.RECEIVED_URGENT_DATA: 1.0,
        UploadReason.HIGH_FRAGMENTATION: 5.0,
        UploadReason.HIGH_OUT_OF_ORDER_PACKETS: 5.0,
        UploadReason.TIMEOUT_EXPIRATION: 1.0,
        UploadReason.INVALID_STATE: 1.0,
        UploadReason.UPLOAD_REQUESTED: 1.0,
        UploadReason.HARDWARE_FAILURE: math.inf,
    }


@dataclass
class OffloadPolicy:
    """The host's offload policy.

    ``backoff[reason]`` is how long (seconds) a connection stays on the host after an upload the target requested for
    that reason; reasons missing from the dict re-offload at once.  ``host_backoff`` applies after uploads the host
    decided on (``HostStack.terminate``, link loss, UPLOAD_ALL) and ``failure_backoff`` after a failed initiate.
    """

    enabled: bool = True
    offload_after: float = 0.0  # seconds in ESTABLISHED before the first offload
    min_bytes: int = 0  # application bytes written + read before the first offload
    honor_optional: bool = True  # terminate on optional retrieve reasons
    backoff: dict[UploadReason, float] = field(default_factory=_default_backoff)
    reoffload_after_resume: bool = True
    upload_on_link_down: bool = True
    max_offloaded_per_target: int | None = None
    host_backoff: float = 1.0
    failure_backoff: float = 1.0
    terminate_timeout: float = 5.0  # watchdog: a terminate not completed by then aborts that connection
    release_idle_paths: bool = False  # terminate paths/neighbors as soon as their last connection is uploaded

    def backoff_for(self, reason: UploadReason | str) -> float:
        if isinstance(reason, UploadReason):
            return self.backoff.get(reason, 0.0)
        return self.host_backoff
