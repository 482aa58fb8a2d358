"""Each broken chimney rule is caught at run time and named by the right ``Rule``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcpchimney.chimney.constants import NdisStatus, TcpEventType, UploadReason
from tcpchimney.chimney.errors import ContractViolation, Rule
from tcpchimney.chimney.fakes import ScriptedTarget, chain, connection_tree, delegated, name_block
from tcpchimney.chimney.objects import ContextSlot, Layer, NetBufferList, OffloadBlock, neighbor_block
from tcpchimney.tcp.state import TcpState, TimerState
from test_contract_lifecycle import Env, make_env, tcp_of


def offloaded() -> Env:
    e = make_env()
    e.offload(connection_tree())
    return e


def expect(rule: Rule, fn: Callable[[], object], party: str | None = None) -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        fn()
    assert info.value.rule is rule, info.value
    if party is not None:
        assert info.value.party == party
    return info.value


# ---- retrieve / events (invariants 13-15) ----


@pytest.mark.parametrize("handle", ["p1", "n1", "unknown"])
def test_retrieve_for_path_neighbor_or_unknown(handle: str) -> None:
    e = offloaded()
    expect(Rule.RETRIEVE_NOT_TCP, lambda: e.target.retrieve(handle, UploadReason.LOW_ACTIVITY))


def _to_fin_wait_1(e: Env) -> None:
    e.chimney.tcp_disconnect("t1", NetBufferList(), 0x01)


def _to_fin_wait_2(e: Env) -> None:
    e.target.set_state("t1", TcpState.FIN_WAIT_2)


def _to_close_wait(e: Env) -> None:
    e.target.event("t1", TcpEventType.DISCONNECT)


@pytest.mark.parametrize("move", [_to_fin_wait_1, _to_fin_wait_2, _to_close_wait])
def test_retrieve_half_closed(move: Callable[[Env], None]) -> None:
    e = offloaded()
    move(e)
    assert e.chimney.tcp_state("t1") in (TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2, TcpState.CLOSE_WAIT)
    expect(Rule.RETRIEVE_HALF_CLOSED, lambda: e.target.retrieve("t1", UploadReason.TIMEOUT_EXPIRATION))


def test_retrieve_half_closed_from_initiate_state() -> None:
    e = make_env()
    e.offload(connection_tree(tcp_delegated=delegated(TcpState.CLOSE_WAIT)))
    expect(Rule.RETRIEVE_HALF_CLOSED, lambda: e.target.retrieve("t1", UploadReason.LOW_ACTIVITY))


@pytest.mark.parametrize("reason", [0, 12, -1])
def test_bad_reason(reason: int) -> None:
    e = offloaded()
    expect(Rule.BAD_REASON, lambda: e.target.retrieve("t1", reason))


@pytest.mark.parametrize("event_type", [0, 5, 99])
def test_bad_event_type(event_type: int) -> None:
    e = offloaded()
    expect(Rule.BAD_EVENT, lambda: e.target.event("t1", event_type))


def test_indication_during_initiate() -> None:
    e = make_env()
    e.target.hold = {"initiate"}
    e.offload(connection_tree())
    expect(Rule.INDICATION_DURING_INITIATE, lambda: e.chimney.tcp_receive_indicate("t1", NetBufferList(data=b"x")))


# ---- PAUSE / UPLOAD_ALL / RESUME (invariants 11, 12) ----


def test_resume_before_upload_all_terminations_completed() -> None:
    e = offloaded()
    e.target.status(NdisStatus.UPLOAD_ALL)
    e.target.hold = {"terminate"}
    e.terminate(e.named(Layer.TCP, "t1"))
    expect(Rule.RESUME_TOO_EARLY, lambda: e.target.status(NdisStatus.OFFLOAD_RESUME), "target:nic0")


def test_resume_with_path_and_neighbor_still_offloaded() -> None:
    e = offloaded()
    e.target.status(NdisStatus.UPLOAD_ALL)
    e.terminate(e.named(Layer.TCP, "t1"))
    expect(Rule.RESUME_TOO_EARLY, lambda: e.target.status(NdisStatus.OFFLOAD_RESUME))


@pytest.mark.parametrize("status", [NdisStatus.UPLOAD_ALL, NdisStatus.OFFLOAD_PAUSE])
def test_initiate_between_pause_or_upload_all_and_resume(status: NdisStatus) -> None:
    e = offloaded()
    e.target.status(status)
    expect(Rule.OFFLOAD_WHILE_PAUSED, lambda: e.offload(connection_tree("n2", "p2", "t2")), "host")


def test_initiate_after_resume_without_requery() -> None:
    e = make_env()
    e.target.status(NdisStatus.OFFLOAD_PAUSE)
    e.target.status(NdisStatus.OFFLOAD_RESUME)
    expect(Rule.CAPS_NOT_REQUERIED, lambda: e.offload(connection_tree()))
    e.chimney.query_capabilities(e.tid)
    e.offload(connection_tree())
    assert e.chimney.object_state("t1") == "offloaded"


def test_upload_all_never_acted_on_is_reported() -> None:
    e = offloaded()
    e.target.status(NdisStatus.UPLOAD_ALL)
    expect(Rule.UPLOAD_ALL_NOT_DONE, e.chimney.check_quiescent, "host")


# ---- send side (invariants 20-22) ----


def test_send_completed_twice() -> None:
    e = offloaded()
    nbl = NetBufferList(data=b"x" * 10)
    e.chimney.tcp_send("t1", [nbl])
    e.target.ack("t1")
    expect(Rule.SEND_COMPLETED_TWICE, lambda: e.chimney.tcp_send_complete("t1", [nbl]))


def test_send_completed_twice_in_one_call() -> None:
    e = offloaded()
    nbl = NetBufferList(data=b"x" * 10, status=NdisStatus.SUCCESS)
    e.chimney.tcp_send("t1", [nbl])
    expect(Rule.SEND_COMPLETED_TWICE, lambda: e.chimney.tcp_send_complete("t1", [nbl, nbl]))


def test_send_both_completed_and_returned() -> None:
    e = offloaded()
    done = NetBufferList(data=b"d" * 10)
    e.chimney.tcp_send("t1", [done])
    e.target.ack("t1")

    def return_it(tree: OffloadBlock) -> None:
        tree.net_buffer_list_chain = [done]

    e.target.before_complete["terminate"] = return_it
    expect(Rule.SEND_COMPLETED_TWICE, lambda: e.terminate(e.named(Layer.TCP, "t1")))


def test_send_neither_completed_nor_returned() -> None:
    e = offloaded()
    e.chimney.tcp_send("t1", [NetBufferList(data=b"d" * 10)])

    def drop(tree: OffloadBlock) -> None:
        tree.net_buffer_list_chain = None

    e.target.before_complete["terminate"] = drop
    expect(Rule.IO_NOT_COMPLETED, lambda: e.terminate(e.named(Layer.TCP, "t1")))


def test_returned_sends_out_of_order() -> None:
    e = offloaded()
    a, b = NetBufferList(data=b"a"), NetBufferList(data=b"b")
    e.chimney.tcp_send("t1", [a, b])

    def swap(tree: OffloadBlock) -> None:
        tree.net_buffer_list_chain = [b, a]

    e.target.before_complete["terminate"] = swap
    expect(Rule.SEND_PREFIX, lambda: e.terminate(e.named(Layer.TCP, "t1")))


def test_completion_of_unknown_nbl() -> None:
    e = offloaded()
    ghost = NetBufferList(data=b"g", status=NdisStatus.SUCCESS)
    expect(Rule.COMPLETION_WITHOUT_REQUEST, lambda: e.chimney.tcp_send_complete("t1", [ghost]), "target:nic0")


def test_success_out_of_post_order() -> None:
    e = offloaded()
    a, b = NetBufferList(data=b"a"), NetBufferList(data=b"b")
    e.chimney.tcp_send("t1", [a, b])
    b.status = NdisStatus.SUCCESS
    expect(Rule.SEND_PREFIX, lambda: e.chimney.tcp_send_complete("t1", [b]))


def test_success_after_a_failed_send() -> None:
    e = offloaded()
    a, b = NetBufferList(data=b"a"), NetBufferList(data=b"b")
    e.chimney.tcp_send("t1", [a, b])
    a.status, b.status = NdisStatus.UPLOAD_IN_PROGRESS, NdisStatus.SUCCESS
    expect(Rule.SEND_PREFIX, lambda: e.chimney.tcp_send_complete("t1", [a, b]))


def test_two_partial_sends() -> None:
    e = offloaded()
    a, b = NetBufferList(data=b"a" * 10), NetBufferList(data=b"b" * 10)
    e.chimney.tcp_send("t1", [a, b])
    for nbl in (a, b):
        nbl.status, nbl.bytes_transferred = NdisStatus.FAILURE, 5
    expect(Rule.SEND_PREFIX, lambda: e.chimney.tcp_send_complete("t1", [a, b]))


def test_paused_used_as_send_status() -> None:
    e = offloaded()
    nbl = NetBufferList(data=b"x")
    e.chimney.tcp_send("t1", [nbl])
    nbl.status = NdisStatus.PAUSED
    expect(Rule.PAUSED_STATUS_USED, lambda: e.chimney.tcp_send_complete("t1", [nbl]))


def test_paused_used_as_receive_status() -> None:
    e = offloaded()
    post = NetBufferList(capacity=10)
    e.chimney.tcp_receive("t1", [post])
    e.target.objects["t1"].recvs.clear()  # complete it by hand instead of through the fake
    post.status = NdisStatus.PAUSED
    expect(Rule.PAUSED_STATUS_USED, lambda: e.chimney.tcp_receive_complete("t1", [post]))


def test_send_after_abort_must_be_request_aborted() -> None:
    e = offloaded()
    nbl = NetBufferList(data=b"x" * 10)
    e.chimney.tcp_send("t1", [nbl])
    e.target.event("t1", TcpEventType.ABORT)
    expect(Rule.IO_AFTER_ABORT, lambda: e.target.ack("t1"))


def test_disconnect_after_abort_must_be_request_aborted() -> None:
    e = offloaded()
    e.chimney.tcp_disconnect("t1", NetBufferList(), 0x01)
    e.target.event("t1", TcpEventType.ABORT)
    expect(Rule.IO_AFTER_ABORT, lambda: e.target.complete_disconnect("t1", NdisStatus.SUCCESS))


def test_disconnect_completed_before_earlier_sends() -> None:
    e = offloaded()
    e.chimney.tcp_send("t1", [NetBufferList(data=b"x")])
    e.chimney.tcp_disconnect("t1", NetBufferList(), 0x01)
    expect(Rule.SEND_PREFIX, lambda: e.target.complete_disconnect("t1"))


# ---- receive side (invariants 23, 24) ----


def test_receive_posts_completed_out_of_order() -> None:
    e = offloaded()
    first, second = NetBufferList(capacity=4), NetBufferList(capacity=4)
    e.chimney.tcp_receive("t1", [first, second])
    e.target.objects["t1"].recvs.clear()
    second.status = NdisStatus.SUCCESS
    expect(Rule.RECEIVE_FIFO, lambda: e.chimney.tcp_receive_complete("t1", [second]))


def test_receive_overfills_a_post() -> None:
    e = offloaded()
    post = NetBufferList(capacity=4)
    e.chimney.tcp_receive("t1", [post])
    e.target.objects["t1"].recvs.clear()
    post.status, post.bytes_transferred = NdisStatus.SUCCESS, 5
    expect(Rule.RECEIVE_CONSERVATION, lambda: e.chimney.tcp_receive_complete("t1", [post]))


def test_receive_bytes_lost_at_terminate() -> None:
    e = offloaded()
    e.target.receive("t1", b"abc")  # indicated and accepted

    def drop_buffered(tree: OffloadBlock) -> None:
        d = tree.delegated
        tree.delegated = d.with_changes(rcv_nxt=d.rcv_nxt + 10)  # claims 10 more bytes were ACKed...
        tree.buffered_data = None  # ...but hands none of them back

    e.target.before_complete["terminate"] = drop_buffered
    expect(Rule.RECEIVE_CONSERVATION, lambda: e.terminate(e.named(Layer.TCP, "t1")))


# ---- asynchrony (invariant 3) ----


@pytest.mark.parametrize("kind", ["initiate", "send", "receive", "terminate"])
def test_synchronous_completion(kind: str) -> None:
    e = make_env()
    if kind != "initiate":
        e.offload(connection_tree())
    e.target.sync = {kind}
    actions: dict[str, Callable[[], object]] = {
        "initiate": lambda: e.offload(connection_tree()),
        "send": lambda: e.chimney.tcp_send("t1", [NetBufferList(data=b"x")]),
        "receive": lambda: e.chimney.tcp_receive("t1", [NetBufferList(capacity=1)]),
        "terminate": lambda: e.terminate(e.named(Layer.TCP, "t1")),
    }
    expect(Rule.COMPLETED_SYNCHRONOUSLY, actions[kind], "target:nic0")


# ---- terminate: delegated state and completion (invariants 3, 21, 27, 28) ----


def _terminate_with(hook: Callable[[OffloadBlock], None]) -> Callable[[], object]:
    e = offloaded()
    e.chimney.tcp_send("t1", [NetBufferList(data=b"x" * 50)])
    e.target.before_complete["terminate"] = hook
    return lambda: e.terminate(e.named(Layer.TCP, "t1"))


def test_terminate_snd_una_beyond_snd_nxt() -> None:
    def bad(tree: OffloadBlock) -> None:
        d = tree.delegated
        tree.delegated = d.with_changes(snd_una=d.snd_nxt + 10, snd_max=d.snd_nxt + 20)

    expect(Rule.DELEGATED_SEQUENCE, _terminate_with(bad))


def test_terminate_without_delegated_state() -> None:
    def bad(tree: OffloadBlock) -> None:
        tree.delegated = None

    expect(Rule.DELEGATED_NOT_RETURNED, _terminate_with(bad))


def test_terminate_with_bad_timer_encoding() -> None:
    def bad(tree: OffloadBlock) -> None:
        tree.delegated = tree.delegated.with_changes(retransmit=TimerState(1, -1))

    expect(Rule.TIMER_ENCODING, _terminate_with(bad))


def test_terminate_send_bytes_not_conserved() -> None:
    def bad(tree: OffloadBlock) -> None:
        d = tree.delegated
        tree.delegated = d.with_changes(snd_una=d.snd_una + 20)  # claims 20 bytes ACKed, yet returns all 50

    expect(Rule.SEND_CONSERVATION, _terminate_with(bad))


def test_terminate_bad_status() -> None:
    def bad(tree: OffloadBlock) -> None:
        tree.status = NdisStatus.OFFLOAD_PARTIAL_SUCCESS

    expect(Rule.STATUS_MISSING, _terminate_with(bad))


def test_terminate_never_completes() -> None:
    e = offloaded()
    e.target.hold = {"terminate"}
    e.terminate(e.named(Layer.TCP, "t1"))
    e.clock.run_until(10.0)
    assert e.chimney.pending_operations(older_than=60.0) == []
    [pending] = e.chimney.pending_operations(older_than=5.0)
    assert pending.kind == "terminate" and pending.handles == ("t1",) and pending.age == pytest.approx(10.0)
    expect(Rule.TERMINATE_NEVER_COMPLETED, e.chimney.check_quiescent)


def test_query_never_completes() -> None:
    e = offloaded()
    e.target.hold = {"query"}
    e.chimney.query_offload(e.tid, e.named(Layer.TCP, "t1"))
    expect(Rule.NEVER_COMPLETED, e.chimney.check_quiescent)


def test_completion_of_a_tree_never_sent() -> None:
    e = offloaded()
    stray = e.named(Layer.TCP, "t1")
    stray.status = NdisStatus.SUCCESS
    expect(Rule.COMPLETION_WITHOUT_REQUEST, lambda: e.chimney.terminate_offload_complete(e.tid, stray))


# ---- initiate statuses and contexts (invariants 2, 4, 5, 6) ----


def _initiate_with(
    hook: Callable[[OffloadBlock], None], tree: OffloadBlock | None = None, fail: dict[str, int] | None = None
) -> Callable[[], object]:
    e = make_env()
    e.target.before_complete["initiate"] = hook
    e.target.fail = fail or {}
    return lambda: e.offload(tree or connection_tree())


def test_placeholder_reports_failure() -> None:
    full = connection_tree()
    placeholder = neighbor_block()
    placeholder.dependent_block_list = full.dependent_block_list

    def bad(tree: OffloadBlock) -> None:
        tree.status = NdisStatus.FAILURE

    expect(Rule.PLACEHOLDER_LINKER_STATUS, _initiate_with(bad, placeholder))


def test_parent_success_with_failed_dependent() -> None:
    def bad(tree: OffloadBlock) -> None:
        assert tree.dependent_block_list is not None
        tree.dependent_block_list.status = NdisStatus.SUCCESS  # should be PARTIAL: its TCP failed

    expect(Rule.INITIATE_WALK, _initiate_with(bad, fail={"t1": NdisStatus.OFFLOAD_TCP_ENTRIES}))


def test_context_written_on_failure() -> None:
    def bad(tree: OffloadBlock) -> None:
        slot = tcp_of(tree).miniport_offload_context
        assert slot is not None
        slot.value = object()

    expect(Rule.CONTEXT_WRITE, _initiate_with(bad, fail={"t1": NdisStatus.RESOURCES}))


def test_success_without_context() -> None:
    def bad(tree: OffloadBlock) -> None:
        slot = tcp_of(tree).miniport_offload_context
        assert slot is not None
        slot.value = None

    expect(Rule.CONTEXT_WRITE, _initiate_with(bad))


def test_dependent_of_failed_node_not_failure() -> None:
    def bad(tree: OffloadBlock) -> None:
        tcp_of(tree).status = NdisStatus.RESOURCES  # never tried: must be FAILURE

    expect(Rule.INITIATE_WALK, _initiate_with(bad, fail={"p1": NdisStatus.OFFLOAD_PATH_ENTRIES}))


def test_initiate_status_missing() -> None:
    def bad(tree: OffloadBlock) -> None:
        tcp_of(tree).status = None

    expect(Rule.STATUS_MISSING, _initiate_with(bad))


def test_target_relinks_tree() -> None:
    def bad(tree: OffloadBlock) -> None:
        assert tree.dependent_block_list is not None
        tree.dependent_block_list.dependent_block_list = None

    expect(Rule.TREE_SHAPE, _initiate_with(bad))


def test_linker_status_with_all_dependents_failed() -> None:
    e = offloaded()
    t2 = tcp_of(connection_tree("n1", "p1", "t2"))
    tree = chain(e.named(Layer.PATH, "p1"), t2)
    e.target.fail = {"t2": NdisStatus.RESOURCES}

    def bad(root: OffloadBlock) -> None:
        root.status = NdisStatus.SUCCESS  # all its dependents failed: must be a failure

    e.target.before_complete["initiate"] = bad
    expect(Rule.PLACEHOLDER_LINKER_STATUS, lambda: e.offload(tree))


# ---- host sequencing (invariants 1, 7-10) ----


def test_bad_tree_shape_from_host() -> None:
    e = make_env()
    tree = connection_tree()
    tcp_of(tree).dependent_block_list = neighbor_block(context=ContextSlot(), handle="x")
    expect(Rule.TREE_SHAPE, lambda: e.offload(tree), "host")


def test_offload_in_non_offloadable_state() -> None:
    e = make_env()
    expect(Rule.NOT_OFFLOADABLE, lambda: e.offload(connection_tree(tcp_delegated=delegated(TcpState.SYN_SENT))))


def test_path_terminated_while_tcp_dependent_offloaded() -> None:
    e = offloaded()
    expect(Rule.TERMINATE_ORDER, lambda: e.terminate(e.named(Layer.PATH, "p1")), "host")
    assert e.chimney.object_state("p1") == "offloaded"


def test_neighbor_and_path_terminated_together_with_dependents_is_fine() -> None:
    e = offloaded()
    e.terminate(chain(e.named(Layer.NEIGHBOR, "n1"), e.named(Layer.PATH, "p1"), e.named(Layer.TCP, "t1")))
    assert e.chimney.violations == [] and e.chimney.object_state("n1") is None


def test_send_during_initiate() -> None:
    e = make_env()
    e.target.hold = {"initiate"}
    e.offload(connection_tree())
    expect(Rule.OP_DURING_INITIATE, lambda: e.chimney.tcp_send("t1", [NetBufferList(data=b"x")]), "host")


def test_second_initiate_while_in_flight() -> None:
    e = make_env()
    e.target.hold = {"initiate"}
    e.offload(connection_tree())
    expect(Rule.OP_DURING_INITIATE, lambda: e.offload(connection_tree()))


def test_send_after_terminate_called() -> None:
    e = offloaded()
    e.target.hold = {"terminate"}
    e.terminate(e.named(Layer.TCP, "t1"))
    expect(Rule.IO_AFTER_TERMINATE, lambda: e.chimney.tcp_send("t1", [NetBufferList(data=b"x")]))
    expect(Rule.IO_AFTER_TERMINATE, lambda: e.chimney.tcp_forward("t1", [NetBufferList(data=b"x")]))


def test_two_updates_in_flight() -> None:
    e = offloaded()
    e.target.hold = {"update"}
    e.chimney.update_offload(e.tid, e.named(Layer.PATH, "p1"))
    expect(Rule.UPDATE_RULES, lambda: e.chimney.update_offload(e.tid, e.named(Layer.PATH, "p1")))


def test_update_after_invalidate() -> None:
    e = offloaded()
    e.chimney.invalidate_offload(e.tid, e.named(Layer.NEIGHBOR, "n1"))
    e.run()
    expect(Rule.UPDATE_RULES, lambda: e.chimney.update_offload(e.tid, e.named(Layer.NEIGHBOR, "n1")))


def test_terminate_while_query_in_flight() -> None:
    e = offloaded()
    e.target.hold = {"query"}
    e.chimney.query_offload(e.tid, e.named(Layer.TCP, "t1"))
    expect(Rule.TERMINATE_ORDER, lambda: e.terminate(e.named(Layer.TCP, "t1")))


def test_terminate_completed_with_receive_post_outstanding() -> None:
    e = offloaded()
    e.chimney.tcp_receive("t1", [NetBufferList(capacity=8)])
    e.target.objects["t1"].recvs.clear()  # the fake "forgets" the post, so it is never completed
    expect(Rule.IO_NOT_COMPLETED, lambda: e.terminate(e.named(Layer.TCP, "t1")))


def test_named_object_on_other_target_is_unknown() -> None:
    e = offloaded()
    other = ScriptedTarget(e.clock, "nic1")
    other_id = e.chimney.register_target(other)
    block = name_block(Layer.TCP, "t1", e.target.objects["t1"])
    expect(Rule.UNKNOWN_HANDLE, lambda: e.chimney.terminate_offload(other_id, block))


def test_violation_in_record_mode_drops_host_call() -> None:
    e = make_env("record")
    e.offload(connection_tree())
    e.target.status(NdisStatus.OFFLOAD_PAUSE)
    e.offload(connection_tree("n2", "p2", "t2"))
    assert e.chimney.object_state("t2") is None and e.target.calls.count("initiate") == 1
    assert [v.rule for v in e.chimney.violations] == [Rule.OFFLOAD_WHILE_PAUSED]


def test_path_terminated_while_dependent_initiate_in_flight() -> None:
    e = offloaded()
    e.target.hold = {"initiate"}
    t2 = tcp_of(connection_tree("n1", "p1", "t2", port=40002))
    e.offload(chain(e.named(Layer.NEIGHBOR, "n1"), e.named(Layer.PATH, "p1"), t2))
    whole = chain(e.named(Layer.NEIGHBOR, "n1"), e.named(Layer.PATH, "p1"), e.named(Layer.TCP, "t1"))
    expect(Rule.TERMINATE_ORDER, lambda: e.terminate(whole))
