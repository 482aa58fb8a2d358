"""SoftToe with the real mediator: offload mid-transfer, continue on the NIC, terminate, continue on the host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tcpchimney.chimney.constants import NdisStatus, TcpEventType
from tcpchimney.chimney.objects import NetBufferList
from tcpchimney.sim.link import Impairments
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.tcp.state import TcpState
from tcpchimney.wire.frame import TcpFrame, parse_frame
from test_softtoe_harness import HOST_IP, World, make_world, pattern


def _transfer_round_trip(w: World, *, chunks: int = 6, size: int = 40_000) -> tuple[bytes, bytes]:
    host_data = pattern(chunks * size, 11)
    peer_data = pattern(chunks * size, 22)
    w.establish()
    # phase 1: on the host
    w.host.write(host_data[:size])
    w.peer.send(peer_data[:size])
    w.run(0.003)  # mid-transfer: data in flight both ways
    w.offload()
    assert w.host.mode == "offloaded"
    assert len(w.nic.connections()) == 1
    # phase 2: on the NIC
    for i in range(1, chunks - 2):
        w.host.write(host_data[i * size : (i + 1) * size])
        w.peer.send(peer_data[i * size : (i + 1) * size])
        w.run(0.5)
    w.host.write(host_data[(chunks - 2) * size : (chunks - 1) * size])
    w.run(0.002)  # terminate with data in flight
    w.terminate()
    assert w.host.mode == "host"
    assert w.nic.connections() == []
    # phase 3: back on the host
    w.peer.send(peer_data[(chunks - 2) * size : (chunks - 1) * size])
    w.host.write(host_data[(chunks - 1) * size :])
    w.peer.send(peer_data[(chunks - 1) * size :])
    total = len(host_data)
    assert w.run_until(lambda: len(w.peer.received) >= total and len(w.host.received) >= total, 120.0)
    return host_data, peer_data


@pytest.mark.parametrize("loss", [0.0, 0.02])
def test_offload_mid_transfer_byte_streams_exact(loss: float) -> None:
    imp = Impairments(delay=0.001, loss=loss)
    w = make_world(seed=7, impairments=imp, trace=True)
    host_data, peer_data = _transfer_round_trip(w)
    assert w.tracer is not None
    events = w.tracer.events
    assert [e["kind"] for e in events].count("nic.terminate") == 1
    assert not [e for e in events if e["kind"] == "nic.send_mismatch"]  # NBL bookkeeping agrees with the engine
    assert bytes(w.peer.received) == host_data
    assert bytes(w.host.received) == peer_data
    assert w.chimney.violations == []
    # the middle of both streams really went through the NIC's engine
    assert w.nic.stats.offloaded_bytes_in >= 3 * 40_000
    assert w.nic.stats.offloaded_bytes_out >= 3 * 40_000
    # every send NBL was completed SUCCESS or handed back; nothing is left in the mediator
    w.chimney.check_quiescent()


def test_nic_frames_use_upper_ip_ids_and_host_lower() -> None:
    w = make_world()
    seen: list[tuple[float, int]] = []
    w.link.set_capture(lambda frame, ts, d: seen.append((ts, _ident(frame))) if d == "ab" else None)
    w.establish()
    w.host.write(pattern(20_000, 1))
    w.run(0.1)
    host_ids = [i for _, i in seen]
    assert host_ids and all(i < 0x8000 for i in host_ids)
    seen.clear()
    w.offload()
    w.host.write(pattern(50_000, 2))
    w.run(0.2)
    assert seen and all(i >= 0x8000 for _, i in seen)


def _ident(frame: bytes) -> int:
    return int.from_bytes(frame[18:20], "big")


def test_buffered_receive_data_handed_over_both_ways() -> None:
    """Unread host data goes to the NIC as BufferedData and comes back in order at terminate."""
    w = make_world()
    w.establish()
    w.host.app_reading = False
    first = pattern(30_000, 3)
    w.peer.send(first)
    w.run(0.2)
    # while offloaded the host accepts nothing: indications are refused, data waits in the NIC
    w.host.indicate_policy = lambda nbl: (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    w.offload()
    block = w.host.exported
    assert block is not None and len(block[4]) == len(first)  # recv_buffered handed to the NIC
    second = pattern(20_000, 4)
    w.peer.send(second)
    w.run(0.2)
    assert w.host.received == b""
    w.terminate()
    tree = w.host.last_terminate_tree
    assert tree is not None
    tcp = next(b for b in tree.walk() if b.ndis_offload_handle == "conn")
    assert tcp.buffered_data is not None
    assert b"".join(n.data for n in tcp.buffered_data) == first + second
    w.host.app_reading = True
    w.host.pump()
    assert bytes(w.host.received) == first + second
    assert w.chimney.violations == []


def test_partial_indication_then_zero_byte_post_reenables() -> None:
    w = make_world()
    w.establish()
    w.offload()
    budget = [5_000]

    def partial(nbl: object) -> tuple[int, int]:
        data = nbl.data  # type: ignore[attr-defined]
        take = min(budget[0], len(data))
        budget[0] -= take
        if take == len(data):
            return NdisStatus.SUCCESS, take
        return (NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED if take else NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED), take

    w.host.indicate_policy = partial
    data = pattern(30_000, 5)
    w.peer.send(data)
    w.run(0.3)
    assert bytes(w.host.received) == data[:5_000]
    n_ind = len(w.host.records("indicate"))
    w.run(0.5)
    assert len(w.host.records("indicate")) == n_ind  # no indication after a refusal until a post
    budget[0] = 1 << 30
    w.chimney.tcp_receive("conn", [_nbl(0)])
    w.run(0.1)
    assert bytes(w.host.received) == data
    assert w.chimney.violations == []


def _nbl(capacity: int) -> NetBufferList:
    return NetBufferList(capacity=capacity)


def test_posted_receives_fifo_and_push() -> None:
    w = make_world()
    w.establish()
    w.host.post_size = 4096
    w.host.post_count = 3
    w.offload()
    data = pattern(50_000, 6)
    w.peer.send(data)
    assert w.run_until(lambda: len(w.host.received) == len(data), 5.0)
    assert bytes(w.host.received) == data
    comps = w.host.records("receive_complete")
    assert comps and all(r.info[1] == NdisStatus.SUCCESS for r in comps)
    # a short message completes a partly filled post (PSH or the push timer)
    w.peer.send(b"hello")
    assert w.run_until(lambda: bytes(w.host.received).endswith(b"hello"), 1.0)
    assert w.host.records("indicate") == []  # posts were always there: no indication needed
    w.terminate()
    assert w.chimney.violations == []


def test_graceful_close_while_offloaded_and_peer_fin_disconnect_event() -> None:
    w = make_world()
    w.establish()
    w.offload()
    data = pattern(10_000, 8)
    w.host.write(data)
    w.host.close()
    assert w.run_until(lambda: bool(w.host.records("disconnect_complete")), 2.0)
    assert w.host.records("disconnect_complete")[0].info == NdisStatus.SUCCESS
    assert bytes(w.peer.received) == data
    assert w.nic.connections()[0].state == TcpState.FIN_WAIT_2
    w.peer.send(b"bye")
    assert w.peer.engine is not None
    w.peer.engine.close()
    w.peer.pump()
    assert w.run_until(lambda: bool(w.host.records(TcpEventType.DISCONNECT.name)), 2.0)
    assert bytes(w.host.received) == b"bye"  # data before the FIN was delivered before DISCONNECT
    assert w.chimney.tcp_state("conn") == TcpState.TIME_WAIT
    w.terminate()
    assert w.host.engine is not None and w.host.engine.state == TcpState.TIME_WAIT
    assert w.chimney.violations == []


def test_peer_reset_aborts_outstanding_sends() -> None:
    w = make_world()
    w.establish()
    w.offload()
    w.peer.reading = False
    assert w.peer.engine is not None
    w.host.write(pattern(400_000, 9))
    w.run(0.2)
    w.peer.engine.abort()
    w.peer.pump()
    assert w.run_until(lambda: w.host.mode in ("host", "dead"), 2.0)
    kinds = w.host.kinds("ABORT", "send_complete", "terminate_done")
    assert kinds.index("ABORT") < kinds.index("terminate_done")
    statuses = [r.info[1] for r in w.host.records("send_complete")]
    assert NdisStatus.REQUEST_ABORTED in statuses
    assert w.chimney.violations == []


def test_forwarded_frames_are_processed_as_received() -> None:
    """Frames that arrive during the initiate go up; the host forwards them and the NIC processes them."""
    w = make_world(seed=3)
    w.establish()
    w.host.write(pattern(5_000, 10))
    w.run(0.1)
    data = pattern(3_000, 12)
    w.peer.send(data)  # in flight while the initiate runs (link delay 1 ms)
    w.host.offload()
    w.run(0.01)
    assert w.host.mode == "offloaded"
    assert w.run_until(lambda: bytes(w.host.received) == data, 2.0)
    assert w.chimney.violations == []


def test_frames_of_terminating_connection_go_up() -> None:
    w = make_world()
    w.establish()
    w.offload()
    before = w.nic.stats.frames_passed_up
    w.host.terminate()  # handler returns; completion pending
    w.peer.send(b"x" * 100)
    w.run(0.01)
    assert w.nic.stats.frames_passed_up > before
    ups = [parse_frame(f) for f in w.host.frames_up]
    assert any(isinstance(p, TcpFrame) and p.seg.payload for p in ups)
    assert w.run_until(lambda: bytes(w.host.received) == b"x" * 100, 2.0)
    assert HOST_IP  # the host processed the queued frame after the upload


def test_fast_path_passes_frames_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import tcpchimney.targets.softtoe as st

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("parsed a frame with no connection offloaded")

    monkeypatch.setattr(st, "safe_parse", boom)
    w = make_world()
    w.establish()
    w.host.write(pattern(10_000, 13))
    w.run(0.2)
    assert w.nic.stats.frames_passed_up > 0
    assert bytes(w.peer.received) == pattern(10_000, 13)


def test_abortive_disconnect_sends_rst_and_aborts_sends() -> None:
    from tcpchimney.chimney.constants import TCP_DISCONNECT_ABORTIVE_CLOSE

    w = make_world(peer_config=TcpConfig(rcv_buf=16_384))
    w.establish()
    w.offload()
    w.peer.reading = False
    w.host.write(pattern(200_000, 14))
    w.run(0.2)
    w.chimney.tcp_disconnect("conn", NetBufferList(), TCP_DISCONNECT_ABORTIVE_CLOSE)
    w.run(0.05)
    assert w.host.records("disconnect_complete")[0].info == NdisStatus.SUCCESS
    assert w.host.records("send_complete")[-1].info[1] == NdisStatus.REQUEST_ABORTED
    assert w.peer.engine is not None and w.peer.engine.state == TcpState.CLOSED  # the peer got the RST
    assert w.nic.connections()[0].state == TcpState.CLOSED
    w.terminate()
    assert w.chimney.violations == []
