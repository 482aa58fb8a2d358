"""Harness for the SoftToe tests (no tests here): a scripted fake host, a peer stack and a simulated link.

Topology: ``FakeHost`` --(Chimney mediator, on_violation="raise")--> ``SoftToe`` --(SimLink)--> ``PeerStack``.
The host runs one TCP connection on its own engine, offloads it (export -> initiate), drives chimney I/O while it
is offloaded, and takes it back (terminate -> from_state).  Everything the host application reads or writes is
recorded so tests can compare byte streams exactly.  The host does not depend on the project's host stack.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tcpchimney.chimney.constants import NdisStatus, TcpEventType, UploadReason
from tcpchimney.chimney.mediator import Chimney
from tcpchimney.chimney.objects import (
    ContextSlot,
    NeighborCached,
    NeighborConst,
    NeighborDelegated,
    NetBufferList,
    OffloadBlock,
    PathCached,
    PathConst,
    neighbor_block,
    path_block,
    tcp_block,
)
from tcpchimney.clock import TimerHandle, VirtualClock
from tcpchimney.sim.link import Impairments, SimLink
from tcpchimney.targets.detectors import DetectorConfig
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.tcp.engine import TcpConfig, TcpConnection
from tcpchimney.tcp.state import TcpCached, TcpConst, TcpDelegated
from tcpchimney.trace.tracer import Tracer
from tcpchimney.wire.addr import ip_to_bytes
from tcpchimney.wire.frame import TcpFrame, build_tcp_frame, parse_frame
from tcpchimney.wire.tcp import TcpSegment

HOST_MAC = b"\x02\x00\x00\x00\x00\x01"
PEER_MAC = b"\x02\x00\x00\x00\x00\x02"
HOST_IP = ip_to_bytes("10.0.0.1")
PEER_IP = ip_to_bytes("10.0.0.2")
HOST_PORT = 40000
PEER_PORT = 80


def quiet_detectors(**overrides: Any) -> DetectorConfig:
    """Every optional detector off (tests switch on the one they exercise)."""
    base: dict[str, Any] = dict(
        low_activity_enabled=False,
        high_drop_rate_enabled=False,
        out_of_order_enabled=False,
        small_io_enabled=False,
        no_buffer_preposting_enabled=False,
        send_backlog_enabled=False,
    )
    base.update(overrides)
    return DetectorConfig(**base)


def pattern(n: int, seed: int) -> bytes:
    """Deterministic, position-dependent bytes (a shifted stream would not compare equal)."""
    rng = random.Random(seed)
    return rng.randbytes(n)


class PeerStack:
    """The remote end: one engine answering on ``port``; its application reads everything it is given."""

    def __init__(self, clock: VirtualClock, port: Any, config: TcpConfig, iss: int = 70_000) -> None:
        self.clock = clock
        self.port = port
        self.config = config
        self.iss = iss
        self.engine: TcpConnection | None = None
        self.received = bytearray()
        self.sent = bytearray()
        self.reading = True
        self.events: list[Any] = []
        self.frames_in: list[bytes] = []
        self._timer: TimerHandle | None = None
        self._ip_id = 0
        port.set_receiver(self.on_frame)

    def on_frame(self, frame: bytes) -> None:
        self.frames_in.append(frame)
        parsed = parse_frame(frame)
        if not isinstance(parsed, TcpFrame):
            return
        seg = parsed.seg
        now = self.clock.now()
        if self.engine is None:
            self.engine = TcpConnection.accept(self.config, seg, self.iss, now)
        else:
            self.engine.handle_segment(seg, now)
        self.pump()

    def send(self, data: bytes) -> None:
        assert self.engine is not None
        self.sent += data
        self.engine.send(data)
        self.pump()

    def pump(self) -> None:
        eng = self.engine
        if eng is None:
            return
        now = self.clock.now()
        if self.reading and eng.readable:
            self.received += eng.read()
        for seg in eng.segments_to_send(now):
            self.transmit(seg)
        self.events.extend(eng.pop_events())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        nt = eng.next_timer()
        if nt is not None:
            self._timer = self.clock.call_at(nt, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self.engine is not None
        now = self.clock.now()
        nt = self.engine.next_timer()
        if nt is not None and now >= nt:
            self.engine.handle_timer(now)
        self.pump()

    def transmit(self, seg: TcpSegment) -> None:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        self.port.transmit(build_tcp_frame(PEER_MAC, HOST_MAC, PEER_IP, HOST_IP, seg, ident=self._ip_id))


@dataclass
class Record:
    t: float
    kind: str
    info: Any = None


@dataclass
class FakeHost:
    """A scripted host stack for exactly one connection (plus its path and neighbor)."""

    clock: VirtualClock
    chimney: Chimney
    config: TcpConfig
    iss: int = 1_000
    target_id: int = 0
    engine: TcpConnection | None = None
    mode: str = "host"  # host | offloading | offloaded | terminating | dead
    received: bytearray = field(default_factory=bytearray)
    sent: bytearray = field(default_factory=bytearray)
    app_reading: bool = True
    app_closed: bool = False
    queued_writes: list[bytes] = field(default_factory=list)
    queued_frames: list[bytes] = field(default_factory=list)
    frames_up: list[bytes] = field(default_factory=list)
    log: list[Record] = field(default_factory=list)
    posted_sends: list[NetBufferList] = field(default_factory=list)
    exported: tuple[TcpConst, TcpCached, TcpDelegated, bytes, bytes] | None = None
    slots: dict[str, ContextSlot] = field(default_factory=dict)
    indicate_policy: Callable[[NetBufferList], tuple[int, int]] | None = None
    post_size: int = 0  # >0: keep `post_count` receives of this size posted while offloaded
    post_count: int = 2
    retrieve_policy: str = "terminate"  # terminate | mandatory-only | ignore
    upload_all_delay: float = 0.0
    terminate_with_path: bool = True
    process_queued_frames: bool = True
    last_terminate_tree: OffloadBlock | None = None
    _timer: TimerHandle | None = None
    _ip_id: int = 0

    # ---- application ----------------------------------------------------------------------------------------------
    def connect(self) -> None:
        self.engine = TcpConnection.connect(self.config, HOST_PORT, PEER_PORT, self.iss, self.clock.now())
        self.pump()

    def write(self, data: bytes) -> None:
        self.sent += data
        if self.mode == "host":
            assert self.engine is not None
            self.engine.send(data)
            self.pump()
        elif self.mode == "offloaded":
            nbl = NetBufferList(data=data)
            self.posted_sends.append(nbl)
            self.chimney.tcp_send("conn", [nbl])
        else:
            self.queued_writes.append(data)

    def close(self) -> None:
        self.app_closed = True
        if self.mode == "host":
            assert self.engine is not None
            self.engine.close()
            self.pump()
        elif self.mode == "offloaded":
            self.chimney.tcp_disconnect("conn", NetBufferList(), 0x01)

    # ---- the host's own TCP ---------------------------------------------------------------------------------------
    def pump(self) -> None:
        eng = self.engine
        if eng is None or self.mode != "host":
            return
        now = self.clock.now()
        if self.app_reading and eng.readable:
            self.received += eng.read()
        for seg in eng.segments_to_send(now):
            self._transmit(seg)
        for ev in eng.pop_events():
            self.log.append(Record(now, "engine", ev))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        nt = eng.next_timer()
        if nt is not None:
            self._timer = self.clock.call_at(nt, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.engine is None or self.mode != "host":
            return
        now = self.clock.now()
        nt = self.engine.next_timer()
        if nt is not None and now >= nt:
            self.engine.handle_timer(now)
        self.pump()

    def _transmit(self, seg: TcpSegment) -> None:
        self._ip_id = (self._ip_id + 1) & 0x7FFF
        frame = build_tcp_frame(HOST_MAC, PEER_MAC, HOST_IP, PEER_IP, seg, ident=self._ip_id)
        self.chimney.send_frame(self.target_id, frame)

    # ---- offload / terminate ----------------------------------------------------------------------------------------
    def offload(self) -> OffloadBlock:
        assert self.engine is not None and self.mode == "host"
        now = self.clock.now()
        eng = self.engine
        for seg in eng.segments_to_send(now):
            self._transmit(seg)
        self.exported = eng.export_state(now)
        for seg in eng.segments_to_send(now):
            if not seg.payload and not seg.seg_len:
                self._transmit(seg)  # the delayed ACK export_state flushed
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.engine = None
        const, cached, deleg, send_data, recv = self.exported
        self.slots = {"nb": ContextSlot(), "path": ContextSlot(), "conn": ContextSlot()}
        nb = neighbor_block(
            NeighborConst(HOST_MAC),
            NeighborCached(PEER_MAC),
            NeighborDelegated(),
            context=self.slots["nb"],
            handle="nb",
        )
        path = path_block(PathConst(HOST_IP, PEER_IP), PathCached(1500), context=self.slots["path"], handle="path")
        chain = [NetBufferList(data=send_data)] if send_data else None
        self.posted_sends = list(chain or [])
        tcp = tcp_block(
            const,
            cached,
            deleg,
            context=self.slots["conn"],
            handle="conn",
            send_nbls=chain,
            buffered_data=[NetBufferList(data=recv)] if recv else None,
        )
        nb.dependent_block_list = path
        path.dependent_block_list = tcp
        self.mode = "offloading"
        self.chimney.initiate_offload(self.target_id, nb)
        return nb

    def terminate(self) -> None:
        if self.mode != "offloaded":
            return
        tcp = tcp_block(context=ContextSlot(self.slots["conn"].value), handle="conn")
        root = tcp
        if self.terminate_with_path:
            nb = neighbor_block(context=ContextSlot(self.slots["nb"].value), handle="nb")
            path = path_block(context=ContextSlot(self.slots["path"].value), handle="path")
            nb.dependent_block_list = path
            path.dependent_block_list = tcp
            root = nb
        self.mode = "terminating"
        self.log.append(Record(self.clock.now(), "terminate_start"))
        self.chimney.terminate_offload(self.target_id, root)

    def _post_receives(self) -> None:
        if self.post_size <= 0 or self.mode != "offloaded":
            return
        self.chimney.tcp_receive("conn", [NetBufferList(capacity=self.post_size) for _ in range(self.post_count)])

    # ---- ChimneyHost ------------------------------------------------------------------------------------------------
    def on_initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        now = self.clock.now()
        tcp = self._tcp_block(tree)
        self.log.append(Record(now, "initiate_done", tcp.status if tcp is not None else None))
        if tcp is not None and tcp.status == NdisStatus.SUCCESS:
            self.mode = "offloaded"
            writes, self.queued_writes = self.queued_writes, []
            for data in writes:
                nbl = NetBufferList(data=data)
                self.posted_sends.append(nbl)
                self.chimney.tcp_send("conn", [nbl])
            frames, self.queued_frames = self.queued_frames, []
            if frames:
                self.chimney.tcp_forward("conn", [NetBufferList(data=f) for f in frames])
            self._post_receives()
            return
        assert self.exported is not None
        const, cached, deleg, send_data, recv = self.exported
        self.engine = TcpConnection.from_state(
            self.config, const, cached, deleg, send_data=send_data, recv_buffered=recv, now=now
        )
        self.mode = "host"
        self._resume_host()

    def _tcp_block(self, tree: OffloadBlock) -> OffloadBlock | None:
        for b in tree.walk():
            if b.ndis_offload_handle == "conn":
                return b
        return None

    def on_terminate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        now = self.clock.now()
        self.last_terminate_tree = tree
        tcp = self._tcp_block(tree)
        assert tcp is not None
        self.log.append(Record(now, "terminate_done", tcp.status))
        if tcp.status != NdisStatus.SUCCESS:
            self.mode = "dead"
            return
        assert self.exported is not None
        const, cached = self.exported[0], self.exported[1]
        chain = tcp.net_buffer_list_chain or []
        chain_ids = {n.nbl_id for n in chain}
        back = [
            n.data[n.offset :]
            for n in self.posted_sends
            if n.nbl_id in chain_ids or n.status == NdisStatus.UPLOAD_IN_PROGRESS
        ]
        send_data = b"".join(back) + b"".join(self.queued_writes)
        self.queued_writes = []
        recv = b"".join(n.data[n.offset :] for n in tcp.buffered_data or [])
        self.engine = TcpConnection.from_state(
            self.config,
            const,
            cached,
            tcp.delegated,
            send_data=send_data,
            recv_buffered=recv,
            now=now,
            send_closed=self.app_closed,
        )
        self.mode = "host"
        self._resume_host()

    def _resume_host(self) -> None:
        frames, self.queued_frames = self.queued_frames, []
        if self.process_queued_frames:
            for frame in frames:
                self._host_input(frame)
        self.pump()

    def on_update_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.log.append(Record(self.clock.now(), "update_done", [b.status for b in tree.walk()]))

    def on_invalidate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.log.append(Record(self.clock.now(), "invalidate_done", [b.status for b in tree.walk()]))

    def on_query_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.log.append(Record(self.clock.now(), "query_done", tree))

    def on_tcp_send_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        for nbl in nbls:
            self.log.append(Record(self.clock.now(), "send_complete", (nbl.nbl_id, nbl.status)))

    def on_tcp_receive_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        repost = 0
        for nbl in nbls:
            self.log.append(Record(self.clock.now(), "receive_complete", (nbl.bytes_transferred, nbl.status)))
            self.received += nbl.data[: nbl.bytes_transferred]
            if nbl.status == NdisStatus.SUCCESS and nbl.capacity:
                repost += 1
        if repost and self.mode == "offloaded" and self.post_size > 0:
            self.chimney.tcp_receive("conn", [NetBufferList(capacity=self.post_size) for _ in range(repost)])

    def on_tcp_disconnect_complete(self, handle: Any, nbl: NetBufferList) -> None:
        self.log.append(Record(self.clock.now(), "disconnect_complete", nbl.status))

    def on_tcp_forward_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self.log.append(Record(self.clock.now(), "forward_complete", [n.status for n in nbls]))

    def on_tcp_event(self, handle: Any, event_type: int, info: int) -> None:
        now = self.clock.now()
        kind = TcpEventType(event_type)
        self.log.append(Record(now, kind.name, info))
        if kind == TcpEventType.RETRIEVE:
            reason = UploadReason(info)
            if self.retrieve_policy == "terminate" or (self.retrieve_policy == "mandatory-only" and reason.mandatory):
                self.clock.call_soon(self.terminate)
        elif kind == TcpEventType.ABORT:
            self.clock.call_soon(self.terminate)

    def on_tcp_receive_indicate(self, handle: Any, nbl: NetBufferList) -> tuple[int, int]:
        if self.indicate_policy is not None:
            status, consumed = self.indicate_policy(nbl)
        else:
            status, consumed = NdisStatus.SUCCESS, len(nbl.data)
        self.received += nbl.data[:consumed]
        self.log.append(Record(self.clock.now(), "indicate", (len(nbl.data), consumed)))
        return status, consumed

    def on_status_indication(self, target_id: int, status: int, info: Any) -> None:
        st = NdisStatus(status)
        self.log.append(Record(self.clock.now(), st.name, info))
        if st == NdisStatus.UPLOAD_ALL:
            self.clock.call_later(self.upload_all_delay, self.terminate)
        elif st == NdisStatus.OFFLOAD_RESUME:
            self.chimney.query_capabilities(target_id)

    def on_offload_event(self, target_id: int, block: OffloadBlock | None, code: int) -> None:
        self.log.append(Record(self.clock.now(), "offload_event", code))

    def on_receive_frame(self, target_id: int, frame: bytes) -> None:
        self.frames_up.append(frame)
        if self.mode == "host":
            self._host_input(frame)
        else:
            self.queued_frames.append(frame)

    def _host_input(self, frame: bytes) -> None:
        parsed = parse_frame(frame)
        if not isinstance(parsed, TcpFrame) or self.engine is None:
            return
        self.engine.handle_segment(parsed.seg, self.clock.now())
        self.pump()

    def on_contract_violation(self, violation: Exception) -> None:
        self.log.append(Record(self.clock.now(), "violation", violation))

    # ---- helpers for tests ------------------------------------------------------------------------------------
    def kinds(self, *names: str) -> list[str]:
        return [r.kind for r in self.log if not names or r.kind in names]

    def records(self, kind: str) -> list[Record]:
        return [r for r in self.log if r.kind == kind]

    def retrieves(self) -> list[UploadReason]:
        return [UploadReason(r.info) for r in self.log if r.kind == "RETRIEVE"]


@dataclass
class World:
    clock: VirtualClock
    link: SimLink
    chimney: Chimney
    nic: SoftToe
    host: FakeHost
    peer: PeerStack
    tracer: Tracer | None = None

    def run(self, seconds: float) -> None:
        self.clock.run_until(self.clock.now() + seconds)

    def run_until(self, cond: Callable[[], bool], limit: float = 60.0) -> bool:
        """Advance in small steps until cond() holds or `limit` virtual seconds passed."""
        end = self.clock.now() + limit
        while self.clock.now() < end:
            if cond():
                return True
            self.clock.run_until(min(end, self.clock.now() + 0.05))
        return cond()

    def establish(self) -> None:
        self.host.connect()
        assert self.run_until(lambda: self.peer.engine is not None and self.host_established(), 5.0)

    def host_established(self) -> bool:
        from tcpchimney.tcp.state import TcpState

        eng = self.host.engine
        return eng is not None and eng.state == TcpState.ESTABLISHED

    def offload(self) -> OffloadBlock:
        tree = self.host.offload()
        assert self.run_until(lambda: self.host.mode != "offloading", 1.0)
        return tree

    def terminate(self) -> None:
        self.host.terminate()
        assert self.run_until(lambda: self.host.mode in ("host", "dead"), 2.0)


def make_world(
    *,
    seed: int = 1,
    impairments: Impairments | None = None,
    host_config: TcpConfig | None = None,
    peer_config: TcpConfig | None = None,
    nic_config: TcpConfig | None = None,
    detectors: DetectorConfig | None = None,
    trace: bool = False,
    **nic_kwargs: Any,
) -> World:
    clock = VirtualClock()
    tracer = Tracer(clock.now) if trace else None
    if tracer is not None:
        nic_kwargs["tracer"] = tracer
    link = SimLink(clock, random.Random(seed), impairments or Impairments(delay=0.001))
    chimney = Chimney(clock, on_violation="raise")
    nic = SoftToe(
        clock,
        link.a,
        HOST_MAC,
        tcp_config=nic_config,
        detectors=detectors if detectors is not None else quiet_detectors(),
        **nic_kwargs,
    )
    host = FakeHost(clock, chimney, host_config or TcpConfig())
    chimney.bind_host(host)
    host.target_id = chimney.register_target(nic)
    peer = PeerStack(clock, link.b, peer_config or TcpConfig())
    return World(clock, link, chimney, nic, host, peer, tracer)
