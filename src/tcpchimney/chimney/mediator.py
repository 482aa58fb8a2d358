"""The ``Chimney`` mediator: the one place host and targets meet (the role NDIS plays).

API CONTRACT (stable; host and targets are written against it):

  chimney = Chimney(scheduler, tracer=None, on_violation="raise"|"record")
  chimney.bind_host(host)                         -> None
  chimney.register_target(target)                 -> int  (target_id; calls target.bind(chimney, target_id))
  chimney.unregister_target(target_id)
  chimney.query_capabilities(target_id)           -> OffloadCapabilities   (OID_TCP_TASK_OFFLOAD)

  Host -> target (each returns None; completion arrives later via the host's on_*_complete):
  chimney.initiate_offload(target_id, tree)       NdisInitiateOffload
  chimney.terminate_offload(target_id, tree)      NdisTerminateOffload
  chimney.update_offload(target_id, tree)         NdisUpdateOffload
  chimney.invalidate_offload(target_id, tree)     NdisInvalidateOffload
  chimney.query_offload(target_id, tree)          NdisQueryOffloadState
  chimney.tcp_send(handle, nbls)                  NdisOffloadTcpSend
  chimney.tcp_receive(handle, nbls)               NdisOffloadTcpReceive (receive post)
  chimney.tcp_receive_return(handle, nbls)        NdisOffloadTcpReceiveReturn
  chimney.tcp_disconnect(handle, nbl, flags)      NdisOffloadTcpDisconnect
  chimney.tcp_forward(handle, nbls)               NdisOffloadTcpForward
  chimney.send_frame(target_id, frame)            ordinary send (NdisSendNetBufferLists)

  Target -> host:
  chimney.initiate_offload_complete(target_id, tree)      NdisMInitiateOffloadComplete
  chimney.terminate_offload_complete(target_id, tree)     NdisMTerminateOffloadComplete
  chimney.update_offload_complete(target_id, tree)        NdisMUpdateOffloadComplete
  chimney.invalidate_offload_complete(target_id, tree)    NdisMInvalidateOffloadComplete
  chimney.query_offload_complete(target_id, tree)         NdisMQueryOffloadStateComplete
  chimney.tcp_send_complete(handle, nbls)                 NdisTcpOffloadSendComplete
  chimney.tcp_receive_complete(handle, nbls)              NdisTcpOffloadReceiveComplete
  chimney.tcp_disconnect_complete(handle, nbl)            NdisTcpOffloadDisconnectComplete
  chimney.tcp_forward_complete(handle, nbls)              NdisTcpOffloadForwardComplete
  chimney.tcp_event(handle, event_type, info)             NdisTcpOffloadEventHandler
  chimney.tcp_receive_indicate(handle, nbl) -> (status, bytes_consumed)   NdisTcpOffloadReceiveHandler
  chimney.indicate_status(target_id, status, info=None)  NdisMIndicateStatusEx (PAUSE/UPLOAD_ALL/RESUME/LINK_STATE)
  chimney.offload_event(target_id, block, code)           NdisMOffloadEventIndicate
  chimney.indicate_receive_frame(target_id, frame)        NdisMIndicateReceiveNetBufferLists

  Introspection: chimney.violations (list[ContractViolation]), chimney.stats (dict of counters),
  chimney.object_state(handle) -> str ("offloading"|"offloaded"|"terminating"|None),
  chimney.paused(target_id) -> bool, chimney.check_quiescent() -> None (raises if an operation never completed).

ADDITIONS (additive to the contract above):
  chimney.note_tcp_state(handle, state)          target -> mediator: the connection's TcpState changed (no NDIS
                                                  counterpart; lets the mediator enforce the retrieve half-close ban)
  chimney.pending_operations(older_than=0.0)      -> list[PendingOperation]: state operations in flight for at least
                                                  `older_than` seconds of scheduler time (find a target that never
                                                  completes a terminate)
  chimney.tcp_state(handle) -> TcpState | None    last known TCP state of an offloaded connection
  chimney.capabilities(target_id) -> OffloadCapabilities | None   last capabilities queried
  chimney.stats keys: initiates, terminates, updates, invalidates, queries, retrieves (total),
  retrieves_by_reason {reason name: n}, upload_alls, pauses, resumes, sends, send_bytes, send_completions,
  receive_posts, receive_completions, receive_bytes, receive_indications, disconnects, forwards,
  violations (total), violations_by_rule {rule name: n}.

Violations: on_violation="raise" records the violation, calls host.on_contract_violation(v), then raises it to the
caller; "record" records it, tells the host, and ignores the offending call (it is not delivered; the mediator's
bookkeeping is left as it was before the call).  check_quiescent() always raises (it is an assertion).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NoReturn

from tcpchimney.chimney.constants import (
    DISCONNECT_COMPLETION_STATUSES,
    INITIATE_STATUSES,
    OTHER_OPERATION_STATUSES,
    RECEIVE_COMPLETION_STATUSES,
    SEND_COMPLETION_STATUSES,
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    NdisStatus,
    OffloadEventCode,
    TcpEventType,
    UploadReason,
)
from tcpchimney.chimney.errors import ContractViolation, Rule
from tcpchimney.chimney.objects import Layer, NetBufferList, OffloadBlock, OffloadCapabilities
from tcpchimney.chimney.records import (
    DONE_MEMORY,
    OFFLOADED,
    OFFLOADING,
    TERMINATING,
    BlockSnapshot,
    ObjectRecord,
    Operation,
    PendingOperation,
    TargetEntry,
    tree_blocks,
)
from tcpchimney.clock import Scheduler
from tcpchimney.tcp.state import (
    OFFLOADABLE_STATES,
    RETRIEVE_FORBIDDEN_STATES,
    TIMER_STOPPED,
    TcpDelegated,
    TcpState,
    seq_diff,
    seq_le,
)
from tcpchimney.trace.tracer import Tracer

HOST = "host"
_SUCCESS = NdisStatus.SUCCESS
_PARTIAL = NdisStatus.OFFLOAD_PARTIAL_SUCCESS
_SUCCEEDED = frozenset({_SUCCESS, _PARTIAL})
_PAUSED = NdisStatus.PAUSED
_ABORTED = NdisStatus.REQUEST_ABORTED
_EVENT_TYPES = frozenset(int(e) for e in TcpEventType)
_REASONS = frozenset(int(r) for r in UploadReason)
_GRAVEYARD = 4096  # terminated handles remembered for late tcp_receive_return calls (BufferedData NBLs)
_MAX_TIMER = 0x7FFFFFFF  # a running timer's TimeoutDelta must look like a tick count, not a negative/garbage value
# What a connection that never posted a send looks up (records create their containers on first use); never mutated.
_NO_SENDS: OrderedDict[int, tuple[int, int, NetBufferList]] = OrderedDict()


class _Skip(Exception):
    """Internal: a violation was recorded in "record" mode; the current call is dropped."""


def _status_name(status: object) -> str:
    if isinstance(status, int):
        try:
            return NdisStatus(status).name
        except ValueError:
            return f"0x{status:08X}"
    return repr(status)


def _nbl_len(nbl: NetBufferList) -> int:
    return len(nbl.data) - nbl.offset


def _fin_acked(d: TcpDelegated) -> bool:
    return d.fin_sent and d.snd_una == d.snd_max


class Chimney:
    """The NDIS role: routes every host call to a target and every completion/indication back, checking the rules."""

    def __init__(self, scheduler: Scheduler, tracer: Tracer | None = None, on_violation: str = "raise") -> None:
        if on_violation not in ("raise", "record"):
            raise ValueError(f"on_violation must be 'raise' or 'record', not {on_violation!r}")
        self._scheduler = scheduler
        self._tracer = tracer
        self._raise = on_violation == "raise"
        self._host: Any = None
        self._targets: dict[int, TargetEntry] = {}
        self._next_target_id = 1
        self._objs: dict[Any, ObjectRecord] = {}
        self._ops: dict[int, Operation] = {}  # id(root block) -> operation in flight
        # the terminated record itself (its target and context no longer change): no new tuple per terminate
        self._graveyard: OrderedDict[Any, ObjectRecord] = OrderedDict()
        self.violations: list[ContractViolation] = []
        self.stats: dict[str, Any] = {
            "initiates": 0,
            "terminates": 0,
            "updates": 0,
            "invalidates": 0,
            "queries": 0,
            "retrieves": 0,
            "retrieves_by_reason": {},
            "upload_alls": 0,
            "pauses": 0,
            "resumes": 0,
            "sends": 0,
            "send_bytes": 0,
            "send_completions": 0,
            "receive_posts": 0,
            "receive_completions": 0,
            "receive_bytes": 0,
            "receive_indications": 0,
            "disconnects": 0,
            "forwards": 0,
            "violations": 0,
            "violations_by_rule": {},
        }

    # ---- violations and tracing -------------------------------------------------------------------------------

    def _record(self, rule: Rule, detail: str, party: str, handle: object = None) -> ContractViolation:
        violation = ContractViolation(rule, detail, party=party, handle=handle)
        self.violations.append(violation)
        self.stats["violations"] += 1
        by_rule = self.stats["violations_by_rule"]
        by_rule[rule.name] = by_rule.get(rule.name, 0) + 1
        self._emit("violation", rule=rule.name, party=party, detail=detail, handle=str(handle))
        if self._host is not None:
            self._host.on_contract_violation(violation)
        return violation

    def _fail(self, rule: Rule, detail: str, party: str, handle: object = None) -> NoReturn:
        violation = self._record(rule, detail, party, handle)
        if self._raise:
            raise violation
        raise _Skip

    def _tracing(self) -> bool:
        tracer = self._tracer
        return tracer is not None and tracer.enabled

    def _emit(self, kind: str, **fields: Any) -> None:
        tracer = self._tracer
        if tracer is not None and tracer.enabled:
            tracer.emit("chimney." + kind, **fields)

    # ---- registration and introspection -----------------------------------------------------------------------

    def bind_host(self, host: Any) -> None:
        self._host = host

    def register_target(self, target: Any) -> int:
        target_id = self._next_target_id
        self._next_target_id += 1
        self._targets[target_id] = TargetEntry(target_id, target)
        target.bind(self, target_id)
        return target_id

    def unregister_target(self, target_id: int) -> None:
        entry = self._targets.pop(target_id, None)
        if entry is None:
            return
        for handle in entry.handles:
            self._objs.pop(handle, None)
        for key in [k for k, op in self._ops.items() if op.target is entry]:
            del self._ops[key]

    def query_capabilities(self, target_id: int) -> OffloadCapabilities:
        """OID_TCP_TASK_OFFLOAD: asks the target and remembers that the host (re-)queried (invariant 11)."""
        try:
            entry = self._entry(target_id, HOST)
        except _Skip:
            return OffloadCapabilities()
        caps: OffloadCapabilities = entry.target.query_capabilities()
        entry.caps = caps
        entry.needs_requery = False
        return caps

    def capabilities(self, target_id: int) -> OffloadCapabilities | None:
        entry = self._targets.get(target_id)
        return None if entry is None else entry.caps

    def object_state(self, handle: Any) -> str | None:
        obj = self._objs.get(handle)
        return None if obj is None else obj.state

    def tcp_state(self, handle: Any) -> TcpState | None:
        obj = self._objs.get(handle)
        return None if obj is None else obj.tcp_state

    def paused(self, target_id: int) -> bool:
        entry = self._targets.get(target_id)
        return entry is not None and entry.paused

    def note_tcp_state(self, handle: Any, state: int) -> None:
        """Target -> mediator: the connection moved to `state` (used for the retrieve half-close ban)."""
        obj = self._objs.get(handle)
        if obj is not None:
            obj.tcp_state = TcpState(state)

    def pending_operations(self, older_than: float = 0.0) -> list[PendingOperation]:
        """State operations in flight whose call is at least `older_than` seconds (scheduler time) old."""
        now = self._scheduler.now()
        out = []
        for op in self._ops.values():
            age = now - op.started
            if age >= older_than:
                handles = tuple(s.obj.handle for s in op.blocks if s.obj is not None)
                out.append(PendingOperation(op.kind, op.target.target_id, op.target.name, handles, op.started, age))
        return out

    def check_quiescent(self) -> None:
        """Raise if a state operation never completed or an UPLOAD_ALL was never acted on (always raises)."""
        if self._ops:
            pending = self.pending_operations()
            rule = Rule.NEVER_COMPLETED
            if any(p.kind == "terminate" for p in pending):
                rule = Rule.TERMINATE_NEVER_COMPLETED
            text = "; ".join(
                f"{p.kind} at {p.target_name} since t={p.started:g} for {list(p.handles)}" for p in pending
            )
            party = pending[0].target_name
            raise self._record(rule, f"operations in flight: {text}", f"target:{party}")
        for entry in self._targets.values():
            if entry.upload_all_pending:
                left = sorted(str(h) for h in entry.upload_all_pending)
                raise self._record(
                    Rule.UPLOAD_ALL_NOT_DONE, f"after UPLOAD_ALL from {entry.name} still offloaded: {left[:8]}", HOST
                )

    # ---- helpers ------------------------------------------------------------------------------------------------

    def _entry(self, target_id: int, party: str) -> TargetEntry:
        entry = self._targets.get(target_id)
        if entry is None:
            self._fail(Rule.UNKNOWN_HANDLE, f"no target registered as {target_id}", party)
        return entry

    def _resolve(self, entry: TargetEntry, block: OffloadBlock) -> ObjectRecord | None:
        handle = block.ndis_offload_handle
        if handle is None:
            slot = block.miniport_offload_context
            if slot is None or slot.value is None:
                return None
            handle = entry.by_context.get(id(slot.value))
            if handle is None:
                return None
        obj = self._objs.get(handle)
        if obj is not None and obj.target is not entry:
            return None
        return obj

    def _shape(self, tree: OffloadBlock, party: str) -> list[tuple[OffloadBlock, OffloadBlock | None]]:
        pairs, error = tree_blocks(tree)
        if error is not None:
            self._fail(Rule.TREE_SHAPE, error, party)
        return pairs

    def _begin(self, op: Operation, handler: Callable[[OffloadBlock], None]) -> None:
        """Register the operation and call the target's handler; a completion before it returns is synchronous."""
        self._ops[id(op.tree)] = op
        try:
            handler(op.tree)
        finally:
            op.in_handler = False

    def _take_op(self, target_id: int, tree: OffloadBlock, kind: str) -> Operation:
        """Find the operation a completion ends (same root pointer) and check asynchrony and tree shape."""
        entry = self._targets.get(target_id)
        party = entry.party if entry is not None else f"target:{target_id}"
        op = self._ops.get(id(tree))
        if op is None or op.tree is not tree or op.kind != kind or op.target is not entry:
            self._fail(Rule.COMPLETION_WITHOUT_REQUEST, f"{kind} completion for a tree that is not in flight", party)
        if op.in_handler:
            self._fail(Rule.COMPLETED_SYNCHRONOUSLY, f"{kind} completed inside the target's handler", party)
        pairs, error = tree_blocks(tree)
        if error is None and (
            len(pairs) != len(op.blocks) or any(p[0] is not s.block for p, s in zip(pairs, op.blocks, strict=False))
        ):
            error = "the target relinked the tree it was given"
        if error is not None:
            self._fail(Rule.TREE_SHAPE, error, party)
        return op

    def _check_statuses(self, op: Operation, allowed: frozenset[NdisStatus]) -> None:
        for snap in op.blocks:
            status = snap.block.status
            if status is None or status not in allowed:
                what = "no Status" if status is None else f"Status {_status_name(status)} not allowed"
                handle = snap.obj.handle if snap.obj is not None else None
                self._fail(
                    Rule.STATUS_MISSING,
                    f"{op.kind}: {snap.role} {snap.block.layer.name} block has {what}",
                    op.target.party,
                    handle,
                )

    def _check_delegated(self, d: TcpDelegated, party: str, handle: Any, when: str) -> None:
        if not (seq_le(d.snd_una, d.snd_nxt) and seq_le(d.snd_nxt, d.snd_max)):
            self._fail(
                Rule.DELEGATED_SEQUENCE,
                f"{when}: SndUna={d.snd_una} SndNxt={d.snd_nxt} SndMax={d.snd_max}",
                party,
                handle,
            )
        for name, timer in (("KeepAlive", d.keepalive), ("Retransmit", d.retransmit)):
            delta = timer.timeout_delta
            if delta != TIMER_STOPPED and not (0 <= delta <= _MAX_TIMER):
                self._fail(Rule.TIMER_ENCODING, f"{when}: {name}.TimeoutDelta={delta}", party, handle)

    def _remove(self, obj: ObjectRecord) -> None:
        entry = obj.target
        self._objs.pop(obj.handle, None)
        entry.handles.discard(obj.handle)
        if obj.context is not None:
            entry.by_context.pop(id(obj.context), None)
        if obj.parent is not None:
            parent = self._objs.get(obj.parent)
            if parent is not None and parent.children is not None:
                parent.children.discard(obj.handle)
        if entry.upload_all_pending is not None:
            entry.upload_all_pending.discard(obj.handle)
        if obj.layer == Layer.TCP and obj.state == TERMINATING:
            graveyard = self._graveyard
            graveyard.pop(obj.handle, None)
            graveyard[obj.handle] = obj
            if len(graveyard) > _GRAVEYARD:
                graveyard.popitem(last=False)

    # ---- state operations: host -> target ------------------------------------------------------------------------

    def initiate_offload(self, target_id: int, tree: OffloadBlock) -> None:
        try:
            entry = self._entry(target_id, HOST)
            op = self._prepare_initiate(entry, tree)
        except _Skip:
            return
        self.stats["initiates"] += 1
        if self._tracing():
            self._emit(
                "initiate_start",
                target=entry.name,
                offloads=[str(s.obj.handle) for s in op.blocks if s.obj is not None and s.role == "new"],
                blocks=len(op.blocks),
            )
        self._begin(op, entry.target.initiate_offload)

    def _prepare_initiate(self, entry: TargetEntry, tree: OffloadBlock) -> Operation:
        if id(tree) in self._ops:
            self._fail(Rule.TREE_IN_USE, "initiate with a tree still owned by the target", HOST)
        if entry.paused:
            self._fail(Rule.OFFLOAD_WHILE_PAUSED, f"initiate to {entry.name} between PAUSE/UPLOAD_ALL and RESUME", HOST)
        if entry.needs_requery:
            self._fail(
                Rule.CAPS_NOT_REQUERIED, f"initiate to {entry.name} after RESUME without a capability query", HOST
            )
        pairs = self._shape(tree, HOST)
        snaps: list[BlockSnapshot] = []
        new_handles: set[Any] = set()
        for block, parent in pairs:
            slot = block.miniport_offload_context
            if slot is None:
                snaps.append(BlockSnapshot(block, parent, None, None, None))
                continue
            if slot.value is not None:  # linker: names an object already offloaded
                obj = self._resolve(entry, block)
                if obj is None:
                    self._fail(
                        Rule.UNKNOWN_HANDLE,
                        f"linker names no object offloaded to {entry.name}",
                        HOST,
                        block.ndis_offload_handle,
                    )
                if obj.state == OFFLOADING:
                    self._fail(
                        Rule.OP_DURING_INITIATE, "linker names an object whose initiate is in flight", HOST, obj.handle
                    )
                if obj.state == TERMINATING:
                    self._fail(Rule.OP_AFTER_TERMINATE, "linker names an object being terminated", HOST, obj.handle)
                if obj.layer != block.layer:
                    self._fail(
                        Rule.TREE_SHAPE,
                        f"linker block is {block.layer.name}, object is {obj.layer.name}",
                        HOST,
                        obj.handle,
                    )
                snaps.append(BlockSnapshot(block, parent, slot, slot.value, obj))
                continue
            handle = block.ndis_offload_handle
            if handle is None:
                self._fail(Rule.UNKNOWN_HANDLE, f"new {block.layer.name} offload without an NdisOffloadHandle", HOST)
            existing = self._objs.get(handle)
            if existing is not None and existing.state == OFFLOADING:
                self._fail(
                    Rule.OP_DURING_INITIATE, "second initiate of an object whose initiate is in flight", HOST, handle
                )
            if existing is not None or handle in new_handles:
                self._fail(Rule.DUPLICATE_HANDLE, "new offload of an object that is already offloaded", HOST, handle)
            if block.layer == Layer.TCP:
                d = block.delegated
                if not isinstance(d, TcpDelegated):
                    self._fail(Rule.NOT_OFFLOADABLE, "new TCP offload without delegated state", HOST, handle)
                if d.state not in OFFLOADABLE_STATES:
                    self._fail(Rule.NOT_OFFLOADABLE, f"TCP offload in state {TcpState(d.state).name}", HOST, handle)
                self._check_delegated(d, HOST, handle, "initiate")
            new_handles.add(handle)
            snaps.append(BlockSnapshot(block, parent, slot, None, None))
        # All checks passed: create the objects being offloaded.
        by_block = {id(s.block): s for s in snaps}
        for snap in snaps:
            if snap.role != "new":
                continue
            block = snap.block
            parent_handle = None
            if snap.parent is not None:
                psnap = by_block[id(snap.parent)]
                if psnap.obj is not None:
                    parent_handle = psnap.obj.handle
            obj = ObjectRecord(block.ndis_offload_handle, block.layer, entry, parent_handle)
            if block.layer == Layer.TCP:
                d = block.delegated
                obj.init_delegated = d
                obj.tcp_state = TcpState(d.state)
                obj.init_buffered = sum(_nbl_len(n) for n in block.buffered_data or ())
            snap.obj = obj
            self._objs[obj.handle] = obj
            entry.handles.add(obj.handle)
            # Registered as a dependent at once, so a parent terminate during this initiate is caught too.
            parent_obj = self._objs.get(parent_handle) if parent_handle is not None else None
            if parent_obj is not None:
                if parent_obj.children is None:
                    parent_obj.children = set()
                parent_obj.children.add(obj.handle)
        return Operation("initiate", entry, tree, snaps, self._scheduler.now())

    def terminate_offload(self, target_id: int, tree: OffloadBlock) -> None:
        try:
            entry = self._entry(target_id, HOST)
            op = self._prepare_terminate(entry, tree)
        except _Skip:
            return
        self.stats["terminates"] += 1
        if self._tracing():  # the objects' names are only formatted for a tracer that records them
            self._emit("terminate_start", target=entry.name, objects=[str(s.obj.handle) for s in op.blocks if s.obj])
        self._begin(op, entry.target.terminate_offload)

    def _prepare_terminate(self, entry: TargetEntry, tree: OffloadBlock) -> Operation:
        if id(tree) in self._ops:
            self._fail(Rule.TREE_IN_USE, "terminate with a tree still owned by the target", HOST)
        snaps = self._named_blocks(entry, tree, "terminate")
        named = {s.obj.handle: s.obj for s in snaps if s.obj is not None}
        for obj in named.values():
            if obj.layer == Layer.TCP:
                busy = obj.ops_in_flight()
                if busy:
                    self._fail(Rule.TERMINATE_ORDER, f"terminate while {'/'.join(busy)} in flight", HOST, obj.handle)
            for child in obj.children or ():
                dep = self._objs.get(child)
                if child not in named and dep is not None and dep.state != TERMINATING:
                    self._fail(
                        Rule.TERMINATE_ORDER,
                        f"terminate of a {obj.layer.name} while its dependent {child} stays offloaded",
                        HOST,
                        obj.handle,
                    )
        for obj in named.values():
            obj.state = TERMINATING
            obj.terminate_called = True
        return Operation("terminate", entry, tree, snaps, self._scheduler.now())

    def _named_blocks(self, entry: TargetEntry, tree: OffloadBlock, kind: str) -> list[BlockSnapshot]:
        """Blocks of a terminate/update/invalidate/query tree: each non-placeholder names an offloaded object."""
        pairs = self._shape(tree, HOST)
        snaps: list[BlockSnapshot] = []
        seen: set[Any] = set()
        for block, parent in pairs:
            slot = block.miniport_offload_context
            if slot is None:
                snaps.append(BlockSnapshot(block, parent, None, None, None))
                continue
            obj = self._resolve(entry, block)
            if obj is None:
                self._fail(
                    Rule.UNKNOWN_HANDLE,
                    f"{kind} names no object offloaded to {entry.name}",
                    HOST,
                    block.ndis_offload_handle,
                )
            if obj.state == OFFLOADING:
                self._fail(
                    Rule.OP_DURING_INITIATE, f"{kind} of an object whose initiate is in flight", HOST, obj.handle
                )
            if obj.state == TERMINATING:
                rule = Rule.TERMINATE_ORDER if kind == "terminate" else Rule.OP_AFTER_TERMINATE
                self._fail(rule, f"{kind} of an object already being terminated", HOST, obj.handle)
            if slot.value is not None and slot.value is not obj.context and slot.value != obj.context:
                self._fail(
                    Rule.UNKNOWN_HANDLE, f"{kind}: MiniportOffloadContext does not match the object", HOST, obj.handle
                )
            if obj.layer != block.layer:
                self._fail(
                    Rule.TREE_SHAPE, f"{kind}: {block.layer.name} block names a {obj.layer.name}", HOST, obj.handle
                )
            if obj.handle in seen:
                self._fail(Rule.TREE_SHAPE, f"{kind} names the same object twice", HOST, obj.handle)
            seen.add(obj.handle)
            snaps.append(BlockSnapshot(block, parent, slot, slot.value, obj))
        return snaps

    def update_offload(self, target_id: int, tree: OffloadBlock) -> None:
        self._named_op(target_id, tree, "update")

    def invalidate_offload(self, target_id: int, tree: OffloadBlock) -> None:
        self._named_op(target_id, tree, "invalidate")

    def query_offload(self, target_id: int, tree: OffloadBlock) -> None:
        self._named_op(target_id, tree, "query")

    def _named_op(self, target_id: int, tree: OffloadBlock, kind: str) -> None:
        try:
            entry = self._entry(target_id, HOST)
            if id(tree) in self._ops:
                self._fail(Rule.TREE_IN_USE, f"{kind} with a tree still owned by the target", HOST)
            snaps = self._named_blocks(entry, tree, kind)
            relinks: list[tuple[ObjectRecord, ObjectRecord]] = []
            if kind == "update":
                by_block = {id(s.block): s for s in snaps}
                for snap in snaps:
                    obj = snap.obj
                    if obj is None:
                        continue
                    if obj.n_update:
                        self._fail(Rule.UPDATE_RULES, "second update while one is in flight", HOST, obj.handle)
                    if obj.invalidated:
                        self._fail(Rule.UPDATE_RULES, "update of an invalidated object", HOST, obj.handle)
                    pobj = by_block[id(snap.parent)].obj if snap.parent is not None else None
                    if pobj is not None and pobj.handle != obj.parent:
                        if obj.layer == Layer.TCP:
                            self._fail(Rule.UPDATE_RULES, "an update never relinks TCP -> path", HOST, obj.handle)
                        relinks.append((obj, pobj))
        except _Skip:
            return
        for snap in snaps:
            obj = snap.obj
            if obj is None:
                continue
            if kind == "update":
                obj.n_update += 1
            elif kind == "query":
                obj.n_query += 1
            else:
                obj.n_invalidate += 1
                obj.invalidated = True
        self.stats[{"update": "updates", "query": "queries", "invalidate": "invalidates"}[kind]] += 1
        op = Operation(kind, entry, tree, snaps, self._scheduler.now(), relinks=relinks or None)
        self._begin(op, getattr(entry.target, f"{kind}_offload"))

    # ---- state operations: completions ---------------------------------------------------------------------------

    def initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        try:
            op = self._take_op(target_id, tree, "initiate")
            self._check_statuses(op, INITIATE_STATUSES)
            self._check_initiate_result(op)
        except _Skip:
            return
        del self._ops[id(tree)]
        entry = op.target
        tracing = self._tracing()
        statuses = []
        for snap in op.blocks:
            if tracing:
                statuses.append(
                    (str(snap.obj.handle) if snap.obj is not None else "placeholder", _status_name(snap.block.status))
                )
            if snap.role != "new":
                continue
            obj = snap.obj
            assert obj is not None
            block = snap.block
            if block.status in _SUCCEEDED:
                obj.state = OFFLOADED
                obj.context = block.context
                entry.by_context[id(obj.context)] = obj.handle
                if obj.layer == Layer.TCP and block.net_buffer_list_chain:
                    self._post_sends(obj, block.net_buffer_list_chain)
            else:
                self._remove(obj)
        if tracing:
            self._emit("initiate_done", target=entry.name, statuses=statuses)
        if self._host is not None:
            self._host.on_initiate_offload_complete(target_id, tree)

    def _check_initiate_result(self, op: Operation) -> None:
        party = op.target.party
        by_block = {id(s.block): s for s in op.blocks}

        def ok(block: OffloadBlock) -> bool:
            return block.status in _SUCCEEDED

        for snap in op.blocks:
            block = snap.block
            handle = snap.obj.handle if snap.obj is not None else None
            deps = list(block.dependents())
            role = snap.role
            if role == "placeholder":
                if block.status != _SUCCESS:
                    self._fail(
                        Rule.PLACEHOLDER_LINKER_STATUS,
                        f"placeholder {block.layer.name} reports {_status_name(block.status)}",
                        party,
                    )
                continue
            if block.miniport_offload_context is not snap.slot:
                self._fail(Rule.CONTEXT_WRITE, "the target replaced the MiniportOffloadContext slot", party, handle)
            n_ok = sum(1 for d in deps if ok(d))
            if role == "linker":
                if snap.slot is not None and snap.slot.value is not snap.slot_value:
                    self._fail(Rule.CONTEXT_WRITE, "a linker's context was overwritten", party, handle)
                want = "SUCCESS" if n_ok == len(deps) else ("PARTIAL" if n_ok else "FAILURE")
                got = "SUCCESS" if block.status == _SUCCESS else ("PARTIAL" if block.status == _PARTIAL else "FAILURE")
                if want != got:
                    self._fail(
                        Rule.PLACEHOLDER_LINKER_STATUS,
                        f"linker with {n_ok}/{len(deps)} dependents offloaded reports {_status_name(block.status)}",
                        party,
                        handle,
                    )
                continue
            written = snap.slot is not None and snap.slot.value is not None
            if ok(block) != written:
                what = "succeeded without writing" if ok(block) else "failed but wrote"
                self._fail(
                    Rule.CONTEXT_WRITE, f"{block.layer.name} offload {what} MiniportOffloadContext", party, handle
                )
            if ok(block):
                want_status = _SUCCESS if n_ok == len(deps) else _PARTIAL
                if block.status != want_status:
                    self._fail(
                        Rule.INITIATE_WALK,
                        f"{block.layer.name} with {n_ok}/{len(deps)} immediate dependents offloaded reports "
                        f"{_status_name(block.status)}",
                        party,
                        handle,
                    )
            elif block.dependent_block_list is not None:
                for dep in block.dependent_block_list.walk():
                    dsnap = by_block[id(dep)]
                    if dsnap.role == "placeholder":
                        continue
                    if dep.status != NdisStatus.FAILURE or (
                        dsnap.slot is not None and dsnap.slot.value is not None and dsnap.role == "new"
                    ):
                        self._fail(
                            Rule.INITIATE_WALK,
                            f"a dependent of a failed {block.layer.name} reports {_status_name(dep.status)}",
                            party,
                            dsnap.obj.handle if dsnap.obj is not None else None,
                        )
        root = op.blocks[0]
        if root.role == "new" and not ok(root.block):
            for snap in op.blocks[1:]:
                if snap.role == "new" and ok(snap.block):
                    self._fail(
                        Rule.INITIATE_WALK,
                        "the root failed but another object was offloaded",
                        party,
                        snap.obj.handle if snap.obj is not None else None,
                    )

    def terminate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        try:
            op = self._take_op(target_id, tree, "terminate")
            self._check_statuses(op, OTHER_OPERATION_STATUSES)
            for snap in op.blocks:
                if snap.obj is not None:
                    self._check_terminated(op, snap.block, snap.obj)
        except _Skip:
            return
        del self._ops[id(tree)]
        tracing = self._tracing()
        statuses = []
        for snap in op.blocks:
            obj = snap.obj
            if tracing:
                statuses.append(
                    (str(obj.handle) if obj is not None else "placeholder", _status_name(snap.block.status))
                )
            if obj is not None:
                self._remove(obj)
        if tracing:
            self._emit("terminate_done", target=op.target.name, statuses=statuses)
        if self._host is not None:
            self._host.on_terminate_offload_complete(target_id, tree)

    def _check_terminated(self, op: Operation, block: OffloadBlock, obj: ObjectRecord) -> None:
        party, handle = op.target.party, obj.handle
        if obj.in_indication:
            self._fail(Rule.INDICATION_AT_TERMINATE, "terminate completed inside an indication", party, handle)
        if obj.n_update or obj.n_query or obj.n_invalidate:
            busy = obj.ops_in_flight()
            self._fail(Rule.IO_NOT_COMPLETED, f"terminate completed with {'/'.join(busy)} in flight", party, handle)
        success = block.status == _SUCCESS
        if obj.layer == Layer.NEIGHBOR and success and block.delegated is None:
            self._fail(Rule.DELEGATED_NOT_RETURNED, "neighbor terminated without delegated state", party, handle)
        if obj.layer != Layer.TCP:
            return
        if obj.recvs or obj.disconnects or obj.forwards:  # (the common case builds nothing below)
            for what, pending in (
                ("receive posts", obj.recvs),
                ("disconnects", obj.disconnects),
                ("forwards", obj.forwards),
            ):
                if pending:
                    self._fail(
                        Rule.IO_NOT_COMPLETED,
                        f"terminate completed with {len(pending)} {what} outstanding",
                        party,
                        handle,
                    )
        d = block.delegated
        if success:
            if not isinstance(d, TcpDelegated):
                self._fail(
                    Rule.DELEGATED_NOT_RETURNED, "successful TCP terminate without delegated state", party, handle
                )
            self._check_delegated(d, party, handle, "terminate")
        chain = block.net_buffer_list_chain or []
        if chain or obj.sends:  # (nothing posted, nothing returned: nothing to compare)
            self._check_returned_sends(obj, chain, party)
        if obj.aborted and chain:
            self._fail(Rule.IO_AFTER_ABORT, "sends returned after Abort instead of REQUEST_ABORTED", party, handle)
        d0 = obj.init_delegated
        if not success or obj.aborted or obj.abortive or d0 is None or not isinstance(d, TcpDelegated):
            return
        if not obj.disconnect_data:
            acked = seq_diff(d.snd_una, d0.snd_una) - (int(_fin_acked(d)) - int(_fin_acked(d0)))
            returned = sum(_nbl_len(n) for n in chain) if chain else 0
            if obj.posted_bytes - obj.unacked_completed - returned != acked:
                self._fail(
                    Rule.SEND_CONSERVATION,
                    f"posted {obj.posted_bytes} - not ACKed (completed {obj.unacked_completed} + returned {returned})"
                    f" != SndUna advance {acked}",
                    party,
                    handle,
                )
        expected = seq_diff(d.rcv_nxt, d0.rcv_nxt) - (int(d.fin_received) - int(d0.fin_received)) + obj.init_buffered
        buffered_data = block.buffered_data
        buffered = sum(_nbl_len(n) for n in buffered_data) if buffered_data else 0
        if obj.delivered + buffered != expected:
            self._fail(
                Rule.RECEIVE_CONSERVATION,
                f"delivered {obj.delivered} + BufferedData {buffered} != RcvNxt advance + initial BufferedData "
                f"{expected}",
                party,
                handle,
            )

    def _check_returned_sends(self, obj: ObjectRecord, chain: list[NetBufferList], party: str) -> None:
        sends = obj.sends if obj.sends is not None else _NO_SENDS
        if len(chain) == len(sends) and all(n is rec[2] for n, rec in zip(chain, sends.values(), strict=True)):
            return
        ids = [n.nbl_id for n in chain]
        for nbl in chain:
            if nbl.nbl_id not in sends and obj.done is not None and nbl.nbl_id in obj.done:
                self._fail(Rule.SEND_COMPLETED_TWICE, f"{nbl!r} both completed and returned", party, obj.handle)
            if nbl.nbl_id not in sends:
                self._fail(Rule.COMPLETION_WITHOUT_REQUEST, f"returned {nbl!r} was never posted", party, obj.handle)
        if len(set(ids)) != len(ids):
            self._fail(Rule.SEND_COMPLETED_TWICE, "an NBL is returned twice in NetBufferListChain", party, obj.handle)
        missing = [rec[2] for key, rec in sends.items() if key not in set(ids)]
        if missing:
            self._fail(
                Rule.IO_NOT_COMPLETED, f"send NBLs neither completed nor returned: {missing[:4]}", party, obj.handle
            )
        self._fail(Rule.SEND_PREFIX, "returned NBLs are not in their original order", party, obj.handle)

    def update_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._named_complete(target_id, tree, "update")

    def invalidate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._named_complete(target_id, tree, "invalidate")

    def query_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._named_complete(target_id, tree, "query")

    def _named_complete(self, target_id: int, tree: OffloadBlock, kind: str) -> None:
        try:
            op = self._take_op(target_id, tree, kind)
            self._check_statuses(op, OTHER_OPERATION_STATUSES)
            if kind == "query":
                for snap in op.blocks:
                    d = snap.block.delegated
                    if snap.obj is not None and snap.block.status == _SUCCESS and isinstance(d, TcpDelegated):
                        self._check_delegated(d, op.target.party, snap.obj.handle, "query")
        except _Skip:
            return
        del self._ops[id(tree)]
        for snap in op.blocks:
            obj = snap.obj
            if obj is None:
                continue
            if kind == "update":
                obj.n_update -= 1
            elif kind == "query":
                obj.n_query -= 1
                d = snap.block.delegated
                if isinstance(d, TcpDelegated) and snap.block.status == _SUCCESS:
                    obj.tcp_state = TcpState(d.state)
            else:
                obj.n_invalidate -= 1
        for path, neighbor in op.relinks or ():
            if self._find_block_status(op, path) == _SUCCESS and path.handle in self._objs:
                old = self._objs.get(path.parent) if path.parent is not None else None
                if old is not None and old.children is not None:
                    old.children.discard(path.handle)
                path.parent = neighbor.handle
                if neighbor.children is None:
                    neighbor.children = set()
                neighbor.children.add(path.handle)
        if self._host is not None:
            getattr(self._host, f"on_{kind}_offload_complete")(target_id, tree)

    @staticmethod
    def _find_block_status(op: Operation, obj: ObjectRecord) -> int | None:
        for snap in op.blocks:
            if snap.obj is obj:
                return snap.block.status
        return None

    # ---- TCP I/O: host -> target (hot path: O(1) per NBL) ---------------------------------------------------------

    def _io_refused(self, obj: ObjectRecord | None, handle: Any, what: str) -> NoReturn:
        if obj is None:
            self._fail(Rule.UNKNOWN_HANDLE, f"{what} on a connection that is not offloaded", HOST, handle)
        if obj.layer != Layer.TCP:
            self._fail(Rule.UNKNOWN_HANDLE, f"{what} on a {obj.layer.name} object", HOST, handle)
        if obj.state == OFFLOADING:
            self._fail(Rule.OP_DURING_INITIATE, f"{what} while the initiate is in flight", HOST, handle)
        self._fail(Rule.IO_AFTER_TERMINATE, f"{what} after terminate was called", HOST, handle)

    def _post_sends(self, obj: ObjectRecord, nbls: list[NetBufferList]) -> int:
        sends = obj.sends
        if sends is None:
            sends = obj.sends = OrderedDict()
        seq = obj.io_seq
        total = 0
        for nbl in nbls:
            seq += 1
            n = len(nbl.data) - nbl.offset
            sends[nbl.nbl_id] = (seq, n, nbl)
            total += n
        obj.io_seq = seq
        obj.posted_bytes += total
        return total

    def tcp_send(self, handle: Any, nbls: list[NetBufferList]) -> None:
        obj = self._objs.get(handle)
        try:
            if obj is None or obj.state != OFFLOADED or obj.layer != Layer.TCP:
                self._io_refused(obj, handle, "tcp_send")
            sends = obj.sends if obj.sends is not None else _NO_SENDS
            for nbl in nbls:
                if nbl.nbl_id in sends:
                    self._fail(Rule.SEND_COMPLETED_TWICE, f"{nbl!r} posted again while outstanding", HOST, handle)
        except _Skip:
            return
        first = obj.io_seq + 1
        stats = self.stats
        stats["sends"] += len(nbls)
        stats["send_bytes"] += self._post_sends(obj, nbls)
        previous = obj.handler_from
        obj.handler_from = first
        try:
            obj.target.target.tcp_send(obj.context, nbls)
        finally:
            obj.handler_from = previous

    def tcp_receive(self, handle: Any, nbls: list[NetBufferList]) -> None:
        obj = self._objs.get(handle)
        try:
            if obj is None or obj.state != OFFLOADED or obj.layer != Layer.TCP:
                self._io_refused(obj, handle, "tcp_receive")
            recvs = obj.recvs
            if recvs is None:
                recvs = obj.recvs = OrderedDict()
            for nbl in nbls:
                if nbl.nbl_id in recvs:
                    self._fail(Rule.RECEIVE_FIFO, f"{nbl!r} posted again while outstanding", HOST, handle)
        except _Skip:
            return
        seq = obj.io_seq
        first = seq + 1
        for nbl in nbls:
            seq += 1
            recvs[nbl.nbl_id] = (seq, nbl)
        obj.io_seq = seq
        self.stats["receive_posts"] += len(nbls)
        previous = obj.handler_from
        obj.handler_from = first
        try:
            obj.target.target.tcp_receive(obj.context, nbls)
        finally:
            obj.handler_from = previous

    def tcp_receive_return(self, handle: Any, nbls: list[NetBufferList]) -> None:
        """Indicated or BufferedData NBLs go back to the target (also after the terminate completed)."""
        obj = self._objs.get(handle)
        if obj is not None:
            target, context = obj.target.target, obj.context
        else:
            grave = self._graveyard.get(handle)
            if grave is None:
                try:
                    self._fail(Rule.UNKNOWN_HANDLE, "tcp_receive_return for an unknown connection", HOST, handle)
                except _Skip:
                    return
            target, context = grave.target.target, grave.context
        target.tcp_receive_return(context, nbls)

    def tcp_disconnect(self, handle: Any, nbl: NetBufferList, flags: int) -> None:
        obj = self._objs.get(handle)
        try:
            if obj is None or obj.state != OFFLOADED or obj.layer != Layer.TCP:
                self._io_refused(obj, handle, "tcp_disconnect")
            if nbl.nbl_id in obj.disconnects:
                self._fail(Rule.COMPLETION_WITHOUT_REQUEST, f"{nbl!r} disconnect posted twice", HOST, handle)
        except _Skip:
            return
        obj.io_seq += 1
        obj.disconnects[nbl.nbl_id] = (obj.io_seq, nbl)
        self.stats["disconnects"] += 1
        if flags & TCP_DISCONNECT_ABORTIVE_CLOSE:
            obj.abortive = True
            obj.tcp_state = TcpState.CLOSED
        else:
            if _nbl_len(nbl) > 0:
                obj.disconnect_data = True
            if obj.tcp_state == TcpState.ESTABLISHED:
                obj.tcp_state = TcpState.FIN_WAIT_1
            elif obj.tcp_state == TcpState.CLOSE_WAIT:
                obj.tcp_state = TcpState.LAST_ACK
        previous = obj.handler_from
        obj.handler_from = obj.io_seq
        try:
            obj.target.target.tcp_disconnect(obj.context, nbl, flags)
        finally:
            obj.handler_from = previous

    def tcp_forward(self, handle: Any, nbls: list[NetBufferList]) -> None:
        obj = self._objs.get(handle)
        try:
            if obj is None or obj.state != OFFLOADED or obj.layer != Layer.TCP:
                self._io_refused(obj, handle, "tcp_forward")
        except _Skip:
            return
        seq = obj.io_seq
        first = seq + 1
        for nbl in nbls:
            seq += 1
            obj.forwards[nbl.nbl_id] = (seq, nbl)
        obj.io_seq = seq
        self.stats["forwards"] += len(nbls)
        previous = obj.handler_from
        obj.handler_from = first
        try:
            obj.target.target.tcp_forward(obj.context, nbls)
        finally:
            obj.handler_from = previous

    def send_frame(self, target_id: int, frame: bytes) -> None:
        entry = self._targets.get(target_id)  # once per packet: the registered target is looked up inline
        if entry is None:
            try:
                entry = self._entry(target_id, HOST)
            except _Skip:
                return
        entry.target.send_frame(frame)

    # ---- TCP I/O completions: target -> host -----------------------------------------------------------------------

    def _completing(self, handle: Any, what: str) -> ObjectRecord:
        obj = self._objs.get(handle)
        if obj is None:
            self._fail(
                Rule.COMPLETION_WITHOUT_REQUEST, f"{what} for a connection that is not offloaded", "target", handle
            )
        return obj

    def tcp_send_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        try:
            obj = self._completing(handle, "tcp_send_complete")
            party = obj.target.party
            sends = obj.sends
            if sends is None:
                sends = obj.sends = OrderedDict()
            hf = obj.handler_from
            first_fail = obj.first_fail_seq
            unacked = 0
            taken: set[int] = set()
            for nbl in nbls:
                key = nbl.nbl_id
                rec = sends.get(key)
                if rec is None or key in taken:
                    if key in taken or (obj.done is not None and key in obj.done):
                        self._fail(Rule.SEND_COMPLETED_TWICE, f"{nbl!r} completed twice", party, handle)
                    self._fail(Rule.COMPLETION_WITHOUT_REQUEST, f"{nbl!r} was never posted", party, handle)
                seq, n, _ = rec
                if hf is not None and seq >= hf:
                    self._fail(Rule.COMPLETED_SYNCHRONOUSLY, f"{nbl!r} completed inside tcp_send", party, handle)
                status = nbl.status
                if status != _SUCCESS:
                    self._check_io_status(status, SEND_COMPLETION_STATUSES, "send", party, handle)
                if obj.aborted and status != _ABORTED:
                    self._fail(
                        Rule.IO_AFTER_ABORT, f"send completed with {_status_name(status)} after Abort", party, handle
                    )
                done = nbl.bytes_transferred
                if status == _SUCCESS or done > 0:
                    for front in sends:
                        if front not in taken:
                            break
                    if front != key or (first_fail is not None and first_fail < seq):
                        self._fail(
                            Rule.SEND_PREFIX,
                            f"{nbl!r} ACKed ({_status_name(status)}, {done} bytes) before an earlier send was",
                            party,
                            handle,
                        )
                    if status != _SUCCESS:  # the one partial send: everything after it fails
                        if done > n:
                            self._fail(Rule.SEND_PREFIX, f"{nbl!r} reports {done} of {n} bytes", party, handle)
                        unacked += n - done
                        first_fail = seq if first_fail is None else min(first_fail, seq)
                else:
                    unacked += n
                    first_fail = seq if first_fail is None else min(first_fail, seq)
                taken.add(key)
        except _Skip:
            return
        done_ids = obj.done
        if done_ids is None:
            done_ids = obj.done = OrderedDict()
        for nbl in nbls:
            del sends[nbl.nbl_id]
            done_ids[nbl.nbl_id] = None
        while len(done_ids) > DONE_MEMORY:
            done_ids.popitem(last=False)
        obj.unacked_completed += unacked
        obj.first_fail_seq = first_fail
        self.stats["send_completions"] += len(nbls)
        if self._host is not None:
            self._host.on_tcp_send_complete(handle, nbls)

    def _check_io_status(
        self, status: int | None, allowed: frozenset[NdisStatus], what: str, party: str, handle: Any
    ) -> None:
        if status == _PAUSED:
            self._fail(Rule.PAUSED_STATUS_USED, f"{what} completed with NDIS_STATUS_PAUSED", party, handle)
        if status is None or status not in allowed:
            self._fail(Rule.STATUS_MISSING, f"{what} completed with status {_status_name(status)}", party, handle)

    def tcp_receive_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        try:
            obj = self._completing(handle, "tcp_receive_complete")
            party = obj.target.party
            recvs = obj.recvs
            if recvs is None:
                recvs = obj.recvs = OrderedDict()
            hf = obj.handler_from
            taken: set[int] = set()
            got = 0
            for nbl in nbls:
                key = nbl.nbl_id
                rec = recvs.get(key)
                if rec is None or key in taken:
                    self._fail(Rule.COMPLETION_WITHOUT_REQUEST, f"receive {nbl!r} is not outstanding", party, handle)
                for front in recvs:
                    if front not in taken:
                        break
                if front != key:
                    self._fail(Rule.RECEIVE_FIFO, f"receive {nbl!r} completed before an earlier post", party, handle)
                if hf is not None and rec[0] >= hf:
                    self._fail(Rule.COMPLETED_SYNCHRONOUSLY, f"{nbl!r} completed inside tcp_receive", party, handle)
                if nbl.status != _SUCCESS:
                    self._check_io_status(nbl.status, RECEIVE_COMPLETION_STATUSES, "receive", party, handle)
                if nbl.bytes_transferred > nbl.capacity or nbl.bytes_transferred < 0:
                    self._fail(
                        Rule.RECEIVE_CONSERVATION,
                        f"{nbl!r} reports {nbl.bytes_transferred} bytes in a {nbl.capacity}-byte post",
                        party,
                        handle,
                    )
                got += nbl.bytes_transferred
                taken.add(key)
        except _Skip:
            return
        for nbl in nbls:
            del recvs[nbl.nbl_id]
        obj.delivered += got
        stats = self.stats
        stats["receive_completions"] += len(nbls)
        stats["receive_bytes"] += got
        if self._host is not None:
            self._host.on_tcp_receive_complete(handle, nbls)

    def tcp_disconnect_complete(self, handle: Any, nbl: NetBufferList) -> None:
        try:
            obj = self._completing(handle, "tcp_disconnect_complete")
            party = obj.target.party
            rec = obj.disconnects.get(nbl.nbl_id)
            if rec is None:
                self._fail(Rule.COMPLETION_WITHOUT_REQUEST, f"disconnect {nbl!r} is not outstanding", party, handle)
            if obj.handler_from is not None and rec[0] >= obj.handler_from:
                self._fail(Rule.COMPLETED_SYNCHRONOUSLY, "disconnect completed inside tcp_disconnect", party, handle)
            status = nbl.status
            if status != _SUCCESS:
                self._check_io_status(status, DISCONNECT_COMPLETION_STATUSES, "disconnect", party, handle)
            if obj.aborted and status != _ABORTED:
                self._fail(
                    Rule.IO_AFTER_ABORT, f"disconnect completed with {_status_name(status)} after Abort", party, handle
                )
            if status == _SUCCESS and obj.sends:
                first = next(iter(obj.sends.values()))
                if first[0] < rec[0]:
                    self._fail(
                        Rule.SEND_PREFIX, "disconnect completed before the sends posted ahead of it", party, handle
                    )
        except _Skip:
            return
        del obj.disconnects[nbl.nbl_id]
        if self._host is not None:
            self._host.on_tcp_disconnect_complete(handle, nbl)

    def tcp_forward_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        try:
            obj = self._completing(handle, "tcp_forward_complete")
            party = obj.target.party
            for nbl in nbls:
                rec = obj.forwards.get(nbl.nbl_id)
                if rec is None:
                    self._fail(Rule.COMPLETION_WITHOUT_REQUEST, f"forward {nbl!r} is not outstanding", party, handle)
                if obj.handler_from is not None and rec[0] >= obj.handler_from:
                    self._fail(Rule.COMPLETED_SYNCHRONOUSLY, "forward completed inside tcp_forward", party, handle)
                if nbl.status == _PAUSED:
                    self._fail(Rule.PAUSED_STATUS_USED, "forward completed with NDIS_STATUS_PAUSED", party, handle)
        except _Skip:
            return
        for nbl in nbls:
            obj.forwards.pop(nbl.nbl_id, None)
        if self._host is not None:
            self._host.on_tcp_forward_complete(handle, nbls)

    # ---- indications: target -> host ---------------------------------------------------------------------------------

    def tcp_event(self, handle: Any, event_type: int, info: int) -> None:
        obj = self._objs.get(handle)
        try:
            party = obj.target.party if obj is not None else "target"
            if event_type not in _EVENT_TYPES:
                self._fail(Rule.BAD_EVENT, f"event type {event_type!r} is not a TCP_OFFLOAD_EVENT_TYPE", party, handle)
            if event_type == TcpEventType.RETRIEVE:
                if obj is None or obj.layer != Layer.TCP:
                    what = "no offloaded object" if obj is None else f"a {obj.layer.name} object"
                    self._fail(Rule.RETRIEVE_NOT_TCP, f"TcpIndicateRetrieve names {what}", party, handle)
                if not isinstance(info, int) or info not in _REASONS:
                    self._fail(Rule.BAD_REASON, f"upload reason {info!r} is not 1..11", party, handle)
                if obj.tcp_state in RETRIEVE_FORBIDDEN_STATES:
                    assert obj.tcp_state is not None
                    self._fail(Rule.RETRIEVE_HALF_CLOSED, f"retrieve in {obj.tcp_state.name}", party, handle)
            elif obj is None or obj.layer != Layer.TCP:
                self._fail(Rule.UNKNOWN_HANDLE, "TCP event for no offloaded TCP connection", party, handle)
            if obj.state == OFFLOADING:
                self._fail(Rule.INDICATION_DURING_INITIATE, "TCP event before the initiate completed", party, handle)
        except _Skip:
            return
        if event_type == TcpEventType.RETRIEVE:
            reason = UploadReason(info).name
            obj.retrieves += 1
            stats = self.stats
            stats["retrieves"] += 1
            stats["retrieves_by_reason"][reason] = stats["retrieves_by_reason"].get(reason, 0) + 1
            self._emit("retrieve", conn=str(handle), reason=reason, target=obj.target.name, count=obj.retrieves)
        elif event_type == TcpEventType.ABORT:
            obj.aborted = True
            obj.tcp_state = TcpState.CLOSED
        elif event_type == TcpEventType.DISCONNECT:
            state = obj.tcp_state
            if state == TcpState.ESTABLISHED:
                obj.tcp_state = TcpState.CLOSE_WAIT
            elif state == TcpState.FIN_WAIT_1:
                obj.tcp_state = TcpState.CLOSING
            elif state == TcpState.FIN_WAIT_2:
                obj.tcp_state = TcpState.TIME_WAIT
        if self._host is None:
            return
        obj.in_indication += 1
        try:
            self._host.on_tcp_event(handle, event_type, info)
        finally:
            obj.in_indication -= 1

    def tcp_receive_indicate(self, handle: Any, nbl: NetBufferList) -> tuple[int, int]:
        obj = self._objs.get(handle)
        if obj is None or obj.state == OFFLOADING or obj.layer != Layer.TCP:
            try:
                party = obj.target.party if obj is not None else "target"
                if obj is None or obj.layer != Layer.TCP:
                    self._fail(Rule.UNKNOWN_HANDLE, "receive indication for no offloaded TCP connection", party, handle)
                self._fail(
                    Rule.INDICATION_DURING_INITIATE, "receive indication before the initiate completed", party, handle
                )
            except _Skip:
                return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        host = self._host
        if host is None:
            return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        obj.in_indication += 1
        try:
            status, consumed = host.on_tcp_receive_indicate(handle, nbl)
        finally:
            obj.in_indication -= 1
        obj.delivered += consumed
        stats = self.stats
        stats["receive_indications"] += 1
        stats["receive_bytes"] += consumed
        return status, consumed

    def indicate_status(self, target_id: int, status: int, info: Any = None) -> None:
        try:
            entry = self._entry(target_id, "target")
            if status == NdisStatus.OFFLOAD_RESUME and entry.upload_all_pending:
                left = sorted(str(h) for h in entry.upload_all_pending)
                self._fail(
                    Rule.RESUME_TOO_EARLY, f"RESUME while UPLOAD_ALL terminations are open for {left[:8]}", entry.party
                )
        except _Skip:
            return
        if status == NdisStatus.OFFLOAD_PAUSE:
            entry.paused = True
            self.stats["pauses"] += 1
            self._emit("pause", target=entry.name)
        elif status == NdisStatus.UPLOAD_ALL:
            entry.paused = True
            live = {h for h in entry.handles if self._objs[h].state != OFFLOADING}
            entry.upload_all_pending = (entry.upload_all_pending or set()) | live
            self.stats["upload_alls"] += 1
            self._emit("upload_all", target=entry.name, objects=len(live))
        elif status == NdisStatus.OFFLOAD_RESUME:
            entry.paused = False
            entry.needs_requery = True
            entry.upload_all_pending = None
            self.stats["resumes"] += 1
            self._emit("resume", target=entry.name)
        elif status == NdisStatus.LINK_STATE:
            self._emit("link_state", target=entry.name, up=getattr(info, "up", None))
        if self._host is not None:
            self._host.on_status_indication(target_id, status, info)

    def offload_event(self, target_id: int, block: OffloadBlock | None, code: int) -> None:
        try:
            entry = self._entry(target_id, "target")
            if code not in {int(c) for c in OffloadEventCode}:
                self._fail(Rule.BAD_EVENT, f"offload event code {code!r} is not an INDICATE_OFFLOAD_EVENT", entry.party)
            if code == OffloadEventCode.NEIGHBOR_REACHABILITY_QUERY and (
                block is None
                or block.layer != Layer.NEIGHBOR
                or block.dependent_block_list is not None
                or block.status != _SUCCESS
            ):
                self._fail(Rule.TREE_SHAPE, "NeighborReachabilityQuery needs one SUCCESS neighbor block", entry.party)
        except _Skip:
            return
        if self._host is not None:
            self._host.on_offload_event(target_id, block, code)

    def indicate_receive_frame(self, target_id: int, frame: bytes) -> None:
        if self._host is not None:
            self._host.on_receive_frame(target_id, frame)
