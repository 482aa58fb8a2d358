"""The host with a real SoftToe NIC: offload, target requests, terminates in every state, failures.

Every test moves data both ways and checks it byte for byte; the mediator runs with on_violation="raise", so a
broken chimney rule fails the test where it happens.
"""

from __future__ import annotations

import pytest

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.sim.link import Impairments
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.tcp.state import TcpState
from test_host_support import PEER_IP, Pair, Pump, Sink, establish, make_pair, pattern

SLOW = Impairments(delay=0.005, rate_bps=20_000_000)  # transfers last long enough to act in the middle of them


def nic_state(pair: Pair, sink: Sink) -> TcpState | None:
    handle = pair.host.offload_handle(sink.sock)
    ctx = pair.nic.context_for(handle) if handle is not None else None
    return None if ctx is None else ctx.engine.state


def offload_now(pair: Pair, sink: Sink) -> None:
    pair.host.offload(sink.sock)
    assert pair.run_until(lambda: sink.sock.owner == "nic0", 2.0), "offload did not complete"


def bidirectional(
    pair: Pair, client: Sink, server: Sink, up: int, down: int, close: bool = True
) -> tuple[bytes, bytes]:
    a, b = pattern(up, 11), pattern(down, 12)
    Pump(pair, client.sock, a, close=close)
    Pump(pair, server.sock, b, close=close)
    return a, b


def finish(pair: Pair, client: Sink, server: Sink, a: bytes, b: bytes, limit: float = 60.0) -> None:
    assert pair.run_until(lambda: client.eof and server.eof, limit), (client.eof, server.eof, client.sock, server.sock)
    assert bytes(server.data) == a, "upstream bytes differ"
    assert bytes(client.data) == b, "downstream bytes differ"
    assert pair.violations() == []


def test_offload_mid_transfer_moves_data_exactly() -> None:
    pair = make_pair(trace=True)
    client, server = establish(pair)
    a, b = bidirectional(pair, client, server, 400_000, 300_000)
    pair.run(0.005)
    assert client.sock.owner == "host"
    offload_now(pair, client)
    assert pair.host.stats["offloads"] == 1
    finish(pair, client, server, a, b)
    kinds = [e["kind"] for e in pair.tracer.events if e.get("host") == "host"] if pair.tracer else []
    assert "offload_start" in kinds and "offload_done" in kinds
    owners = [e["owner"] for e in pair.tracer.events if e["kind"] == "owner" and e.get("host") == "host"]
    assert owners[:2] == ["host", "nic0"]
    # Both FINs exchanged while offloaded: the host took it back itself to run TIME_WAIT.
    assert pair.run_until(lambda: client.sock.owner == "host", 5.0)
    assert pair.host.stats["terminations"]["by_reason"].get("final") == 1
    assert client.sock.state in (TcpState.TIME_WAIT, TcpState.CLOSED)
    assert pair.run_until(lambda: client.closed == "closed", 100.0)


def test_policy_offloads_after_delay_and_min_bytes() -> None:
    pair = make_pair(policy=OffloadPolicy(offload_after=0.5, min_bytes=10_000))
    client, server = establish(pair)
    pair.run(0.4)
    assert client.sock.owner == "host"
    pair.run(0.3)
    assert client.sock.owner == "host"  # old enough but not enough bytes yet
    client.sock.write(b"z" * 12_000)
    assert pair.run_until(lambda: client.sock.owner == "nic0", 1.0)
    pair.run(0.2)
    assert bytes(server.data) == b"z" * 12_000


def test_policy_disabled_never_offloads_and_capacity_zero_is_respected() -> None:
    pair = make_pair(policy=OffloadPolicy(enabled=False))
    client, _ = establish(pair)
    pair.run(2.0)
    assert client.sock.owner == "host" and pair.host.stats["offload_attempts"] == 0
    pair2 = make_pair(target="none", policy=OffloadPolicy())
    c2, _ = establish(pair2)
    pair2.host.offload(c2.sock)  # the NIC reports max_connections=0: nothing is initiated
    pair2.run(1.0)
    assert c2.sock.owner == "host" and pair2.host.chimney.stats["initiates"] == 0


@pytest.mark.parametrize("reason", [UploadReason.TIMEOUT_EXPIRATION, UploadReason.UPLOAD_REQUESTED])
def test_mandatory_retrieve_mid_transfer(reason: UploadReason) -> None:
    pair = make_pair(policy=OffloadPolicy(offload_after=0.0, backoff={reason: 0.05}), impairments=SLOW)
    client, server = establish(pair)
    assert pair.run_until(lambda: client.sock.owner == "nic0", 1.0)
    a, b = bidirectional(pair, client, server, 600_000, 600_000)
    pair.run(0.01)
    pair.nic.request_retrieve(pair.host.offload_handle(client.sock), reason)
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    st = pair.host.stats
    assert st["retrieves_received"] == 1
    assert st["terminations"]["by_reason"] == {reason.name: 1}
    assert st["terminations"]["by_requester"]["target"] == 1
    assert pair.run_until(lambda: client.sock.owner == "nic0", 1.0)  # re-offloaded after the backoff
    finish(pair, client, server, a, b)


def test_optional_retrieve_declined_by_policy_keeps_running() -> None:
    pair = make_pair(policy=OffloadPolicy(honor_optional=False), impairments=SLOW)
    client, server = establish(pair)
    offload_now(pair, client)
    a, b = bidirectional(pair, client, server, 200_000, 200_000)
    pair.run(0.01)
    pair.nic.request_retrieve(pair.host.offload_handle(client.sock), UploadReason.LOW_ACTIVITY)
    pair.run(0.05)
    assert client.sock.owner == "nic0"
    assert pair.host.stats["retrieves_declined"] == 1
    finish(pair, client, server, a, b)
    assert "LOW_ACTIVITY" not in pair.host.stats["terminations"]["by_reason"]


def test_optional_retrieve_honoured_with_backoff() -> None:
    pair = make_pair(policy=OffloadPolicy(backoff={UploadReason.SMALL_IO: 0.5}), impairments=SLOW)
    client, server = establish(pair)
    assert pair.run_until(lambda: client.sock.owner == "nic0", 1.0)
    a, b = bidirectional(pair, client, server, 100_000, 100_000, close=False)
    pair.nic.request_retrieve(pair.host.offload_handle(client.sock), UploadReason.SMALL_IO)
    pair.nic.request_retrieve(pair.host.offload_handle(client.sock), UploadReason.SMALL_IO)  # repeats are absorbed
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    t0 = pair.clock.now()
    assert pair.host.stats["terminations"]["by_reason"] == {"SMALL_IO": 1}
    assert pair.run_until(lambda: client.sock.owner == "nic0", 2.0)
    assert pair.clock.now() - t0 >= 0.5
    assert pair.run_until(lambda: len(server.data) == len(a) and len(client.data) == len(b), 30.0)
    assert bytes(server.data) == a and bytes(client.data) == b


def test_upload_all_then_resume_requeries_capabilities() -> None:
    pair = make_pair(policy=OffloadPolicy(offload_after=0.0), impairments=SLOW)
    pairs = [establish(pair, port=100 + i) for i in range(4)]
    assert pair.run_until(lambda: all(c.sock.owner == "nic0" for c, _ in pairs), 1.0)
    data = [bidirectional(pair, c, s, 80_000, 60_000, close=False) for c, s in pairs]
    pair.run(0.005)
    initiates = pair.host.chimney.stats["initiates"]
    pair.nic.request_upload_all(resume_after=None)
    assert pair.run_until(lambda: all(c.sock.owner == "host" for c, _ in pairs), 1.0)
    info = pair.host.target_info(pair.target_id)
    assert pair.run_until(lambda: not info.paths and not info.neighbors, 1.0)  # paths and neighbors too
    assert info.paused
    st = pair.host.stats
    assert st["upload_alls"] == 1 and st["terminations"]["by_reason"] == {"upload_all": 4}
    # Paused: nothing is initiated, not even on request.
    pair.host.offload(pairs[0][0].sock)
    pair.run(0.5)
    assert pair.host.chimney.stats["initiates"] == initiates
    assert all(c.sock.owner == "host" for c, _ in pairs)
    # The NIC comes back with room for one connection only: the host re-queries and respects it.
    pair.nic.set_capabilities(max_connections=1)
    pair.nic.resume()
    assert pair.run_until(lambda: sum(c.sock.owner == "nic0" for c, _ in pairs) == 1, 1.0)
    pair.run(0.2)
    assert sum(c.sock.owner == "nic0" for c, _ in pairs) == 1
    assert pairs[0][0].sock.owner == "nic0"  # the one explicitly asked for while paused
    assert pair.host.stats["resumes"] == 1
    for (c, s), (a, b) in zip(pairs, data, strict=True):
        assert pair.run_until(lambda c=c, s=s, a=a, b=b: len(s.data) == len(a) and len(c.data) == len(b), 30.0)
        c.sock.close()
        s.sock.close()
        finish(pair, c, s, a, b)


def test_pause_blocks_new_offloads_until_resume() -> None:
    pair = make_pair(policy=OffloadPolicy(offload_after=0.0))
    pair.nic.pause()
    pair.run(0.01)
    client, server = establish(pair)
    pair.run(0.5)
    assert client.sock.owner == "host" and pair.host.chimney.stats["initiates"] == 0
    pair.nic.resume()
    assert pair.run_until(lambda: client.sock.owner == "nic0", 1.0)
    a, b = bidirectional(pair, client, server, 50_000, 50_000)
    finish(pair, client, server, a, b)


# ---- host-initiated terminate in every state ------------------------------------------------------------------------


def _terminate_when(pair: Pair, client: Sink, state: TcpState) -> None:
    assert pair.run_until(lambda: nic_state(pair, client) == state, 20.0), f"never reached {state.name}"
    pair.host.terminate(client.sock, reason="host")
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    assert pair.host.stats["terminations"]["by_requester"]["host"] >= 1


@pytest.mark.parametrize("state", [TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2])
def test_host_terminate_when_we_close_first(state: TcpState) -> None:
    # A slow, lossy link keeps FIN_WAIT_1 visible long enough to catch it.
    pair = make_pair(impairments=Impairments(delay=0.02, loss=0.02), seed=3)
    client, server = establish(pair)
    offload_now(pair, client)
    a = pattern(150_000, 5)
    Pump(pair, client.sock, a, close=True)
    _terminate_when(pair, client, state)
    b = pattern(40_000, 6)
    assert pair.run_until(lambda: server.eof, 60.0)
    Pump(pair, server.sock, b, close=True)
    finish(pair, client, server, a, b)
    assert pair.run_until(lambda: client.closed == "closed" and server.closed == "closed", 200.0)


@pytest.mark.parametrize("state", [TcpState.CLOSE_WAIT, TcpState.LAST_ACK])
def test_host_terminate_when_peer_closes_first(state: TcpState) -> None:
    pair = make_pair(impairments=Impairments(delay=0.02, loss=0.02), seed=4)
    client, server = establish(pair)
    offload_now(pair, client)
    b = pattern(60_000, 7)
    Pump(pair, server.sock, b, close=True)
    assert pair.run_until(lambda: client.eof, 30.0)
    a = pattern(120_000, 8)
    if state == TcpState.LAST_ACK:
        Pump(pair, client.sock, a, close=True)
    _terminate_when(pair, client, state)
    if state == TcpState.CLOSE_WAIT:
        Pump(pair, client.sock, a, close=True)
    finish(pair, client, server, a, b)
    assert pair.run_until(lambda: client.closed == "closed", 100.0)


def test_terminate_requested_while_offload_in_flight_is_applied_after() -> None:
    pair = make_pair()
    client, server = establish(pair)
    a, b = bidirectional(pair, client, server, 100_000, 100_000)
    pair.run(0.003)
    pair.host.offload(client.sock)
    pair.run(0.0)  # the batch flushes; the initiate is now in flight
    pair.clock.step()
    pair.host.terminate(client.sock, reason="host")
    assert pair.run_until(lambda: pair.host.stats["terminations"]["by_requester"]["host"] == 1, 1.0)
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    finish(pair, client, server, a, b)


def test_close_and_writes_while_offloaded() -> None:
    pair = make_pair()
    client, server = establish(pair)
    offload_now(pair, client)
    for i in range(50):
        client.sock.write(bytes([i]) * 1000)
    client.sock.close()
    with pytest.raises(BrokenPipeError):
        client.sock.write(b"late")
    assert pair.run_until(lambda: server.eof, 10.0)
    assert bytes(server.data) == b"".join(bytes([i]) * 1000 for i in range(50))
    server.sock.close()
    assert pair.run_until(lambda: client.eof and client.sock.owner == "host", 5.0)
    assert client.sock.state in (TcpState.TIME_WAIT, TcpState.CLOSED)
    assert pair.violations() == []


# ---- failures --------------------------------------------------------------------------------------------------------


def test_peer_reset_while_offloaded() -> None:
    pair = make_pair()
    client, server = establish(pair)
    offload_now(pair, client)
    server.sock.write(b"before the reset")
    pair.run(0.1)
    server.sock.abort()
    assert pair.run_until(lambda: client.closed is not None, 5.0)
    assert client.closed == "reset"
    assert bytes(client.data) == b"before the reset"
    assert pair.host.stats["terminations"]["by_reason"] == {"peer_reset": 1}
    with pytest.raises(ConnectionResetError):
        client.sock.write(b"after")
    assert pair.host.connections == []
    assert pair.violations() == []


def test_app_abort_while_offloaded() -> None:
    pair = make_pair()
    client, server = establish(pair)
    offload_now(pair, client)
    client.sock.write(b"x" * 100_000)
    pair.run(0.002)
    client.sock.abort()
    assert pair.run_until(lambda: server.closed is not None and client.closed is not None, 5.0)
    assert server.closed == "reset" and client.closed == "reset"
    assert pair.violations() == []


def test_hardware_failure_resets_the_connection_and_never_reoffloads() -> None:
    pair = make_pair(policy=OffloadPolicy(offload_after=0.0))
    client, _server = establish(pair)
    other_c, other_s = establish(pair, port=81)
    assert pair.run_until(lambda: client.sock.owner == "nic0" and other_c.sock.owner == "nic0", 1.0)
    pair.nic.inject_hardware_failure(pair.host.offload_handle(client.sock))
    assert pair.run_until(lambda: client.closed is not None, 5.0)
    assert client.closed == "reset"
    assert pair.host.stats["terminate_failures"] == 1
    assert pair.host.stats["terminations"]["by_reason"].get("HARDWARE_FAILURE") == 1
    # The other connection is not affected.
    a, b = bidirectional(pair, other_c, other_s, 50_000, 50_000)
    finish(pair, other_c, other_s, a, b)


def test_terminate_that_never_completes_times_out_only_that_connection() -> None:
    pair = make_pair(policy=OffloadPolicy(enabled=False, terminate_timeout=2.0), on_violation="record")
    victim, _vs = establish(pair)
    other_c, other_s = establish(pair, port=81)
    offload_now(pair, victim)
    offload_now(pair, other_c)
    original = pair.nic.terminate_offload
    stuck = pair.host.offload_handle(victim.sock)

    def swallow(tree):  # type: ignore[no-untyped-def]
        if tree.ndis_offload_handle is stuck:
            return  # a target that never completes this terminate
        original(tree)

    pair.nic.terminate_offload = swallow
    pair.host.terminate(victim.sock)
    pair.run(1.0)
    assert victim.closed is None
    assert pair.run_until(lambda: victim.closed is not None, 2.0)
    assert victim.closed == "timeout"
    assert pair.host.stats["terminate_timeouts"] == 1
    a, b = bidirectional(pair, other_c, other_s, 60_000, 60_000)
    finish(pair, other_c, other_s, a, b)


def test_link_down_uploads_and_link_up_reoffloads() -> None:
    pair = make_pair(policy=OffloadPolicy(offload_after=0.0, host_backoff=0.0))
    client, server = establish(pair)
    assert pair.run_until(lambda: client.sock.owner == "nic0", 1.0)
    pair.nic.set_link(False)
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    assert pair.host.stats["terminations"]["by_reason"] == {"link_down": 1}
    pair.run(0.5)
    assert client.sock.owner == "host"  # not offloaded while the link is down
    pair.nic.set_link(True)
    assert pair.run_until(lambda: client.sock.owner == "nic0", 1.0)
    a, b = bidirectional(pair, client, server, 40_000, 40_000)
    finish(pair, client, server, a, b)


def test_receive_backpressure_while_offloaded() -> None:
    cfg = TcpConfig(rcv_buf=64 * 1024)
    pair = make_pair(host_tcp=cfg)
    client, server = establish(pair, reading=False)
    offload_now(pair, client)
    b = pattern(400_000, 21)
    Pump(pair, server.sock, b, close=True)
    most = 0
    for _ in range(40):
        pair.run(0.05)
        most = max(most, client.sock.readable)
    assert 0 < most <= 64 * 1024  # the host accepted only what its socket buffer holds
    assert len(client.data) == 0
    client.reading = True
    client.drain()
    assert pair.run_until(lambda: client.eof, 30.0)
    assert bytes(client.data) == b
    assert pair.violations() == []


def test_stats_and_connections_listing() -> None:
    pair = make_pair()
    client, _server = establish(pair)
    assert pair.host.connections == [client.sock]
    assert pair.host.owner_of(client.sock) == "host"
    offload_now(pair, client)
    st = pair.host.stats
    assert st["offloads"] == 1 and st["offloaded_now"] == 1
    assert st["frames_in"] > 0 and st["frames_out"] > 0
    assert isinstance(st["drops"], dict)
    assert client.sock.key == ("10.0.0.1", client.sock.key[1], PEER_IP, 80)


def test_arp_change_updates_the_offloaded_neighbor() -> None:
    from tcpchimney.wire.addr import BROADCAST_MAC, ip_to_bytes
    from tcpchimney.wire.arp import ARP_REQUEST, ArpPacket
    from tcpchimney.wire.frame import TcpFrame, build_arp_frame, parse_frame

    pair = make_pair(capture=True)
    client, server = establish(pair)
    offload_now(pair, client)
    new_mac = bytes.fromhex("020000000099")
    # A gratuitous ARP: the peer's IP now answers at another MAC.
    garp = ArpPacket(ARP_REQUEST, new_mac, ip_to_bytes(PEER_IP), b"\x00" * 6, ip_to_bytes(PEER_IP))
    pair.peer_nic.send_frame(build_arp_frame(new_mac, BROADCAST_MAC, garp))
    pair.run(0.01)
    assert pair.host.stats["neighbor_updates"] == 1
    assert pair.host.chimney.stats["updates"] == 1
    pair.captured.clear()
    client.sock.write(b"to the new mac")
    assert pair.run_until(lambda: bytes(server.data) == b"to the new mac", 2.0)
    sent = [parse_frame(f) for f, d in pair.captured if d == "ab"]
    data_frames = [p for p in sent if isinstance(p, TcpFrame) and p.seg.payload]
    assert data_frames and all(p.eth.dst == new_mac for p in data_frames)
    assert pair.violations() == []
