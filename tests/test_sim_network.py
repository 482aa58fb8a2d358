"""SimSwitch learning/flooding and the SimNetwork container."""

from __future__ import annotations

from tcpchimney.sim.link import Impairments, SimLinkEnd
from tcpchimney.sim.network import SimNetwork

BCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def eth(dst: bytes, src: bytes, payload: bytes = b"p" * 46) -> bytes:
    return dst + src + b"\x08\x00" + payload


def star(net: SimNetwork, n: int) -> tuple[list[SimLinkEnd], list[list[bytes]]]:
    sw = net.switch()
    hosts: list[SimLinkEnd] = []
    inboxes: list[list[bytes]] = []
    for _ in range(n):
        link = net.link(Impairments(delay=0.001))
        sw.attach(link.b)
        box: list[bytes] = []
        link.a.set_receiver(box.append)
        hosts.append(link.a)
        inboxes.append(box)
    return hosts, inboxes


def test_broadcast_floods_to_all_but_sender() -> None:
    net = SimNetwork(seed=1)
    hosts, boxes = star(net, 3)
    f = eth(BCAST, mac(0))
    hosts[0].transmit(f)
    net.run_until_idle()
    assert boxes == [[], [f], [f]]


def test_unknown_unicast_floods_then_learned_unicast_is_forwarded() -> None:
    net = SimNetwork(seed=1)
    hosts, boxes = star(net, 3)
    to1 = eth(mac(1), mac(0))
    hosts[0].transmit(to1)  # mac(1) unknown: flooded
    net.run_until_idle()
    assert boxes == [[], [to1], [to1]]
    reply = eth(mac(0), mac(1))
    hosts[1].transmit(reply)  # mac(0) learned on port 0
    net.run_until_idle()
    assert boxes[0] == [reply] and boxes[2] == [to1]
    hosts[0].transmit(to1)  # mac(1) learned now
    net.run_until_idle()
    assert boxes == [[reply], [to1, to1], [to1]]
    sw = net.switches[0]
    assert sw.lookup(mac(0)) == 0 and sw.lookup(mac(1)) == 1
    assert sw.forwarded == 2 and sw.flooded == 1


def test_frame_to_own_segment_is_filtered() -> None:
    net = SimNetwork(seed=1)
    hosts, boxes = star(net, 2)
    hosts[0].transmit(eth(BCAST, mac(0)))
    net.run_until_idle()
    hosts[0].transmit(eth(mac(0), mac(9)))  # destination lives behind the ingress port
    net.run_until_idle()
    assert boxes[1] == [eth(BCAST, mac(0))]
    assert net.switches[0].filtered == 1


def test_link_down_flushes_learned_entries_and_stops_flooding_there() -> None:
    net = SimNetwork(seed=1)
    hosts, boxes = star(net, 3)
    hosts[2].transmit(eth(BCAST, mac(2)))
    net.run_until_idle()
    assert net.switches[0].lookup(mac(2)) == 2
    net.links[2].set_up(False)
    net.run_until_idle()
    assert net.switches[0].lookup(mac(2)) is None
    f = eth(mac(2), mac(0))
    hosts[0].transmit(f)
    net.run_until_idle()
    assert boxes[1] == [eth(BCAST, mac(2)), f] and boxes[2] == []


def test_ageing_forgets_entries() -> None:
    net = SimNetwork(seed=1)
    sw = net.switch(ageing_time=10.0)
    links = [net.link(Impairments(delay=0.001)) for _ in range(3)]
    boxes: list[list[bytes]] = [[] for _ in links]
    for link, box in zip(links, boxes, strict=True):
        sw.attach(link.b)
        link.a.set_receiver(box.append)
    links[1].a.transmit(eth(BCAST, mac(1)))
    net.run_until(20.0)
    f = eth(mac(1), mac(0))
    links[0].a.transmit(f)
    net.run_until_idle()
    assert boxes[2][-1] == f  # entry aged out: flooded again


def test_runs_are_reproducible_and_links_get_independent_streams() -> None:
    def run(seed: int) -> list[tuple[float, int, bytes]]:
        net = SimNetwork(seed)
        hosts, _ = star(net, 3)
        for link in net.links:
            link.set_impairments(Impairments(delay=0.001, loss=0.3, jitter=0.001, corrupt=0.1))
        seen: list[tuple[float, int, bytes]] = []
        for i, link in enumerate(net.links):

            def receive(frame: bytes, i: int = i) -> None:
                seen.append((net.now(), i, frame))

            link.a.set_receiver(receive)
        for k in range(60):
            hosts[k % 3].transmit(eth(BCAST, mac(k % 3), bytes([k]) * 46))
            net.run_until(net.now() + 0.0003)
        net.run_until_idle()
        return seen

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_run_until_stop_predicate() -> None:
    net = SimNetwork(seed=0)
    link = net.link(Impairments(delay=1.0))
    got: list[bytes] = []
    link.b.set_receiver(got.append)
    for i in range(5):
        net.clock.call_at(float(i), link.a.transmit, bytes([i]) * 60)
    net.run_until(100.0, stop=lambda: len(got) >= 2)
    assert len(got) == 2 and net.now() == 2.0
    net.run_until_idle(limit=3.5)
    assert len(got) == 3
    net.run_until_idle()
    assert len(got) == 5
