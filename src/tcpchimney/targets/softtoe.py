"""``SoftToe``: an emulated chimney-capable NIC (an ``OffloadTarget``) running the same TCP engine as the host.

Every state operation and every TCP I/O request returns at once and completes later from ``scheduler.call_soon``.
Offloaded connections are found from a 4-tuple peeked at fixed frame offsets; everything else goes up the ordinary
path unparsed.  Each connection has one timer (the engine's next deadline or the receive push timer) and a
``_service`` pass that moves data between the engine and the chimney after anything changed.

Choices the reference leaves open (documented here once):

* Receive data offered by indication is read from the engine first; bytes the host refuses stay in a small "hold"
  buffer in front of the engine's readable bytes and go back in ``BufferedData`` at terminate.
* A mandatory reason that arises in FIN_WAIT_1 / FIN_WAIT_2 / CLOSE_WAIT is deferred: the connection keeps running
  normally and the RETRIEVE is indicated (and the connection stopped) at the first state change that allows it.
  Urgent data in those states is the exception: it is handled inline by the engine (RFC 6093), because stopping a
  half-closed connection without being able to ask for its upload would strand it.  Optional reasons in those
  states are dropped (``stats.retrieves_suppressed``).
* ``request_retrieve`` raises ``RetrieveForbidden`` when the ban (or the connection's lifecycle) forbids it.
* A hardware failure makes the connection's state meaningless: if it was half-closed the target first reports
  it CLOSED (``note_tcp_state``) so the RETRIEVE(HardwareFailure) that must precede the ABORT is legal.
* ``set_link(False)`` emulates carrier loss at the NIC: frames are neither sent nor received until ``set_link(True)``.
* Query: SendBacklogSize / ReceiveBacklogSize are not modelled; 0xFFFFFFFF goes in ``block.miniport_reserved``.
* Path MTU: the NIC splits an engine segment that would not fit the path MTU (segmentation offload), so an MTU
  update takes effect at once without the engine knowing.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from tcpchimney.chimney.constants import (
    TCP_DISCONNECT_ABORTIVE_CLOSE,
    NdisStatus,
    TcpEventType,
    UploadReason,
)
from tcpchimney.chimney.objects import (
    Layer,
    LinkState,
    NeighborDelegated,
    NetBufferList,
    OffloadBlock,
    OffloadCapabilities,
    PathDelegated,
)
from tcpchimney.clock import Scheduler, TimerHandle
from tcpchimney.links.base import LinkPort
from tcpchimney.targets.contexts import NeighborContext, PathContext, PostRecord, SendRecord, TcpContext
from tcpchimney.targets.delivery import deliver, finish_post
from tcpchimney.targets.detectors import BacklogEstimator, ConnectionDetectors, DetectorConfig
from tcpchimney.targets.initiate_walk import initiate_walk
from tcpchimney.targets.nic_stats import NicConnectionInfo, SoftToeStats
from tcpchimney.targets.nic_table import ConnectionTable, connection_key, peek_tcp_key
from tcpchimney.tcp.engine import TcpConfig, TcpConnection, TcpPeerClosed, TcpReset, TcpTimedOut
from tcpchimney.tcp.state import (
    OFFLOADABLE_STATES,
    RETRIEVE_FORBIDDEN_STATES,
    TICKS_PER_SECOND,
    TcpState,
)
from tcpchimney.trace.tracer import NullTracer, Tracer
from tcpchimney.wire.addr import ip_to_str
from tcpchimney.wire.drops import DropCounter
from tcpchimney.wire.frame import TcpFrame, build_tcp_frame, parse_tcp_fast, safe_parse
from tcpchimney.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpSegment, decode_tcp, encode_tcp_options

_M = 0xFFFFFFFF
_NOT_MODELLED = 0xFFFFFFFF
_FIN_ACKED_STATES = frozenset({TcpState.FIN_WAIT_2, TcpState.TIME_WAIT, TcpState.CLOSED})
_GRACEFUL_SEND_CLOSED = frozenset(
    {TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2, TcpState.CLOSING, TcpState.LAST_ACK, TcpState.TIME_WAIT}
)
_SUCCESS = NdisStatus.SUCCESS


class RetrieveForbidden(RuntimeError):
    """``request_retrieve`` cannot indicate now (half-closed ban, connection not yet/no longer offloaded...)."""


class _PendingOp:
    """A state operation whose completion is scheduled (kept so a hardware failure can fail it at once)."""

    __slots__ = ("done", "handler", "timer", "tree")

    def __init__(self, tree: OffloadBlock, handler: Callable[[OffloadBlock], None]) -> None:
        self.tree = tree
        self.handler = handler
        self.timer: TimerHandle | None = None
        self.done = False


class SoftToe:
    """An emulated TCP-offload NIC.  See the module docstring for the behaviour the reference leaves open."""

    def __init__(
        self,
        scheduler: Scheduler,
        port: LinkPort,
        mac: bytes,
        *,
        name: str = "nic0",
        max_connections: int = 1024,
        buffer_bytes: int = 64 * 1024 * 1024,
        tcp_config: TcpConfig | None = None,
        detectors: DetectorConfig | None = None,
        tracer: Tracer | None = None,
        offload_enabled: bool = True,
        push_timeout: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.mac = mac
        self._sched = scheduler
        self._on_timer_cb = self._on_timer  # one bound method for every connection's timer (see HostStack)
        self._port = port
        self.max_connections = max_connections
        self.buffer_bytes = buffer_bytes
        self.offload_enabled = offload_enabled
        self.tcp_config = tcp_config or TcpConfig()
        self.detector_config = detectors or DetectorConfig()
        self.push_timeout = push_timeout
        self._rng = rng  # reserved for randomized policies; nothing random happens without it
        self._tracer: Tracer = tracer or NullTracer()
        self.stats = SoftToeStats()
        self.drops = DropCounter()
        self._chimney: Any = None
        self._target_id = -1
        self._note_state: Callable[[Any, TcpState], None] | None = None
        self._table: ConnectionTable[TcpContext] = ConnectionTable()
        self._tcps: dict[int, TcpContext] = {}  # id(context) -> context (also the "is it mine" test)
        self._tcp_keys: dict[bytes, int] = {}  # 4-tuple key -> how many contexts in _tcps hold it (O(1) dup test)
        self._paths: dict[int, PathContext] = {}
        self._neighbors: dict[int, NeighborContext] = {}
        self._by_handle: dict[Any, TcpContext] = {}  # host handle (hashable, as the mediator needs) -> context
        self._ip_id = 0
        self._buffered_total = 0
        self._link_up = True
        self._paused = False
        self._queued_initiates: list[OffloadBlock] = []
        self._upload_all_pending = False
        self._resume_after: float | None = None
        self._resume_requested = False
        self._pending_ops: list[_PendingOp] = []
        self._sweep_timer: TimerHandle | None = None
        port.set_receiver(self._on_frame)
        port.set_link_listener(self._on_port_link)

    # ================================================================================================ OffloadTarget

    def bind(self, chimney: Any, target_id: int) -> None:
        self._chimney = chimney
        self._target_id = target_id
        self._note_state = getattr(chimney, "note_tcp_state", None)

    def query_capabilities(self) -> OffloadCapabilities:
        enabled = self.offload_enabled and self.max_connections > 0
        return OffloadCapabilities(
            max_connections=self.max_connections if enabled else 0,
            max_buffer_bytes=self.buffer_bytes if enabled else 0,
            timestamps=self.tcp_config.timestamps,
            sack=self.tcp_config.sack,
            window_scaling=self.tcp_config.window_scale,
            ticks_per_second=TICKS_PER_SECOND,
        )

    def set_capabilities(
        self,
        *,
        max_connections: int | None = None,
        buffer_bytes: int | None = None,
        offload_enabled: bool | None = None,
    ) -> None:
        """Change what the next ``query_capabilities`` reports (the host re-queries after RESUME)."""
        if max_connections is not None:
            self.max_connections = max_connections
        if buffer_bytes is not None:
            self.buffer_bytes = buffer_bytes
        if offload_enabled is not None:
            self.offload_enabled = offload_enabled

    def initiate_offload(self, tree: OffloadBlock) -> None:
        if self._paused:
            self._queued_initiates.append(tree)  # a paused target queues initiates, never fails them
            return
        self._schedule_op(tree, self._do_initiate)

    def terminate_offload(self, tree: OffloadBlock) -> None:
        # Stop processing at once: from now on segments of these connections go up the ordinary path.
        for block in tree.walk():
            tc = self._own_tcp(block.context) if block.layer == Layer.TCP else None
            if tc is not None and not tc.terminating:
                tc.terminating = True
                self._table.remove(tc.key)
                self._cancel_timer(tc)
        self._schedule_op(tree, self._do_terminate)

    def update_offload(self, tree: OffloadBlock) -> None:
        self._schedule_op(tree, self._do_update)

    def invalidate_offload(self, tree: OffloadBlock) -> None:
        self._schedule_op(tree, self._do_invalidate)

    def query_offload(self, tree: OffloadBlock) -> None:
        self._schedule_op(tree, self._do_query)

    def tcp_send(self, context: Any, nbls: list[NetBufferList]) -> None:
        tc = self._own_tcp(context)
        reject = self._io_reject_status(tc)
        if tc is None or reject is not None:
            self._reject_later(tc, "send", nbls, reject)
            return
        eng = tc.engine
        sends = tc.sends
        if sends is None:
            sends = tc.sends = deque()
        pos = tc.appended
        for nbl in nbls:
            data = nbl.data[nbl.offset :] if nbl.offset else nbl.data
            end = pos + len(data)
            sends.append(SendRecord(nbl, pos, end))
            if data:
                eng.send(data)
            pos = end
        tc.appended = pos
        self._schedule_service(tc)

    def tcp_receive(self, context: Any, nbls: list[NetBufferList]) -> None:
        tc = self._own_tcp(context)
        reject = self._io_reject_status(tc)
        if tc is not None and reject is None and tc.disconnect_indicated and not tc.hold and not tc.engine.readable:
            reject = NdisStatus.INVALID_STATE  # posted after the Disconnect indication: nothing will arrive
        if tc is None or reject is not None:
            self._reject_later(tc, "receive", nbls, reject)
            return
        det = tc.detectors
        posts = tc.posts
        if posts is None:
            posts = tc.posts = deque()
        for nbl in nbls:
            posts.append(PostRecord(nbl))
            reason = det.on_receive_post(nbl.capacity)
            if reason is not None:
                self._sched.call_soon(self._raise_optional, tc, reason)
        self._schedule_service(tc)

    def tcp_receive_return(self, context: Any, nbls: list[NetBufferList]) -> None:
        """Indicated NBLs coming back: the NIC copied the data, so there is nothing to release."""
        return

    def tcp_disconnect(self, context: Any, nbl: NetBufferList, flags: int) -> None:
        tc = self._own_tcp(context)
        reject = self._io_reject_status(tc)
        if tc is not None and reject is None and tc.disconnect is not None:
            reject = NdisStatus.FAILURE  # a second disconnect while one is pending
        if tc is None or reject is not None:
            self._reject_later(tc, "disconnect", [nbl], reject)
            return
        eng = tc.engine
        tc.disconnect = nbl
        if flags & TCP_DISCONNECT_ABORTIVE_CLOSE:
            eng.abort()
            tc.aborted = True
            self._sched.call_soon(self._finish_abortive, tc)
            return
        data = nbl.data[nbl.offset :]
        tc.disc_start = tc.appended
        tc.disc_end = tc.appended + len(data)
        tc.appended = tc.disc_end
        if data:
            eng.send(data)
        eng.close()
        self._schedule_service(tc)

    def tcp_forward(self, context: Any, nbls: list[NetBufferList]) -> None:
        tc = self._own_tcp(context)
        reject = self._io_reject_status(tc)
        if tc is None or reject is not None:
            self._reject_later(tc, "forward", nbls, reject)
            return
        self._sched.call_soon(self._do_forward, tc, nbls)

    def send_frame(self, frame: bytes) -> None:
        if not self._link_up:
            self.stats.frames_dropped += 1
            return
        self.stats.frames_out += 1
        self._port.transmit(frame)

    # ================================================================================================ control API

    def request_retrieve(self, handle: Any, reason: UploadReason) -> None:
        """Indicate RETRIEVE(reason) for one connection now.

        Raises ``KeyError`` for an unknown handle and ``RetrieveForbidden`` when the connection is half-closed
        (FIN_WAIT_1 / FIN_WAIT_2 / CLOSE_WAIT), its initiate has not completed, or it is being terminated.
        ``HARDWARE_FAILURE`` runs the whole hardware-failure sequence (``inject_hardware_failure``).
        """
        tc = self._tc_for_handle(handle)
        reason = UploadReason(reason)
        if reason == UploadReason.HARDWARE_FAILURE:
            self.inject_hardware_failure(handle)
            return
        if not tc.initiated or tc.terminating:
            raise RetrieveForbidden(f"{self.name}: connection is not (or no longer) offloaded: {tc!r}")
        if tc.engine.state in RETRIEVE_FORBIDDEN_STATES:
            raise RetrieveForbidden(f"{self.name}: RETRIEVE is forbidden in {tc.engine.state.name}")
        if tc.hw_failed:
            raise RetrieveForbidden(f"{self.name}: connection already failed (abort sequence under way)")
        if tc.stopped:
            # Already waiting for the terminate: repeating the request is legal and changes nothing else.
            self._indicate_retrieve(tc, reason)
            return
        if reason.mandatory:
            self._raise_mandatory(tc, reason)
        else:
            tc.detectors.fired(reason, self._sched.now())
            self._indicate_retrieve(tc, reason)

    def request_upload_all(self, resume_after: float | None = 0.0) -> None:
        """PAUSE, then UPLOAD_ALL; with ``resume_after`` set, OFFLOAD_RESUME that long after the last terminate."""
        self._resume_after = resume_after
        self._resume_requested = False
        if not self._paused:
            self._paused = True
            self._indicate_status(NdisStatus.OFFLOAD_PAUSE, None)
        self._upload_all_pending = True
        self._indicate_status(NdisStatus.UPLOAD_ALL, None)
        self._check_upload_all_done()

    def pause(self) -> None:
        """OFFLOAD_PAUSE: the host offloads nothing new; initiates that still arrive are queued until resume."""
        if not self._paused:
            self._paused = True
            self._indicate_status(NdisStatus.OFFLOAD_PAUSE, None)

    def resume(self) -> None:
        """OFFLOAD_RESUME now, or (while an UPLOAD_ALL is pending) as soon as its terminations completed."""
        if self._upload_all_pending:
            self._resume_requested = True
            return
        self._do_resume()

    def inject_hardware_failure(self, handle: Any) -> None:
        """Corrupt one connection's hardware state: FAILURE for an operation in flight, RETRIEVE, then ABORT."""
        tc = self._tc_for_handle(handle)
        if tc.hw_failed or tc.terminating:
            return
        tc.hw_failed = True
        tc.aborted = True
        self.stats.hardware_failures += 1
        self._stop_processing(tc)
        self._trace("nic.hw_failure", conn=tc.const.local_port)
        # 1. an operation in flight on it completes now, with FAILURE for this connection's block
        for op in list(self._pending_ops):
            if not op.done and any(b.context is tc for b in op.tree.walk()):
                if op.timer is not None:
                    op.timer.cancel()
                self._run_op(op)
        # 2-3. RETRIEVE(HardwareFailure), then ABORT
        self._sched.call_soon(self._hw_indicate, tc)

    def set_link(self, up: bool) -> None:
        """Emulated carrier change: indicate LINK_STATE; the NIC never uploads by itself on link loss."""
        if up == self._link_up:
            return
        self._link_up = up
        self._indicate_status(NdisStatus.LINK_STATE, LinkState(up))

    def connections(self) -> list[NicConnectionInfo]:
        out = []
        for tc in self._tcps.values():
            st = tc.engine.stats
            out.append(
                NicConnectionInfo(
                    handle=tc.handle,
                    local_ip=ip_to_str(tc.path.src),
                    local_port=tc.const.local_port,
                    remote_ip=ip_to_str(tc.path.dst),
                    remote_port=tc.const.remote_port,
                    state=tc.engine.state,
                    bytes_in=st.bytes_in,
                    bytes_out=st.bytes_out,
                    since=tc.since,
                    stopped_reason=None if tc.stop_reason is None else UploadReason(tc.stop_reason),
                )
            )
        return out

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def upload_all_pending(self) -> bool:
        return self._upload_all_pending

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_total

    def context_for(self, handle: Any) -> TcpContext | None:
        """The context of an offloaded connection (tests and ``chimney ctl`` introspection)."""
        return self._by_handle.get(handle)

    # ================================================================================================ state ops

    def _schedule_op(self, tree: OffloadBlock, handler: Callable[[OffloadBlock], None]) -> None:
        op = _PendingOp(tree, handler)
        self._pending_ops.append(op)
        op.timer = self._sched.call_soon(self._run_op, op)

    def _run_op(self, op: _PendingOp) -> None:
        if op.done:
            return
        op.done = True
        op.timer = None  # op <-> handle is a reference cycle: break it so both die by refcount, not by the GC
        self._pending_ops.remove(op)
        op.handler(op.tree)

    # ---- initiate -----------------------------------------------------------------------------------------------
    def _do_initiate(self, tree: OffloadBlock) -> None:
        created = initiate_walk(tree, self._offload_new, self._owns)
        new_tcps = [c for c in created if isinstance(c, TcpContext)]
        self.stats.initiates += 1
        self.stats.initiate_failures += sum(1 for b in tree.walk() if b.is_new_offload)  # new, not offloaded
        self._trace("nic.initiate", new_tcps=len(new_tcps))
        self._chimney.initiate_offload_complete(self._target_id, tree)
        for tc in new_tcps:
            if tc.terminating:
                continue
            tc.initiated = True
            if tc.last_state != tc.engine.state:
                self._note(tc)
            self._ensure_sweep()
            self._schedule_service(tc)
            if tc.pending_reason is not None:
                self._sched.call_soon(self._retry_deferred, tc)

    def _offload_new(self, block: OffloadBlock, parent: Any) -> tuple[int, Any]:
        now = self._sched.now()
        if not self.offload_enabled:
            return NdisStatus.FAILURE, None
        if block.layer == Layer.NEIGHBOR:
            const, cached = block.const, block.cached
            if const is None or cached is None:
                return NdisStatus.FAILURE, None
            if len(const.dl_source_address) != 6 or len(cached.dl_destination_address) != 6:
                return NdisStatus.OFFLOAD_HW_ADDRESS_ENTRIES, None
            if not 0 <= const.vlan_id < 4095:
                return NdisStatus.OFFLOAD_VLAN_ENTRIES, None
            nb = NeighborContext(block.ndis_offload_handle, const, cached, now)
            self._neighbors[id(nb)] = nb
            return _SUCCESS, nb
        if block.layer == Layer.PATH:
            if not isinstance(parent, NeighborContext) or not parent.valid:
                return NdisStatus.FAILURE, None
            const, pcached = block.const, block.cached
            if const is None or pcached is None:
                return NdisStatus.FAILURE, None
            if len(const.source_address) != 4 or len(const.destination_address) != 4:
                return NdisStatus.OFFLOAD_IP_ADDRESS_ENTRIES, None  # IPv4 only
            if pcached.path_mtu < 68:
                return NdisStatus.FAILURE, None
            path = PathContext(block.ndis_offload_handle, const, pcached, parent)
            parent.paths.append(path)
            self._paths[id(path)] = path
            return _SUCCESS, path
        return self._offload_tcp(block, parent, now)

    def _offload_tcp(self, block: OffloadBlock, parent: Any, now: float) -> tuple[int, Any]:
        if not isinstance(parent, PathContext) or not parent.usable:
            return NdisStatus.FAILURE, None
        const, cached, deleg = block.const, block.cached, block.delegated
        if const is None or cached is None or deleg is None:
            return NdisStatus.FAILURE, None
        if len(self._tcps) >= self.max_connections:
            return NdisStatus.OFFLOAD_TCP_ENTRIES, None
        state = deleg.state if type(deleg.state) is TcpState else TcpState(deleg.state)
        if state not in OFFLOADABLE_STATES:
            return NdisStatus.FAILURE, None
        key = connection_key(parent.src, parent.dst, const.local_port, const.remote_port)
        if key in self._table or key in self._tcp_keys:
            return NdisStatus.FAILURE, None  # the same 4-tuple is already here
        if cached.initial_rcv_wnd > self.buffer_bytes:
            return NdisStatus.OFFLOAD_TCP_RCV_WINDOW, None
        chain = block.net_buffer_list_chain or []
        send_data = b"".join(nbl.data[nbl.offset :] for nbl in chain)
        recv = b"".join(nbl.data[nbl.offset :] for nbl in (block.buffered_data or []))
        room = self.buffer_bytes - self._buffered_total
        if len(send_data) > room:
            return NdisStatus.OFFLOAD_TCP_XMIT_BUFFER, None
        if len(send_data) + len(recv) > room:
            return NdisStatus.FAILURE, None  # cannot copy the buffered receive data (reference 2.1)
        send_closed = bool(deleg.fin_sent) or state in _GRACEFUL_SEND_CLOSED
        try:
            engine = TcpConnection.from_state(
                self.tcp_config,
                const,
                cached,
                deleg,
                send_data=send_data,
                recv_buffered=recv,
                now=now,
                send_closed=send_closed,
            )
        except Exception as exc:  # a state the engine refuses: fail this connection only
            self._trace("nic.initiate_error", error=repr(exc))
            return NdisStatus.FAILURE, None
        cfg = self.detector_config
        tc = TcpContext(
            block.ndis_offload_handle,
            parent,
            const,
            cached,
            engine,
            key,
            ConnectionDetectors(cfg, engine.stats, now),
            None,  # the backlog estimator is created by the first sweep that needs it
            now,
        )
        tc.last_state = state
        pos = 0
        if chain:
            sends = tc.sends = deque()
            for nbl in chain:
                end = pos + len(nbl.data) - nbl.offset
                sends.append(SendRecord(nbl, pos, end))
                pos = end
        tc.appended = pos
        parent.tcps[tc] = None
        self._tcps[id(tc)] = tc
        self._tcp_keys[key] = self._tcp_keys.get(key, 0) + 1
        self._by_handle[tc.handle] = tc
        self._table.add(key, tc)  # active at once: segments are processed from now on
        self._account(tc)
        return _SUCCESS, tc

    # ---- terminate ----------------------------------------------------------------------------------------------
    def _do_terminate(self, tree: OffloadBlock) -> None:
        blocks = list(tree.walk())
        for b in blocks:
            if b.is_placeholder:
                b.status = _SUCCESS
        # dependents first: TCP, then paths, then neighbors
        for layer, fn in (
            (Layer.TCP, self._terminate_tcp),
            (Layer.PATH, self._terminate_path),
            (Layer.NEIGHBOR, self._terminate_neighbor),
        ):
            for b in blocks:
                if b.layer == layer and not b.is_placeholder:
                    fn(b)
        self.stats.terminates += 1
        self._trace("nic.terminate", blocks=len(blocks))
        self._chimney.terminate_offload_complete(self._target_id, tree)
        self._check_upload_all_done()

    def _terminate_tcp(self, block: OffloadBlock) -> None:
        tc = self._own_tcp(block.context)
        if tc is None:
            block.status = NdisStatus.FAILURE
            return
        now = self._sched.now()
        tc.terminating = True
        self._table.remove(tc.key)
        self._cancel_timer(tc)
        if tc.hw_failed:
            # The delegated state is lost: every outstanding request completes REQUEST_ABORTED, then FAILURE.
            self._abort_sends(tc)
            self._abort_posts(tc, everything=True)
            if tc.disconnect is not None:
                self._complete_disconnect(tc, NdisStatus.REQUEST_ABORTED)
            block.status = NdisStatus.FAILURE
            self._free_tcp(tc)
            return
        eng = tc.engine
        transmit = not (tc.stopped or tc.tx_blocked or tc.aborted)
        if transmit:
            self._transmit(tc, eng.segments_to_send(now))
        self._update_acked(tc)
        self._complete_acked_sends(tc)
        _const, _cached, deleg, send_data, recv = eng.export_state(now)
        # export_state queued the pending delayed ACK: put only that (pure ACKs) on the wire before completing
        tail = eng.segments_to_send(now)
        if not (tc.tx_blocked or tc.aborted):
            self._transmit(tc, [s for s in tail if s.flags == ACK and not s.payload])
        block.delegated = deleg
        # send data not fully ACKed goes back in its original NBLs, in order, trimmed past the ACKed bytes
        acked = tc.acked
        chain: list[NetBufferList] = []
        if tc.sends:
            for rec in tc.sends:
                nbl = rec.nbl
                nbl.offset = rec.orig_offset + max(0, min(acked, rec.end) - rec.start)
                chain.append(nbl)
            tc.sends.clear()
        block.net_buffer_list_chain = chain or None
        returned = sum(len(n.data) - n.offset for n in chain)
        if tc.disconnect is not None and tc.disc_end > tc.disc_start:
            returned += tc.disc_end - max(tc.disc_start, min(acked, tc.disc_end))
        if returned != len(send_data):
            self._trace("nic.send_mismatch", returned=returned, engine=len(send_data))
        # receive: partly filled posts complete SUCCESS (their bytes are older), the rest goes back buffered
        self._flush_posts_at_terminate(tc)
        buffered = tc.hold + recv
        tc.hold = b""
        block.buffered_data = [NetBufferList(data=buffered)] if buffered else None
        if tc.disconnect is not None:
            nbl = tc.disconnect
            if tc.disc_end > tc.disc_start:
                nbl.offset += max(0, min(acked, tc.disc_end) - tc.disc_start)
            self._complete_disconnect(tc, NdisStatus.UPLOAD_IN_PROGRESS)
        block.status = _SUCCESS
        self._free_tcp(tc)

    def _flush_posts_at_terminate(self, tc: TcpContext) -> None:
        done: list[NetBufferList] = []
        if tc.posts:
            for post in tc.posts:
                done.append(finish_post(post, _SUCCESS if post.filled else NdisStatus.UPLOAD_IN_PROGRESS))
            tc.posts.clear()
        if done:
            self._chimney.tcp_receive_complete(tc.handle, done)

    def _terminate_path(self, block: OffloadBlock) -> None:
        path = block.context
        if not isinstance(path, PathContext) or id(path) not in self._paths or path.tcps:
            block.status = NdisStatus.FAILURE  # unknown, or still has dependents that were not terminated
            return
        del self._paths[id(path)]
        if path in path.neighbor.paths:
            path.neighbor.paths.remove(path)
        block.delegated = PathDelegated()
        block.status = _SUCCESS

    def _terminate_neighbor(self, block: OffloadBlock) -> None:
        nb = block.context
        if not isinstance(nb, NeighborContext) or id(nb) not in self._neighbors or nb.paths:
            block.status = NdisStatus.FAILURE
            return
        del self._neighbors[id(nb)]
        block.delegated = self._neighbor_delegated(nb)
        block.status = _SUCCESS

    def _neighbor_delegated(self, nb: NeighborContext) -> NeighborDelegated:
        delta = int((self._sched.now() - nb.confirmed_at) * TICKS_PER_SECOND)
        return NeighborDelegated(nic_reachability_delta=min(max(delta, 0), _M))

    def _free_tcp(self, tc: TcpContext) -> None:
        if self._tcps.pop(id(tc), None) is not None:
            held = self._tcp_keys[tc.key] - 1
            if held:
                self._tcp_keys[tc.key] = held
            else:
                del self._tcp_keys[tc.key]
        self._by_handle.pop(tc.handle, None)
        self._table.remove(tc.key)
        tc.path.tcps.pop(tc, None)
        self._buffered_total -= tc.buffered
        tc.buffered = 0
        self._cancel_timer(tc)

    # ---- update / invalidate / query ----------------------------------------------------------------------------
    def _named_blocks(self, tree: OffloadBlock) -> Iterator[tuple[OffloadBlock, Any]]:
        """The blocks of an update/invalidate/query tree that name an object of ours, with its context.
        Placeholders get SUCCESS and blocks naming nothing of ours FAILURE on the way."""
        for block in tree.walk():
            if block.is_placeholder:
                block.status = _SUCCESS
                continue
            ctx = block.context
            if not self._owns(ctx, block.layer):
                block.status = NdisStatus.FAILURE
                continue
            yield block, ctx

    def _do_update(self, tree: OffloadBlock) -> None:
        now = self._sched.now()
        for block, ctx in self._named_blocks(tree):
            if isinstance(ctx, NeighborContext):
                if block.cached is not None:
                    ctx.cached = block.cached  # e.g. the next hop's MAC changed (ARP)
                for dep in block.dependents():
                    path = dep.context
                    if isinstance(path, PathContext) and id(path) in self._paths and path.neighbor is not ctx:
                        if path in path.neighbor.paths:
                            path.neighbor.paths.remove(path)  # relink the path to this neighbor
                        path.neighbor = ctx
                        ctx.paths.append(path)
                block.status = _SUCCESS
            elif isinstance(ctx, PathContext):
                if block.cached is not None:
                    ctx.cached = block.cached  # path MTU: the NIC splits segments to fit it
                block.status = _SUCCESS
            else:
                tc: TcpContext = ctx
                if tc.hw_failed or tc.terminating:
                    block.status = NdisStatus.FAILURE
                    continue
                if block.cached is not None:
                    tc.cached = block.cached
                    tc.engine.update_cached(block.cached, now)
                    self._schedule_service(tc)
                block.status = _SUCCESS
        self.stats.updates += 1
        self._chimney.update_offload_complete(self._target_id, tree)

    def _do_invalidate(self, tree: OffloadBlock) -> None:
        affected: list[TcpContext] = []
        for block, ctx in self._named_blocks(tree):
            if isinstance(ctx, TcpContext) and ctx.hw_failed:
                block.status = NdisStatus.FAILURE
                continue
            if isinstance(ctx, NeighborContext):
                ctx.valid = False
                affected.extend(t for p in ctx.paths for t in p.tcps)
            elif isinstance(ctx, PathContext):
                ctx.valid = False
                affected.extend(ctx.tcps)
            else:
                affected.append(ctx)
            block.status = _SUCCESS
        self.stats.invalidates += 1
        self._chimney.invalidate_offload_complete(self._target_id, tree)
        seen: set[int] = set()
        for tc in affected:
            if id(tc) in seen or tc.terminating:
                continue
            seen.add(id(tc))
            tc.tx_blocked = True  # never send on state that depends on an invalidated object
            self._raise_mandatory(tc, UploadReason.INVALID_STATE)

    def _do_query(self, tree: OffloadBlock) -> None:
        for block, ctx in self._named_blocks(tree):
            if isinstance(ctx, NeighborContext):
                block.const, block.cached = ctx.const, ctx.cached
                block.delegated = self._neighbor_delegated(ctx)
            elif isinstance(ctx, PathContext):
                block.const, block.cached = ctx.const, ctx.cached
                block.delegated = PathDelegated()
            else:
                tc: TcpContext = ctx
                if tc.hw_failed or tc.terminating:
                    block.status = NdisStatus.FAILURE
                    continue
                block.const, block.cached = tc.const, tc.cached
                block.delegated = self._snapshot(tc)
                block.miniport_reserved["send_backlog_size"] = _NOT_MODELLED
                block.miniport_reserved["receive_backlog_size"] = _NOT_MODELLED
            block.status = _SUCCESS
        self.stats.queries += 1
        self._chimney.query_offload_complete(self._target_id, tree)

    def _snapshot(self, tc: TcpContext) -> Any:
        """Current delegated state without giving the connection away: export, then continue from the export."""
        now = self._sched.now()
        if not (tc.stopped or tc.aborted):
            self._service(tc)  # drain output and events first, so nothing is pending across the swap
        old = tc.engine
        const, cached, deleg, send_data, recv = old.export_state(now)
        tail = old.segments_to_send(now)
        if not (tc.tx_blocked or tc.aborted):
            self._transmit(tc, [s for s in tail if s.flags == ACK and not s.payload])
        try:
            new = TcpConnection.from_state(
                self.tcp_config,
                const,
                cached,
                deleg,
                send_data=send_data,
                recv_buffered=recv,
                now=now,
                send_closed=old.send_closed,
            )
        except Exception:
            return deleg  # the exporter keeps running (export only flushed the ACK and dropped SACKed data)
        new.stats = old.stats
        tc.engine = new
        tc.last_una = new.snd_una
        if tc.timer is not None:
            self._cancel_timer(tc)
        self._schedule_service(tc)
        return deleg

    # ================================================================================================ data path

    def _on_frame(self, frame: bytes) -> None:
        stats = self.stats
        stats.frames_in += 1
        if not self._link_up:
            stats.frames_dropped += 1
            return
        by_key = self._table.by_key
        if by_key:  # fast path: with no connection offloaded nothing is peeked
            key = peek_tcp_key(frame)
            tc = by_key.get(key) if key is not None else None
            if tc is not None:
                self._process_frame(tc, frame)
                return
        stats.frames_passed_up += 1
        if self._chimney is not None:
            self._chimney.indicate_receive_frame(self._target_id, frame)

    def _pass_up(self, frame: bytes) -> None:
        self.stats.frames_passed_up += 1
        if self._chimney is not None:
            self._chimney.indicate_receive_frame(self._target_id, frame)

    def _process_frame(self, tc: TcpContext, frame: bytes) -> None:
        hit = parse_tcp_fast(frame)  # the common frame, parsed once into the segment alone
        if hit is not None:
            seg = hit[2]
        else:
            parsed = safe_parse(frame, self.drops)
            if not isinstance(parsed, TcpFrame):
                self.stats.frames_dropped += 1
                return
            seg = parsed.seg
        if seg.flags & URG and self._urgent_stops(tc):
            # Urgent data is not processed or ACKed by the NIC: the host gets the frame and the connection.
            self._raise_mandatory(tc, UploadReason.RECEIVED_URGENT_DATA)
            self._pass_up(frame)
            return
        self._input(tc, seg)

    def _urgent_stops(self, tc: TcpContext) -> bool:
        return self.detector_config.urgent_data_enabled and tc.engine.state not in RETRIEVE_FORBIDDEN_STATES

    def _input(self, tc: TcpContext, seg: TcpSegment) -> None:
        now = self._sched.now()
        stats = self.stats
        stats.offloaded_segments_in += 1
        plen = len(seg.payload)
        stats.offloaded_bytes_in += plen
        tc.path.neighbor.confirmed_at = now
        if self._tracer.enabled:
            self._trace_segment(tc, "in", seg)
        tc.engine.handle_segment(seg, now)
        if plen and seg.flags & PSH:
            tc.push_seen = True
        self._service(tc)

    def _do_forward(self, tc: TcpContext, nbls: list[NetBufferList]) -> None:
        """Forwarded segments (whole frames, or TCP segments starting at the TCP header) as if received."""
        refused: int | None = None
        if tc.terminating or tc.stopped or tc.aborted:
            refused = NdisStatus.REQUEST_ABORTED if tc.aborted else NdisStatus.UPLOAD_IN_PROGRESS
        for nbl in nbls:
            if refused is not None:
                nbl.status = refused
                continue
            nbl.status = _SUCCESS
            seg = self._forwarded_segment(tc, nbl.data[nbl.offset :])
            if seg is None:
                self.stats.frames_dropped += 1
                continue
            if seg.flags & URG and self._urgent_stops(tc):
                self._raise_mandatory(tc, UploadReason.RECEIVED_URGENT_DATA)
                refused = nbl.status = NdisStatus.UPLOAD_IN_PROGRESS  # the host keeps it and processes it itself
                continue
            self._input(tc, seg)
        self._chimney.tcp_forward_complete(tc.handle, nbls)

    def _forwarded_segment(self, tc: TcpContext, data: bytes) -> TcpSegment | None:
        if peek_tcp_key(data) == tc.key:
            parsed = safe_parse(data, self.drops)
            return parsed.seg if isinstance(parsed, TcpFrame) else None
        try:
            return decode_tcp(data, tc.path.dst, tc.path.src)
        except Exception:
            self.drops.count("forward-undecodable")
            return None

    def _transmit(self, tc: TcpContext, segs: list[TcpSegment]) -> None:
        if not segs:
            return
        if tc.tx_blocked or not self._link_up:
            self.stats.tx_suppressed += len(segs)
            return
        path = tc.path
        nb = path.neighbor
        src_mac, dst_mac, src_ip, dst_ip = nb.src_mac, nb.dst_mac, path.src, path.dst
        cached = tc.cached
        ttl, tos, vlan = cached.ttl_or_hop_limit, cached.tos_or_traffic_class, nb.const.vlan_id
        limit = path.cached.path_mtu - 40
        stats = self.stats
        port = self._port
        for seg in segs:
            payload = seg.payload
            pieces = [seg]
            if len(payload) > limit - 40:  # might not fit: measure the options exactly
                room = limit - len(encode_tcp_options(seg.options))
                if len(payload) > room > 0:
                    pieces = split_segment(seg, room)
                    stats.segments_split += 1
            for piece in pieces:
                if self._tracer.enabled:
                    self._trace_segment(tc, "out", piece)
                self._ip_id = (self._ip_id + 1) & 0x7FFF
                frame = build_tcp_frame(
                    src_mac, dst_mac, src_ip, dst_ip, piece, ttl=ttl, tos=tos, ident=0x8000 | self._ip_id, vlan=vlan
                )
                stats.frames_out += 1
                stats.offloaded_segments_out += 1
                stats.offloaded_bytes_out += len(piece.payload)
                port.transmit(frame)

    def _trace_segment(self, tc: TcpContext, direction: str, seg: TcpSegment) -> None:
        # Same shape as the host's segment events, so a plot shows one connection across owners.
        eng = tc.engine
        self._tracer.emit(
            "segment",
            conn=f"{ip_to_str(tc.path.src)}:{eng.local_port}>{ip_to_str(tc.path.dst)}:{eng.remote_port}",
            dir=direction,
            seq=seg.seq,
            ack=seg.ack,
            len=len(seg.payload),
            flags=seg.flags,
            owner=self.name,
        )

    # ---- service: everything that follows a change on one connection ---------------------------------------------
    def _schedule_service(self, tc: TcpContext) -> None:
        if not tc.service_scheduled:
            tc.service_scheduled = True
            self._sched.call_soon(self._scheduled_service, tc)

    def _scheduled_service(self, tc: TcpContext) -> None:
        tc.service_scheduled = False
        self._service(tc)

    def _service(self, tc: TcpContext) -> None:
        if tc.in_service:  # re-entered from a host callback: run one more pass when the current one ends
            tc.service_again = True
            return
        tc.in_service = True
        try:
            for _ in range(64):
                tc.service_again = False
                self._service_once(tc)
                if not tc.service_again:
                    break
        finally:
            tc.in_service = False

    def _service_once(self, tc: TcpContext) -> None:
        if tc.terminating or id(tc) not in self._tcps:
            return
        now = self._sched.now()
        eng = tc.engine
        if not tc.stopped:
            segs = eng.segments_to_send(now)
            if segs:
                self._transmit(tc, segs)
            events = eng.pop_events()
            if events:
                for ev in events:
                    if isinstance(ev, TcpReset):
                        self._on_reset(tc)
                    elif isinstance(ev, TcpTimedOut):
                        self._on_timed_out(tc)
                    elif isinstance(ev, TcpPeerClosed):
                        tc.peer_fin = True
                if tc.terminating:
                    return
        st = eng.state
        if st != tc.last_state:
            tc.last_state = st
            if tc.initiated:
                self._note(tc)
                if tc.pending_reason is not None and st not in RETRIEVE_FORBIDDEN_STATES:
                    self._retry_deferred(tc)
        if tc.aborted or tc.stopped:
            self._account(tc)
            return
        self._update_acked(tc)
        if tc.sends and tc.sends[0].end <= tc.acked:
            self._complete_acked_sends(tc)
        if tc.initiated:
            deliver(tc, self._chimney, now, self.push_timeout)
            if tc.terminating or tc.stopped or tc.aborted:
                return
            if tc.disconnect is not None and st in _FIN_ACKED_STATES and not tc.sends:
                self._complete_disconnect(tc, _SUCCESS)
            if (
                tc.peer_fin
                and not tc.disconnect_indicated
                and not tc.hold
                and not eng.readable
                and not (tc.posts and tc.posts[0].filled)
            ):
                tc.disconnect_indicated = True
                self.stats.disconnects_indicated += 1
                self._chimney.tcp_event(tc.handle, TcpEventType.DISCONNECT, 0)
        self._account(tc)
        if not tc.terminating:
            self._arm_timer(tc)

    def _update_acked(self, tc: TcpContext) -> None:
        una = tc.engine.snd_una
        delta = (una - tc.last_una) & _M
        if delta and delta < 0x80000000:
            tc.last_una = una
            acked = tc.acked + delta
            tc.acked = acked if acked < tc.appended else tc.appended  # a FIN's sequence number is not data

    def _complete_acked_sends(self, tc: TcpContext) -> None:
        sends = tc.sends
        acked = tc.acked
        done: list[NetBufferList] = []
        while sends and sends[0].end <= acked:
            rec = sends.popleft()
            nbl = rec.nbl
            nbl.status = _SUCCESS
            nbl.bytes_transferred = rec.end - rec.start
            done.append(nbl)
        if done:
            self._chimney.tcp_send_complete(tc.handle, done)

    def _complete_disconnect(self, tc: TcpContext, status: int) -> None:
        nbl = tc.disconnect
        if nbl is None:
            return
        tc.disconnect = None
        nbl.status = status
        self._chimney.tcp_disconnect_complete(tc.handle, nbl)

    def _abort_sends(self, tc: TcpContext) -> None:
        self._update_acked(tc)
        self._complete_acked_sends(tc)
        done: list[NetBufferList] = []
        if tc.sends:
            for rec in tc.sends:
                nbl = rec.nbl
                acked = max(0, min(tc.acked, rec.end) - rec.start)
                nbl.offset = rec.orig_offset + acked
                nbl.bytes_transferred = acked
                nbl.status = NdisStatus.REQUEST_ABORTED
                done.append(nbl)
            tc.sends.clear()
        if done:
            self._chimney.tcp_send_complete(tc.handle, done)

    def _abort_posts(self, tc: TcpContext, everything: bool = False) -> None:
        posts = tc.posts
        if not posts:
            return
        done = [finish_post(p, NdisStatus.REQUEST_ABORTED if (everything or not p.filled) else _SUCCESS) for p in posts]
        posts.clear()
        if done:
            self._chimney.tcp_receive_complete(tc.handle, done)

    def _on_reset(self, tc: TcpContext) -> None:
        """An acceptable RST: ABORT, then every outstanding send, receive and the disconnect REQUEST_ABORTED."""
        if tc.aborted:
            return
        tc.aborted = True
        self._stop_processing(tc)
        if tc.last_state != tc.engine.state and tc.initiated:
            tc.last_state = tc.engine.state
            self._note(tc)
        self.stats.aborts_indicated += 1
        self._chimney.tcp_event(tc.handle, TcpEventType.ABORT, 0)
        self._abort_sends(tc)
        self._abort_posts(tc)
        self._complete_disconnect(tc, NdisStatus.REQUEST_ABORTED)

    def _finish_abortive(self, tc: TcpContext) -> None:
        """Abortive disconnect: RST out, sends REQUEST_ABORTED, stop receiving, then the disconnect completes."""
        if tc.terminating:
            return
        now = self._sched.now()
        self._transmit(tc, [s for s in tc.engine.segments_to_send(now) if s.flags & RST])
        self._stop_processing(tc)
        if tc.last_state != tc.engine.state:
            tc.last_state = tc.engine.state
            self._note(tc)
        tc.engine.pop_events()
        self._abort_sends(tc)
        self._abort_posts(tc)
        self._complete_disconnect(tc, _SUCCESS)
        self._account(tc)

    def _on_timed_out(self, tc: TcpContext) -> None:
        if self.detector_config.timeout_expiration_enabled:
            self._raise_mandatory(tc, UploadReason.TIMEOUT_EXPIRATION)

    def _stop_processing(self, tc: TcpContext) -> None:
        self._table.remove(tc.key)
        self._cancel_timer(tc)

    # ---- timers ---------------------------------------------------------------------------------------------------
    def _arm_timer(self, tc: TcpContext) -> None:
        when = tc.engine.next_timer()
        push = tc.push_deadline
        if push is not None and tc.posts and tc.posts[0].filled and (when is None or push < when):
            when = push
        current = tc.timer_when
        if current is not None and (when is None or current <= when):
            return  # lazy: an early wake-up re-arms itself, which is cheaper than a heap push per segment
        if tc.timer is not None:
            tc.timer.cancel()
            tc.timer = None
        tc.timer_when = when
        if when is not None:
            tc.timer = self._sched.call_at(when, self._on_timer_cb, tc)

    def _cancel_timer(self, tc: TcpContext) -> None:
        if tc.timer is not None:
            tc.timer.cancel()
            tc.timer = None
        tc.timer_when = None

    def _on_timer(self, tc: TcpContext) -> None:
        tc.timer = None
        tc.timer_when = None
        if tc.terminating or tc.stopped or tc.aborted:
            return
        now = self._sched.now()
        nt = tc.engine.next_timer()
        if nt is not None and now >= nt:
            tc.engine.handle_timer(now)
        self._service(tc)

    def _ensure_sweep(self) -> None:
        if self._sweep_timer is None and self._tcps:
            self._sweep_timer = self._sched.call_later(self.detector_config.sweep_interval, self._sweep)

    def _sweep(self) -> None:
        """Periodic detectors (only scheduled while connections are offloaded)."""
        self._sweep_timer = None
        now = self._sched.now()
        for tc in list(self._tcps.values()):
            if not tc.initiated or tc.terminating or tc.stopped or tc.aborted:
                continue
            eng = tc.engine
            for reason in tc.detectors.sweep(eng.stats, now):
                self._raise_optional(tc, reason)
            if tc.terminating or tc.stopped:
                continue
            backlog = tc.backlog
            if backlog is None:
                backlog = tc.backlog = BacklogEstimator(tc.detectors.cfg, tc.since)
            value = backlog.sample(tc.acked, now)
            if value is not None:
                self.stats.backlog_events += 1
                self._chimney.tcp_event(tc.handle, TcpEventType.SEND_BACKLOG_CHANGE, value)
        self._ensure_sweep()

    # ---- retrieve decisions ---------------------------------------------------------------------------------------
    def _raise_optional(self, tc: TcpContext, reason: UploadReason) -> None:
        if not tc.initiated or tc.terminating or tc.stopped or tc.aborted or id(tc) not in self._tcps:
            return
        now = self._sched.now()
        det = tc.detectors
        if not det.allowed(reason, now):
            self.stats.retrieves_rate_limited += 1
            return
        if tc.engine.state in RETRIEVE_FORBIDDEN_STATES:
            self.stats.retrieves_suppressed += 1  # optional: dropped, never indicated while half-closed
            return
        det.fired(reason, now)
        self._indicate_retrieve(tc, reason)

    def _raise_mandatory(self, tc: TcpContext, reason: UploadReason) -> None:
        if tc.terminating or tc.stopped or id(tc) not in self._tcps:
            return
        if not tc.initiated or tc.engine.state in RETRIEVE_FORBIDDEN_STATES:
            if tc.pending_reason is None:
                self.stats.retrieves_deferred += 1
            tc.pending_reason = reason  # re-checked on every state change
            return
        tc.pending_reason = None
        tc.stopped = True  # from the decision on: no processing, new I/O completes UPLOAD_IN_PROGRESS
        tc.stop_reason = reason
        self._stop_processing(tc)
        if tc.last_state != tc.engine.state:
            tc.last_state = tc.engine.state
            self._note(tc)
        self._indicate_retrieve(tc, reason)

    def _retry_deferred(self, tc: TcpContext) -> None:
        reason = tc.pending_reason
        if reason is not None and tc.engine.state not in RETRIEVE_FORBIDDEN_STATES:
            tc.pending_reason = None
            self._raise_mandatory(tc, UploadReason(reason))

    def _indicate_retrieve(self, tc: TcpContext, reason: UploadReason) -> None:
        self.stats.retrieves[reason.name] += 1
        self._trace("nic.retrieve", conn=tc.const.local_port, reason=reason.name)
        self._chimney.tcp_event(tc.handle, TcpEventType.RETRIEVE, int(reason))

    def _hw_indicate(self, tc: TcpContext) -> None:
        if tc.terminating or id(tc) not in self._tcps:
            return  # the host is already terminating it: the terminate reports FAILURE
        if tc.engine.state in RETRIEVE_FORBIDDEN_STATES:
            tc.last_state = TcpState.CLOSED  # the hardware lost the connection; report it dead first
            if self._note_state is not None:
                self._note_state(tc.handle, TcpState.CLOSED)
        self.stats.retrieves[UploadReason.HARDWARE_FAILURE.name] += 1
        tc.stop_reason = UploadReason.HARDWARE_FAILURE
        self._chimney.tcp_event(tc.handle, TcpEventType.RETRIEVE, int(UploadReason.HARDWARE_FAILURE))
        self.stats.aborts_indicated += 1
        self._chimney.tcp_event(tc.handle, TcpEventType.ABORT, 0)

    # ---- buffers ----------------------------------------------------------------------------------------------------
    def _account(self, tc: TcpContext) -> None:
        held = (tc.appended - tc.acked) + tc.engine.readable + len(tc.hold)
        self._buffered_total += held - tc.buffered
        tc.buffered = held
        if (
            self._buffered_total > self.buffer_bytes
            and self.detector_config.upload_requested_enabled
            and tc.initiated
            and not (tc.stopped or tc.terminating or tc.aborted)
        ):
            self._raise_mandatory(tc, UploadReason.UPLOAD_REQUESTED)

    # ================================================================================================ helpers

    def _own_tcp(self, context: Any) -> TcpContext | None:
        if isinstance(context, TcpContext) and id(context) in self._tcps:
            return context
        return None

    def _owns(self, ctx: Any, layer: Layer) -> bool:
        if layer == Layer.NEIGHBOR:
            return isinstance(ctx, NeighborContext) and id(ctx) in self._neighbors
        if layer == Layer.PATH:
            return isinstance(ctx, PathContext) and id(ctx) in self._paths
        return isinstance(ctx, TcpContext) and id(ctx) in self._tcps

    def _tc_for_handle(self, handle: Any) -> TcpContext:
        tc = self._by_handle.get(handle)
        if tc is None:
            raise KeyError(f"{self.name}: no offloaded connection for handle {handle!r}")
        return tc

    def _io_reject_status(self, tc: TcpContext | None) -> NdisStatus | None:
        """Status for I/O that must not run: aborted -> REQUEST_ABORTED, upload coming -> UPLOAD_IN_PROGRESS."""
        if tc is None:
            return NdisStatus.UPLOAD_IN_PROGRESS
        if tc.aborted or tc.hw_failed:
            return NdisStatus.REQUEST_ABORTED
        if tc.stopped or tc.terminating or self._upload_all_pending:
            return NdisStatus.UPLOAD_IN_PROGRESS
        return None

    def _reject_later(
        self, tc: TcpContext | None, kind: str, nbls: list[NetBufferList], status: NdisStatus | None
    ) -> None:
        st = status if status is not None else NdisStatus.UPLOAD_IN_PROGRESS
        self.stats.io_rejected += len(nbls)
        for nbl in nbls:
            nbl.status = st
        handle = tc.handle if tc is not None else None
        self._sched.call_soon(self._complete_rejected, handle, kind, nbls)

    def _complete_rejected(self, handle: Any, kind: str, nbls: list[NetBufferList]) -> None:
        chimney = self._chimney
        if handle is None:
            return  # no connection to name: nothing can be completed (the mediator reports the bad context)
        if kind == "send":
            chimney.tcp_send_complete(handle, nbls)
        elif kind == "receive":
            chimney.tcp_receive_complete(handle, nbls)
        elif kind == "disconnect":
            chimney.tcp_disconnect_complete(handle, nbls[0])
        else:
            chimney.tcp_forward_complete(handle, nbls)

    def _note(self, tc: TcpContext) -> None:
        if self._note_state is not None:
            self._note_state(tc.handle, tc.engine.state)

    def _indicate_status(self, status: NdisStatus, info: Any) -> None:
        self._trace("nic.status", status=status.name)
        if self._chimney is not None:
            self._chimney.indicate_status(self._target_id, status, info)

    def _on_port_link(self, up: bool) -> None:
        self._indicate_status(NdisStatus.LINK_STATE, LinkState(up))

    def _check_upload_all_done(self) -> None:
        if not self._upload_all_pending or self._tcps or self._paths or self._neighbors:
            return
        self._upload_all_pending = False
        if self._resume_after is not None:
            self._sched.call_later(self._resume_after, self._do_resume)
        elif self._resume_requested:
            self._sched.call_soon(self._do_resume)

    def _do_resume(self) -> None:
        if not self._paused or self._upload_all_pending:
            return
        self._paused = False
        self._resume_requested = False
        self._indicate_status(NdisStatus.OFFLOAD_RESUME, None)
        queued, self._queued_initiates = self._queued_initiates, []
        for tree in queued:
            self._schedule_op(tree, self._do_initiate)

    def _trace(self, kind: str, **fields: Any) -> None:
        if self._tracer.enabled:
            self._tracer.emit(kind, nic=self.name, **fields)


def split_segment(seg: TcpSegment, room: int) -> list[TcpSegment]:
    """Cut a segment whose payload exceeds the path MTU; FIN and PSH stay on the last piece."""
    payload = seg.payload
    n = len(payload)
    pieces = []
    first_flags = seg.flags & ~(FIN | PSH | SYN)
    for off in range(0, n, room):
        last = off + room >= n
        pieces.append(
            TcpSegment(
                seg.src_port,
                seg.dst_port,
                (seg.seq + off) & _M,
                seg.ack,
                seg.flags if last else first_flags,
                seg.window,
                payload[off : off + room],
                seg.options,
            )
        )
    return pieces
