"""What the mediator remembers about targets, offloaded objects and state operations in flight.

Plain ``__slots__`` records: the mediator touches them on every I/O call, so they stay small and attribute access
stays cheap.  Nothing here checks a rule; ``mediator.py`` does.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from tcpchimney.chimney.objects import ContextSlot, Layer, NetBufferList, OffloadBlock, OffloadCapabilities
from tcpchimney.tcp.state import TcpDelegated, TcpState

OFFLOADING = "offloading"
OFFLOADED = "offloaded"
TERMINATING = "terminating"

DONE_MEMORY = 4096
"""How many completed send NBL ids each connection remembers (to tell "completed twice" from "never posted")."""


class TargetEntry:
    """One registered offload target."""

    __slots__ = (
        "by_context",
        "caps",
        "handles",
        "name",
        "needs_requery",
        "party",
        "paused",
        "target",
        "target_id",
        "upload_all_pending",
    )

    def __init__(self, target_id: int, target: Any) -> None:
        self.target_id = target_id
        self.target = target
        self.name: str = str(getattr(target, "name", f"target{target_id}"))
        self.party = f"target:{self.name}"
        self.caps: OffloadCapabilities | None = None
        self.needs_requery = False  # set by OFFLOAD_RESUME, cleared by query_capabilities (invariant 11)
        self.paused = False  # set by OFFLOAD_PAUSE and UPLOAD_ALL, cleared by OFFLOAD_RESUME
        self.upload_all_pending: set[Any] | None = None  # handles offloaded at UPLOAD_ALL, not yet terminated
        self.handles: set[Any] = set()  # every object (any state) on this target
        self.by_context: dict[int, Any] = {}  # id(context) -> handle, for blocks that name an object by MOC only


class ObjectRecord:
    """One offloaded (or being offloaded / terminated) state object, keyed by the host's handle."""

    __slots__ = (
        "aborted",
        "abortive",
        "children",
        "context",
        "delivered",
        "disconnect_data",
        "disconnects",
        "done",
        "first_fail_seq",
        "forwards",
        "handle",
        "handler_from",
        "in_indication",
        "init_buffered",
        "init_delegated",
        "invalidated",
        "io_seq",
        "layer",
        "n_invalidate",
        "n_query",
        "n_update",
        "parent",
        "posted_bytes",
        "recvs",
        "retrieves",
        "sends",
        "state",
        "target",
        "tcp_state",
        "terminate_called",
        "unacked_completed",
    )

    def __init__(self, handle: Any, layer: Layer, target: TargetEntry, parent: Any) -> None:
        self.handle = handle
        self.layer = layer
        self.target = target
        self.parent = parent  # handle of the object this one depends on (TCP -> path -> neighbor), None if unknown
        # The containers below are created on first use (None until then): an idle offloaded connection never
        # needs them, and every container an object keeps alive is one more for the cyclic GC to walk.
        self.children: set[Any] | None = None
        self.state = OFFLOADING
        self.context: Any = None
        self.n_update = 0
        self.n_query = 0
        self.n_invalidate = 0
        self.invalidated = False
        self.terminate_called = False
        self.aborted = False  # TcpIndicateAbort seen
        self.abortive = False  # the host asked for an abortive disconnect
        self.retrieves = 0
        self.tcp_state: TcpState | None = None
        self.init_delegated: TcpDelegated | None = None
        self.init_buffered = 0
        # I/O: one sequence counter orders every request the host posts on this connection.
        self.io_seq = 0
        self.handler_from: int | None = None  # first seq posted by the target handler now on the stack
        # OrderedDicts, not dicts: they are consumed from the front, and a plain dict's first key gets slow to find
        # after many deletions at the front.
        self.sends: OrderedDict[int, tuple[int, int, NetBufferList]] | None = None  # nbl_id -> (seq, len, nbl)
        self.done: OrderedDict[int, None] | None = None  # recently completed send nbl ids
        self.first_fail_seq: int | None = None  # smallest seq of a send completed with a non-SUCCESS status
        self.posted_bytes = 0
        self.unacked_completed = 0  # bytes of non-SUCCESS send completions the peer did not ACK
        self.recvs: OrderedDict[int, tuple[int, NetBufferList]] | None = None  # FIFO of receive posts
        self.delivered = 0  # receive bytes that reached the host (post completions + accepted indications)
        self.disconnects: dict[int, tuple[int, NetBufferList]] = {}
        self.disconnect_data = False  # a graceful disconnect carried final data (no per-byte send accounting then)
        self.forwards: dict[int, tuple[int, NetBufferList]] = {}
        self.in_indication = 0

    def ops_in_flight(self) -> list[str]:
        out = []
        if self.n_update:
            out.append("update")
        if self.n_query:
            out.append("query")
        if self.n_invalidate:
            out.append("invalidate")
        return out


@dataclass(slots=True)
class BlockSnapshot:
    """A block as the host handed it over, recorded at call time (compared with the block at completion)."""

    block: OffloadBlock
    parent: OffloadBlock | None  # the block whose DependentBlockList chain holds this one
    slot: ContextSlot | None
    slot_value: Any
    obj: ObjectRecord | None  # the object named (or created) by this block; None for placeholders

    @property
    def role(self) -> str:
        if self.slot is None:
            return "placeholder"
        return "linker" if self.slot_value is not None else "new"


@dataclass(slots=True)
class Operation:
    """A state operation (initiate/terminate/update/invalidate/query) in flight at a target."""

    kind: str
    target: TargetEntry
    tree: OffloadBlock
    blocks: list[BlockSnapshot]
    started: float
    in_handler: bool = True
    relinks: list[tuple[ObjectRecord, ObjectRecord]] | None = None  # update: (path, new neighbor)


@dataclass(frozen=True, slots=True)
class PendingOperation:
    """What ``Chimney.pending_operations`` reports."""

    kind: str
    target_id: int
    target_name: str
    handles: tuple[Any, ...]
    started: float
    age: float


def tree_blocks(tree: OffloadBlock) -> tuple[list[tuple[OffloadBlock, OffloadBlock | None]], str | None]:
    """Every block with its tree parent, depth-first / breadth-next; plus a shape error (invariant 1) or None."""
    out: list[tuple[OffloadBlock, OffloadBlock | None]] = []
    seen: set[int] = set()
    stack: list[tuple[Any, OffloadBlock | None]] = [(tree, None)]
    while stack:
        block, parent = stack.pop()
        if not isinstance(block, OffloadBlock):
            return out, f"{block!r} is not an OffloadBlock"
        if id(block) in seen:
            return out, "the tree has a cycle (a block is reachable twice)"
        seen.add(id(block))
        out.append((block, parent))
        nxt = block.next_block
        if nxt is not None:
            if not isinstance(nxt, OffloadBlock) or nxt.layer != block.layer:
                return out, f"NextBlock of a {block.layer.name} block is not a {block.layer.name} block"
            stack.append((nxt, parent))
        dep = block.dependent_block_list
        if dep is not None:
            if block.layer == Layer.TCP:
                return out, "a TCP block has a DependentBlockList"
            if not isinstance(dep, OffloadBlock) or dep.layer != block.layer + 1:
                return out, f"DependentBlockList of a {block.layer.name} block is not exactly one layer up"
            stack.append((dep, block))
    return out, None
