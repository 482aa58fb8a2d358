"""Test doubles for the chimney contract: a recording host and a scriptable offload target.

``RecordingHost`` implements ``ChimneyHost`` by writing every callback into ``calls``.  ``ScriptedTarget`` implements
``OffloadTarget`` with a tiny connection model (no wire, no TCP engine): by default it completes every request
correctly and asynchronously (``scheduler.call_soon``), and tests script it with plain attributes (``fail``,
``hold``, ``sync``, ``before_complete``) or by driving it (``ack``, ``receive``, ``event``, ``status``).  Used by the
contract tests and handy for anyone who wants to exercise a host or the mediator without a real target.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tcpchimney.chimney.constants import NdisStatus, TcpEventType
from tcpchimney.chimney.objects import (
    ContextSlot,
    Layer,
    NeighborCached,
    NeighborConst,
    NeighborDelegated,
    NetBufferList,
    OffloadBlock,
    OffloadCapabilities,
    PathCached,
    PathConst,
    neighbor_block,
    path_block,
    tcp_block,
)
from tcpchimney.clock import Scheduler
from tcpchimney.tcp.state import TcpCached, TcpConst, TcpDelegated, TcpState

_SUCCEEDED = (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)


class RecordingHost:
    """A ``ChimneyHost`` that records every callback as ``(name, *args)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.violations: list[Exception] = []
        # (status, consumed) answer to receive indications; None = accept everything.
        self.indicate_answer: Callable[[NetBufferList], tuple[int, int]] | None = None
        self.received = bytearray()

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def on_initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.calls.append(("initiate_complete", target_id, tree))

    def on_terminate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.calls.append(("terminate_complete", target_id, tree))

    def on_update_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.calls.append(("update_complete", target_id, tree))

    def on_invalidate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.calls.append(("invalidate_complete", target_id, tree))

    def on_query_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.calls.append(("query_complete", target_id, tree))

    def on_tcp_send_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self.calls.append(("send_complete", handle, list(nbls)))

    def on_tcp_receive_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        for nbl in nbls:
            self.received += nbl.data[: nbl.bytes_transferred]
        self.calls.append(("receive_complete", handle, list(nbls)))

    def on_tcp_disconnect_complete(self, handle: Any, nbl: NetBufferList) -> None:
        self.calls.append(("disconnect_complete", handle, nbl))

    def on_tcp_forward_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self.calls.append(("forward_complete", handle, list(nbls)))

    def on_tcp_event(self, handle: Any, event_type: int, info: int) -> None:
        self.calls.append(("event", handle, event_type, info))

    def on_tcp_receive_indicate(self, handle: Any, nbl: NetBufferList) -> tuple[int, int]:
        self.calls.append(("receive_indicate", handle, nbl))
        if self.indicate_answer is not None:
            status, consumed = self.indicate_answer(nbl)
        else:
            status, consumed = NdisStatus.SUCCESS, len(nbl.remaining)
        self.received += nbl.remaining[:consumed]
        return status, consumed

    def on_status_indication(self, target_id: int, status: int, info: Any) -> None:
        self.calls.append(("status", target_id, status, info))

    def on_offload_event(self, target_id: int, block: OffloadBlock | None, code: int) -> None:
        self.calls.append(("offload_event", target_id, block, code))

    def on_receive_frame(self, target_id: int, frame: bytes) -> None:
        self.calls.append(("frame", target_id, frame))

    def on_contract_violation(self, violation: Exception) -> None:
        self.violations.append(violation)


@dataclass(eq=False)
class FakeObject:
    """The target's context for one offloaded object (what it writes into MiniportOffloadContext)."""

    handle: Any
    layer: Layer
    delegated: TcpDelegated | None = None
    sends: list[NetBufferList] = field(default_factory=list)  # outstanding, post order
    front_acked: int = 0  # bytes of sends[0] already ACKed (trimmed off when returned)
    recvs: list[NetBufferList] = field(default_factory=list)
    buffered: bytearray = field(default_factory=bytearray)  # received + ACKed, not delivered yet
    disconnects: list[NetBufferList] = field(default_factory=list)
    forwards: list[NetBufferList] = field(default_factory=list)


class ScriptedTarget:
    """An ``OffloadTarget`` whose behaviour tests set per call.

    fail: handle -> initiate status for that new offload (not offloaded).
    hold: set of operation kinds ("initiate", "terminate", ...) it never completes.
    sync: set of request kinds ("initiate", "terminate", "send", "receive", ...) it completes inside the handler.
    before_complete: kind -> callback(tree) run just before a state operation completes (to corrupt it).
    complete_sends_at_terminate: complete outstanding sends with UPLOAD_IN_PROGRESS instead of returning them.
    """

    def __init__(self, scheduler: Scheduler, name: str = "nic0", caps: OffloadCapabilities | None = None) -> None:
        self.name = name
        self.scheduler = scheduler
        self.caps = caps or OffloadCapabilities(max_connections=64, max_buffer_bytes=1 << 24)
        self.chimney: Any = None
        self.target_id = 0
        self.fail: dict[Any, int] = {}
        self.hold: set[str] = set()
        self.sync: set[str] = set()
        self.before_complete: dict[str, Callable[[OffloadBlock], None]] = {}
        self.complete_sends_at_terminate = False
        self.objects: dict[Any, FakeObject] = {}  # handle -> context
        self.frames: list[bytes] = []
        self.returned: list[NetBufferList] = []
        self.calls: list[str] = []

    # ---- OffloadTarget -----------------------------------------------------------------------------------------

    def bind(self, chimney: Any, target_id: int) -> None:
        self.chimney = chimney
        self.target_id = target_id

    def query_capabilities(self) -> OffloadCapabilities:
        self.calls.append("query_capabilities")
        return self.caps

    def _later(self, kind: str, fn: Callable[..., None], *args: Any) -> None:
        if kind in self.hold:
            return
        if kind in self.sync:
            fn(*args)
        else:
            self.scheduler.call_soon(fn, *args)

    def initiate_offload(self, tree: OffloadBlock) -> None:
        self.calls.append("initiate")
        self._later("initiate", self._finish_initiate, tree)

    def terminate_offload(self, tree: OffloadBlock) -> None:
        self.calls.append("terminate")
        self._later("terminate", self._finish_terminate, tree)

    def update_offload(self, tree: OffloadBlock) -> None:
        self.calls.append("update")
        self._later("update", self._finish_simple, tree, "update")

    def invalidate_offload(self, tree: OffloadBlock) -> None:
        self.calls.append("invalidate")
        self._later("invalidate", self._finish_simple, tree, "invalidate")

    def query_offload(self, tree: OffloadBlock) -> None:
        self.calls.append("query")
        self._later("query", self._finish_simple, tree, "query")

    def tcp_send(self, context: FakeObject, nbls: list[NetBufferList]) -> None:
        context.sends.extend(nbls)
        n = sum(len(b.remaining) for b in nbls)
        d = context.delegated
        assert d is not None
        # "Transmit at once": everything posted is in flight.
        context.delegated = d.with_changes(snd_nxt=(d.snd_max + n) & 0xFFFFFFFF, snd_max=(d.snd_max + n) & 0xFFFFFFFF)
        if "send" in self.sync:
            self.ack(context.handle)

    def tcp_receive(self, context: FakeObject, nbls: list[NetBufferList]) -> None:
        context.recvs.extend(nbls)
        if "receive" in self.sync:
            self._fill_posts(context, force=True)
        else:
            self.scheduler.call_soon(self._fill_posts, context)

    def tcp_receive_return(self, context: Any, nbls: list[NetBufferList]) -> None:
        self.returned.extend(nbls)

    def tcp_disconnect(self, context: FakeObject, nbl: NetBufferList, flags: int) -> None:
        context.disconnects.append(nbl)

    def tcp_forward(self, context: FakeObject, nbls: list[NetBufferList]) -> None:
        context.forwards.extend(nbls)

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    # ---- completions -------------------------------------------------------------------------------------------

    def _finish_initiate(self, tree: OffloadBlock) -> None:
        roots = [tree]
        while roots[-1].next_block is not None:
            roots.append(roots[-1].next_block)
        first_ok = self._visit(roots[0], parent_failed=False)
        for root in roots[1:]:
            self._visit(root, parent_failed=not first_ok and roots[0].is_new_offload)
        self._complete("initiate", tree)

    def _visit(self, block: OffloadBlock, parent_failed: bool) -> bool:
        """Offload one block (depth-first / breadth-next); True if it (or the placeholder/linker) succeeded."""
        deps = list(block.dependents())
        if block.is_placeholder:
            for dep in deps:
                self._visit(dep, parent_failed)
            block.status = NdisStatus.SUCCESS
            return True
        if block.is_linker:
            oks = [self._visit(dep, parent_failed) for dep in deps]
            if all(oks):
                block.status = NdisStatus.SUCCESS
            elif any(oks):
                block.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
            else:
                block.status = NdisStatus.FAILURE
            return block.status in _SUCCEEDED
        status = NdisStatus.FAILURE if parent_failed else self.fail.get(block.ndis_offload_handle)
        if status is not None:
            block.status = status
            for dep in deps:
                self._visit(dep, parent_failed=True)
            return False
        ctx = FakeObject(block.ndis_offload_handle, block.layer)
        if block.layer == Layer.TCP:
            ctx.delegated = block.delegated
            ctx.sends = list(block.net_buffer_list_chain or ())
            for nbl in block.buffered_data or ():
                ctx.buffered += nbl.remaining
        self.objects[ctx.handle] = ctx
        assert block.miniport_offload_context is not None
        block.miniport_offload_context.value = ctx
        oks = [self._visit(dep, parent_failed=False) for dep in deps]
        block.status = NdisStatus.SUCCESS if all(oks) else NdisStatus.OFFLOAD_PARTIAL_SUCCESS
        return True

    def _finish_terminate(self, tree: OffloadBlock) -> None:
        for block in tree.walk():
            block.status = NdisStatus.SUCCESS
            if block.is_placeholder:
                continue
            ctx = self.objects.pop(block.ndis_offload_handle, None)
            if ctx is None:
                continue
            if block.layer == Layer.NEIGHBOR:
                block.delegated = NeighborDelegated()
            if block.layer != Layer.TCP:
                continue
            if ctx.recvs:
                posts, ctx.recvs = ctx.recvs, []
                for nbl in posts:
                    nbl.status = NdisStatus.UPLOAD_IN_PROGRESS
                self.chimney.tcp_receive_complete(ctx.handle, posts)
            for nbl in ctx.disconnects:
                nbl.status = NdisStatus.UPLOAD_IN_PROGRESS
                self.chimney.tcp_disconnect_complete(ctx.handle, nbl)
            ctx.disconnects = []
            if ctx.forwards:
                fwd, ctx.forwards = ctx.forwards, []
                self.chimney.tcp_forward_complete(ctx.handle, fwd)
            if ctx.sends and self.complete_sends_at_terminate:
                sends, ctx.sends = ctx.sends, []
                for nbl in sends:
                    nbl.status = NdisStatus.UPLOAD_IN_PROGRESS
                sends[0].bytes_transferred = ctx.front_acked  # the one partial send
                self.chimney.tcp_send_complete(ctx.handle, sends)
            elif ctx.sends and ctx.front_acked:
                ctx.sends[0].offset += ctx.front_acked  # trim the partly ACKed head (NdisAdvanceNetBufferDataStart)
            ctx.front_acked = 0
            block.net_buffer_list_chain = list(ctx.sends) or None
            block.buffered_data = [NetBufferList(data=bytes(ctx.buffered))] if ctx.buffered else None
            block.delegated = ctx.delegated
        self._complete("terminate", tree)

    def _finish_simple(self, tree: OffloadBlock, kind: str) -> None:
        for block in tree.walk():
            block.status = NdisStatus.SUCCESS
            ctx = self.objects.get(block.ndis_offload_handle)
            if kind == "query" and ctx is not None and ctx.layer == Layer.TCP:
                block.delegated = ctx.delegated
        self._complete(kind, tree)

    def _complete(self, kind: str, tree: OffloadBlock) -> None:
        hook = self.before_complete.get(kind)
        if hook is not None:
            hook(tree)
        getattr(self.chimney, f"{kind}_offload_complete")(self.target_id, tree)

    # ---- driving the model (what the wire would do) ----------------------------------------------------------------

    def ack(self, handle: Any, nbytes: int | None = None) -> None:
        """The peer ACKs `nbytes` (default: everything sent); fully ACKed sends complete with SUCCESS."""
        ctx = self.objects[handle]
        d = ctx.delegated
        assert d is not None
        outstanding = ((d.snd_max - d.snd_una) & 0xFFFFFFFF) - (1 if d.fin_sent and d.snd_una != d.snd_max else 0)
        n = outstanding if nbytes is None else min(nbytes, outstanding)
        ctx.delegated = d.with_changes(snd_una=(d.snd_una + n) & 0xFFFFFFFF)
        done = []
        budget = ctx.front_acked + n
        while ctx.sends and budget >= len(ctx.sends[0].remaining):
            nbl = ctx.sends.pop(0)
            budget -= len(nbl.remaining)
            nbl.status = NdisStatus.SUCCESS
            nbl.bytes_transferred = len(nbl.remaining)
            done.append(nbl)
        ctx.front_acked = budget
        if done:
            self.chimney.tcp_send_complete(handle, done)

    def receive(self, handle: Any, data: bytes) -> None:
        """In-order data from the peer: ACKed at once, delivered into posts FIFO, else indicated."""
        ctx = self.objects[handle]
        d = ctx.delegated
        assert d is not None
        ctx.delegated = d.with_changes(rcv_nxt=(d.rcv_nxt + len(data)) & 0xFFFFFFFF)
        ctx.buffered += data
        self._fill_posts(ctx)
        if ctx.buffered and not ctx.recvs:
            nbl = NetBufferList(data=bytes(ctx.buffered))
            _status, consumed = self.chimney.tcp_receive_indicate(handle, nbl)
            del ctx.buffered[:consumed]

    def _fill_posts(self, ctx: FakeObject, force: bool = False) -> None:
        done = []
        while ctx.recvs and (ctx.buffered or force):
            nbl = ctx.recvs.pop(0)
            take = bytes(ctx.buffered[: nbl.capacity])
            del ctx.buffered[: len(take)]
            nbl.data = take
            nbl.bytes_transferred = len(take)
            nbl.status = NdisStatus.SUCCESS
            done.append(nbl)
            force = False
        if done:
            self.chimney.tcp_receive_complete(ctx.handle, done)

    def complete_disconnect(self, handle: Any, status: int = NdisStatus.SUCCESS) -> None:
        ctx = self.objects[handle]
        nbl = ctx.disconnects.pop(0)
        nbl.status = status
        self.chimney.tcp_disconnect_complete(handle, nbl)

    def complete_forwards(self, handle: Any) -> None:
        ctx = self.objects[handle]
        fwd, ctx.forwards = ctx.forwards, []
        for nbl in fwd:
            nbl.status = NdisStatus.SUCCESS
        self.chimney.tcp_forward_complete(handle, fwd)

    def event(self, handle: Any, event_type: int, info: int = 0) -> None:
        self.chimney.tcp_event(handle, event_type, info)

    def retrieve(self, handle: Any, reason: int) -> None:
        self.chimney.tcp_event(handle, TcpEventType.RETRIEVE, reason)

    def set_state(self, handle: Any, state: TcpState) -> None:
        ctx = self.objects[handle]
        if ctx.delegated is not None:
            ctx.delegated = ctx.delegated.with_changes(state=state)
        self.chimney.note_tcp_state(handle, state)

    def status(self, code: int, info: Any = None) -> None:
        self.chimney.indicate_status(self.target_id, code, info)


# ---- tree builders for tests -------------------------------------------------------------------------------------


def delegated(
    state: TcpState = TcpState.ESTABLISHED, snd: int = 1000, rcv: int = 5000, unacked: int = 0, **changes: Any
) -> TcpDelegated:
    """A plausible TCP delegated state: SndUna=snd, SndNxt=SndMax=snd+unacked, RcvNxt=rcv."""
    base = TcpDelegated(
        state=state,
        rcv_nxt=rcv,
        rcv_wnd=65535,
        snd_una=snd,
        snd_nxt=snd + unacked,
        snd_max=snd + unacked,
        snd_wnd=65535,
        max_snd_wnd=65535,
        send_wl1=rcv,
        cwnd=14600,
        ssthresh=0xFFFFFFFF,
    )
    return base.with_changes(**changes) if changes else base


def connection_tree(
    n: Any = "n1",
    p: Any = "p1",
    t: Any = "t1",
    *,
    tcp_delegated: TcpDelegated | None = None,
    send_nbls: list[NetBufferList] | None = None,
    buffered: list[NetBufferList] | None = None,
    port: int = 40000,
) -> OffloadBlock:
    """Neighbor -> path -> TCP, all three new offloads."""
    tcp = tcp_block(
        TcpConst(flags=0, local_port=port, remote_port=80, snd_wind_scale=0, rcv_wind_scale=0, remote_mss=1460),
        TcpCached(),
        tcp_delegated or delegated(),
        context=ContextSlot(),
        handle=t,
        send_nbls=send_nbls,
        buffered_data=buffered,
    )
    path = path_block(
        PathConst(b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"), PathCached(1500), context=ContextSlot(), handle=p
    )
    neighbor = neighbor_block(
        NeighborConst(b"\x02\x00\x00\x00\x00\x01"),
        NeighborCached(b"\x02\x00\x00\x00\x00\x02"),
        NeighborDelegated(),
        context=ContextSlot(),
        handle=n,
    )
    neighbor.dependent_block_list = path
    path.dependent_block_list = tcp
    return neighbor


def name_block(layer: Layer, handle: Any, context: Any) -> OffloadBlock:
    """A block that names an offloaded object (terminate/update/query/invalidate, or a linker at initiate)."""
    slot = ContextSlot(context)
    if layer == Layer.TCP:
        return tcp_block(context=slot, handle=handle)
    if layer == Layer.PATH:
        return path_block(context=slot, handle=handle)
    return neighbor_block(context=slot, handle=handle)


def chain(*blocks: OffloadBlock) -> OffloadBlock:
    """Stack blocks one layer apart: chain(n, p, t) makes n -> p -> t via DependentBlockList."""
    for parent, child in itertools.pairwise(blocks):
        parent.dependent_block_list = child
    return blocks[0]
