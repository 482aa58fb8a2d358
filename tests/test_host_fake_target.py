"""The host against the contract fake (``ScriptedTarget`` on a wire): exact control of every completion.

The fake runs no TCP: while it "holds" a connection nothing moves on the wire, so after the upload the host's engine
(and the peer's) must recover every byte from the handed-back state alone.
"""

from __future__ import annotations

from typing import Any

from tcpchimney.chimney.constants import NdisStatus, TcpEventType, UploadReason
from tcpchimney.chimney.objects import Layer, OffloadBlock
from tcpchimney.host.connection import OFFLOADED, OFFLOADING
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.tcp.engine import TcpConfig
from test_host_support import Pair, Pump, Sink, establish, make_pair, pattern


def fake_pair(**kw: Any) -> Pair:
    kw.setdefault("policy", OffloadPolicy(enabled=False))
    return make_pair(target="fake", **kw)


def offload(pair: Pair, sink: Sink) -> Any:
    pair.host.offload(sink.sock)
    assert pair.run_until(lambda: sink.sock.owner == "fake0", 1.0)
    return pair.host.offload_handle(sink.sock)


def exact(pair: Pair, client: Sink, server: Sink, a: bytes, b: bytes, limit: float = 120.0) -> None:
    assert pair.run_until(lambda: client.eof and server.eof, limit), (len(server.data), len(client.data))
    assert bytes(server.data) == a and bytes(client.data) == b
    assert pair.violations() == []


def capture_trees(nic: Any, method: str) -> list[OffloadBlock]:
    """Wrap one state-operation handler of the fake NIC so the test keeps every tree it is given."""
    trees: list[OffloadBlock] = []
    original = getattr(nic, method)

    def record(tree: OffloadBlock) -> None:
        trees.append(tree)
        original(tree)

    setattr(nic, method, record)
    return trees


def test_tree_shape_and_linkers_for_a_second_connection() -> None:
    pair = fake_pair()
    trees = capture_trees(pair.nic, "initiate_offload")
    c1, _ = establish(pair, 80)
    c2, _ = establish(pair, 81)
    offload(pair, c1)
    offload(pair, c2)
    first, second = trees
    assert [b.layer for b in first.walk()] == [Layer.NEIGHBOR, Layer.PATH, Layer.TCP]
    assert all(b.miniport_offload_context is not None and b.context is not None for b in first.walk())
    nb, path, tcp = list(second.walk())
    # The neighbor and path are already offloaded: they come as linkers naming the target's contexts.
    assert nb.is_linker and path.is_linker and tcp.ndis_offload_handle is pair.host.offload_handle(c2.sock)
    assert nb.context is first.context and path.context is first.dependent_block_list.context  # type: ignore[union-attr]
    assert tcp.delegated is not None and tcp.const.local_port == c2.sock.key[1]


def test_initiate_failure_continues_in_software() -> None:
    pair = fake_pair()
    client, server = establish(pair)
    a, b = pattern(200_000, 1), pattern(150_000, 2)
    Pump(pair, client.sock, a, close=True)
    Pump(pair, server.sock, b, close=True)
    pair.run(0.003)
    pair.nic.fail[client.sock.connection] = NdisStatus.OFFLOAD_TCP_ENTRIES
    pair.host.offload(client.sock)
    assert pair.run_until(lambda: pair.host.stats["offload_failures"] == 1, 1.0)
    assert client.sock.owner == "host"
    exact(pair, client, server, a, b)


def test_sends_returned_in_the_chain_are_resent() -> None:
    pair = fake_pair()
    client, server = establish(pair)
    offload(pair, client)
    a = pattern(50_000, 3)
    for i in range(0, len(a), 7000):
        client.sock.write(a[i : i + 7000])
    assert client.sock.send_buffered == len(a)
    pair.run(0.2)
    assert len(server.data) == 0  # the fake holds them
    pair.host.terminate(client.sock)
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    client.sock.close()
    server.sock.close()
    exact(pair, client, server, a, b"")


def test_upload_in_progress_completions_are_taken_back() -> None:
    pair = fake_pair()
    pair.nic.complete_sends_at_terminate = True
    client, server = establish(pair)
    offload(pair, client)
    a = pattern(30_000, 4)
    client.sock.write(a[:10_000])
    client.sock.write(a[10_000:])
    pair.nic.retrieve(pair.host.offload_handle(client.sock), UploadReason.UPLOAD_REQUESTED)
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    assert pair.host.stats["terminations"]["by_reason"] == {"UPLOAD_REQUESTED": 1}
    client.sock.close()
    server.sock.close()
    exact(pair, client, server, a, b"")


def test_writes_and_close_during_terminate_are_queued() -> None:
    pair = fake_pair()
    pair.nic.hold.add("terminate")
    trees = capture_trees(pair.nic, "terminate_offload")
    client, server = establish(pair)
    offload(pair, client)
    client.sock.write(b"first|")
    pair.host.terminate(client.sock)
    pair.run(0.01)
    posted = pair.host.chimney.stats["sends"]
    client.sock.write(b"second|")  # terminating: queued in the host, not posted
    client.sock.close()
    pair.run(0.01)
    assert pair.host.chimney.stats["sends"] == posted and pair.host.chimney.stats["disconnects"] == 0
    pair.nic.hold.discard("terminate")
    pair.nic._finish_terminate(trees[0])
    server.sock.close()
    exact(pair, client, server, b"first|second|", b"")


def test_frames_that_arrive_during_the_initiate_are_forwarded() -> None:
    pair = fake_pair()
    pair.nic.hold.add("initiate")
    trees = capture_trees(pair.nic, "initiate_offload")
    client, server = establish(pair)
    pair.host.offload(client.sock)
    pair.run(0.0001)
    assert client.sock.connection.mode == OFFLOADING
    server.sock.write(b"in flight")
    pair.run(0.01)
    conn = client.sock.connection
    assert len(conn.pending_frames) >= 1
    pair.nic._finish_initiate(trees[0])
    assert conn.mode == OFFLOADED and conn.pending_frames == []
    assert pair.host.chimney.stats["forwards"] >= 1
    assert pair.nic.objects[conn].forwards
    pair.host.terminate(client.sock)
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    server.sock.close()
    client.sock.close()
    exact(pair, client, server, b"", b"in flight")


def test_upload_all_blocks_initiates_until_resume_then_requeries() -> None:
    pair = fake_pair(policy=OffloadPolicy(offload_after=0.0))
    socks = [establish(pair, 80 + i) for i in range(3)]
    assert pair.run_until(lambda: all(c.sock.owner == "fake0" for c, _ in socks), 1.0)
    pair.nic.calls.clear()
    pair.nic.status(NdisStatus.UPLOAD_ALL)
    assert pair.run_until(lambda: all(c.sock.owner == "host" for c, _ in socks), 1.0)
    info = pair.host.target_info(pair.target_id)
    assert pair.run_until(lambda: not info.paths and not info.neighbors, 1.0)
    assert pair.nic.objects == {}  # every TCP, path and neighbor object was terminated
    for c, _ in socks:
        pair.host.offload(c.sock)
    pair.run(1.0)
    assert "initiate" not in pair.nic.calls
    pair.nic.status(NdisStatus.OFFLOAD_RESUME)
    assert pair.run_until(lambda: all(c.sock.owner == "fake0" for c, _ in socks), 1.0)
    calls = pair.nic.calls
    assert "query_capabilities" in calls and calls.index("query_capabilities") < calls.index("initiate")
    assert pair.host.stats["upload_alls"] == 1 and pair.host.stats["resumes"] == 1
    assert pair.violations() == []


def test_pause_keeps_offloaded_connections_and_blocks_new_ones() -> None:
    pair = fake_pair()
    c1, _ = establish(pair, 80)
    offload(pair, c1)
    pair.nic.status(NdisStatus.OFFLOAD_PAUSE)
    c2, _ = establish(pair, 81)
    pair.host.offload(c2.sock)
    pair.run(0.5)
    assert c1.sock.owner == "fake0" and c2.sock.owner == "host"
    pair.nic.status(NdisStatus.OFFLOAD_RESUME)
    assert pair.run_until(lambda: c2.sock.owner == "fake0", 1.0)


def test_terminate_failure_ends_the_connection_as_reset() -> None:
    pair = fake_pair()
    client, _server = establish(pair)
    offload(pair, client)

    def corrupt(tree: OffloadBlock) -> None:
        for block in tree.walk():
            if block.layer == Layer.TCP:
                block.status = NdisStatus.FAILURE
                block.delegated = None

    pair.nic.before_complete["terminate"] = corrupt
    pair.host.terminate(client.sock)
    assert pair.run_until(lambda: client.closed is not None, 1.0)
    assert client.closed == "reset"
    assert pair.host.stats["terminate_failures"] == 1
    assert pair.host.connections == []


def test_abort_event_drops_request_aborted_sends() -> None:
    pair = fake_pair()
    client, server = establish(pair)
    handle = offload(pair, client)
    client.sock.write(b"never delivered")
    ctx = pair.nic.objects[handle]
    nbls, ctx.sends = ctx.sends, []
    for nbl in nbls:
        nbl.status = NdisStatus.REQUEST_ABORTED
    pair.nic.event(handle, TcpEventType.ABORT)
    pair.host.chimney.tcp_send_complete(handle, nbls)
    assert pair.run_until(lambda: client.closed is not None, 1.0)
    assert client.closed == "reset" and client.sock.send_buffered == 0
    assert pair.host.stats["terminations"]["by_reason"] == {"peer_reset": 1}
    pair.run(5.0)
    assert b"never" not in bytes(server.data)
    assert pair.violations() == []


def test_receive_indications_respect_the_socket_buffer_then_repost() -> None:
    pair = fake_pair(host_tcp=TcpConfig(rcv_buf=10_000))
    client, _server = establish(pair, reading=False)
    handle = offload(pair, client)
    chimney = pair.host.chimney
    from tcpchimney.chimney.objects import NetBufferList

    status, consumed = chimney.tcp_receive_indicate(handle, NetBufferList(data=b"a" * 6000))
    assert (status, consumed) == (NdisStatus.SUCCESS, 6000)
    status, consumed = chimney.tcp_receive_indicate(handle, NetBufferList(data=b"b" * 6000))
    assert (status, consumed) == (NdisStatus.OFFLOAD_DATA_PARTIALLY_ACCEPTED, 4000)
    status, consumed = chimney.tcp_receive_indicate(handle, NetBufferList(data=b"c" * 100))
    assert (status, consumed) == (NdisStatus.OFFLOAD_DATA_NOT_ACCEPTED, 0)
    posts = chimney.stats["receive_posts"]
    assert client.sock.read(3000) == b"a" * 3000
    pair.run(0.01)
    assert chimney.stats["receive_posts"] == posts + 1  # a zero-byte post re-enables indications
    assert client.sock.read() == b"a" * 3000 + b"b" * 4000


def test_disconnect_event_gives_eof_after_the_data() -> None:
    pair = fake_pair()
    client, _server = establish(pair)
    handle = offload(pair, client)
    from tcpchimney.chimney.objects import NetBufferList

    pair.host.chimney.tcp_receive_indicate(handle, NetBufferList(data=b"last words"))
    pair.nic.event(handle, TcpEventType.DISCONNECT)
    pair.run(0.01)
    assert client.eof and bytes(client.data) == b"last words"
    assert client.sock.owner == "fake0"  # only the receive half closed


def test_optional_retrieve_reasons_follow_the_policy() -> None:
    pair = fake_pair(policy=OffloadPolicy(enabled=False, honor_optional=False))
    client, _ = establish(pair)
    handle = offload(pair, client)
    pair.nic.retrieve(handle, UploadReason.HIGH_DROP_RATE)
    pair.run(0.1)
    assert client.sock.owner == "fake0"
    pair.nic.retrieve(handle, UploadReason.RECEIVED_URGENT_DATA)  # mandatory: always honoured
    assert pair.run_until(lambda: client.sock.owner == "host", 1.0)
    assert pair.host.stats["retrieves_received"] == 2 and pair.host.stats["retrieves_declined"] == 1


def test_watchdog_reports_and_times_out_a_stuck_terminate() -> None:
    pair = fake_pair(policy=OffloadPolicy(enabled=False, terminate_timeout=3.0), trace=True)
    pair.nic.hold.add("terminate")
    client, _ = establish(pair, 80)
    other, other_server = establish(pair, 81)
    offload(pair, client)
    pair.host.terminate(client.sock)
    pair.run(2.0)
    assert client.closed is None
    assert pair.run_until(lambda: client.closed is not None, 2.0)
    assert client.closed == "timeout"
    assert pair.tracer is not None
    ev = [e for e in pair.tracer.events if e["kind"] == "terminate_timeout"]
    assert len(ev) == 1 and "terminate" in ev[0]["pending"]
    # The other connection still works.
    other.sock.write(b"still alive")
    assert pair.run_until(lambda: bytes(other_server.data) == b"still alive", 2.0)
