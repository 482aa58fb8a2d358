"""Each SoftToe detector fires with its reason under its condition, and not otherwise."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from tcpchimney.chimney.constants import NdisStatus, UploadReason
from tcpchimney.chimney.objects import NetBufferList
from tcpchimney.sim.link import Impairments
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.frame import build_tcp_frame
from tcpchimney.wire.tcp import ACK, PSH, URG, TcpSegment
from test_softtoe_harness import HOST_IP, PEER_IP, make_world, pattern, quiet_detectors

# ---- LOW_ACTIVITY ------------------------------------------------------------------------------------------------


def test_low_activity_fires_when_idle_and_connection_keeps_running() -> None:
    det = quiet_detectors(low_activity_enabled=True, idle_timeout=2.0, sweep_interval=0.5, repeat_interval=100.0)
    w = make_world(detectors=det)
    w.host.retrieve_policy = "mandatory-only"  # the host declines optional requests
    w.establish()
    w.offload()
    w.run(1.5)
    assert w.host.retrieves() == []
    w.run(1.5)
    assert w.host.retrieves() == [UploadReason.LOW_ACTIVITY]
    w.run(10.0)
    assert w.host.retrieves() == [UploadReason.LOW_ACTIVITY]  # repeats are rate limited
    assert w.nic.stats.retrieves_rate_limited > 0
    # declined optional request: the NIC keeps running the connection normally
    data = pattern(20_000, 1)
    w.host.write(data)
    w.peer.send(b"pong")
    assert w.run_until(lambda: bytes(w.peer.received) == data and bytes(w.host.received) == b"pong", 2.0)
    assert w.host.mode == "offloaded"
    assert w.chimney.violations == []


def test_low_activity_silent_while_traffic_flows() -> None:
    det = quiet_detectors(low_activity_enabled=True, idle_timeout=2.0, sweep_interval=0.5)
    w = make_world(detectors=det)
    w.establish()
    w.offload()
    for i in range(12):
        w.peer.send(pattern(100, i))
        w.run(0.5)
    assert w.host.retrieves() == []


# ---- HIGH_DROP_RATE ----------------------------------------------------------------------------------------------


def _bulk_from_host(loss_ab: float, det_kwargs: dict[str, Any]) -> list[UploadReason]:
    det = quiet_detectors(**det_kwargs)
    w = make_world(detectors=det, seed=5)
    w.host.retrieve_policy = "ignore"
    w.establish()
    w.offload()
    w.link.set_impairments(Impairments(delay=0.001, loss=loss_ab), Impairments(delay=0.001))
    w.host.write(pattern(600_000, 2))
    w.run(6.0)
    return w.host.retrieves()


def test_high_drop_rate_fires_on_lossy_path() -> None:
    kw = dict(high_drop_rate_enabled=True, drop_window=5.0, drop_min_segments=50, drop_ratio=0.05)
    assert UploadReason.HIGH_DROP_RATE in _bulk_from_host(0.15, kw)


def test_high_drop_rate_silent_on_clean_path() -> None:
    kw = dict(high_drop_rate_enabled=True, drop_window=5.0, drop_min_segments=50, drop_ratio=0.05)
    assert _bulk_from_host(0.0, kw) == []


# ---- HIGH_OUT_OF_ORDER_PACKETS -----------------------------------------------------------------------------------


def _bulk_to_host(reorder: float) -> list[UploadReason]:
    det = quiet_detectors(out_of_order_enabled=True, ooo_window=5.0, ooo_min_segments=50, ooo_ratio=0.05)
    w = make_world(detectors=det, seed=9)
    w.host.retrieve_policy = "ignore"
    w.establish()
    w.offload()
    w.link.set_impairments(Impairments(delay=0.001), Impairments(delay=0.001, reorder=reorder, reorder_delay=0.003))
    w.peer.send(pattern(600_000, 3))
    w.run(6.0)
    assert w.chimney.violations == []
    return w.host.retrieves()


def test_out_of_order_fires_under_reordering() -> None:
    assert UploadReason.HIGH_OUT_OF_ORDER_PACKETS in _bulk_to_host(0.3)


def test_out_of_order_silent_in_order() -> None:
    assert _bulk_to_host(0.0) == []


# ---- SMALL_IO ----------------------------------------------------------------------------------------------------


def _posts(size: int) -> list[UploadReason]:
    det = quiet_detectors(small_io_enabled=True, small_io_bytes=1024, small_io_count=8)
    w = make_world(detectors=det)
    w.host.retrieve_policy = "ignore"
    w.host.post_size = size
    w.host.post_count = 1
    w.establish()
    w.offload()
    w.peer.send(pattern(30 * size, 4))
    w.run(2.0)
    assert bytes(w.host.received) == pattern(30 * size, 4)
    return w.host.retrieves()


def test_small_io_fires_on_small_posts() -> None:
    assert _posts(200)[:1] == [UploadReason.SMALL_IO]


def test_small_io_silent_on_big_posts() -> None:
    assert _posts(8192) == []


# ---- NO_BUFFER_PREPOSTING ----------------------------------------------------------------------------------------


def _starve(refuse: bool) -> list[UploadReason]:
    det = quiet_detectors(no_buffer_preposting_enabled=True, no_buffer_timeout=1.0, sweep_interval=0.25)
    w = make_world(detectors=det)
    w.host.retrieve_policy = "ignore"
    if refuse:
        w.host.indicate_policy = lambda nbl: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    w.establish()
    w.offload()
    w.peer.send(pattern(5_000, 5))
    w.run(0.5)
    assert w.host.retrieves() == []  # not before the threshold
    w.run(2.0)
    return w.host.retrieves()


def test_no_buffer_preposting_fires_when_data_waits() -> None:
    assert _starve(True)[:1] == [UploadReason.NO_BUFFER_PREPOSTING]


def test_no_buffer_preposting_silent_when_indications_accepted() -> None:
    assert _starve(False) == []


# ---- RECEIVED_URGENT_DATA ----------------------------------------------------------------------------------------


def test_urgent_segment_not_acked_passed_up_and_mandatory_retrieve() -> None:
    w = make_world(detectors=quiet_detectors())
    w.establish()
    w.host.process_queued_frames = False
    w.offload()
    peer = w.peer
    assert peer.engine is not None
    peer.send(b"abc")
    w.run(0.1)
    assert bytes(w.host.received) == b"abc"
    seq, ack = peer.engine.snd_nxt, peer.engine.rcv_nxt
    frames_before = len(peer.frames_in)
    urg = TcpSegment(80, 40000, seq, ack, ACK | PSH | URG, 1000, b"!", urgent_pointer=1)
    w.link.b.transmit(build_tcp_frame(b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01", PEER_IP, HOST_IP, urg))
    w.run(0.05)
    # the NIC did not process it: nothing was ACKed beyond `seq`, the frame went up, RETRIEVE is mandatory
    for frame in peer.frames_in[frames_before:]:
        ack_field = int.from_bytes(frame[14 + 20 + 8 : 14 + 20 + 12], "big")
        assert ack_field == seq
    assert any(f.endswith(b"!") for f in w.host.frames_up)
    assert w.host.retrieves() == [UploadReason.RECEIVED_URGENT_DATA]
    assert w.nic.stats.retrieves["RECEIVED_URGENT_DATA"] == 1
    assert w.run_until(lambda: w.host.mode == "host", 1.0)  # the host always uploads after a mandatory reason
    assert w.chimney.violations == []


# ---- TIMEOUT_EXPIRATION ------------------------------------------------------------------------------------------


def test_timeout_expiration_when_retransmissions_run_out() -> None:
    nic_cfg = TcpConfig(max_retransmits=3, initial_rto=0.2, min_rto=0.1, max_rto=0.5)
    w = make_world(nic_config=nic_cfg)
    w.establish()
    w.offload()
    w.host.write(pattern(20_000, 6))
    w.run(0.05)
    w.link.set_up(False)
    w.host.write(pattern(20_000, 7))
    assert w.run_until(lambda: bool(w.host.retrieves()), 10.0)
    assert w.host.retrieves() == [UploadReason.TIMEOUT_EXPIRATION]
    kinds = w.host.kinds("LINK_STATE", "RETRIEVE")
    assert kinds[0] == "LINK_STATE"  # link loss was reported, but the NIC did not upload because of it
    assert w.run_until(lambda: w.host.mode == "host", 1.0)
    assert w.host.engine is not None and w.host.engine.state == TcpState.CLOSED
    assert w.chimney.violations == []


def test_no_timeout_retrieve_while_link_is_fine() -> None:
    nic_cfg = TcpConfig(max_retransmits=3, initial_rto=0.2, min_rto=0.1, max_rto=0.5)
    w = make_world(nic_config=nic_cfg)
    w.establish()
    w.offload()
    w.host.write(pattern(200_000, 8))
    w.run(5.0)
    assert w.host.retrieves() == []


# ---- UPLOAD_REQUESTED ----------------------------------------------------------------------------------------------


def test_upload_requested_on_buffer_exhaustion_then_io_upload_in_progress() -> None:
    host_cfg = TcpConfig(rcv_buf=32_768)
    w = make_world(host_config=host_cfg, peer_config=TcpConfig(rcv_buf=16_384), buffer_bytes=150_000)
    w.host.retrieve_policy = "ignore"  # keep the connection on the NIC to look at the I/O
    w.establish()
    w.offload()
    w.peer.reading = False  # the peer's window closes, unacknowledged sends pile up in the NIC
    w.host.write(pattern(100_000, 9))
    w.run(0.5)
    assert w.host.retrieves() == []  # within budget
    w.host.write(pattern(100_000, 10))
    w.run(0.5)
    assert w.host.retrieves() == [UploadReason.UPLOAD_REQUESTED]
    w.host.write(b"late")
    w.chimney.tcp_receive("conn", [NetBufferList(capacity=100)])
    w.run(0.01)
    sends = w.host.records("send_complete")
    assert sends[-1].info[1] == NdisStatus.UPLOAD_IN_PROGRESS
    assert w.host.records("receive_complete")[-1].info[1] == NdisStatus.UPLOAD_IN_PROGRESS
    # and the terminate returns every byte the peer has not ACKed
    w.peer.reading = True
    w.terminate()
    w.peer.pump()
    total = 200_000 + 4
    assert w.run_until(lambda: len(w.peer.received) >= total, 20.0)
    assert bytes(w.peer.received) == pattern(100_000, 9) + pattern(100_000, 10) + b"late"
    assert w.chimney.violations == []


def test_initiate_fails_when_send_data_exceeds_buffer() -> None:
    w = make_world(host_config=TcpConfig(rcv_buf=32_768), peer_config=TcpConfig(rcv_buf=16_384), buffer_bytes=50_000)
    w.establish()
    w.peer.reading = False
    w.host.write(pattern(120_000, 11))
    w.run(0.5)
    w.offload()
    assert w.host.mode == "host"  # offload failed; the host continued from its exported state
    assert w.host.records("initiate_done")[0].info == NdisStatus.OFFLOAD_TCP_XMIT_BUFFER
    w.peer.reading = True
    w.peer.pump()
    assert w.run_until(lambda: len(w.peer.received) == 120_000, 10.0)
    assert bytes(w.peer.received) == pattern(120_000, 11)


# ---- detectors can be disabled -----------------------------------------------------------------------------------


def test_disabled_urgent_detector_processes_urg_inline() -> None:
    w = make_world(detectors=quiet_detectors(urgent_data_enabled=False))
    w.establish()
    w.offload()
    peer = w.peer
    assert peer.engine is not None
    peer.send(b"x")
    w.run(0.05)
    seq, ack = peer.engine.snd_nxt, peer.engine.rcv_nxt
    urg = TcpSegment(80, 40000, seq, ack, ACK | PSH | URG, 1000, b"!", urgent_pointer=1)
    w.link.b.transmit(build_tcp_frame(b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01", PEER_IP, HOST_IP, urg))
    w.run(0.1)
    assert w.host.retrieves() == []
    assert bytes(w.host.received) == b"x!"


# ---- SEND_BACKLOG_CHANGE -------------------------------------------------------------------------------------------


def test_send_backlog_change_is_throttled() -> None:
    det = quiet_detectors(send_backlog_enabled=True, send_backlog_min_interval=1.0, sweep_interval=0.1)
    w = make_world(detectors=det)
    w.establish()
    w.offload()
    w.host.write(pattern(3_000_000, 12))
    w.run(3.0)
    events = w.host.records("SEND_BACKLOG_CHANGE")
    assert events, "a bulk transfer gives the NIC a backlog estimate"
    times = [r.t for r in events]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
    assert all(det.send_backlog_min <= r.info <= det.send_backlog_max for r in events)
    n = len(events)
    w.run(5.0)  # idle: nothing new to report
    assert len(w.host.records("SEND_BACKLOG_CHANGE")) == n


def test_urgent_data_in_fin_wait_2_is_handled_inline() -> None:
    """RETRIEVE is banned in FIN_WAIT_2, so urgent data there is processed by the NIC instead of stranded."""
    w = make_world(detectors=quiet_detectors())
    w.establish()
    w.offload()
    w.host.close()
    assert w.run_until(lambda: w.nic.connections()[0].state == TcpState.FIN_WAIT_2, 1.0)
    peer = w.peer
    assert peer.engine is not None
    seq, ack = peer.engine.snd_nxt, peer.engine.rcv_nxt
    urg = TcpSegment(80, 40000, seq, ack, ACK | PSH | URG, 1000, b"!", urgent_pointer=1)
    w.link.b.transmit(build_tcp_frame(b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01", PEER_IP, HOST_IP, urg))
    w.run(0.2)
    assert w.host.retrieves() == []
    assert bytes(w.host.received) == b"!"
    assert w.chimney.violations == []
