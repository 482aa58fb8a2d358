"""Numbers of the chimney contract: statuses, events, upload reasons, state types (reference sections 1.5, 2, 3, 4).

Values come from the WDK 10.0.10240 ``ndis.h`` / ``ndischimney.h`` as restated in the project reference.  Codes whose
value the reference marks unconfirmed say so next to them.
"""

from __future__ import annotations

from enum import IntEnum


class NdisStatus(IntEnum):
    SUCCESS = 0x00000000
    PENDING = 0x00000103
    NOT_ACCEPTED = 0x00010003  # the receive-indicate remarks' spelling of DATA_NOT_ACCEPTED
    FAILURE = 0xC0000001
    RESOURCES = 0xC000009A
    INVALID_STATE = 0xC0000184  # STATUS_INVALID_DEVICE_STATE (usual value; unverified in the reference)
    REQUEST_ABORTED = 0xC001000C
    PAUSED = 0xC023002A  # STATUS_NDIS_PAUSED (usual value; unverified in the reference)
    UPLOAD_IN_PROGRESS = 0xC0231001
    REQUEST_UPLOAD = 0xC0231002
    UPLOAD_REQUESTED = 0xC0231003
    OFFLOAD_TCP_ENTRIES = 0xC0231004
    OFFLOAD_PATH_ENTRIES = 0xC0231005
    OFFLOAD_NEIGHBOR_ENTRIES = 0xC0231006
    OFFLOAD_IP_ADDRESS_ENTRIES = 0xC0231007
    OFFLOAD_HW_ADDRESS_ENTRIES = 0xC0231008
    OFFLOAD_VLAN_ENTRIES = 0xC0231009
    OFFLOAD_TCP_XMIT_BUFFER = 0xC023100A
    OFFLOAD_TCP_RCV_BUFFER = 0xC023100B
    OFFLOAD_TCP_RCV_WINDOW = 0xC023100C
    OFFLOAD_VLAN_MISMATCH = 0xC023100D
    OFFLOAD_DATA_NOT_ACCEPTED = 0xC023100E
    OFFLOAD_DATA_PARTIALLY_ACCEPTED = 0xC0231010
    OFFLOAD_CONNECTION_REJECTED = 0xC0231012  # NDIS 6.20+ (usual value; unverified in the reference)
    # Status indications (NdisMIndicateStatusEx)
    LINK_STATE = 0x40010017
    OFFLOAD_PAUSE = 0x40020001
    UPLOAD_ALL = 0x40020002
    OFFLOAD_RESUME = 0x40020003
    OFFLOAD_PARTIAL_SUCCESS = 0x40020004
    OFFLOAD_STATE_INVALID = 0x40020005
    TASK_OFFLOAD_CURRENT_CONFIG = 0x40020006
    TASK_OFFLOAD_HARDWARE_CAPABILITIES = 0x40020007
    TCP_CONNECTION_OFFLOAD_HARDWARE_CAPABILITIES = 0x4002000B


# NDIS_STATUS_OFFLOAD_PATH_MTU is documented but has no value in the 10240 header; it is not modelled.

INITIATE_FAILURE_STATUSES = frozenset(
    {
        NdisStatus.FAILURE,
        NdisStatus.RESOURCES,
        NdisStatus.OFFLOAD_TCP_ENTRIES,
        NdisStatus.OFFLOAD_PATH_ENTRIES,
        NdisStatus.OFFLOAD_NEIGHBOR_ENTRIES,
        NdisStatus.OFFLOAD_IP_ADDRESS_ENTRIES,
        NdisStatus.OFFLOAD_HW_ADDRESS_ENTRIES,
        NdisStatus.OFFLOAD_VLAN_ENTRIES,
        NdisStatus.OFFLOAD_TCP_XMIT_BUFFER,
        NdisStatus.OFFLOAD_TCP_RCV_BUFFER,
        NdisStatus.OFFLOAD_TCP_RCV_WINDOW,
        NdisStatus.OFFLOAD_VLAN_MISMATCH,
        NdisStatus.OFFLOAD_CONNECTION_REJECTED,
    }
)
INITIATE_STATUSES = INITIATE_FAILURE_STATUSES | {NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS}
"""Statuses a block may carry when an initiate completes (invariant 2)."""

OTHER_OPERATION_STATUSES = frozenset({NdisStatus.SUCCESS, NdisStatus.FAILURE})
"""Query, update, invalidate and terminate blocks carry only these (invariant 2)."""

SEND_COMPLETION_STATUSES = frozenset(
    {
        NdisStatus.SUCCESS,
        NdisStatus.FAILURE,
        NdisStatus.UPLOAD_IN_PROGRESS,
        NdisStatus.REQUEST_ABORTED,
        NdisStatus.REQUEST_UPLOAD,
        NdisStatus.UPLOAD_REQUESTED,
    }
)
RECEIVE_COMPLETION_STATUSES = frozenset(
    {NdisStatus.SUCCESS, NdisStatus.REQUEST_ABORTED, NdisStatus.UPLOAD_IN_PROGRESS, NdisStatus.INVALID_STATE}
)
DISCONNECT_COMPLETION_STATUSES = frozenset(
    {NdisStatus.SUCCESS, NdisStatus.REQUEST_ABORTED, NdisStatus.UPLOAD_IN_PROGRESS, NdisStatus.FAILURE}
)


class OffloadStateType(IntEnum):
    """``OFFLOAD_STATE_TYPE``: which state structs follow a block."""

    NEIGHBOR_CONST = 1
    NEIGHBOR_CACHED = 2
    NEIGHBOR_DELEGATED = 3
    NEIGHBOR = 4
    IP4_CONST = 5
    IP4_CACHED = 6
    IP4_DELEGATED = 7
    IP4 = 8
    IP6_CONST = 9
    IP6_CACHED = 10
    IP6_DELEGATED = 11
    IP6 = 12
    TCP_CONST = 13
    TCP_CACHED = 14
    TCP_DELEGATED = 15
    TCP_RESOURCE = 16
    TCP = 17
    FILTER_RESERVED = 0xFE
    MAXIMUM = 0xFF


class TcpEventType(IntEnum):
    """``TCP_OFFLOAD_EVENT_TYPE``: the only four values there are."""

    SEND_BACKLOG_CHANGE = 1
    DISCONNECT = 2
    RETRIEVE = 3
    ABORT = 4


class UploadReason(IntEnum):
    """``TCP_UPLOAD_REASON``."""

    LOW_ACTIVITY = 1
    HIGH_DROP_RATE = 2
    SMALL_IO = 3
    NO_BUFFER_PREPOSTING = 4  # alias NoBufferProposting
    RECEIVED_URGENT_DATA = 5
    HIGH_FRAGMENTATION = 6
    HIGH_OUT_OF_ORDER_PACKETS = 7
    TIMEOUT_EXPIRATION = 8
    INVALID_STATE = 9
    UPLOAD_REQUESTED = 10
    HARDWARE_FAILURE = 11

    @property
    def mandatory(self) -> bool:
        """Mandatory reasons always lead to an upload; after an optional one the target keeps running."""
        return self in MANDATORY_REASONS


MAX_UPLOAD_REASON = 12
MANDATORY_REASONS = frozenset(
    {
        UploadReason.RECEIVED_URGENT_DATA,
        UploadReason.TIMEOUT_EXPIRATION,
        UploadReason.INVALID_STATE,
        UploadReason.UPLOAD_REQUESTED,
        UploadReason.HARDWARE_FAILURE,
    }
)


class OffloadEventCode(IntEnum):
    """``INDICATE_OFFLOAD_EVENT`` for NdisMOffloadEventIndicate."""

    NEIGHBOR_REACHABILITY_IN_DOUBT = 1
    NEIGHBOR_REACHABILITY_QUERY = 2


TCP_DISCONNECT_GRACEFUL_CLOSE = 0x01
TCP_DISCONNECT_ABORTIVE_CLOSE = 0x02
NDIS_TCP_CHIMNEY_OFFLOAD = 1  # NDIS_CHIMNEY_OFFLOAD_TYPE: NdisTcpChimneyOffload
