"""The initiate walk (reference 2.1): depth-first / breadth-next over a block tree, writing every Status.

Kept apart from the NIC so the status rules can be read (and tested) on their own:

* a new offload reports its own result; on success its context goes into ``MiniportOffloadContext`` and it reports
  SUCCESS, or OFFLOAD_PARTIAL_SUCCESS when at least one *immediate* dependent was not offloaded;
* a failed node's dependents are never tried and report FAILURE;
* a linker reports SUCCESS / PARTIAL / FAILURE as all / some / none of its dependents succeeded;
* placeholders always report SUCCESS;
* when the root (the first block of the tree) is a new offload that fails, the walk stops there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tcpchimney.chimney.constants import NdisStatus
from tcpchimney.chimney.objects import Layer, OffloadBlock

OffloadNew = Callable[[OffloadBlock, Any], tuple[int, Any]]
"""``offload_new(block, parent_context) -> (status, context)``: allocate one object (context None on failure)."""
Owns = Callable[[Any, Layer], bool]
"""``owns(context, layer)``: the context names a live object of that layer on this target."""


def initiate_walk(tree: OffloadBlock, offload_new: OffloadNew, owns: Owns) -> list[Any]:
    """Offload everything the tree asks for; return the new contexts in walk order."""
    walker = _Walker(offload_new, owns)
    block: OffloadBlock | None = tree
    first = True
    while block is not None:
        ok = walker.block(block, None)
        if first and not ok and block.is_new_offload:
            fail_subtree(block.next_block)  # the root could not be offloaded: nothing else is tried
            break
        first = False
        block = block.next_block
    return walker.created


def fail_subtree(first: OffloadBlock | None) -> None:
    """Blocks that are never tried report FAILURE (placeholders SUCCESS: they carry no state)."""
    if first is None:
        return
    for b in first.walk():
        b.status = NdisStatus.SUCCESS if b.is_placeholder else NdisStatus.FAILURE


class _Walker:
    __slots__ = ("created", "offload_new", "owns")

    def __init__(self, offload_new: OffloadNew, owns: Owns) -> None:
        self.offload_new = offload_new
        self.owns = owns
        self.created: list[Any] = []

    def block(self, block: OffloadBlock, parent: Any) -> bool:
        """Offload one block and its dependents; True when it counts as offloaded for its parent."""
        if block.is_placeholder:
            block.status = NdisStatus.SUCCESS
            self.dependents(block, None)
            return True
        if block.is_linker:
            ctx = block.context
            if not self.owns(ctx, block.layer):
                block.status = NdisStatus.FAILURE
                fail_subtree(block.dependent_block_list)
                return False
            results = self.dependents(block, ctx)
            if all(results):
                block.status = NdisStatus.SUCCESS
            elif any(results):
                block.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
            else:
                block.status = NdisStatus.FAILURE
                return False
            return True
        status, ctx = self.offload_new(block, parent)
        if status != NdisStatus.SUCCESS:
            block.status = status
            fail_subtree(block.dependent_block_list)
            return False
        assert block.miniport_offload_context is not None
        block.miniport_offload_context.value = ctx  # written only on success
        self.created.append(ctx)
        results = self.dependents(block, ctx)
        block.status = NdisStatus.SUCCESS if all(results) else NdisStatus.OFFLOAD_PARTIAL_SUCCESS
        return True

    def dependents(self, block: OffloadBlock, parent: Any) -> list[bool]:
        return [self.block(dep, parent) for dep in block.dependents()]
