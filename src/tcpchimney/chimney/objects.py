"""State objects, block trees and NET_BUFFER_LISTs as Python values (reference sections 1.2-1.6, 7).

One ``OffloadBlock`` type serves both the PROTOCOL and the MINIPORT block list: Python needs no second layout.
``MiniportOffloadContext`` (a PVOID*) is a ``ContextSlot``: a ``None`` slot on the block marks a placeholder, a slot
whose ``value`` is ``None`` a new offload, a slot with a value a linker (or, outside initiate, the object named).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from tcpchimney.chimney.constants import OffloadStateType
from tcpchimney.tcp.state import TcpCached, TcpConst, TcpDelegated


class Layer(IntEnum):
    NEIGHBOR = 1
    PATH = 2
    TCP = 3


@dataclass(frozen=True, slots=True)
class NeighborConst:
    dl_source_address: bytes  # our MAC; the target puts it on every frame
    vlan_id: int = 0


@dataclass(frozen=True, slots=True)
class NeighborCached:
    dl_destination_address: bytes  # next hop's MAC
    host_reachability_delta: int = 0  # ticks


@dataclass(frozen=True, slots=True)
class NeighborDelegated:
    nic_reachability_delta: int = 0  # ticks


@dataclass(frozen=True, slots=True)
class PathConst:
    source_address: bytes  # 4 bytes, network order
    destination_address: bytes


@dataclass(frozen=True, slots=True)
class PathCached:
    path_mtu: int


@dataclass(frozen=True, slots=True)
class PathDelegated:
    """Header only: a path has no delegated state."""


class ContextSlot:
    """``MiniportOffloadContext``: the target writes its context into ``value`` iff the offload succeeded."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"ContextSlot({self.value!r})"


_nbl_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class NetBufferList:
    """A NET_BUFFER_LIST with one NET_BUFFER.

    Send: ``data`` is the payload and ``offset`` the data start (``NdisAdvanceNetBufferDataStart`` moves it past
    bytes sent and ACKed).  Receive post: ``capacity`` is the buffer size and the target appends into ``data``.
    ``status`` is written by whoever completes it; ``bytes_transferred`` is ``TcpOffloadBytesTransferred``.
    """

    data: bytes = b""
    capacity: int = 0
    offset: int = 0
    status: int | None = None
    bytes_transferred: int = 0
    nbl_id: int = field(default_factory=lambda: next(_nbl_ids))

    @property
    def remaining(self) -> bytes:
        return self.data[self.offset :]

    def __repr__(self) -> str:
        return f"NBL#{self.nbl_id}(len={len(self.data)}, off={self.offset}, status={self.status})"


@dataclass(eq=False)
class OffloadBlock:
    """``NDIS_{MINIPORT,PROTOCOL}_OFFLOAD_BLOCK_LIST`` plus the state structs that follow it."""

    layer: Layer
    state_type: OffloadStateType
    next_block: OffloadBlock | None = None
    dependent_block_list: OffloadBlock | None = None
    status: int | None = None
    miniport_offload_context: ContextSlot | None = None
    ndis_offload_handle: Any = None  # the host's handle for the object; targets pass it back in indications
    net_buffer_list_chain: list[NetBufferList] | None = None  # send data (SendDataHead..SendDataTail)
    buffered_data: list[NetBufferList] | None = None  # delegated BufferedData (receive data ACKed, not delivered)
    const: Any = None
    cached: Any = None
    delegated: Any = None
    miniport_reserved: dict[str, Any] = field(default_factory=dict)
    im_reserved: dict[str, Any] = field(default_factory=dict)
    protocol_reserved: dict[str, Any] = field(default_factory=dict)

    @property
    def is_placeholder(self) -> bool:
        return self.miniport_offload_context is None

    @property
    def is_linker(self) -> bool:
        return self.miniport_offload_context is not None and self.miniport_offload_context.value is not None

    @property
    def is_new_offload(self) -> bool:
        return self.miniport_offload_context is not None and self.miniport_offload_context.value is None

    @property
    def context(self) -> Any:
        return None if self.miniport_offload_context is None else self.miniport_offload_context.value

    def dependents(self) -> Iterator[OffloadBlock]:
        """The immediate dependents: DependentBlockList and its NextBlock chain."""
        block = self.dependent_block_list
        while block is not None:
            yield block
            block = block.next_block

    def walk(self) -> Iterator[OffloadBlock]:
        """Depth-first / breadth-next over this block, its dependents, then its NextBlock siblings."""
        stack: list[OffloadBlock] = [self]
        while stack:
            block = stack.pop()
            yield block
            if block.next_block is not None:
                stack.append(block.next_block)
            if block.dependent_block_list is not None:
                stack.append(block.dependent_block_list)


def link_siblings(blocks: list[OffloadBlock]) -> OffloadBlock | None:
    """Chain blocks of one layer with NextBlock; returns the first (None for an empty list)."""
    for left, right in itertools.pairwise(blocks):
        left.next_block = right
    if blocks:
        blocks[-1].next_block = None
    return blocks[0] if blocks else None


def neighbor_block(
    const: NeighborConst | None = None,
    cached: NeighborCached | None = None,
    delegated: NeighborDelegated | None = None,
    *,
    context: ContextSlot | None = None,
    handle: Any = None,
) -> OffloadBlock:
    return OffloadBlock(
        Layer.NEIGHBOR,
        OffloadStateType.NEIGHBOR,
        const=const,
        cached=cached,
        delegated=delegated,
        miniport_offload_context=context,
        ndis_offload_handle=handle,
    )


def path_block(
    const: PathConst | None = None,
    cached: PathCached | None = None,
    *,
    context: ContextSlot | None = None,
    handle: Any = None,
) -> OffloadBlock:
    return OffloadBlock(
        Layer.PATH,
        OffloadStateType.IP4,
        const=const,
        cached=cached,
        delegated=PathDelegated() if const is not None else None,
        miniport_offload_context=context,
        ndis_offload_handle=handle,
    )


def tcp_block(
    const: TcpConst | None = None,
    cached: TcpCached | None = None,
    delegated: TcpDelegated | None = None,
    *,
    context: ContextSlot | None = None,
    handle: Any = None,
    send_nbls: list[NetBufferList] | None = None,
    buffered_data: list[NetBufferList] | None = None,
) -> OffloadBlock:
    return OffloadBlock(
        Layer.TCP,
        OffloadStateType.TCP,
        const=const,
        cached=cached,
        delegated=delegated,
        miniport_offload_context=context,
        ndis_offload_handle=handle,
        net_buffer_list_chain=send_nbls,
        buffered_data=buffered_data,
    )


@dataclass(frozen=True, slots=True)
class OffloadCapabilities:
    """What ``OID_TCP_TASK_OFFLOAD`` reports (NDIS_TCP_CONNECTION_OFFLOAD): queried at bind and after RESUME."""

    ipv4: bool = True
    ipv6: bool = False
    max_connections: int = 0  # TcpConnectionOffloadCapacity; 0 = no chimney offload
    max_buffer_bytes: int = 0  # total receive + send bytes the target can hold
    timestamps: bool = True
    sack: bool = True
    window_scaling: bool = True
    ticks_per_second: int = 1000


@dataclass(frozen=True, slots=True)
class LinkState:
    """Payload of an ``NDIS_STATUS_LINK_STATE`` indication."""

    up: bool
    speed_bps: int = 10_000_000_000
