"""The Chimney mediator lets a correct host/target pair through a whole offload life cycle without a violation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tcpchimney.chimney.constants import NdisStatus, OffloadEventCode, TcpEventType, UploadReason
from tcpchimney.chimney.errors import ContractViolation, Rule
from tcpchimney.chimney.fakes import RecordingHost, ScriptedTarget, chain, connection_tree, delegated, name_block
from tcpchimney.chimney.mediator import Chimney
from tcpchimney.chimney.objects import (
    ContextSlot,
    Layer,
    LinkState,
    NeighborDelegated,
    NetBufferList,
    OffloadBlock,
    neighbor_block,
    path_block,
)
from tcpchimney.clock import VirtualClock
from tcpchimney.tcp.state import TcpState
from tcpchimney.trace.tracer import Tracer


@dataclass
class Env:
    clock: VirtualClock
    tracer: Tracer
    chimney: Chimney
    host: RecordingHost
    target: ScriptedTarget
    tid: int

    def run(self) -> None:
        self.clock.run_until_idle()

    def offload(self, tree: OffloadBlock) -> OffloadBlock:
        self.chimney.initiate_offload(self.tid, tree)
        self.run()
        return tree

    def named(self, layer: Layer, handle: str) -> OffloadBlock:
        return name_block(layer, handle, self.target.objects[handle])

    def terminate(self, tree: OffloadBlock) -> OffloadBlock:
        self.chimney.terminate_offload(self.tid, tree)
        self.run()
        return tree


def tcp_of(tree: OffloadBlock) -> OffloadBlock:
    """The TCP block of a neighbor -> path -> TCP tree."""
    path = tree.dependent_block_list
    assert path is not None and path.dependent_block_list is not None
    return path.dependent_block_list


def make_env(mode: str = "raise") -> Env:
    clock = VirtualClock()
    tracer = Tracer(clock.now)
    chimney = Chimney(clock, tracer=tracer, on_violation=mode)
    host = RecordingHost()
    chimney.bind_host(host)
    target = ScriptedTarget(clock)
    tid = chimney.register_target(target)
    chimney.query_capabilities(tid)
    return Env(clock, tracer, chimney, host, target, tid)


def test_full_life_cycle_passes_without_violation() -> None:
    e = make_env()
    ch, tgt = e.chimney, e.target
    # Offload N -> P -> T with 100 unACKed bytes and 5 bytes of ACKed-but-undelivered receive data.
    initial = NetBufferList(data=b"i" * 100)
    tree = e.offload(
        connection_tree(
            tcp_delegated=delegated(snd=1000, unacked=100, rcv=5000),
            send_nbls=[initial],
            buffered=[NetBufferList(data=b"hello")],
        )
    )
    assert [b.status for b in tree.walk()] == [NdisStatus.SUCCESS] * 3
    assert e.host.names() == ["initiate_complete"]
    assert e.host.calls[0][2] is tree  # same root pointer comes back
    assert {ch.object_state(h) for h in ("n1", "p1", "t1")} == {"offloaded"}

    # Sends: the initiate chain and two new NBLs are ACKed in two steps.
    a, b = NetBufferList(data=b"a" * 1000), NetBufferList(data=b"b" * 500)
    ch.tcp_send("t1", [a, b])
    tgt.ack("t1", 600)
    assert e.host.calls[-1] == ("send_complete", "t1", [initial])
    tgt.ack("t1")
    assert e.host.calls[-1] == ("send_complete", "t1", [a, b])

    # Receives: a post takes the head of the handed-over data, the rest is indicated with new data.
    ch.tcp_receive("t1", [NetBufferList(capacity=3)])
    e.run()
    tgt.receive("t1", b"world!")
    assert bytes(e.host.received) == b"helloworld!"

    # Every retrieve reason is legal while ESTABLISHED, and repeating one is legal too.
    for reason in UploadReason:
        tgt.retrieve("t1", reason)
    tgt.retrieve("t1", UploadReason.LOW_ACTIVITY)
    assert ch.stats["retrieves"] == 12
    assert ch.stats["retrieves_by_reason"]["LOW_ACTIVITY"] == 2

    # Query and update go through.
    ch.query_offload(e.tid, e.named(Layer.TCP, "t1"))
    ch.update_offload(e.tid, e.named(Layer.PATH, "p1"))
    e.run()
    assert e.host.names()[-2:] == ["query_complete", "update_complete"]

    # A send outstanding and partly ACKed when UPLOAD_ALL arrives.
    c = NetBufferList(data=b"c" * 300)
    ch.tcp_send("t1", [c])
    tgt.ack("t1", 100)
    tgt.status(NdisStatus.UPLOAD_ALL)
    assert ch.paused(e.tid)

    # The host terminates the TCP, then the path and neighbor together.
    t_tree = e.terminate(e.named(Layer.TCP, "t1"))
    assert t_tree.status == NdisStatus.SUCCESS
    assert t_tree.net_buffer_list_chain == [c] and c.remaining == b"c" * 200
    assert ch.object_state("t1") is None
    e.terminate(chain(e.named(Layer.NEIGHBOR, "n1"), e.named(Layer.PATH, "p1")))
    assert ch.object_state("n1") is None and ch.object_state("p1") is None

    # RESUME, re-query, offload again (same handles may be reused).
    tgt.status(NdisStatus.OFFLOAD_RESUME)
    assert not ch.paused(e.tid)
    ch.query_capabilities(e.tid)
    e.offload(connection_tree())
    assert ch.object_state("t1") == "offloaded"
    ch.check_quiescent()
    assert ch.violations == [] and e.host.violations == []

    kinds = {ev["kind"].removeprefix("chimney.") for ev in e.tracer.events}
    assert {"initiate_start", "initiate_done", "terminate_start", "terminate_done", "retrieve", "upload_all"} <= kinds
    assert "resume" in kinds
    retrieve = next(ev for ev in e.tracer.events if ev["kind"] == "chimney.retrieve")
    assert retrieve["conn"] == "t1" and retrieve["target"] == "nic0" and retrieve["reason"] == "LOW_ACTIVITY"
    assert ch.stats["initiates"] == 2 and ch.stats["terminates"] == 2 and ch.stats["upload_alls"] == 1
    assert ch.stats["sends"] == 3 and ch.stats["send_bytes"] == 1800


def test_sends_completed_with_upload_in_progress_at_terminate_balance() -> None:
    e = make_env()
    e.target.complete_sends_at_terminate = True
    e.offload(connection_tree())
    x, y = NetBufferList(data=b"x" * 400), NetBufferList(data=b"y" * 400)
    e.chimney.tcp_send("t1", [x, y])
    e.target.ack("t1", 150)  # x is partly ACKed: one partial completion, then y
    e.terminate(e.named(Layer.TCP, "t1"))
    assert x.status == y.status == NdisStatus.UPLOAD_IN_PROGRESS and x.bytes_transferred == 150
    assert e.chimney.violations == []


def test_partial_initiate_offloads_what_succeeded() -> None:
    e = make_env()
    e.target.fail = {"t1": NdisStatus.OFFLOAD_TCP_ENTRIES}
    tree = e.offload(connection_tree())
    n, t = tree, tcp_of(tree)
    p = n.dependent_block_list
    assert p is not None
    assert (n.status, p.status, t.status) == (
        NdisStatus.SUCCESS,
        NdisStatus.OFFLOAD_PARTIAL_SUCCESS,
        NdisStatus.OFFLOAD_TCP_ENTRIES,
    )
    assert e.chimney.object_state("p1") == "offloaded" and e.chimney.object_state("t1") is None
    # A second connection links to the offloaded neighbor and path.
    t2 = tcp_of(connection_tree("n1", "p1", "t2"))
    tree2 = chain(e.named(Layer.NEIGHBOR, "n1"), e.named(Layer.PATH, "p1"), t2)
    e.offload(tree2)
    assert tree2.status == NdisStatus.SUCCESS and e.chimney.object_state("t2") == "offloaded"
    assert e.chimney.violations == []


def test_root_failure_offloads_nothing() -> None:
    e = make_env()
    e.target.fail = {"n1": NdisStatus.OFFLOAD_NEIGHBOR_ENTRIES}
    tree = e.offload(connection_tree())
    assert [b.status for b in tree.walk()] == [
        NdisStatus.OFFLOAD_NEIGHBOR_ENTRIES,
        NdisStatus.FAILURE,
        NdisStatus.FAILURE,
    ]
    assert all(b.context is None for b in tree.walk())
    assert all(e.chimney.object_state(h) is None for h in ("n1", "p1", "t1"))
    assert e.chimney.violations == []


def test_placeholder_root_is_success() -> None:
    e = make_env()
    full = connection_tree()
    placeholder = neighbor_block()
    placeholder.dependent_block_list = full.dependent_block_list
    e.offload(placeholder)
    assert placeholder.status == NdisStatus.SUCCESS
    assert e.chimney.object_state("p1") == "offloaded"


def test_pending_operations_empty_and_quiescent_after_clean_run() -> None:
    e = make_env()
    e.offload(connection_tree())
    assert e.chimney.pending_operations() == []
    e.chimney.check_quiescent()


def test_disconnect_and_abort_events_track_state() -> None:
    e = make_env()
    e.offload(connection_tree())
    e.target.event("t1", TcpEventType.DISCONNECT)
    assert e.chimney.tcp_state("t1") == TcpState.CLOSE_WAIT
    fin = NetBufferList()
    e.chimney.tcp_disconnect("t1", fin, 0x01)
    assert e.chimney.tcp_state("t1") == TcpState.LAST_ACK
    e.target.complete_disconnect("t1")
    assert e.host.calls[-1] == ("disconnect_complete", "t1", fin)
    e.target.retrieve("t1", UploadReason.TIMEOUT_EXPIRATION)  # LAST_ACK: allowed


def test_record_mode_isolates_the_violating_connection() -> None:
    e = make_env("record")
    ch, tgt = e.chimney, e.target
    e.offload(connection_tree())
    t2 = tcp_of(connection_tree("n1", "p1", "t2", port=40001))
    e.offload(chain(e.named(Layer.NEIGHBOR, "n1"), e.named(Layer.PATH, "p1"), t2))

    # t1: a send completed twice, a never-posted NBL and a PAUSED status: recorded, not delivered.
    s1 = NetBufferList(data=b"1" * 10)
    ch.tcp_send("t1", [s1])
    tgt.ack("t1")
    delivered = len(e.host.calls)
    ch.tcp_send_complete("t1", [s1])
    ghost = NetBufferList(data=b"g", status=NdisStatus.SUCCESS)
    ch.tcp_send_complete("t1", [ghost])
    s3 = NetBufferList(data=b"3" * 10)
    ch.tcp_send("t1", [s3])
    s3.status = NdisStatus.PAUSED
    ch.tcp_send_complete("t1", [s3])
    tgt.retrieve("p1", UploadReason.LOW_ACTIVITY)
    assert len(e.host.calls) == delivered  # none of the bad calls reached the host
    assert [v.rule for v in ch.violations] == [
        Rule.SEND_COMPLETED_TWICE,
        Rule.COMPLETION_WITHOUT_REQUEST,
        Rule.PAUSED_STATUS_USED,
        Rule.RETRIEVE_NOT_TCP,
    ]
    assert e.host.violations == ch.violations
    assert ch.stats["violations_by_rule"]["SEND_COMPLETED_TWICE"] == 1

    # t2 keeps moving data through the same mediator.
    s2 = NetBufferList(data=b"2" * 700)
    ch.tcp_send("t2", [s2])
    tgt.ack("t2")
    tgt.receive("t2", b"data for t2")
    assert e.host.calls[-2] == ("send_complete", "t2", [s2])
    assert e.host.calls[-1][0:2] == ("receive_indicate", "t2")
    assert e.host.received.endswith(b"data for t2")
    assert len(ch.violations) == 4
    # t1 itself still works for correct calls: its outstanding s3 can still complete properly.
    s3.status = NdisStatus.SUCCESS
    tgt.objects["t1"].sends.clear()
    ch.tcp_send_complete("t1", [s3])
    assert e.host.calls[-1] == ("send_complete", "t1", [s3])


def test_raise_mode_records_tells_host_and_raises() -> None:
    e = make_env()
    e.offload(connection_tree())
    with pytest.raises(ContractViolation) as info:
        e.target.retrieve("n1", UploadReason.LOW_ACTIVITY)
    assert info.value.rule is Rule.RETRIEVE_NOT_TCP
    assert e.chimney.violations == [info.value] and e.host.violations == [info.value]
    assert info.value.party == "target:nic0" and info.value.handle == "n1"
    assert any(ev["kind"] == "chimney.violation" for ev in e.tracer.events)


def test_linker_with_unknown_context_is_rejected() -> None:
    e = make_env()
    bogus = path_block(context=ContextSlot(object()), handle="nope")
    with pytest.raises(ContractViolation) as info:
        e.chimney.initiate_offload(e.tid, bogus)
    assert info.value.rule is Rule.UNKNOWN_HANDLE and info.value.party == "host"


def test_status_indications_forward_and_trace() -> None:
    e = make_env()
    e.target.status(NdisStatus.LINK_STATE, LinkState(up=False))
    e.target.status(NdisStatus.OFFLOAD_PAUSE)
    assert e.chimney.paused(e.tid)
    e.target.status(NdisStatus.OFFLOAD_RESUME)  # nothing was uploaded: RESUME is fine
    assert [c[2] for c in e.host.calls] == [NdisStatus.LINK_STATE, NdisStatus.OFFLOAD_PAUSE, NdisStatus.OFFLOAD_RESUME]
    link = next(ev for ev in e.tracer.events if ev["kind"] == "chimney.link_state")
    assert link["up"] is False
    assert [ev["kind"] for ev in e.tracer.events if ev["kind"] in ("chimney.pause", "chimney.resume")] == [
        "chimney.pause",
        "chimney.resume",
    ]
    stale = neighbor_block(delegated=NeighborDelegated(5), handle="n1")
    stale.status = NdisStatus.SUCCESS
    e.chimney.offload_event(e.tid, stale, OffloadEventCode.NEIGHBOR_REACHABILITY_QUERY)
    assert e.host.calls[-1] == ("offload_event", e.tid, stale, OffloadEventCode.NEIGHBOR_REACHABILITY_QUERY)
    with pytest.raises(ContractViolation) as info:
        e.chimney.offload_event(e.tid, None, 7)
    assert info.value.rule is Rule.BAD_EVENT


def test_forward_frames_and_late_receive_return() -> None:
    e = make_env()
    e.offload(connection_tree(buffered=[NetBufferList(data=b"left")]))
    seg = NetBufferList(data=b"segment")
    e.chimney.tcp_forward("t1", [seg])
    e.target.complete_forwards("t1")
    assert e.host.calls[-1] == ("forward_complete", "t1", [seg])
    e.chimney.send_frame(e.tid, b"frame-out")
    e.chimney.indicate_receive_frame(e.tid, b"frame-in")
    assert e.target.frames == [b"frame-out"] and e.host.calls[-1] == ("frame", e.tid, b"frame-in")
    # Undelivered data comes back in BufferedData; the host returns those NBLs after the terminate completed.
    tree = e.terminate(e.named(Layer.TCP, "t1"))
    assert tree.buffered_data is not None and tree.buffered_data[0].data == b"left"
    e.chimney.tcp_receive_return("t1", tree.buffered_data)
    assert e.target.returned == tree.buffered_data
    assert e.chimney.violations == []


def test_update_relinks_path_to_new_neighbor() -> None:
    e = make_env()
    e.offload(connection_tree())
    n2 = connection_tree("n2", "px", "tx")
    n2.dependent_block_list = None
    e.offload(n2)
    e.chimney.update_offload(e.tid, chain(e.named(Layer.NEIGHBOR, "n2"), e.named(Layer.PATH, "p1")))
    e.run()
    # The old neighbor now has no dependents: terminating it alone is legal; the new one is not.
    e.terminate(e.named(Layer.NEIGHBOR, "n1"))
    assert e.chimney.object_state("n1") is None
    with pytest.raises(ContractViolation) as info:
        e.terminate(e.named(Layer.NEIGHBOR, "n2"))
    assert info.value.rule is Rule.TERMINATE_ORDER
