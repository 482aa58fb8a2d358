"""Initiate/terminate block trees against the real mediator: statuses, contexts, capacity limits, linkers."""

from __future__ import annotations

import random
from typing import Any

from tcpchimney.chimney.constants import NdisStatus
from tcpchimney.chimney.mediator import Chimney
from tcpchimney.chimney.objects import (
    ContextSlot,
    NeighborCached,
    NeighborConst,
    NeighborDelegated,
    OffloadBlock,
    PathCached,
    PathConst,
    link_siblings,
    neighbor_block,
    path_block,
    tcp_block,
)
from tcpchimney.clock import VirtualClock
from tcpchimney.sim.link import Impairments, SimLink
from tcpchimney.targets.detectors import DetectorConfig
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.tcp.state import TcpCached, TcpConst, TcpDelegated, TcpState

MAC = b"\x02\x00\x00\x00\x00\x01"
GW = b"\x02\x00\x00\x00\x00\xfe"
SRC = bytes([10, 0, 0, 1])


class RecordingHost:
    """Only records completions (no TCP of its own)."""

    def __init__(self) -> None:
        self.done: list[tuple[str, OffloadBlock]] = []
        self.events: list[tuple[Any, int, int]] = []
        self.violations: list[Exception] = []

    def on_initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.done.append(("initiate", tree))

    def on_terminate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.done.append(("terminate", tree))

    def on_tcp_event(self, handle: Any, event_type: int, info: int) -> None:
        self.events.append((handle, event_type, info))

    def on_contract_violation(self, violation: Exception) -> None:
        self.violations.append(violation)

    def on_receive_frame(self, target_id: int, frame: bytes) -> None:
        pass

    def on_status_indication(self, target_id: int, status: int, info: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def _setup(max_connections: int = 8) -> tuple[VirtualClock, Chimney, SoftToe, RecordingHost, int]:
    clock = VirtualClock()
    link = SimLink(clock, random.Random(1), Impairments())
    chimney = Chimney(clock, on_violation="raise")
    host = RecordingHost()
    chimney.bind_host(host)
    nic = SoftToe(
        clock, link.a, MAC, max_connections=max_connections, detectors=DetectorConfig(send_backlog_enabled=False)
    )
    tid = chimney.register_target(nic)
    return clock, chimney, nic, host, tid


def _tcp(
    handle: str, port: int, state: TcpState = TcpState.ESTABLISHED, slot: ContextSlot | None = None
) -> OffloadBlock:
    const = TcpConst(flags=0, local_port=port, remote_port=80, snd_wind_scale=0, rcv_wind_scale=0, remote_mss=1460)
    deleg = TcpDelegated(
        state=state,
        rcv_nxt=1000,
        rcv_wnd=65535,
        snd_una=5000,
        snd_nxt=5000,
        snd_max=5000,
        snd_wnd=65535,
        max_snd_wnd=65535,
        send_wl1=1000,
        cwnd=14600,
        ssthresh=65535,
    )
    return tcp_block(const, TcpCached(initial_rcv_wnd=65535), deleg, context=slot or ContextSlot(), handle=handle)


def _nb(handle: str, mac: bytes = MAC) -> OffloadBlock:
    return neighbor_block(
        NeighborConst(mac), NeighborCached(GW), NeighborDelegated(), context=ContextSlot(), handle=handle
    )


def _path(handle: str, dst: bytes) -> OffloadBlock:
    src = SRC if len(dst) == 4 else bytes(16)
    return path_block(PathConst(src, dst), PathCached(1500), context=ContextSlot(), handle=handle)


def _chain(parent: OffloadBlock, children: list[OffloadBlock]) -> None:
    parent.dependent_block_list = link_siblings(children)


def test_docs_partial_offload_example() -> None:
    """N1 -> P1 -> {T1, T2}, N1 -> P2 -> T3: T2 out of TCP entries, P2 refused, T3 never tried."""
    clock, chimney, nic, host, tid = _setup(max_connections=1)
    n1 = _nb("N1")
    p1, p2 = _path("P1", bytes([10, 0, 0, 2])), _path("P2", bytes(15) + b"\x02")  # P2 is IPv6: unsupported
    t1, t2, t3 = _tcp("T1", 1001), _tcp("T2", 1002), _tcp("T3", 1003)
    _chain(n1, [p1, p2])
    _chain(p1, [t1, t2])
    _chain(p2, [t3])
    chimney.initiate_offload(tid, n1)
    assert host.done == []  # never completed inside the handler
    clock.run_until(0.001)
    assert host.done and host.done[0][0] == "initiate"
    assert n1.status == NdisStatus.OFFLOAD_PARTIAL_SUCCESS
    assert p1.status == NdisStatus.OFFLOAD_PARTIAL_SUCCESS
    assert t1.status == NdisStatus.SUCCESS
    assert t2.status == NdisStatus.OFFLOAD_TCP_ENTRIES
    assert p2.status == NdisStatus.OFFLOAD_IP_ADDRESS_ENTRIES
    assert t3.status == NdisStatus.FAILURE
    # contexts written iff the object was offloaded
    assert all(b.context is not None for b in (n1, p1, t1))
    assert all(b.context is None for b in (t2, p2, t3))
    assert len(nic.connections()) == 1
    assert host.violations == []


def test_root_failure_stops_the_walk() -> None:
    clock, chimney, nic, host, tid = _setup()
    bad = _nb("N1", mac=b"\x02\x00\x00")  # a 3-byte MAC cannot be configured
    good = _nb("N2")
    p = _path("P", bytes([10, 0, 0, 3]))
    t = _tcp("T", 2000)
    _chain(bad, [_path("P0", bytes([10, 0, 0, 2]))])
    _chain(good, [p])
    _chain(p, [t])
    bad.next_block = good
    chimney.initiate_offload(tid, bad)
    clock.run_until(0.001)
    assert bad.status == NdisStatus.OFFLOAD_HW_ADDRESS_ENTRIES
    assert [b.status for b in (good, p, t)] == [NdisStatus.FAILURE] * 3
    assert nic.connections() == [] and all(b.context is None for b in bad.walk())
    assert host.violations == []


def test_linkers_placeholders_and_capacity() -> None:
    clock, chimney, nic, host, tid = _setup(max_connections=2)
    n = _nb("N")
    p = _path("P", bytes([10, 0, 0, 2]))
    _chain(n, [p])
    _chain(p, [_tcp("T1", 3001)])
    chimney.initiate_offload(tid, n)
    clock.run_until(0.001)
    assert n.status == NdisStatus.SUCCESS
    # linker neighbor -> linker path -> new TCP
    ln = neighbor_block(context=ContextSlot(n.context), handle="N")
    lp = path_block(context=ContextSlot(p.context), handle="P")
    t2 = _tcp("T2", 3002)
    _chain(ln, [lp])
    _chain(lp, [t2])
    chimney.initiate_offload(tid, ln)
    clock.run_until(0.002)
    assert (ln.status, lp.status, t2.status) == (NdisStatus.SUCCESS,) * 3
    # placeholder root; the table is full: the new TCP fails, so the linker reports FAILURE
    ph = neighbor_block()
    lp2 = path_block(context=ContextSlot(p.context), handle="P")
    t3 = _tcp("T3", 3003)
    _chain(ph, [lp2])
    _chain(lp2, [t3])
    chimney.initiate_offload(tid, ph)
    clock.run_until(0.003)
    assert ph.status == NdisStatus.SUCCESS
    assert t3.status == NdisStatus.OFFLOAD_TCP_ENTRIES
    assert lp2.status == NdisStatus.FAILURE
    assert len(nic.connections()) == 2
    # a duplicate 4-tuple is refused too
    lp3 = path_block(context=ContextSlot(p.context), handle="P")
    ph2 = neighbor_block()
    _chain(ph2, [lp3])
    nic.set_capabilities(max_connections=5)
    dup = _tcp("T4", 3001)
    _chain(lp3, [dup])
    chimney.initiate_offload(tid, ph2)
    clock.run_until(0.004)
    assert dup.status == NdisStatus.FAILURE
    assert host.violations == []
    # terminate everything in one tree: TCPs, path, neighbor
    tn = neighbor_block(context=ContextSlot(n.context), handle="N")
    tp = path_block(context=ContextSlot(p.context), handle="P")
    _chain(tn, [tp])
    tt1 = tcp_block(context=ContextSlot(_ctx(host, "T1")), handle="T1")
    tt2 = tcp_block(context=ContextSlot(t2.context), handle="T2")
    _chain(tp, [tt1, tt2])
    chimney.terminate_offload(tid, tn)
    clock.run_until(0.005)
    assert [b.status for b in tn.walk()] == [NdisStatus.SUCCESS] * 4
    assert isinstance(tt1.delegated, TcpDelegated) and tt1.delegated.snd_una == 5000
    assert tn.delegated is not None
    assert nic.connections() == []
    chimney.check_quiescent()
    assert host.violations == []


def _ctx(host: RecordingHost, handle: str) -> Any:
    for kind, tree in host.done:
        if kind != "initiate":
            continue
        for b in tree.walk():
            if b.ndis_offload_handle == handle and b.context is not None:
                return b.context
    raise KeyError(handle)


def test_not_offloadable_state_and_rcv_window_limits() -> None:
    clock, chimney, nic, host, tid = _setup()
    nic.set_capabilities(buffer_bytes=10_000)
    n = _nb("N")
    p = _path("P", bytes([10, 0, 0, 2]))
    t = _tcp("T", 4001)  # InitialRcvWnd 65535 > 10000 bytes of buffer
    _chain(n, [p])
    _chain(p, [t])
    chimney.initiate_offload(tid, n)
    clock.run_until(0.001)
    assert t.status == NdisStatus.OFFLOAD_TCP_RCV_WINDOW
    assert p.status == NdisStatus.OFFLOAD_PARTIAL_SUCCESS
    assert n.status == NdisStatus.SUCCESS  # only immediate dependents count
    assert host.violations == []
