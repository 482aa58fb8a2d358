"""The two sides of the chimney as Python protocols.  They never call each other: every call goes through the
``Chimney`` mediator (``tcpchimney.chimney.mediator``), which routes it and checks the contract.

Handles: the host names an offloaded object by its own handle (the ``ndis_offload_handle`` it put on the block);
the mediator maps it to the target and to the context the target wrote into ``MiniportOffloadContext``.  Targets
receive their own context in I/O calls and pass the host's handle in indications.
"""

from __future__ import annotations

from typing import Any, Protocol

from tcpchimney.chimney.objects import NetBufferList, OffloadBlock, OffloadCapabilities


class OffloadTarget(Protocol):
    """Miniport side (``MiniportXxxOffload`` / ``MiniportTcpOffloadXxx`` handlers).  Every handler returns at once;
    state operations and TCP I/O complete later through the mediator's ``*_complete`` calls."""

    name: str

    def bind(self, chimney: Any, target_id: int) -> None:
        """Called once by ``Chimney.register_target``; the target keeps both for its completions/indications."""

    def query_capabilities(self) -> OffloadCapabilities:
        """OID_TCP_TASK_OFFLOAD query (synchronous, like an OID that completes at once)."""
        ...

    def initiate_offload(self, tree: OffloadBlock) -> None: ...

    def terminate_offload(self, tree: OffloadBlock) -> None: ...

    def update_offload(self, tree: OffloadBlock) -> None: ...

    def invalidate_offload(self, tree: OffloadBlock) -> None: ...

    def query_offload(self, tree: OffloadBlock) -> None: ...

    def tcp_send(self, context: Any, nbls: list[NetBufferList]) -> None: ...

    def tcp_receive(self, context: Any, nbls: list[NetBufferList]) -> None: ...

    def tcp_receive_return(self, context: Any, nbls: list[NetBufferList]) -> None:
        """Never completed asynchronously (reference 6)."""

    def tcp_disconnect(self, context: Any, nbl: NetBufferList, flags: int) -> None: ...

    def tcp_forward(self, context: Any, nbls: list[NetBufferList]) -> None: ...

    def send_frame(self, frame: bytes) -> None:
        """Ordinary (non-chimney) transmit of a whole Ethernet frame from the host."""


class ChimneyHost(Protocol):
    """Protocol side (``ProtocolXxxOffloadComplete`` / ``ProtocolTcpOffloadXxx`` handlers)."""

    def on_initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None: ...

    def on_terminate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None: ...

    def on_update_offload_complete(self, target_id: int, tree: OffloadBlock) -> None: ...

    def on_invalidate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None: ...

    def on_query_offload_complete(self, target_id: int, tree: OffloadBlock) -> None: ...

    def on_tcp_send_complete(self, handle: Any, nbls: list[NetBufferList]) -> None: ...

    def on_tcp_receive_complete(self, handle: Any, nbls: list[NetBufferList]) -> None: ...

    def on_tcp_disconnect_complete(self, handle: Any, nbl: NetBufferList) -> None: ...

    def on_tcp_forward_complete(self, handle: Any, nbls: list[NetBufferList]) -> None: ...

    def on_tcp_event(self, handle: Any, event_type: int, info: int) -> None: ...

    def on_tcp_receive_indicate(self, handle: Any, nbl: NetBufferList) -> tuple[int, int]:
        """Return (status, bytes_consumed): SUCCESS/all, OFFLOAD_DATA_NOT_ACCEPTED/0, or PARTIALLY_ACCEPTED/n."""
        ...

    def on_status_indication(self, target_id: int, status: int, info: Any) -> None: ...

    def on_offload_event(self, target_id: int, block: OffloadBlock | None, code: int) -> None: ...

    def on_receive_frame(self, target_id: int, frame: bytes) -> None:
        """Ordinary receive path (NdisMIndicateReceiveNetBufferLists)."""

    def on_contract_violation(self, violation: Exception) -> None:
        """The mediator caught a broken rule; the host isolates what it concerns."""
