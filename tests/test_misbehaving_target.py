"""A target that breaks the contract is caught with an error naming the rule, and the other connections keep working.

The NIC is a real SoftToe whose calls into the mediator pass through a small proxy that breaks one rule for one
connection (the victim).  The host runs with ``on_violation="record"``: the mediator records the violation, tells
the host, and drops the offending call; the host isolates the victim.  A second transfer must end byte-exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tcpchimney.chimney.constants import TcpEventType, UploadReason
from tcpchimney.chimney.errors import ContractViolation, Rule
from tcpchimney.chimney.objects import Layer, OffloadBlock
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.scenario.workload import Transfer, TransferSet
from tcpchimney.scenario.world import PEER_IP, SimWorld, WorldConfig
from tcpchimney.sim.link import Impairments


class BreakingProxy:
    """Stands between the NIC and its mediator; `hooks` replace single calls."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.trees: list[OffloadBlock] = []

    def __getattr__(self, name: str) -> Any:
        hook = self.hooks.get(name)
        return hook if hook is not None else getattr(self._inner, name)

    def initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self.trees.append(tree)
        self._inner.initiate_offload_complete(target_id, tree)


def make_world(seed: int = 11) -> tuple[SimWorld, BreakingProxy, TransferSet, Transfer, Transfer]:
    world = SimWorld(
        WorldConfig(
            seed=seed,
            impairments=Impairments(delay=0.001, rate_bps=20e6),
            policy=OffloadPolicy(offload_after=0.0, backoff={}, terminate_timeout=1.0),
            on_violation="record",
        )
    )
    proxy = BreakingProxy(world.nic._chimney)
    world.nic._chimney = proxy  # test-only: interpose on the NIC's side of the mediator
    ts = TransferSet(world.clock, world.host, world.peer, PEER_IP, world.rng)
    victim = ts.start(300_000, 300_000, linger=0.2)
    bystander = ts.start(300_000, 300_000, linger=0.2)
    world.clock.run_until(0.02)
    assert victim.client.sock is not None and victim.client.sock.owner == "nic0"
    return world, proxy, ts, victim, bystander


def victim_handle(world: SimWorld, victim: Transfer) -> Any:
    assert victim.client.sock is not None
    return world.host.offload_handle(victim.client.sock)


def finish(world: SimWorld, ts: TransferSet) -> None:
    world.clock.run_until(120.0, lambda: ts.all_done)


def assert_bystander_exact(bystander: Transfer) -> None:
    assert bystander.done and not bystander.reset
    assert bytes(bystander.server.received) == bystander.client.to_send
    assert bytes(bystander.client.received) == bystander.server.to_send


def assert_victim_not_corrupted(victim: Transfer) -> None:
    """The victim may be reset, but what arrived is a prefix of what was sent: nothing wrong was delivered."""
    assert victim.done
    assert victim.client.to_send.startswith(bytes(victim.server.received))
    assert victim.server.to_send.startswith(bytes(victim.client.received))


def rules(world: SimWorld) -> list[Rule]:
    return [v.rule for v in world.violations() if isinstance(v, ContractViolation)]


def test_terminate_returning_snd_una_beyond_snd_nxt() -> None:
    world, proxy, ts, victim, bystander = make_world()
    handle = victim_handle(world, victim)

    def bad_terminate_complete(target_id: int, tree: OffloadBlock) -> None:
        for block in tree.walk():
            if block.ndis_offload_handle is handle and block.delegated is not None:
                d = block.delegated
                block.delegated = d.with_changes(snd_una=(d.snd_nxt + 1000) & 0xFFFFFFFF)
        proxy._inner.terminate_offload_complete(target_id, tree)

    proxy.hooks["terminate_offload_complete"] = bad_terminate_complete
    world.host.terminate(victim.client.sock, reason="test")  # type: ignore[arg-type]
    finish(world, ts)
    assert Rule.DELEGATED_SEQUENCE in rules(world)
    violation = next(v for v in world.violations() if isinstance(v, ContractViolation))
    assert "SndUna" in str(violation) or "snd_una" in str(violation)
    assert_bystander_exact(bystander)
    assert_victim_not_corrupted(victim)


def test_send_completed_twice() -> None:
    world, proxy, ts, victim, bystander = make_world()
    handle = victim_handle(world, victim)
    doubled: list[int] = []

    def twice(h: Any, nbls: list[Any]) -> None:
        proxy._inner.tcp_send_complete(h, nbls)
        if h is handle and not doubled:
            doubled.append(len(nbls))
            proxy._inner.tcp_send_complete(h, nbls)

    proxy.hooks["tcp_send_complete"] = twice
    finish(world, ts)
    assert doubled, "the victim never completed a send"
    assert Rule.SEND_COMPLETED_TWICE in rules(world)
    assert_bystander_exact(bystander)
    assert_victim_not_corrupted(victim)


@pytest.mark.parametrize("layer", [Layer.PATH, Layer.NEIGHBOR])
def test_retrieve_requested_for_a_path_or_neighbor(layer: Layer) -> None:
    world, proxy, ts, victim, bystander = make_world()
    blocks = [b for tree in proxy.trees for b in tree.walk() if b.layer == layer and b.const is not None]
    assert blocks
    proxy.tcp_event(blocks[0].ndis_offload_handle, TcpEventType.RETRIEVE, UploadReason.LOW_ACTIVITY)
    finish(world, ts)
    assert rules(world) == [Rule.RETRIEVE_NOT_TCP]
    assert_bystander_exact(bystander)
    assert_bystander_exact(victim)  # nothing happened to any connection


def test_terminate_never_completed() -> None:
    world, proxy, ts, victim, bystander = make_world()
    handle = victim_handle(world, victim)
    swallowed: list[OffloadBlock] = []

    def hold(target_id: int, tree: OffloadBlock) -> None:
        if any(b.ndis_offload_handle is handle for b in tree.walk()):
            swallowed.append(tree)  # never completed
            return
        proxy._inner.terminate_offload_complete(target_id, tree)

    proxy.hooks["terminate_offload_complete"] = hold
    world.host.terminate(victim.client.sock, reason="test")  # type: ignore[arg-type]
    finish(world, ts)
    assert swallowed
    pending = world.host.chimney.pending_operations(older_than=0.5)
    assert [p.kind for p in pending] == ["terminate"]
    assert world.host.stats.get("terminate_timeouts", 0) == 1
    with pytest.raises(ContractViolation) as info:
        world.host.chimney.check_quiescent()
    assert info.value.rule == Rule.TERMINATE_NEVER_COMPLETED
    assert victim.reset  # the host gave up on it: the application sees the failure
    assert_victim_not_corrupted(victim)
    assert_bystander_exact(bystander)
