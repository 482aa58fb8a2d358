"""``TeamTarget``: an 802.3ad (LACP) NIC team as a chimney intermediate driver (reference section 6).

To the host it is one ``OffloadTarget`` (``host.add_nic(team)``); to its member NICs it is the ``ChimneyHost`` of a
lower ``Chimney`` of its own, so every call the team makes downward is contract-checked like the host's.

Remapping: each object offloaded through the team has an ``ImEntry`` (written into the upper context slot); each of
its copies on a member is a ``LowerObj`` (the handle on the lower block).  State operations are split into one lower
tree per member and completed upward once every lower tree completed; I/O, completions and indications pass through
with the handles swapped and the same NBL objects.

Placement and distribution: connections go to the active member chosen by a symmetric hash of the 4-tuple
(``members.flow_key`` / ``pick``: CRC-32 of the sorted endpoints, then a MurmurHash3 finalizer); software-path
frames go out on the active member chosen by the same hash (ARP and other non-IP frames on the first active member).
Frames received on any collecting member go up; LACPDUs are consumed by the team.

Failover: a member that stops being active (carrier down, LACP partner expired or out of sync, ``fail_member``, a
NIC-level UPLOAD_ALL) makes the team indicate OFFLOAD_PAUSE and UPLOAD_ALL; I/O that arrives until RESUME completes
UPLOAD_IN_PROGRESS; OFFLOAD_RESUME follows once nothing is offloaded through the team any more, and
``query_capabilities`` then reports the members left.  A hardware failure (``fail_member(i, hardware=True)``) runs
the member's hardware-failure sequence on each of its connections, so exactly those are reset.

Join (choice documented here): a member that becomes active again is used for new placements and hashing at once,
without UPLOAD_ALL; connections already offloaded stay on the member that runs them (frames that now arrive on
another member go up and the host forwards them).  If the advertised capabilities change (always when the team had
no active member), the team indicates OFFLOAD_PAUSE then OFFLOAD_RESUME, the documented way to make the host
re-query them.  The team's own LINK_STATE is "some member active".

Known limits: an upper initiate whose *root* neighbor fails on every member while a sibling root succeeded on some
member is reported as is (the reference wants nothing else offloaded after a failed root; undoing the sibling's
lower copies is not implemented; SoftToe only fails a neighbor for malformed addresses).  An update that relinks a
path to a neighbor with no copy on the path's member is passed down as a plain update there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tcpchimney.chimney.constants import NdisStatus, TcpEventType
from tcpchimney.chimney.mediator import Chimney
from tcpchimney.chimney.objects import (
    Layer,
    LinkState,
    NetBufferList,
    OffloadBlock,
    OffloadCapabilities,
    PathDelegated,
)
from tcpchimney.clock import Scheduler
from tcpchimney.team.failover import FailoverLog
from tcpchimney.team.lacp import LacpEvent, PartnerLost
from tcpchimney.team.lacpdu import is_slow_protocols_frame
from tcpchimney.team.members import LacpRunner, Member, flow_key, pick, tuple_key
from tcpchimney.team.remap import (
    GONE,
    OFFLOADED,
    OFFLOADING,
    TERMINATING,
    ImEntry,
    LowerObj,
    chain,
    default_delegated,
    named_block,
    placeholder,
    siblings,
)
from tcpchimney.trace.tracer import NullTracer, Tracer

_SUCCESS = NdisStatus.SUCCESS
_OK = frozenset({NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS})
_UIP = NdisStatus.UPLOAD_IN_PROGRESS


@dataclass
class TeamStats:
    frames_out: int = 0
    frames_in: int = 0
    frames_dropped_no_member: int = 0
    frames_dropped_not_collecting: int = 0
    lacp_in: int = 0
    lacp_out: int = 0
    initiates: int = 0
    terminates: int = 0
    lower_ops: int = 0
    io_refused: int = 0  # completed UPLOAD_IN_PROGRESS by the team during a failover window
    held_calls: int = 0  # lower->upper calls held until the upper initiate completed
    early_refusals: int = 0  # receive indications refused for the same reason (re-enabled afterwards)
    failovers: int = 0
    joins: int = 0
    pauses: int = 0
    upload_alls: int = 0
    resumes: int = 0
    hardware_injections: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Op:
    """An upper state operation being carried out as one lower operation per member."""

    __slots__ = ("entries", "fail", "kind", "map", "need", "pending", "results", "tree")

    def __init__(self, kind: str, tree: OffloadBlock) -> None:
        self.kind = kind
        self.tree = tree
        self.pending: set[int] = set()  # id(lower root) still in flight
        self.map: dict[int, OffloadBlock] = {}  # id(lower block) -> upper block
        self.results: dict[int, list[OffloadBlock]] = {}  # id(upper block) -> its lower blocks
        self.entries: dict[int, ImEntry] = {}  # initiate: id(upper new block) -> entry
        self.need: dict[int, set[int]] = {}  # initiate: id(upper block) -> members it must exist on
        self.fail: dict[int, int] = {}  # initiate: id(upper TCP block) -> status when it could not be placed


class _LowerChimney(Chimney):
    """The team's lower mediator; TCP state notes of the members are passed on to the upper mediator too."""

    def __init__(self, scheduler: Scheduler, tracer: Tracer | None, on_note: Callable[[Any, int], None]) -> None:
        super().__init__(scheduler, tracer=tracer, on_violation="raise")
        self._on_note = on_note

    def note_tcp_state(self, handle: Any, state: int) -> None:
        super().note_tcp_state(handle, state)
        self._on_note(handle, state)


def _initial_carrier(nic: Any) -> bool:
    port = getattr(nic, "_port", None)
    up = getattr(port, "up", True)
    return bool(up) and bool(getattr(nic, "_link_up", True))


class TeamTarget:
    """An LACP team of chimney NICs, offered to the host as one offload target.  See the module docstring."""

    def __init__(
        self,
        scheduler: Scheduler,
        members: list[Any],
        *,
        name: str = "team0",
        mac: bytes,
        lacp: bool = True,
        tracer: Tracer | None = None,
        lacp_key: int = 1,
    ) -> None:
        if not members:
            raise ValueError("a team needs at least one member")
        self.name = name
        self.mac = bytes(mac)
        self._sched = scheduler
        self._tracer: Tracer = tracer or NullTracer()
        self.stats = TeamStats()
        self.failovers = FailoverLog()
        self.lower_violations: list[Exception] = []
        self.lower: Chimney = _LowerChimney(scheduler, tracer, self._note_tcp_state)
        self.lower.bind_host(self)
        self._upper: Any = None
        self._tid = -1
        self._runner: LacpRunner | None = None
        if lacp:
            self._runner = LacpRunner(scheduler, self.mac, len(members), self._send_lacp, self._on_lacp, key=lacp_key)
        self.members: list[Member] = []
        self._by_tid: dict[int, Member] = {}
        for i, nic in enumerate(members):
            port = self._runner.ports[i] if self._runner is not None else None
            m = Member(i, nic, port, _initial_carrier(nic))
            self.members.append(m)
            m.target_id = self.lower.register_target(nic)
            self._by_tid[m.target_id] = m
            self.lower.query_capabilities(m.target_id)
        self._live: set[ImEntry] = set()  # upper objects offloaded / being terminated through the team
        self._live_tcp = 0
        self._ops: dict[int, _Op] = {}  # id(upper tree) -> op
        self._lower_ops: dict[int, tuple[_Op, Member, OffloadBlock]] = {}  # id(lower root) -> (op, member, root)
        self._own_nbls: set[int] = set()  # zero-byte receive posts the team made itself
        self._uploading = False  # UPLOAD_ALL indicated, RESUME not yet
        self._paused_up = False
        self._link_reported = True  # what the host believes (it assumes up at bind)
        self._reported_caps: OffloadCapabilities | None = None
        self._resume_check_scheduled = False
        if self._runner is not None:
            for m in self.members:
                if m.carrier:
                    self._runner.set_carrier(m.index, True)
        self._refresh()

    # ================================================================================================ control API

    def fail_member(self, index: int, hardware: bool = False) -> None:
        """Take member ``index`` out: its carrier goes down; with ``hardware`` its connections' state is lost too."""
        m = self.members[index]
        m.admin_down = True
        m.last_loss = "hardware" if hardware else "admin"
        if hardware:
            m.hw_failed = True
            for entry in list(self._live):
                if entry.layer == Layer.TCP and entry.member == index:
                    self._inject(m, entry)
            for op in self._ops.values():
                for entry in op.entries.values():
                    if entry.layer == Layer.TCP and entry.member == index:
                        entry.hw_pending = True
        set_link = getattr(m.nic, "set_link", None)
        if callable(set_link):
            set_link(False)
        self._refresh()

    def restore_member(self, index: int) -> None:
        """Undo ``fail_member``: carrier up again; the member rejoins once LACP has it in sync."""
        m = self.members[index]
        m.admin_down = False
        m.hw_failed = False
        set_link = getattr(m.nic, "set_link", None)
        if callable(set_link):
            set_link(True)
        self._refresh()

    def member_states(self) -> list[dict[str, Any]]:
        return [m.state() for m in self.members]

    def active_members(self) -> list[int]:
        return [m.index for m in self.members if m.active]

    @property
    def uploading(self) -> bool:
        """Between UPLOAD_ALL and RESUME."""
        return self._uploading

    def offloaded_connections(self) -> int:
        return self._live_tcp

    # ================================================================================================ OffloadTarget

    def bind(self, chimney: Any, target_id: int) -> None:
        self._upper = chimney
        self._tid = target_id

    def query_capabilities(self) -> OffloadCapabilities:
        caps = [self.lower.query_capabilities(m.target_id) for m in self._placement()]
        if not caps:
            result = OffloadCapabilities(max_connections=0, max_buffer_bytes=0)
        else:
            result = OffloadCapabilities(
                ipv4=all(c.ipv4 for c in caps),
                ipv6=all(c.ipv6 for c in caps),
                max_connections=sum(c.max_connections for c in caps),
                max_buffer_bytes=sum(c.max_buffer_bytes for c in caps),
                timestamps=all(c.timestamps for c in caps),
                sack=all(c.sack for c in caps),
                window_scaling=all(c.window_scaling for c in caps),
                ticks_per_second=caps[0].ticks_per_second,
            )
        self._reported_caps = result
        return result

    # ---- initiate ---------------------------------------------------------------------------------------------
    def initiate_offload(self, tree: OffloadBlock) -> None:
        self.stats.initiates += 1
        op = _Op("initiate", tree)
        self._ops[id(tree)] = op
        placement = self._placement()
        self._plan(op, tree, None, None, placement)
        members = sorted({m for s in op.need.values() for m in s})
        dispatch: list[tuple[Member, OffloadBlock]] = []
        for index in members:
            roots = self._build_initiate(op, tree, index, None)
            root = chain(roots)
            if root is not None:
                dispatch.append((self.members[index], root))
        for entry in op.entries.values():
            if entry.layer == Layer.TCP and entry.lower is not None:
                self.members[entry.member].connections += 1
        if not dispatch:
            self._sched.call_soon(self._finish_initiate, op)
            return
        for m, root in dispatch:
            op.pending.add(id(root))
            self._lower_ops[id(root)] = (op, m, root)
        for m, root in dispatch:
            self.stats.lower_ops += 1
            self.lower.initiate_offload(m.target_id, root)

    def _plan(
        self,
        op: _Op,
        block: OffloadBlock | None,
        parent: OffloadBlock | None,
        parent_entry: ImEntry | None,
        placement: list[Member],
    ) -> set[int]:
        """Create the IM entries of new objects, place new TCP objects, and compute on which members each upper
        block must exist (``op.need``).  Returns the union over ``block`` and its NextBlock siblings."""
        union: set[int] = set()
        for b in siblings(block):
            need: set[int] = set()
            entry: ImEntry | None = None
            if b.is_new_offload:
                entry = ImEntry(b.ndis_offload_handle, b.layer, b.const, b.cached, parent_entry)
                op.entries[id(b)] = entry
            elif b.is_linker and isinstance(b.context, ImEntry):
                entry = b.context
            if b.layer == Layer.TCP:
                if b.is_new_offload and entry is not None:
                    if placement:
                        src, dst = self._path_addresses(parent)
                        const = b.const
                        key = tuple_key(src, dst, getattr(const, "local_port", 0), getattr(const, "remote_port", 0))
                        entry.member = placement[pick(key, len(placement))].index
                        need.add(entry.member)
                    else:
                        op.fail[id(b)] = NdisStatus.OFFLOAD_TCP_ENTRIES
            else:
                need |= self._plan(op, b.dependent_block_list, b, entry, placement)
                if not need and b.is_new_offload and placement:
                    need.add(placement[0].index)  # an object with no connection below goes to the first member
            op.need[id(b)] = need
            union |= need
        return union

    @staticmethod
    def _path_addresses(parent: OffloadBlock | None) -> tuple[bytes, bytes]:
        if parent is None:
            return b"\0\0\0\0", b"\0\0\0\0"
        const = parent.const
        if const is None and isinstance(parent.context, ImEntry):
            const = parent.context.const
        return getattr(const, "source_address", b"\0\0\0\0"), getattr(const, "destination_address", b"\0\0\0\0")

    def _build_initiate(
        self, op: _Op, block: OffloadBlock | None, index: int, parent_copy: LowerObj | None
    ) -> list[OffloadBlock]:
        out: list[OffloadBlock] = []
        for b in siblings(block):
            if index not in op.need.get(id(b), ()):
                continue
            copy: LowerObj | None = None
            if b.is_placeholder:
                lb = placeholder(b.layer)
            elif b.is_new_offload:
                entry = op.entries[id(b)]
                copy = LowerObj(entry, index, parent_copy)
                if b.layer == Layer.TCP:
                    entry.lower = copy
                else:
                    entry.copies.setdefault(index, []).append(copy)
                lb = OffloadBlock(
                    b.layer,
                    b.state_type,
                    miniport_offload_context=copy.slot,
                    ndis_offload_handle=copy,
                    const=b.const,
                    cached=b.cached,
                    delegated=b.delegated if b.delegated is not None else default_delegated(b.layer),
                    net_buffer_list_chain=list(b.net_buffer_list_chain) if b.net_buffer_list_chain else None,
                    buffered_data=list(b.buffered_data) if b.buffered_data else None,
                )
            else:  # linker: an offloaded copy on this member if there is one, else a new copy
                entry = b.context
                assert isinstance(entry, ImEntry)
                ready = [c for c in entry.copies_on(index) if c.state == OFFLOADED]
                if ready:
                    copy = ready[0]
                    lb = named_block(b.layer, copy)
                else:
                    copy = LowerObj(entry, index, parent_copy)
                    entry.copies.setdefault(index, []).append(copy)
                    lb = OffloadBlock(
                        b.layer,
                        b.state_type,
                        miniport_offload_context=copy.slot,
                        ndis_offload_handle=copy,
                        const=entry.const,
                        cached=entry.cached,
                        delegated=default_delegated(b.layer),
                    )
            op.map[id(lb)] = b
            if b.layer != Layer.TCP:
                lb.dependent_block_list = chain(self._build_initiate(op, b.dependent_block_list, index, copy))
            out.append(lb)
        return out

    def on_initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        op, _m, root = self._lower_ops.pop(id(tree))
        for lb in root.walk():
            ub = op.map.get(id(lb))
            if ub is None:
                continue
            op.results.setdefault(id(ub), []).append(lb)
            copy = lb.ndis_offload_handle
            if isinstance(copy, LowerObj) and copy.state == OFFLOADING and lb.miniport_offload_context is copy.slot:
                if lb.status in _OK and copy.slot.value is not None:
                    copy.state = OFFLOADED
                else:
                    copy.detach()
        op.pending.discard(id(tree))
        if not op.pending:
            self._finish_initiate(op)

    def _finish_initiate(self, op: _Op) -> None:
        self._ops.pop(id(op.tree), None)
        blocks = list(op.tree.walk())
        done: list[ImEntry] = []
        for b in reversed(blocks):  # dependents before the blocks they depend on
            deps = list(b.dependents())
            n_ok = sum(1 for d in deps if d.status in _OK)
            if b.is_placeholder:
                b.status = _SUCCESS
                continue
            if b.is_linker:
                b.status = (
                    _SUCCESS
                    if n_ok == len(deps)
                    else (NdisStatus.OFFLOAD_PARTIAL_SUCCESS if n_ok else NdisStatus.FAILURE)
                )
                continue
            entry = op.entries[id(b)]
            lows = op.results.get(id(b), [])
            if entry.all_copies():
                entry.state = OFFLOADED
                b.status = _SUCCESS if n_ok == len(deps) else NdisStatus.OFFLOAD_PARTIAL_SUCCESS
                assert b.miniport_offload_context is not None
                b.miniport_offload_context.value = entry
                self._live.add(entry)
                if entry.layer == Layer.TCP:
                    self._live_tcp += 1
                done.append(entry)
            else:
                failed = [lb.status for lb in lows if lb.status not in _OK and lb.status is not None]
                b.status = failed[0] if failed else op.fail.get(id(b), NdisStatus.FAILURE)
                entry.state = GONE
                if entry.layer == Layer.TCP and entry.lower is not None:
                    self.members[entry.member].connections -= 1
        # a failed new object's dependents report FAILURE (they were never tried on any member)
        for b in blocks:
            if b.is_new_offload and b.status not in _OK and b.dependent_block_list is not None:
                for d in b.dependent_block_list.walk():
                    if not d.is_placeholder:
                        d.status = NdisStatus.FAILURE
        # a member that failed in hardware while this initiate was in flight loses these connections too
        for entry in done:
            if entry.layer == Layer.TCP and (entry.hw_pending or self.members[entry.member].hw_failed):
                self._inject(self.members[entry.member], entry)
        if self._upper is not None:
            self._upper.initiate_offload_complete(self._tid, op.tree)
        for entry in done:
            if entry.held:
                held, entry.held = entry.held, None
                for name, args in held:
                    getattr(self._upper, name)(entry.upper_handle, *args)
            else:
                entry.held = None
            if entry.early_refused and entry.lower is not None and entry.state == OFFLOADED:
                entry.early_refused = False
                nbl = NetBufferList(capacity=0)
                self._own_nbls.add(nbl.nbl_id)
                self.lower.tcp_receive(entry.lower, [nbl])
        self._schedule_resume_check()

    # ---- terminate / update / invalidate / query ---------------------------------------------------------------
    def terminate_offload(self, tree: OffloadBlock) -> None:
        self.stats.terminates += 1
        self._named_op("terminate", tree)

    def update_offload(self, tree: OffloadBlock) -> None:
        self._named_op("update", tree)

    def invalidate_offload(self, tree: OffloadBlock) -> None:
        self._named_op("invalidate", tree)

    def query_offload(self, tree: OffloadBlock) -> None:
        self._named_op("query", tree)

    def _named_op(self, kind: str, tree: OffloadBlock) -> None:
        op = _Op(kind, tree)
        self._ops[id(tree)] = op
        members: set[int] = set()
        for b in tree.walk():
            entry = b.context
            if isinstance(entry, ImEntry):
                for c in entry.all_copies():
                    if c.state == OFFLOADED:
                        members.add(c.member)
                if kind == "terminate":
                    entry.state = TERMINATING
        dispatch: list[tuple[Member, OffloadBlock]] = []
        for index in sorted(members):
            root = chain(self._mirror(op, tree, index))
            if root is not None:
                dispatch.append((self.members[index], root))
        if kind == "terminate":
            for _m, root in dispatch:
                for lb in root.walk():
                    c = lb.ndis_offload_handle
                    if isinstance(c, LowerObj):
                        c.state = TERMINATING
        if not dispatch:
            self._sched.call_soon(self._finish_named, op)
            return
        for m, root in dispatch:
            op.pending.add(id(root))
            self._lower_ops[id(root)] = (op, m, root)
        call = getattr(self.lower, f"{kind}_offload")
        for m, root in dispatch:
            self.stats.lower_ops += 1
            call(m.target_id, root)

    def _mirror(self, op: _Op, block: OffloadBlock | None, index: int) -> list[OffloadBlock]:
        """The part of an upper tree that concerns member ``index``, with lower copies in place of upper objects."""
        out: list[OffloadBlock] = []
        for b in siblings(block):
            kids = self._mirror(op, b.dependent_block_list, index) if b.dependent_block_list is not None else []
            entry = b.context
            copies = [c for c in entry.copies_on(index) if c.state == OFFLOADED] if isinstance(entry, ImEntry) else []
            if not copies:
                if kids:
                    lb = placeholder(b.layer)
                    lb.dependent_block_list = chain(kids)
                    op.map[id(lb)] = b
                    out.append(lb)
                continue
            groups: dict[int, list[OffloadBlock]] = {id(c): [] for c in copies}
            for k in kids:
                kc = k.ndis_offload_handle
                owner = kc.parent if isinstance(kc, LowerObj) and kc.parent in copies else copies[0]
                assert owner is not None
                groups[id(owner)].append(k)
            for c in copies:
                lb = named_block(b.layer, c)
                if op.kind == "update":
                    lb.const, lb.cached, lb.delegated = b.const, b.cached, b.delegated
                lb.dependent_block_list = chain(groups[id(c)])
                op.map[id(lb)] = b
                out.append(lb)
        return out

    def _lower_named_complete(self, tree: OffloadBlock) -> None:
        op, _m, root = self._lower_ops.pop(id(tree))
        for lb in root.walk():
            ub = op.map.get(id(lb))
            if ub is not None:
                op.results.setdefault(id(ub), []).append(lb)
        op.pending.discard(id(tree))
        if not op.pending:
            self._finish_named(op)

    def on_terminate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._lower_named_complete(tree)

    def _finish_named(self, op: _Op) -> None:
        self._ops.pop(id(op.tree), None)
        kind = op.kind
        results = op.results
        for ub in op.tree.walk():
            if ub.is_placeholder:
                ub.status = _SUCCESS
                continue
            entry = ub.context
            got = results.get(id(ub))
            lows = [lb for lb in got if not lb.is_placeholder] if got else []
            ok = True  # every lower copy succeeded
            first_ok = None  # the first lower copy that did
            for lb in lows:
                if lb.status == _SUCCESS:
                    if first_ok is None:
                        first_ok = lb
                else:
                    ok = False
            if kind == "terminate":
                if ub.layer == Layer.TCP:
                    ok = ok and bool(lows)
                    if lows:
                        lb = lows[0]
                        ub.delegated = lb.delegated
                        ub.net_buffer_list_chain = lb.net_buffer_list_chain
                        ub.buffered_data = lb.buffered_data
                elif ub.layer == Layer.PATH:
                    ub.delegated = PathDelegated()
                else:
                    ub.delegated = first_ok.delegated if first_ok is not None else default_delegated(Layer.NEIGHBOR)
                if isinstance(entry, ImEntry):
                    self._retire(entry, lows)
            elif kind == "query":
                if first_ok is not None:
                    ub.delegated = first_ok.delegated
                    ub.miniport_reserved.update(first_ok.miniport_reserved)
            elif kind == "update" and ok and isinstance(entry, ImEntry) and ub.cached is not None:
                entry.cached = ub.cached
            ub.status = _SUCCESS if ok else NdisStatus.FAILURE
        if self._upper is not None:
            getattr(self._upper, f"{kind}_offload_complete")(self._tid, op.tree)
        self._schedule_resume_check()

    def _retire(self, entry: ImEntry, lows: list[OffloadBlock]) -> None:
        for lb in lows:
            c = lb.ndis_offload_handle
            if isinstance(c, LowerObj):
                c.detach()
        if entry.layer != Layer.TCP:
            for c in entry.all_copies():  # copies no lower tree named (should not exist): forget them
                if c.state != OFFLOADING:
                    c.detach()
        if entry in self._live:
            self._live.discard(entry)
            if entry.layer == Layer.TCP:
                self._live_tcp -= 1
                self.members[entry.member].connections -= 1
                if self._live_tcp == 0:
                    self.failovers.tcp_drained(self._sched.now())
        entry.state = GONE

    # ---- TCP I/O (host -> member) ------------------------------------------------------------------------------
    def _refused(self, entry: ImEntry, complete: str, nbls: list[NetBufferList]) -> bool:
        """While the team uploads (failover), I/O on a live connection is refused: completed later through the
        upper layer's ``complete`` method with NDIS_STATUS_UPLOAD_IN_PROGRESS.  True when it was refused."""
        if self._uploading and not entry.aborted:
            self._refuse_later(complete, entry, nbls)
            return True
        return False

    def tcp_send(self, context: Any, nbls: list[NetBufferList]) -> None:
        entry: ImEntry = context
        if not self._refused(entry, "tcp_send_complete", nbls):
            self.lower.tcp_send(entry.lower, nbls)

    def tcp_receive(self, context: Any, nbls: list[NetBufferList]) -> None:
        entry: ImEntry = context
        if not self._refused(entry, "tcp_receive_complete", nbls):
            self.lower.tcp_receive(entry.lower, nbls)

    def tcp_receive_return(self, context: Any, nbls: list[NetBufferList]) -> None:
        entry: ImEntry = context
        if entry.lower is not None:
            self.lower.tcp_receive_return(entry.lower, nbls)

    def tcp_disconnect(self, context: Any, nbl: NetBufferList, flags: int) -> None:
        entry: ImEntry = context
        if not self._refused(entry, "tcp_disconnect_complete", [nbl]):
            self.lower.tcp_disconnect(entry.lower, nbl, flags)

    def tcp_forward(self, context: Any, nbls: list[NetBufferList]) -> None:
        entry: ImEntry = context
        if not self._refused(entry, "tcp_forward_complete", nbls):
            self.lower.tcp_forward(entry.lower, nbls)

    def _refuse_later(self, method: str, entry: ImEntry, nbls: list[NetBufferList]) -> None:
        self.stats.io_refused += len(nbls)
        for nbl in nbls:
            nbl.status = _UIP
        self._sched.call_soon(self._complete_refused, method, entry, nbls)

    def _complete_refused(self, method: str, entry: ImEntry, nbls: list[NetBufferList]) -> None:
        if self._upper is None:
            return
        if method == "tcp_disconnect_complete":
            self._upper.tcp_disconnect_complete(entry.upper_handle, nbls[0])
        else:
            getattr(self._upper, method)(entry.upper_handle, nbls)

    # ---- software path -----------------------------------------------------------------------------------------
    def send_frame(self, frame: bytes) -> None:
        active = [m for m in self.members if m.active]
        if not active:
            self.stats.frames_dropped_no_member += 1
            return
        key = flow_key(frame)
        m = active[0] if key is None else active[pick(key, len(active))]
        self.stats.frames_out += 1
        m.nic.send_frame(frame)

    # ========================================================================================= ChimneyHost (lower)

    def on_update_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._lower_named_complete(tree)

    def on_invalidate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._lower_named_complete(tree)

    def on_query_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._lower_named_complete(tree)

    def _up(self, handle: Any, name: str, *args: Any) -> None:
        """Pass a completion / event up with the upper handle (held while the upper initiate is in flight)."""
        if not isinstance(handle, LowerObj):
            return
        entry = handle.entry
        if entry.state == OFFLOADING:
            if entry.held is None:
                entry.held = []
            entry.held.append((name, args))
            self.stats.held_calls += 1
            return
        if self._upper is not None:
            getattr(self._upper, name)(entry.upper_handle, *args)

    def on_tcp_send_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self._up(handle, "tcp_send_complete", nbls)

    def on_tcp_receive_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        own = self._own_nbls
        if own:
            mine = [n for n in nbls if n.nbl_id in own]
            if mine:
                for n in mine:
                    own.discard(n.nbl_id)
                nbls = [n for n in nbls if n.nbl_id not in own and n not in mine]
                if not nbls:
                    return
        self._up(handle, "tcp_receive_complete", nbls)

    def on_tcp_disconnect_complete(self, handle: Any, nbl: NetBufferList) -> None:
        self._up(handle, "tcp_disconnect_complete", nbl)

    def on_tcp_forward_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self._up(handle, "tcp_forward_complete", nbls)

    def on_tcp_event(self, handle: Any, event_type: int, info: int) -> None:
        if isinstance(handle, LowerObj) and event_type == TcpEventType.ABORT:
            handle.entry.aborted = True
        self._up(handle, "tcp_event", event_type, info)

    def on_tcp_receive_indicate(self, handle: Any, nbl: NetBufferList) -> tuple[int, int]:
        if not isinstance(handle, LowerObj) or self._upper is None:
            return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        entry = handle.entry
        if entry.state == OFFLOADING:
            entry.early_refused = True  # re-enabled with a zero-byte post once the upper initiate completed
            self.stats.early_refusals += 1
            return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        status, consumed = self._upper.tcp_receive_indicate(entry.upper_handle, nbl)
        return status, consumed

    def on_status_indication(self, target_id: int, status: int, info: Any) -> None:
        m = self._by_tid.get(target_id)
        if m is None:
            return
        if status == NdisStatus.LINK_STATE:
            up = bool(getattr(info, "up", info))
            m.carrier = up
            if not up:
                m.last_loss = m.last_loss if m.admin_down else "carrier"
            if self._runner is not None:
                self._runner.set_carrier(m.index, up)
            self._refresh()
        elif status == NdisStatus.OFFLOAD_PAUSE:
            m.nic_paused = True  # no new placements on it; its connections keep running
        elif status == NdisStatus.UPLOAD_ALL:
            # The NIC wants all its connections back: only the host can terminate them, so the whole team
            # fails over (the host uploads everything through the team, then offloads again after RESUME).
            m.nic_paused = True
            m.last_loss = "nic-upload-all"
            self._start_failover([m], "nic-upload-all")
        elif status == NdisStatus.OFFLOAD_RESUME:
            self.lower.query_capabilities(target_id)  # re-query before the next lower initiate (invariant 11)
            m.nic_paused = False
            if not self._uploading:
                self._sched.call_soon(self._advertise)

    def on_offload_event(self, target_id: int, block: OffloadBlock | None, code: int) -> None:
        if self._upper is None:
            return
        up_block = block
        if block is not None and isinstance(block.ndis_offload_handle, LowerObj):
            entry = block.ndis_offload_handle.entry
            up_block = OffloadBlock(
                block.layer,
                block.state_type,
                status=block.status,
                ndis_offload_handle=entry.upper_handle,
                const=block.const,
                cached=block.cached,
                delegated=block.delegated,
            )
        self._upper.offload_event(self._tid, up_block, code)

    def on_receive_frame(self, target_id: int, frame: bytes) -> None:
        m = self._by_tid.get(target_id)
        if m is None:
            return
        if is_slow_protocols_frame(frame):
            self.stats.lacp_in += 1
            if self._runner is not None:
                self._runner.handle_frame(m.index, frame)
            return
        if not m.collecting():
            self.stats.frames_dropped_not_collecting += 1
            return
        self.stats.frames_in += 1
        if self._upper is not None:
            self._upper.indicate_receive_frame(self._tid, frame)

    def _note_tcp_state(self, handle: Any, state: int) -> None:
        if isinstance(handle, LowerObj) and self._upper is not None:
            note = getattr(self._upper, "note_tcp_state", None)
            if note is not None:
                note(handle.entry.upper_handle, state)

    def on_contract_violation(self, violation: Exception) -> None:
        self.lower_violations.append(violation)

    # ================================================================================================ membership

    def _placement(self) -> list[Member]:
        return [m for m in self.members if m.active and not m.nic_paused]

    def _send_lacp(self, index: int, frame: bytes) -> None:
        self.stats.lacp_out += 1
        self.members[index].nic.send_frame(frame)

    def _on_lacp(self, events: list[LacpEvent]) -> None:
        for e in events:
            if isinstance(e, PartnerLost):
                m = self.members[e.port - 1]
                if not m.admin_down:
                    m.last_loss = e.reason
        self._refresh()

    def _refresh(self) -> None:
        """Act on members whose health changed: failover for losses, join for returns."""
        lost: list[Member] = []
        joined: list[Member] = []
        for m in self.members:
            healthy = m.healthy()
            if healthy == m.active:
                continue
            m.active = healthy
            if healthy:
                joined.append(m)
            else:
                m.failures += 1
                lost.append(m)
        if lost:
            reason = lost[0].last_loss or "unknown"
            self._start_failover(lost, reason)
        if joined:
            self._join(joined)

    def _start_failover(self, lost: list[Member], reason: str) -> None:
        self.stats.failovers += 1
        now = self._sched.now()
        for m in lost:
            on_member = sum(1 for e in self._live if e.layer == Layer.TCP and e.member == m.index)
            self.failovers.start(m.index, m.last_loss or reason, now, self._live_tcp, on_member)
        self._trace("team.failover", members=[m.index for m in lost], reason=reason)
        if self._upper is None:
            return
        if not any(m.active for m in self.members) and self._link_reported:
            self._link_reported = False
            self._upper.indicate_status(self._tid, NdisStatus.LINK_STATE, LinkState(False))
        if not self._uploading:
            self._uploading = True
            if not self._paused_up:
                self._paused_up = True
                self.stats.pauses += 1
                self._upper.indicate_status(self._tid, NdisStatus.OFFLOAD_PAUSE, None)
            self.stats.upload_alls += 1
            self._upper.indicate_status(self._tid, NdisStatus.UPLOAD_ALL, None)
        self._schedule_resume_check()

    def _join(self, joined: list[Member]) -> None:
        self.stats.joins += len(joined)
        self._trace("team.join", members=[m.index for m in joined])
        if self._upper is None:
            return
        if not self._link_reported and any(m.active for m in self.members):
            self._link_reported = True
            self._upper.indicate_status(self._tid, NdisStatus.LINK_STATE, LinkState(True))
        if not self._uploading:
            self._sched.call_soon(self._advertise)

    def _advertise(self) -> None:
        """PAUSE + RESUME so the host re-queries capabilities that changed (no UPLOAD_ALL for a join)."""
        if self._upper is None or self._uploading:
            return
        caps = self._current_max()
        if self._reported_caps is not None and self._reported_caps.max_connections == caps:
            return
        if not self._paused_up:
            self.stats.pauses += 1
            self._upper.indicate_status(self._tid, NdisStatus.OFFLOAD_PAUSE, None)
        self._paused_up = False
        self.stats.resumes += 1
        self._upper.indicate_status(self._tid, NdisStatus.OFFLOAD_RESUME, None)

    def _current_max(self) -> int:
        return sum(self.lower.query_capabilities(m.target_id).max_connections for m in self._placement())

    def _schedule_resume_check(self) -> None:
        if self._uploading and not self._resume_check_scheduled:
            self._resume_check_scheduled = True
            self._sched.call_soon(self._check_resume)

    def _check_resume(self) -> None:
        """RESUME only once every object is terminated and no state operation is in flight (reference 4)."""
        self._resume_check_scheduled = False
        if not self._uploading or self._live or self._ops:
            return
        self._uploading = False
        self._paused_up = False
        now = self._sched.now()
        self.failovers.resumed(now)
        self.stats.resumes += 1
        self._trace("team.resume", active=self.active_members())
        if self._upper is not None:
            self._upper.indicate_status(self._tid, NdisStatus.OFFLOAD_RESUME, None)

    def _inject(self, m: Member, entry: ImEntry) -> None:
        low = entry.lower
        if low is None or low.state != OFFLOADED:
            entry.hw_pending = True
            return
        entry.hw_pending = False
        inject: Callable[[Any], None] | None = getattr(m.nic, "inject_hardware_failure", None)
        if inject is None:
            return
        try:
            inject(low)
        except KeyError:
            return  # the member no longer runs it
        self.stats.hardware_injections += 1

    def _trace(self, kind: str, **fields: Any) -> None:
        if self._tracer.enabled:
            self._tracer.emit(kind, team=self.name, **fields)

    def __repr__(self) -> str:
        return f"TeamTarget({self.name}, active={self.active_members()}, offloaded={self._live_tcp})"
