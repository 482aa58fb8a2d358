"""SoftToe requests and fault injection: half-closed ban, hardware failure, UPLOAD_ALL/RESUME, update, query..."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tcpchimney.chimney.constants import NdisStatus, UploadReason
from tcpchimney.chimney.objects import (
    ContextSlot,
    NeighborCached,
    NetBufferList,
    PathCached,
    neighbor_block,
    path_block,
    tcp_block,
)
from tcpchimney.targets.softtoe import RetrieveForbidden
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.tcp.state import TIMER_STOPPED, TcpDelegated, TcpState
from test_softtoe_harness import HOST_PORT, PEER_PORT, World, make_world, pattern, quiet_detectors


def _offloaded(**kw: object) -> World:
    w = make_world(**kw)  # type: ignore[arg-type]
    w.establish()
    w.offload()
    assert w.host.mode == "offloaded"
    return w


def _peer_close(w: World) -> None:
    assert w.peer.engine is not None
    w.peer.engine.close()
    w.peer.pump()


# ---- half-closed ban ---------------------------------------------------------------------------------------------


def test_request_retrieve_forbidden_in_close_wait() -> None:
    w = _offloaded()
    _peer_close(w)
    assert w.run_until(lambda: w.nic.connections()[0].state == TcpState.CLOSE_WAIT, 1.0)
    with pytest.raises(RetrieveForbidden):
        w.nic.request_retrieve("conn", UploadReason.LOW_ACTIVITY)
    with pytest.raises(RetrieveForbidden):
        w.nic.request_retrieve("conn", UploadReason.UPLOAD_REQUESTED)
    w.run(0.1)
    assert w.host.retrieves() == []
    assert w.chimney.violations == []


def test_optional_reason_dropped_while_half_closed() -> None:
    det = quiet_detectors(low_activity_enabled=True, idle_timeout=1.0, sweep_interval=0.25)
    w = _offloaded(detectors=det)
    w.host.close()  # our FIN: FIN_WAIT_1 -> FIN_WAIT_2 once ACKed
    assert w.run_until(lambda: w.nic.connections()[0].state == TcpState.FIN_WAIT_2, 1.0)
    w.run(3.0)
    assert w.host.retrieves() == []
    assert w.nic.stats.retrieves_suppressed > 0
    assert w.chimney.violations == []


def test_mandatory_reason_deferred_until_state_allows() -> None:
    w = _offloaded()
    _peer_close(w)
    assert w.run_until(lambda: w.nic.connections()[0].state == TcpState.CLOSE_WAIT, 1.0)
    nb = neighbor_block(context=ContextSlot(w.host.slots["nb"].value), handle="nb")
    w.chimney.invalidate_offload(w.host.target_id, nb)
    w.run(0.1)
    assert w.host.records("invalidate_done")
    assert w.host.retrieves() == []  # deferred: CLOSE_WAIT forbids RETRIEVE
    assert w.nic.stats.retrieves_deferred == 1
    w.host.close()  # CLOSE_WAIT -> LAST_ACK: now allowed
    assert w.run_until(lambda: w.host.retrieves() == [UploadReason.INVALID_STATE], 1.0)
    assert w.run_until(lambda: w.host.mode == "host", 1.0)
    # the host sent the FIN itself after the upload; the peer sees the close
    assert w.run_until(lambda: w.peer.engine is not None and w.peer.engine.state == TcpState.TIME_WAIT, 5.0)
    assert w.chimney.violations == []


# ---- hardware failure ----------------------------------------------------------------------------------------------


def test_hardware_failure_sequence_order() -> None:
    w = _offloaded(peer_config=TcpConfig(rcv_buf=16_384))
    w.peer.reading = False
    w.host.write(pattern(50_000, 1))
    w.chimney.tcp_receive("conn", [NetBufferList(capacity=4096)])
    w.run(0.1)
    # a query is in flight when the hardware fails
    tcp = tcp_block(context=ContextSlot(w.host.slots["conn"].value), handle="conn")
    mark = len(w.host.log)
    w.chimney.query_offload(w.host.target_id, tcp)
    w.nic.inject_hardware_failure("conn")
    assert w.run_until(lambda: w.host.mode == "dead", 2.0)
    wanted = {"query_done", "RETRIEVE", "ABORT", "send_complete", "receive_complete", "terminate_done"}
    order = [r.kind for r in w.host.log[mark:] if r.kind in wanted]
    assert order[:3] == ["query_done", "RETRIEVE", "ABORT"]
    assert order[-1] == "terminate_done"
    assert tcp.status == NdisStatus.FAILURE
    assert w.host.retrieves() == [UploadReason.HARDWARE_FAILURE]
    sends = [r.info[1] for r in w.host.records("send_complete")]
    assert sends and sends[-1] == NdisStatus.REQUEST_ABORTED
    assert [r.info[1] for r in w.host.records("receive_complete")] == [NdisStatus.REQUEST_ABORTED]
    assert w.host.records("terminate_done")[0].info == NdisStatus.FAILURE
    assert w.nic.connections() == []
    assert w.chimney.violations == []


def test_hardware_failure_without_operation_in_flight() -> None:
    w = _offloaded()
    w.nic.inject_hardware_failure("conn")
    assert w.run_until(lambda: w.host.mode == "dead", 2.0)
    assert w.host.kinds("RETRIEVE", "ABORT", "terminate_done") == ["RETRIEVE", "ABORT", "terminate_done"]
    assert w.chimney.violations == []


# ---- UPLOAD_ALL / RESUME ---------------------------------------------------------------------------------------------


def test_upload_all_then_resume_only_after_terminations() -> None:
    w = _offloaded()
    w.host.upload_all_delay = 0.5  # the host takes its time to terminate
    w.nic.set_capabilities(max_connections=7)
    w.nic.request_upload_all(resume_after=0.2)
    w.run(0.1)
    assert w.host.kinds("OFFLOAD_PAUSE", "UPLOAD_ALL") == ["OFFLOAD_PAUSE", "UPLOAD_ALL"]
    # I/O while the UPLOAD_ALL is pending completes UPLOAD_IN_PROGRESS; the data comes back to the host
    data = pattern(10_000, 2)
    w.host.write(data)
    w.run(0.1)
    assert w.host.records("send_complete")[-1].info[1] == NdisStatus.UPLOAD_IN_PROGRESS
    assert w.host.kinds("OFFLOAD_RESUME") == []
    assert w.run_until(lambda: bool(w.host.records("OFFLOAD_RESUME")), 3.0)
    done = w.host.records("terminate_done")[-1].t
    resume = w.host.records("OFFLOAD_RESUME")[0].t
    assert resume >= done + 0.2
    caps = w.chimney.capabilities(w.host.target_id)
    assert caps is not None and caps.max_connections == 7  # re-queried after RESUME
    assert w.run_until(lambda: bytes(w.peer.received) == data, 2.0)
    # offloading works again
    w.offload()
    assert w.host.mode == "offloaded"
    w.chimney.check_quiescent()
    assert w.chimney.violations == []


def test_manual_resume_waits_for_upload_all() -> None:
    w = _offloaded()
    w.host.upload_all_delay = 0.3
    w.nic.request_upload_all(resume_after=None)
    w.nic.resume()  # deferred: the terminations have not completed
    w.run(0.1)
    assert w.host.kinds("OFFLOAD_RESUME") == []
    assert w.run_until(lambda: bool(w.host.records("OFFLOAD_RESUME")), 2.0)
    assert w.host.records("OFFLOAD_RESUME")[0].t >= w.host.records("terminate_done")[-1].t
    assert w.chimney.violations == []


def test_upload_all_without_resume_stays_paused() -> None:
    w = _offloaded()
    w.nic.request_upload_all(resume_after=None)
    w.run(2.0)
    assert w.host.records("terminate_done")
    assert w.host.kinds("OFFLOAD_RESUME") == []
    assert w.nic.paused and w.chimney.paused(w.host.target_id)


def test_pause_keeps_connections_running_and_inflight_initiate_completes() -> None:
    w = make_world()
    w.establish()
    w.host.offload()
    w.nic.pause()  # the initiate is already in flight: it still completes
    w.run(0.05)
    assert w.host.mode == "offloaded"
    data = pattern(30_000, 3)
    w.host.write(data)
    assert w.run_until(lambda: bytes(w.peer.received) == data, 2.0)
    w.nic.resume()
    w.run(0.01)
    assert w.host.kinds("OFFLOAD_PAUSE", "OFFLOAD_RESUME") == ["OFFLOAD_PAUSE", "OFFLOAD_RESUME"]
    assert w.chimney.violations == []


# ---- I/O during termination ---------------------------------------------------------------------------------


def test_io_after_mandatory_retrieve_completes_upload_in_progress() -> None:
    w = _offloaded()
    w.host.retrieve_policy = "ignore"
    first = pattern(20_000, 4)
    w.host.write(first)
    w.run(0.1)
    w.nic.request_retrieve("conn", UploadReason.UPLOAD_REQUESTED)
    assert w.host.retrieves() == [UploadReason.UPLOAD_REQUESTED]
    second = pattern(20_000, 5)
    w.host.write(second)
    w.chimney.tcp_receive("conn", [NetBufferList(capacity=512)])
    w.chimney.tcp_forward("conn", [NetBufferList(data=b"\x00" * 60)])
    w.run(0.01)
    assert w.host.records("send_complete")[-1].info[1] == NdisStatus.UPLOAD_IN_PROGRESS
    assert w.host.records("receive_complete")[-1].info[1] == NdisStatus.UPLOAD_IN_PROGRESS
    assert w.host.records("forward_complete")[-1].info == [NdisStatus.UPLOAD_IN_PROGRESS]
    w.terminate()
    assert w.run_until(lambda: len(w.peer.received) == 40_000, 5.0)
    assert bytes(w.peer.received) == first + second
    assert w.chimney.violations == []


# ---- update / invalidate / query / link ---------------------------------------------------------------------


def test_update_neighbor_mac_and_path_mtu() -> None:
    w = _offloaded()
    captured: list[bytes] = []
    w.link.set_capture(lambda frame, ts, d: captured.append(frame) if d == "ab" else None)
    new_mac = b"\x02\x00\x00\x00\x00\x99"
    nb = neighbor_block(cached=NeighborCached(new_mac), context=ContextSlot(w.host.slots["nb"].value), handle="nb")
    path = path_block(cached=PathCached(576), context=ContextSlot(w.host.slots["path"].value), handle="path")
    w.chimney.update_offload(w.host.target_id, nb)
    w.chimney.update_offload(w.host.target_id, path)
    w.run(0.01)
    assert len(w.host.records("update_done")) == 2
    data = pattern(50_000, 6)
    w.host.write(data)
    assert w.run_until(lambda: bytes(w.peer.received) == data, 3.0)
    assert captured and all(f[:6] == new_mac for f in captured)
    assert max(len(f) for f in captured) <= 576 + 14
    assert w.nic.stats.segments_split > 0
    assert w.chimney.violations == []


def test_invalidate_stops_transmission_and_requests_upload() -> None:
    w = _offloaded()
    w.host.retrieve_policy = "ignore"
    nb = neighbor_block(context=ContextSlot(w.host.slots["nb"].value), handle="nb")
    w.chimney.invalidate_offload(w.host.target_id, nb)
    w.run(0.01)
    assert w.host.retrieves() == [UploadReason.INVALID_STATE]
    out = w.nic.stats.offloaded_segments_out
    w.peer.send(pattern(5_000, 7))  # would normally be ACKed by the NIC
    w.run(0.5)
    assert w.nic.stats.offloaded_segments_out == out
    w.terminate()
    assert w.run_until(lambda: bytes(w.host.received) == pattern(5_000, 7), 3.0)
    assert w.chimney.violations == []


def test_query_reports_current_state_and_stopped_timers() -> None:
    w = _offloaded()
    data = pattern(30_000, 8)
    w.host.write(data)
    assert w.run_until(lambda: bytes(w.peer.received) == data, 2.0)
    w.run(0.5)
    tcp = tcp_block(context=ContextSlot(w.host.slots["conn"].value), handle="conn")
    w.chimney.query_offload(w.host.target_id, tcp)
    w.run(0.01)
    assert tcp.status == NdisStatus.SUCCESS
    d = tcp.delegated
    assert isinstance(d, TcpDelegated)
    assert d.state == TcpState.ESTABLISHED
    assert d.snd_una == d.snd_max  # all ACKed
    assert d.retransmit.timeout_delta == TIMER_STOPPED
    assert d.keepalive.timeout_delta == TIMER_STOPPED
    assert tcp.miniport_reserved["send_backlog_size"] == 0xFFFFFFFF
    assert tcp.const.local_port == HOST_PORT and tcp.const.remote_port == PEER_PORT
    # the connection keeps working after the query
    more = pattern(10_000, 9)
    w.host.write(more)
    assert w.run_until(lambda: bytes(w.peer.received) == data + more, 2.0)
    assert w.chimney.violations == []


def test_link_state_indicated_but_no_upload() -> None:
    w = _offloaded()
    w.nic.set_link(False)
    w.run(0.5)
    w.nic.set_link(True)
    w.run(0.01)
    states = [r.info.up for r in w.host.records("LINK_STATE")]
    assert states == [False, True]
    assert w.host.retrieves() == [] and w.host.mode == "offloaded"
    info = w.nic.connections()
    assert len(info) == 1 and info[0].local_port == HOST_PORT and info[0].remote_ip == "10.0.0.2"


def test_capabilities_and_plain_nic() -> None:
    w = make_world(offload_enabled=False)
    caps = w.chimney.query_capabilities(w.host.target_id)
    assert caps.max_connections == 0
    w.establish()
    w.offload()
    assert w.host.mode == "host"  # a plain NIC refuses the offload; the host keeps the connection
    w.nic.set_capabilities(offload_enabled=True, max_connections=3, buffer_bytes=1 << 20)
    caps = w.chimney.query_capabilities(w.host.target_id)
    assert (caps.max_connections, caps.max_buffer_bytes) == (3, 1 << 20)


def test_request_retrieve_optional_keeps_running_when_declined() -> None:
    w = _offloaded()
    w.host.retrieve_policy = "mandatory-only"
    w.nic.request_retrieve("conn", UploadReason.HIGH_DROP_RATE)
    data = pattern(10_000, 10)
    w.host.write(data)
    assert w.run_until(lambda: bytes(w.peer.received) == data, 2.0)
    assert w.host.retrieves() == [UploadReason.HIGH_DROP_RATE]
    assert w.host.mode == "offloaded"
    with pytest.raises(KeyError):
        w.nic.request_retrieve("nope", UploadReason.LOW_ACTIVITY)
