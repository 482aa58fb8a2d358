"""Handle remapping of an intermediate driver (reference section 6): IM offload entries and lower block trees.

For every object offloaded through the team the team keeps an ``ImEntry`` (it is what the team writes into the
upper ``MiniportOffloadContext``).  The entry holds the upper ``NdisOffloadHandle`` and the object's copies on the
members: a ``LowerObj`` per copy, which is the handle the team puts on the lower block (the NDIS_OFFLOAD_HANDLE the
IM builds) and whose ``slot`` the member writes its context into.

A TCP connection has exactly one copy, on the member that runs it.  A neighbor or path gets a copy on every member
that carries one of its connections; if a copy on a member is still being offloaded by another tree when a second
tree needs one there, a further copy is offloaded rather than waiting (the lower chimney forbids linking to an
object whose initiate is in flight), so a member may hold several copies of one neighbor or path.
"""

from __future__ import annotations

import itertools
from typing import Any

from tcpchimney.chimney.constants import OffloadStateType
from tcpchimney.chimney.objects import ContextSlot, Layer, NeighborDelegated, OffloadBlock, PathDelegated

OFFLOADING = "offloading"
OFFLOADED = "offloaded"
TERMINATING = "terminating"
GONE = "gone"  # terminated, or its offload failed
_KIND = {Layer.NEIGHBOR: OffloadStateType.NEIGHBOR, Layer.PATH: OffloadStateType.IP4, Layer.TCP: OffloadStateType.TCP}


class ImEntry:
    """The IM offload entry of one upper object (its PVOID goes into the upper ``*MOC``)."""

    __slots__ = (
        "aborted",
        "cached",
        "const",
        "copies",
        "early_refused",
        "held",
        "hw_pending",
        "layer",
        "lower",
        "member",
        "parent",
        "state",
        "upper_handle",
    )

    def __init__(self, upper_handle: Any, layer: Layer, const: Any, cached: Any, parent: ImEntry | None) -> None:
        self.upper_handle = upper_handle
        self.layer = layer
        self.const = const
        self.cached = cached
        self.parent = parent
        self.state = OFFLOADING
        self.copies: dict[int, list[LowerObj]] = {}  # member index -> copies (neighbor / path)
        self.member = -1  # TCP: the member that runs it
        self.lower: LowerObj | None = None  # TCP: its one copy
        self.held: list[tuple[str, tuple[Any, ...]]] | None = None  # lower->upper calls before the upper completed
        self.early_refused = False  # a receive indication was refused before the upper initiate completed
        self.hw_pending = False  # inject a hardware failure once the lower initiate completed
        self.aborted = False  # ABORT passed up: later I/O goes down so the member completes it REQUEST_ABORTED

    def all_copies(self) -> list[LowerObj]:
        if self.layer == Layer.TCP:
            return [self.lower] if self.lower is not None and self.lower.state != GONE else []
        return [c for cs in self.copies.values() for c in cs]

    def copies_on(self, member: int) -> list[LowerObj]:
        if self.layer == Layer.TCP:
            low = self.lower
            return [low] if low is not None and low.state != GONE and self.member == member else []
        return list(self.copies.get(member, ()))

    def __repr__(self) -> str:
        where = self.member if self.layer == Layer.TCP else sorted(self.copies)
        return f"ImEntry({self.layer.name}, {self.upper_handle!r}, {self.state}, on={where})"


class LowerObj:
    """One copy of an upper object on one member: the handle the member sees and the context it wrote."""

    __slots__ = ("entry", "member", "parent", "slot", "state")

    def __init__(self, entry: ImEntry, member: int, parent: LowerObj | None) -> None:
        self.entry = entry
        self.member = member
        self.parent = parent
        self.slot = ContextSlot()
        self.state = OFFLOADING

    @property
    def context(self) -> Any:
        return self.slot.value

    def detach(self) -> None:
        """Forget this copy in its entry (after its terminate completed or its offload failed)."""
        self.state = GONE
        entry = self.entry
        if entry.lower is self:
            return  # a TCP entry keeps its copy: tcp_receive_return may still name it after the terminate
        copies = entry.copies.get(self.member)
        if copies is not None and self in copies:
            copies.remove(self)
            if not copies:
                del entry.copies[self.member]

    def __repr__(self) -> str:
        return f"LowerObj({self.entry.layer.name}@{self.member}, {self.state})"


def named_block(layer: Layer, copy: LowerObj) -> OffloadBlock:
    """A block naming an offloaded lower copy (terminate / update / invalidate / query / linker)."""
    return OffloadBlock(
        layer, _KIND[layer], miniport_offload_context=ContextSlot(copy.context), ndis_offload_handle=copy
    )


def placeholder(layer: Layer) -> OffloadBlock:
    return OffloadBlock(layer, _KIND[layer])


def chain(blocks: list[OffloadBlock]) -> OffloadBlock | None:
    for left, right in itertools.pairwise(blocks):
        left.next_block = right
    if blocks:
        blocks[-1].next_block = None
        return blocks[0]
    return None


def siblings(block: OffloadBlock | None) -> list[OffloadBlock]:
    out = []
    while block is not None:
        out.append(block)
        block = block.next_block
    return out


def default_delegated(layer: Layer) -> Any:
    if layer == Layer.NEIGHBOR:
        return NeighborDelegated()
    if layer == Layer.PATH:
        return PathDelegated()
    return None
