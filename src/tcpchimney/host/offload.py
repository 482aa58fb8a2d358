"""The chimney side of the host: offload trees, terminates, and every request or indication a target makes.

The host alone initiates state operations.  Per target it keeps its neighbor and path records (with the context
the target wrote for each) and the set of connections on it; per connection the ``Connection`` record says who runs
it.  Target requests (retrieve, UPLOAD_ALL, pause/resume, link state, abort, disconnect) are turned into terminates
scheduled with ``call_soon`` so the host never re-enters a target from inside one of its indications.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tcpchimney.chimney.constants import (
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    TCP_DISCONNECT_GRACEFUL_CLOSE,
    NdisStatus,
    TcpEventType,
    UploadReason,
)
from tcpchimney.chimney.objects import (
    ContextSlot,
    NeighborCached,
    NeighborConst,
    NeighborDelegated,
    NetBufferList,
    OffloadBlock,
    OffloadCapabilities,
    PathCached,
    PathConst,
    link_siblings,
    neighbor_block,
    path_block,
    tcp_block,
)
from tcpchimney.clock import TimerHandle
from tcpchimney.host.connection import CLOSED, OFFLOADED, OFFLOADING, SOFTWARE, TERMINATING, Connection
from tcpchimney.tcp.engine import TcpConnection
from tcpchimney.tcp.state import OFFLOADABLE_STATES, TcpState
from tcpchimney.wire.frame import TcpFrame, safe_parse
from tcpchimney.wire.tcp import TcpSegment

if TYPE_CHECKING:
    from tcpchimney.host.stack import HostStack

MAX_QUEUED_FRAMES = 2048
_SUCCESS = NdisStatus.SUCCESS
_OK_INITIATE = (NdisStatus.SUCCESS, NdisStatus.OFFLOAD_PARTIAL_SUCCESS)
# States the policy offloads on its own: the peer has not closed (so EOF never waits on data held by a target).
_POLICY_STATES = frozenset({TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2})

# object states
S_OFFLOADING = "offloading"
S_OFFLOADED = "offloaded"
S_TERMINATING = "terminating"


class NeighborRecord:
    """The host's handle for an offloaded neighbor (next hop) on one target."""

    __slots__ = (
        "context",
        "ip",
        "mac",
        "offloaded_mac",
        "paths",
        "sent_mac",
        "src_mac",
        "state",
        "target_id",
        "updating",
    )

    def __init__(self, target_id: int, ip: bytes, mac: bytes, src_mac: bytes) -> None:
        self.target_id = target_id
        self.ip = ip
        self.mac = mac  # what ARP says now
        self.offloaded_mac = mac  # what the target has
        self.sent_mac = mac  # what the update in flight carries
        self.updating = False
        self.src_mac = src_mac
        self.context: Any = None
        self.state = S_OFFLOADING
        self.paths: dict[PathRecord, None] = {}

    def __repr__(self) -> str:
        return f"NeighborRecord({self.ip.hex()}, {self.state})"


class PathRecord:
    """The host's handle for an offloaded path (source, destination) on one target."""

    __slots__ = ("conns", "context", "dst", "mtu", "neighbor", "src", "state", "target_id")

    def __init__(self, target_id: int, neighbor: NeighborRecord, src: bytes, dst: bytes, mtu: int) -> None:
        self.target_id = target_id
        self.neighbor = neighbor
        self.src = src
        self.dst = dst
        self.mtu = mtu
        self.context: Any = None
        self.state = S_OFFLOADING
        self.conns: dict[Connection, None] = {}

    def __repr__(self) -> str:
        return f"PathRecord({self.src.hex()}->{self.dst.hex()}, {self.state}, conns={len(self.conns)})"


class TargetInfo:
    """What the host knows about one offload target."""

    def __init__(self, target_id: int, nic: Any, caps: OffloadCapabilities) -> None:
        self.target_id = target_id
        self.nic = nic
        self.name: str = getattr(nic, "name", f"target{target_id}")
        self.caps = caps
        self.paused = False
        self.upload_all = False  # UPLOAD_ALL seen, RESUME not yet
        self.release = False  # terminate paths/neighbors once they have no connections
        self.link_up = True
        self.neighbors: dict[bytes, NeighborRecord] = {}
        self.paths: dict[tuple[bytes, bytes], PathRecord] = {}
        self.conns: dict[Connection, None] = {}  # offloading, offloaded or terminating on this target
        self.blocked: dict[Connection, None] = {}  # eligible but waiting for the target or a busy path
        self.batch: dict[Connection, None] = {}
        self.batch_scheduled = False

    @property
    def accepting(self) -> bool:
        return not self.paused and self.link_up and self.caps.max_connections > 0

    def __repr__(self) -> str:
        return (
            f"TargetInfo({self.name}, paused={self.paused}, upload_all={self.upload_all}, conns={len(self.conns)}, "
            f"paths={len(self.paths)}, neighbors={len(self.neighbors)})"
        )


def _reason_key(reason: UploadReason | str) -> str:
    return reason.name if isinstance(reason, UploadReason) else reason


_TERMINATE_BATCH = 128  # connections per terminate tree when many are terminated at once (UPLOAD_ALL)


class _TerminateWatch:
    """The connections of one terminate batch and the one watchdog timer they share."""

    __slots__ = ("conns", "timer")

    def __init__(self, conns: list[Connection]) -> None:
        self.conns = conns
        self.timer: TimerHandle | None = None


_INITIATE_BATCH = 128  # connections per initiate tree when many are offloaded at once (RESUME)


class OffloadManager:
    def __init__(self, host: HostStack) -> None:
        self.host = host
        self._policy_fire_cb = self._policy_fire  # one bound method for every connection's policy timer
        self.targets: dict[int, TargetInfo] = {}
        self.counters: dict[str, int] = {}
        self.by_reason: dict[str, int] = {}
        self.by_requester: dict[str, int] = {"host": 0, "target": 0}
        self.offloaded_now = 0  # connections a target runs (owner is a target's name)
        self._terminate_queue: list[Connection] = []  # scheduled terminates, sent together by _flush_terminates

    # ------------------------------------------------------------------------------------------------ bookkeeping
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def stats(self) -> dict[str, Any]:
        c = self.counters
        terminations = {
            "by_reason": dict(self.by_reason),
            "by_requester": dict(self.by_requester),
            "total": sum(self.by_requester.values()),
        }
        out: dict[str, Any] = {
            "offloads": c.get("offloads", 0),
            "offload_attempts": c.get("offload_attempts", 0),
            "offload_failures": c.get("offload_failures", 0),
            "retrieves_received": c.get("retrieves_received", 0),
            "retrieves_declined": c.get("retrieves_declined", 0),
            "upload_alls": c.get("upload_alls", 0),
            "pauses": c.get("pauses", 0),
            "resumes": c.get("resumes", 0),
            "terminations": terminations,
            "by_reason": terminations["by_reason"],
            "by_requester": terminations["by_requester"],
            "terminate_failures": c.get("terminate_failures", 0),
            "terminate_timeouts": c.get("terminate_timeouts", 0),
            "offloaded_now": self.offloaded_now,
        }
        for k, v in c.items():
            out.setdefault(k, v)
        return out

    def add_target(self, target_id: int, nic: Any) -> TargetInfo:
        caps = self.host.chimney.query_capabilities(target_id)
        t = self.targets[target_id] = TargetInfo(target_id, nic, caps)
        return t

    def target_name(self, target_id: int | None) -> str:
        t = self.targets.get(target_id) if target_id is not None else None
        return t.name if t is not None else "host"

    def _trace(self, kind: str, **fields: Any) -> None:
        tracer = self.host.tracer
        if tracer.enabled:
            tracer.emit(kind, host=self.host.name, **fields)

    def _trace_owner(self, c: Connection) -> None:
        self.host._trace_owner(c)

    # ------------------------------------------------------------------------------------------------ policy
    def consider(self, c: Connection) -> None:
        """Offload ``c`` now (batched with call_soon), later (policy timer), or when the target allows."""
        c.waiting_bytes = False
        if c.mode != SOFTWARE or c.engine is None or c.app_aborted:
            return
        host = self.host
        explicit = c.offload_requested
        tid = explicit if explicit is not None else c.iface.target_id
        t = self.targets.get(tid)
        if t is None:
            return
        state = c.engine.state
        if state not in OFFLOADABLE_STATES:
            return
        if explicit is None:
            pol = host.policy
            if not pol.enabled or state not in _POLICY_STATES:
                return
            now = host.scheduler.now()
            est = c.established_at if c.established_at is not None else now
            due = max(est + pol.offload_after, c.no_offload_until)
            if due == math.inf:
                return
            if due > now:
                self._policy_timer(c, due)
                return
            if pol.min_bytes:
                sock = c.sock
                done = 0 if sock is None else sock.bytes_written + sock.bytes_read + sock.readable
                if done < pol.min_bytes:
                    c.waiting_bytes = True
                    return
            limit = pol.max_offloaded_per_target
            if limit is not None and len(t.conns) + len(t.batch) >= limit:
                t.blocked[c] = None
                return
        if not t.accepting or len(t.conns) + len(t.batch) >= t.caps.max_connections:
            t.blocked[c] = None
            return
        if c in t.batch:
            return
        t.batch[c] = None
        if not t.batch_scheduled:
            t.batch_scheduled = True
            host.scheduler.call_soon(self._flush_batch, t)

    def _policy_timer(self, c: Connection, due: float) -> None:
        h = c.policy_timer
        if h is not None:
            if h.when <= due and not h.cancelled:
                return
            h.cancel()
        c.policy_timer = self.host.scheduler.call_at(due, self._policy_fire_cb, c)

    def _policy_fire(self, c: Connection) -> None:
        c.policy_timer = None
        self.consider(c)

    def _kick(self, t: TargetInfo) -> None:
        if not t.blocked or not t.accepting:
            return
        blocked = list(t.blocked)
        t.blocked = {}
        for c in blocked:
            self.consider(c)

    def _kick_all(self, t: TargetInfo) -> None:
        """After RESUME or link up: every host-run connection of this target is a candidate again."""
        t.blocked = {}
        for c in list(self.host._conns.values()):
            if c.mode == SOFTWARE and (c.offload_requested == t.target_id or c.iface.target_id == t.target_id):
                self.consider(c)

    def request_offload(self, c: Connection, target_id: int | None) -> None:
        if c.mode == CLOSED:
            return
        c.offload_requested = target_id if target_id is not None else c.iface.target_id
        if c.mode == SOFTWARE:
            self.consider(c)

    # ------------------------------------------------------------------------------------------------ initiate
    def _flush_batch(self, t: TargetInfo) -> None:
        t.batch_scheduled = False
        conns = list(t.batch)
        t.batch = {}
        if not conns:
            return
        if not t.accepting:
            for c in conns:
                t.blocked[c] = None
            return
        room = t.caps.max_connections - len(t.conns)
        if room < len(conns):
            for c in conns[max(room, 0) :]:
                t.blocked[c] = None
            conns = conns[: max(room, 0)]
        if len(conns) > _INITIATE_BATCH:
            # One bounded tree per pass (the rest stays batched for the next pass, which runs after the target
            # completed this tree): the blocks of one batch are alive at a time, and later batches link to the
            # neighbor and path this one offloads instead of waiting for it.
            for c in conns[_INITIATE_BATCH:]:
                t.batch[c] = None
            conns = conns[:_INITIATE_BATCH]
        try:
            if conns:
                self._initiate(t, conns)
        finally:
            if t.batch and not t.batch_scheduled:
                t.batch_scheduled = True
                self.host.scheduler.call_soon(self._flush_batch, t)

    def _initiate(self, t: TargetInfo, conns: list[Connection]) -> None:
        host = self.host
        arp = host.arp
        nb_blocks: dict[bytes, OffloadBlock] = {}
        nb_paths: dict[bytes, list[tuple[bytes, bytes]]] = {}
        path_blocks: dict[tuple[bytes, bytes], OffloadBlock] = {}
        path_tcps: dict[tuple[bytes, bytes], list[OffloadBlock]] = {}
        for c in conns:
            if c.mode != SOFTWARE or c.engine is None or c.app_aborted or c.engine.state not in OFFLOADABLE_STATES:
                continue
            nh = c.next_hop
            mac = arp.lookup(nh)
            if mac is None:
                t.blocked[c] = None
                continue
            iface = c.iface
            pkey = (iface.ip, c.key[2])
            nbr = t.neighbors.get(nh)
            path = t.paths.get(pkey)
            if nbr is not None and nbr.state != S_OFFLOADED and nh not in nb_blocks:
                t.blocked[c] = None  # its neighbor is being offloaded or terminated by another tree
                continue
            if path is not None and (
                (path.state != S_OFFLOADED and pkey not in path_blocks) or path.neighbor is not nbr
            ):
                t.blocked[c] = None
                continue
            # Flush what the engine has before exporting it (a pending ACK, events).
            host._service(c)
            eng = c.engine
            if c.mode != SOFTWARE or eng is None or eng.state not in OFFLOADABLE_STATES:
                continue
            if nbr is None:
                nbr = NeighborRecord(t.target_id, nh, mac, iface.mac)
                t.neighbors[nh] = nbr
                nb = neighbor_block(
                    NeighborConst(iface.mac),
                    NeighborCached(mac),
                    NeighborDelegated(),
                    context=ContextSlot(),
                    handle=nbr,
                )
                nb.protocol_reserved["new"] = True
                nb_blocks[nh] = nb
                nb_paths[nh] = []
            elif nh not in nb_blocks:
                nb_blocks[nh] = neighbor_block(context=ContextSlot(nbr.context), handle=nbr)
                nb_paths[nh] = []
            if path is None:
                path = PathRecord(t.target_id, nbr, iface.ip, c.key[2], iface.mtu)
                t.paths[pkey] = path
                nbr.paths[path] = None
                pb = path_block(
                    PathConst(iface.ip, c.key[2]), PathCached(iface.mtu), context=ContextSlot(), handle=path
                )
                pb.protocol_reserved["new"] = True
                path_blocks[pkey] = pb
                path_tcps[pkey] = []
                nb_paths[nh].append(pkey)
            elif pkey not in path_blocks:
                path_blocks[pkey] = path_block(context=ContextSlot(path.context), handle=path)
                path_tcps[pkey] = []
                nb_paths[nh].append(pkey)
            path_tcps[pkey].append(self._export(t, c, path))
        if not nb_blocks:
            return
        roots: list[OffloadBlock] = []
        for nh, nb in nb_blocks.items():
            pbs: list[OffloadBlock] = []
            for pkey in nb_paths[nh]:
                pb = path_blocks[pkey]
                pb.dependent_block_list = link_siblings(path_tcps[pkey])
                pbs.append(pb)
            nb.dependent_block_list = link_siblings(pbs)
            roots.append(nb)
        root = link_siblings(roots)
        assert root is not None
        host.chimney.initiate_offload(t.target_id, root)

    def _export(self, t: TargetInfo, c: Connection, path: PathRecord) -> OffloadBlock:
        host = self.host
        now = host.scheduler.now()
        eng = c.engine
        assert eng is not None
        host._cancel_timer(c)
        if c.policy_timer is not None:
            c.policy_timer.cancel()
            c.policy_timer = None
        export = eng.export_state(now)
        const, cached, delegated, send_data, recv = export
        c.engine = None
        c.mode = OFFLOADING
        c.export = export
        c.const = const
        c.cached = cached
        c.fin_in_export = c.app_closed
        c.offload_requested = None
        c.offload_target = t.target_id
        c.path = path
        c.off_state = delegated.state
        c.fin_acked = False
        c.disconnect_nbl = None
        c.disconnect_status = None
        c.rx_refused = False
        if c.peer_closed and recv:
            c.peer_closed = False  # EOF comes back with DISCONNECT (or at terminate) after the target's data
        path.conns[c] = None
        t.conns[c] = None
        t.blocked.pop(c, None)
        if send_data:
            c.send_nbls = [NetBufferList(data=send_data)]
        elif c.send_nbls:
            c.send_nbls = []  # (an empty list is kept: one object fewer per offload for the GC)
        self.count("offload_attempts")
        if host.tracer.enabled:
            self._trace("offload_start", conn=c.label, target=t.name, state=delegated.state.name)
        return tcp_block(
            const,
            cached,
            delegated,
            context=ContextSlot(),
            handle=c,
            send_nbls=list(c.send_nbls) if c.send_nbls else None,
            buffered_data=[NetBufferList(data=recv)] if recv else None,
        )

    def on_initiate_complete(self, target_id: int, tree: OffloadBlock) -> None:
        t = self.targets[target_id]
        for block in tree.walk():
            h = block.ndis_offload_handle
            new = bool(block.protocol_reserved.get("new"))
            if isinstance(h, Connection):
                ok = block.status in _OK_INITIATE and block.context is not None
                if ok:
                    h.context = block.context
                self._tcp_offload_done(t, h, ok, block.status)
            elif isinstance(h, PathRecord):
                if not new:
                    continue
                if block.status in _OK_INITIATE and block.context is not None:
                    h.state = S_OFFLOADED
                    h.context = block.context
                else:
                    self._drop_path(t, h)
            elif isinstance(h, NeighborRecord):
                if not new:
                    continue
                if block.status in _OK_INITIATE and block.context is not None:
                    h.state = S_OFFLOADED
                    h.context = block.context
                    if h.mac != h.offloaded_mac:
                        self._update_neighbor(t, h)  # ARP changed its answer while the initiate was in flight
                else:
                    if t.neighbors.get(h.ip) is h:
                        del t.neighbors[h.ip]
        self._cleanup(t)
        self._kick(t)

    def _drop_path(self, t: TargetInfo, p: PathRecord) -> None:
        if t.paths.get((p.src, p.dst)) is p:
            del t.paths[(p.src, p.dst)]
        p.neighbor.paths.pop(p, None)

    def _tcp_offload_done(self, t: TargetInfo, c: Connection, ok: bool, status: int | None) -> None:
        host = self.host
        export = c.export
        assert export is not None
        c.export = None
        status_name = _status_name(status) if host.tracer.enabled else ""  # only a recording tracer reads it
        if ok:
            c.mode = OFFLOADED
            c.owner = t.name
            self.offloaded_now += 1
            self.count("offloads")
            self._trace("offload_done", conn=c.label, target=t.name, status=status_name)
            self._trace_owner(c)
            chimney = host.chimney
            if c.app_aborted:
                c.pending_writes = []
                self.post_abort(c)
            else:
                if c.pending_writes:
                    data = b"".join(c.pending_writes)
                    c.pending_writes = []
                    self.post_send(c, data)
                if c.app_closed and not c.fin_in_export and c.disconnect_nbl is None:
                    self.post_disconnect(c)
            if c.pending_frames and c.mode == OFFLOADED:
                frames = c.pending_frames
                c.pending_frames = []
                self.count("frames_forwarded", len(frames))
                chimney.tcp_forward(c, [NetBufferList(data=f) for f, _ in frames])
            if c.terminate_after_offload is not None:
                by, reason = c.terminate_after_offload
                c.terminate_after_offload = None
                self._schedule_terminate(c, by, reason)
            elif t.upload_all:
                self._schedule_terminate(c, "target", "upload_all")
            elif not t.link_up and host.policy.upload_on_link_down:
                self._schedule_terminate(c, "host", "link_down")
            else:
                self._check_final(c)
            return
        # Failed: continue in software from exactly the exported state (the target did not touch the NBLs).
        self.count("offload_failures")
        self._trace("offload_done", conn=c.label, target=t.name, status=status_name)
        self._detach(t, c)
        const, cached, delegated, send_data, recv = export
        if c.pending_writes:
            send_data = send_data + b"".join(c.pending_writes)
            c.pending_writes = []
        if c.send_nbls:
            c.send_nbls = []
        now = host.scheduler.now()
        c.engine = TcpConnection.from_state(
            c.iface.tcp_config,
            const,
            cached,
            delegated,
            send_data=send_data,
            recv_buffered=recv,
            now=now,
            send_closed=c.app_closed,
        )
        c.mode = SOFTWARE
        c.no_offload_until = now + host.policy.failure_backoff
        c.terminate_after_offload = None
        if delegated.fin_received:
            c.peer_closed = True
        self._resume_software(c, owner_changed=False)

    def _detach(self, t: TargetInfo, c: Connection) -> None:
        if c.owner != "host":
            c.owner = "host"
            self.offloaded_now -= 1
        t.conns.pop(c, None)
        if c.path is not None:
            c.path.conns.pop(c, None)
            c.path = None
        c.offload_target = None
        c.context = None

    def _resume_software(self, c: Connection, owner_changed: bool = True) -> None:
        """The host runs ``c`` again: replay the frames queued meanwhile, then let the application know."""
        host = self.host
        eng = c.engine
        assert eng is not None
        if owner_changed:
            self._trace_owner(c)
        now = host.scheduler.now()
        frames = c.pending_frames
        if frames:
            c.pending_frames = []
        for _, seg in frames:
            eng.handle_segment(seg, now)
        if c.app_aborted:
            eng.abort()
            host._service(c)
            host._finish(c, "reset")
            return
        host._service(c)
        if c.mode != SOFTWARE:
            return
        sock = c.sock
        if sock is not None and (c.listener is None or c.accepted):
            if sock.on_readable is not None and (eng.readable or c.peer_closed):
                sock.on_readable()
            if sock.on_writable is not None:
                sock.on_writable()
        if c.mode == SOFTWARE:
            self.consider(c)

    # ------------------------------------------------------------------------------------------------ I/O
    def post_send(self, c: Connection, data: bytes) -> None:
        nbl = NetBufferList(data=data)
        c.send_nbls.append(nbl)
        self.host.chimney.tcp_send(c, [nbl])

    def post_disconnect(self, c: Connection) -> None:
        nbl = NetBufferList()
        c.disconnect_nbl = nbl
        if c.off_state == TcpState.ESTABLISHED:
            c.off_state = TcpState.FIN_WAIT_1
        elif c.off_state == TcpState.CLOSE_WAIT:
            c.off_state = TcpState.LAST_ACK
        self.host.chimney.tcp_disconnect(c, nbl, TCP_DISCONNECT_GRACEFUL_CLOSE)

    def post_abort(self, c: Connection) -> None:
        nbl = NetBufferList()
        c.abort_nbl = nbl
        self.host.chimney.tcp_disconnect(c, nbl, TCP_DISCONNECT_ABORTIVE_CLOSE)

    def reenable_receive(self, c: Connection) -> None:
        if not c.repost:
            c.repost = True
            self.host.scheduler.call_soon(self._repost, c)

    def _repost(self, c: Connection) -> None:
        c.repost = False
        if c.mode == OFFLOADED and c.rx_refused and len(c.rx_buf) < c.iface.tcp_config.rcv_buf:
            c.rx_refused = False
            self.host.chimney.tcp_receive(c, [NetBufferList(capacity=0)])

    def frame_for_offloaded(self, c: Connection, frame: bytes, seg: TcpSegment) -> None:
        """A frame for a connection the host does not run right now (offloading, offloaded or terminating)."""
        # A frame the target passes up for a connection it runs means it stopped processing it (a mandatory
        # RETRIEVE): once our terminate is scheduled, forwarding it back would only get it rejected
        # (UPLOAD_IN_PROGRESS) and lost, so it waits for the upload like frames that arrive while terminating.
        if c.mode == OFFLOADED and not c.terminate_scheduled:
            self.count("frames_forwarded")
            self.host.chimney.tcp_forward(c, [NetBufferList(data=frame)])
        elif len(c.pending_frames) < MAX_QUEUED_FRAMES:
            c.pending_frames.append((frame, seg))
        else:
            self.host.drops.count("offload-frame-queue-full")

    def on_forward_complete(self, c: Any, nbls: list[NetBufferList]) -> None:
        """Forwarded frames the target refused (it stopped the connection for an upload) are kept for the host."""
        self.count("forwards_completed")
        if not isinstance(c, Connection) or c.mode not in (OFFLOADED, TERMINATING):
            return
        for nbl in nbls:
            if nbl.status == _SUCCESS:
                continue
            parsed = safe_parse(nbl.data, self.host.drops, False)
            if type(parsed) is TcpFrame and len(c.pending_frames) < MAX_QUEUED_FRAMES:
                self.count("frames_forward_refused")
                c.pending_frames.append((nbl.data, parsed.seg))

    def _notify(self, c: Connection) -> None:
        if not c.notify_scheduled:
            c.notify_scheduled = True
            self.host.scheduler.call_soon(self._notify_now, c)

    def _notify_now(self, c: Connection) -> None:
        c.notify_scheduled = False
        sock = c.sock
        if sock is not None and sock.on_readable is not None and (c.listener is None or c.accepted):
            sock.on_readable()

    def on_receive_indicate(self, c: Any, nbl: NetBufferList) -> tuple[int, int]:
        if not isinstance(c, Connection) or c.mode == CLOSED or c.mode == SOFTWARE:
            self.count("stray_indications")
            return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        data = nbl.data[nbl.offset :] if nbl.offset else nbl.data
        n = len(data)
        room = c.iface.tcp_config.rcv_buf - len(c.rx_buf)
        if n <= room:
            c.rx_buf += data
            status, consumed = _SUCCESS, n
        elif room > 0:
            c.rx_buf += data[:room]
            status, consumed = NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED, room
            c.rx_refused = True
        else:
            c.rx_refused = True
            return NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0
        if consumed:
            self._notify(c)
            if c.waiting_bytes:
                c.waiting_bytes = False
        return status, consumed

    def on_receive_complete(self, c: Any, nbls: list[NetBufferList]) -> None:
        if not isinstance(c, Connection):
            return
        got = False
        for nbl in nbls:
            n = nbl.bytes_transferred
            data = nbl.data[:n] if n else b""
            if data:
                c.rx_buf += data
                got = True
        if got:
            self._notify(c)

    def on_send_complete(self, c: Any, nbls: list[NetBufferList]) -> None:
        if not isinstance(c, Connection):
            return
        lst = c.send_nbls
        take_back = False
        for nbl in nbls:
            st = nbl.status
            if st == _SUCCESS or st == NdisStatus.REQUEST_ABORTED:
                if lst and lst[0] is nbl:
                    del lst[0]
                else:
                    try:
                        lst.remove(nbl)
                    except ValueError:
                        self.count("unknown_send_completions")
            else:
                take_back = True  # UPLOAD_IN_PROGRESS (or a failure): the data comes back to the host at upload
        if take_back and c.mode == OFFLOADED:
            self._schedule_terminate(c, "target", "upload_in_progress")
        sock = c.sock
        if sock is not None and sock.on_writable is not None and c.mode != CLOSED:
            sock.on_writable()

    def on_disconnect_complete(self, c: Any, nbl: NetBufferList) -> None:
        if not isinstance(c, Connection):
            return
        if nbl is c.abort_nbl:
            if c.mode == OFFLOADED:
                self._schedule_terminate(c, "host", "abort")
            return
        if nbl is not c.disconnect_nbl:
            self.count("unknown_disconnect_completions")
            return
        c.disconnect_status = nbl.status
        if nbl.status == _SUCCESS:
            c.fin_acked = True
            s = c.off_state
            if s == TcpState.FIN_WAIT_1:
                c.off_state = TcpState.FIN_WAIT_2
            elif s == TcpState.CLOSING:
                c.off_state = TcpState.TIME_WAIT
            elif s == TcpState.LAST_ACK:
                c.off_state = TcpState.CLOSED
            self._check_final(c)

    def _check_final(self, c: Connection) -> None:
        """Both FINs exchanged and ours ACKed (or sent before the offload): the host takes it back for TIME_WAIT."""
        if c.mode == OFFLOADED and c.peer_closed and c.app_closed and (c.fin_acked or c.disconnect_nbl is None):
            self._schedule_terminate(c, "host", "final")

    # ------------------------------------------------------------------------------------------------ events
    def on_tcp_event(self, c: Any, event_type: int, info: int) -> None:
        if not isinstance(c, Connection) or c.mode == SOFTWARE or c.mode == CLOSED:
            self.count("stray_events")
            return
        if event_type == TcpEventType.DISCONNECT:
            c.peer_closed = True
            s = c.off_state
            if s == TcpState.ESTABLISHED:
                c.off_state = TcpState.CLOSE_WAIT
            elif s == TcpState.FIN_WAIT_1:
                c.off_state = TcpState.CLOSING
            elif s == TcpState.FIN_WAIT_2:
                c.off_state = TcpState.TIME_WAIT
            self._notify(c)
            self._check_final(c)
        elif event_type == TcpEventType.ABORT:
            c.peer_aborted = True
            c.off_state = TcpState.CLOSED
            self._trace("abort", conn=c.label)
            self._schedule_terminate(c, "target", "peer_reset")
        elif event_type == TcpEventType.RETRIEVE:
            self.count("retrieves_received")
            try:
                reason: UploadReason | None = UploadReason(info)
            except ValueError:
                reason = None
            name = reason.name if reason is not None else f"reason_{info}"
            self._trace("retrieve", conn=c.label, reason=name)
            if reason is None or reason.mandatory or self.host.policy.honor_optional:
                self._schedule_terminate(c, "target", name)
            else:
                self.count("retrieves_declined")
        elif event_type == TcpEventType.SEND_BACKLOG_CHANGE:
            c.backlog = info
        else:
            self.count("bad_events")

    def on_status_indication(self, target_id: int, status: int, info: Any) -> None:
        t = self.targets.get(target_id)
        if t is None:
            return
        host = self.host
        if status == NdisStatus.UPLOAD_ALL:
            self.count("upload_alls")
            self._trace("upload_all", target=t.name, connections=len(t.conns))
            t.paused = True
            t.upload_all = True
            t.release = True
            t.blocked = {}
            for c in list(t.conns):
                self._schedule_terminate(c, "target", "upload_all")
            self._cleanup(t)
        elif status == NdisStatus.OFFLOAD_PAUSE:
            self.count("pauses")
            self._trace("pause", target=t.name)
            t.paused = True
        elif status == NdisStatus.OFFLOAD_RESUME:
            self.count("resumes")
            t.caps = host.chimney.query_capabilities(target_id)
            self._trace("resume", target=t.name, max_connections=t.caps.max_connections)
            t.paused = False
            t.upload_all = False
            if not t.paths and not t.neighbors:
                t.release = False
            if host.policy.reoffload_after_resume:
                self._kick_all(t)
            else:
                self._kick_explicit(t)
        elif status == NdisStatus.LINK_STATE:
            up = bool(getattr(info, "up", info))
            self._trace("link_state", target=t.name, up=up)
            t.link_up = up
            if not up:
                if host.policy.upload_on_link_down:
                    for c in list(t.conns):
                        self._schedule_terminate(c, "host", "link_down")
            else:
                self._kick_all(t)
        else:
            self.count("other_status_indications")

    def _kick_explicit(self, t: TargetInfo) -> None:
        for c in list(t.blocked):
            if c.offload_requested is not None:
                t.blocked.pop(c, None)
                self.consider(c)

    def on_violation(self, violation: Exception) -> None:
        self.count("violations")
        self._trace("violation", detail=str(violation))
        handle = getattr(violation, "handle", None)
        if isinstance(handle, Connection) and handle.mode == OFFLOADED:
            self._schedule_terminate(handle, "host", "violation")

    def on_finished(self, c: Connection) -> None:
        if c.offload_target is not None:
            t = self.targets.get(c.offload_target)
            if t is not None:
                t.blocked.pop(c, None)
        for t in self.targets.values():
            t.blocked.pop(c, None)
            t.batch.pop(c, None)

    # ------------------------------------------------------------------------------------------------ update
    def neighbor_mac_changed(self, ip: bytes, mac: bytes) -> None:
        """ARP learned a new MAC for a next hop: offloaded neighbors get a cached-state update."""
        for t in self.targets.values():
            nbr = t.neighbors.get(ip)
            if nbr is not None:
                nbr.mac = mac
                self._update_neighbor(t, nbr)

    def _update_neighbor(self, t: TargetInfo, nbr: NeighborRecord) -> None:
        if nbr.state != S_OFFLOADED or nbr.updating or nbr.mac == nbr.offloaded_mac:
            return  # one update at a time; none while it is offloading or terminating
        nbr.updating = True
        nbr.sent_mac = nbr.mac
        self.count("neighbor_updates")
        self._trace("neighbor_update", target=t.name, mac=nbr.mac.hex(":"))
        block = neighbor_block(cached=NeighborCached(nbr.mac), context=ContextSlot(nbr.context), handle=nbr)
        self.host.chimney.update_offload(t.target_id, block)

    def on_update_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.count("updates_completed")
        t = self.targets[target_id]
        for block in tree.walk():
            h = block.ndis_offload_handle
            if isinstance(h, NeighborRecord) and h.updating:
                h.updating = False
                if block.status == _SUCCESS:
                    h.offloaded_mac = h.sent_mac
                else:
                    self.count("update_failures")
                    h.offloaded_mac = h.mac  # do not loop on a target that refuses it
                self._update_neighbor(t, h)
        self._cleanup(t)

    # ------------------------------------------------------------------------------------------------ terminate
    def request_terminate(self, c: Connection, by: str, reason: str) -> None:
        if c.mode == OFFLOADING:
            if c.terminate_after_offload is None:
                c.terminate_after_offload = (by, reason)
        elif c.mode == OFFLOADED:
            self._schedule_terminate(c, by, reason)

    def terminate_all(self, target_id: int, by: str, reason: str, *, release: bool) -> None:
        t = self.targets[target_id]
        if release:
            t.release = True
        for c in list(t.conns):
            self.request_terminate(c, by, reason)
        self._cleanup(t)

    def _schedule_terminate(self, c: Connection, by: str, reason: str) -> None:
        if c.mode == OFFLOADING:
            if c.terminate_after_offload is None:
                c.terminate_after_offload = (by, reason)
            return
        if c.mode != OFFLOADED or c.terminate_scheduled:
            if c.terminate_scheduled and c.terminate_reason == "upload_in_progress" and reason != c.terminate_reason:
                # Sends completed UPLOAD_IN_PROGRESS just ahead of the target's RETRIEVE: record the real reason.
                c.terminate_by = by
                c.terminate_reason = reason
            self.count("terminate_requests_absorbed")
            return
        c.terminate_scheduled = True
        c.terminate_by = by
        c.terminate_reason = reason
        if not self._terminate_queue:
            self.host.scheduler.call_soon(self._flush_terminates)
        self._terminate_queue.append(c)

    def _flush_terminates(self) -> None:
        """Scheduled terminates go to each target as trees of sibling TCP blocks (a terminate may name any number of
        connections): an UPLOAD_ALL of n connections is n / _TERMINATE_BATCH operations, not n.

        One batch per pass: the rest follows in a later pass, after the target has had its turn to complete this
        one, so the blocks of only one batch are alive at a time (thousands of live blocks would mostly cost the
        garbage collector).  A pass stays scheduled exactly while the queue is not empty.
        """
        queue = self._terminate_queue
        batch = queue[:_TERMINATE_BATCH]
        self._terminate_queue = queue[_TERMINATE_BATCH:]
        try:
            trees: dict[int, list[OffloadBlock]] = {}
            started: list[Connection] = []
            for c in batch:
                block = self._start_terminate(c)
                if block is not None:
                    assert c.offload_target is not None
                    trees.setdefault(c.offload_target, []).append(block)
                    started.append(c)
            timeout = self.host.policy.terminate_timeout
            if started and timeout and timeout != math.inf:
                # One watchdog for the whole batch (all started now), not a timer per connection: a cancelled
                # per-connection timer would sit in the scheduler for the whole timeout, for the GC to walk.
                watch = _TerminateWatch(started)
                watchdog = watch.timer = self.host.scheduler.call_later(timeout, self._terminate_timeouts, watch)
                for c in started:
                    c.watchdog = watchdog
            chimney = self.host.chimney
            for tid, blocks in trees.items():
                root = link_siblings(blocks)
                assert root is not None
                chimney.terminate_offload(tid, root)
        finally:
            if self._terminate_queue:  # after the target scheduled this batch's completion, so that comes first
                self.host.scheduler.call_soon(self._flush_terminates)

    def _start_terminate(self, c: Connection) -> OffloadBlock | None:
        """Move a scheduled terminate to TERMINATING; the block to send, or None if it is no longer offloaded."""
        c.terminate_scheduled = False
        if c.mode != OFFLOADED:
            return None
        tid = c.offload_target
        assert tid is not None
        by, reason = c.terminate_by, c.terminate_reason
        c.mode = TERMINATING
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.by_requester[by] = self.by_requester.get(by, 0) + 1
        self._trace("terminate_start", conn=c.label, by=by, reason=reason)
        return tcp_block(context=ContextSlot(c.context), handle=c)

    def _terminate_timeouts(self, watch: _TerminateWatch) -> None:
        """The watchdog of a terminate batch fired: the connections it still watches time out."""
        timer = watch.timer
        for c in watch.conns:
            if c.watchdog is timer:  # not completed (nor terminated again under a later watchdog) since
                self._terminate_timeout(c)

    def _terminate_timeout(self, c: Connection) -> None:
        c.watchdog = None
        if c.mode != TERMINATING:
            return
        self.count("terminate_timeouts")
        pending: Any = None
        fn = getattr(self.host.chimney, "pending_operations", None)
        if callable(fn):
            try:
                pending = fn()
            except Exception as exc:  # diagnostics only: never let them break the recovery
                pending = f"pending_operations failed: {exc!r}"
        self._trace("terminate_timeout", conn=c.label, pending=str(pending)[:500])
        self.host._finish(c, "timeout")

    def on_terminate_complete(self, target_id: int, tree: OffloadBlock) -> None:
        t = self.targets[target_id]
        for block in tree.walk():
            h = block.ndis_offload_handle
            if isinstance(h, Connection):
                self._tcp_terminated(t, h, block)
            elif isinstance(h, PathRecord):
                self._drop_path(t, h)
                self._trace("path_terminated", status=_status_name(block.status))
            elif isinstance(h, NeighborRecord):
                if t.neighbors.get(h.ip) is h:
                    del t.neighbors[h.ip]
                self._trace("neighbor_terminated", status=_status_name(block.status))
        self._cleanup(t)
        self._kick(t)

    def _tcp_terminated(self, t: TargetInfo, c: Connection, block: OffloadBlock) -> None:
        host = self.host
        c.watchdog = None  # shared by the batch (see _flush_terminates): not cancelled, it only skips this one now
        self._detach(t, c)
        status = block.status
        if host.tracer.enabled:
            self._trace(
                "terminate_done",
                conn=c.label,
                by=c.terminate_by,
                reason=c.terminate_reason,
                status=_status_name(status),
            )
        if c.mode != TERMINATING:  # the watchdog gave up on it already
            return
        send_data = c.remaining_send()
        # Emptied lists are replaced only when they hold something: a fresh list per connection per terminate is
        # one more long-lived object for the cyclic GC (an UPLOAD_ALL does this for every connection).
        if c.pending_writes:
            send_data += b"".join(c.pending_writes)
            c.pending_writes = []
        if c.send_nbls:
            c.send_nbls = []
        recv = b"".join(n.data[n.offset :] for n in block.buffered_data or ())
        delegated = block.delegated
        if status != _SUCCESS or delegated is None:
            self.count("terminate_failures")
            if c.pending_frames:
                c.pending_frames = []
            host._finish(c, "reset")
            return
        if c.peer_aborted or (c.app_aborted and c.abort_nbl is not None and c.abort_nbl.status == _SUCCESS):
            c.rx_buf += recv
            if c.pending_frames:
                c.pending_frames = []
            host._finish(c, "reset")
            return
        if delegated.state == TcpState.CLOSED:
            c.rx_buf += recv
            if c.pending_frames:
                c.pending_frames = []
            host._finish(c, "reset" if c.app_aborted else "closed")
            return
        assert c.const is not None and c.cached is not None
        now = host.scheduler.now()
        c.engine = TcpConnection.from_state(
            c.iface.tcp_config,
            c.const,
            c.cached,
            delegated,
            send_data=send_data,
            recv_buffered=recv,
            now=now,
            send_closed=c.app_closed,
        )
        c.mode = SOFTWARE
        if delegated.fin_received:
            c.peer_closed = True
        c.no_offload_until = now + self._backoff(c.terminate_reason)
        self._resume_software(c)

    def _backoff(self, reason: str) -> float:
        pol = self.host.policy
        try:
            return pol.backoff_for(UploadReason[reason])
        except KeyError:
            return pol.backoff_for(reason)

    def _cleanup(self, t: TargetInfo) -> None:
        """Terminate paths and neighbors that have no connections left, when the host wants them gone."""
        if not (t.release or self.host.policy.release_idle_paths):
            return
        chimney = self.host.chimney
        for nbr in list(t.neighbors.values()):
            if nbr.state != S_OFFLOADED or nbr.updating:
                continue
            idle = [p for p in nbr.paths if p.state == S_OFFLOADED and not p.conns]
            busy = any(p.state != S_OFFLOADED or p.conns for p in nbr.paths)
            if not busy:
                nbr.state = S_TERMINATING
                for p in idle:
                    p.state = S_TERMINATING
                nb = neighbor_block(context=ContextSlot(nbr.context), handle=nbr)
                nb.dependent_block_list = link_siblings(
                    [path_block(context=ContextSlot(p.context), handle=p) for p in idle]
                )
                self._trace("neighbor_terminate_start", paths=len(idle))
                chimney.terminate_offload(t.target_id, nb)
            elif idle:
                for p in idle:
                    p.state = S_TERMINATING
                root = link_siblings([path_block(context=ContextSlot(p.context), handle=p) for p in idle])
                assert root is not None
                self._trace("path_terminate_start", paths=len(idle))
                chimney.terminate_offload(t.target_id, root)
        if not t.neighbors and not t.paths and not t.upload_all:
            t.release = False


def _status_name(status: int | None) -> str:
    if status is None:
        return "NONE"
    try:
        return NdisStatus(status).name
    except ValueError:
        return hex(status)
