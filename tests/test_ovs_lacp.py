"""Our sans-IO LACP against a real partner: Open vSwitch in userspace (netdev datapath) inside a namespace.

Two ``LacpPort``s of one ``LacpAggregator`` talk LACP over AF_PACKET on the veth ends of OVS's bond members.  The
failover checks print how long OVS (and we) took to notice; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from functools import partial

import pytest

from netns_support import needs
from tcpchimney.links.netns import list_namespaces
from tcpchimney.links.ovs import MemberLink, OvsError, OvsPartner, kernel_carrier, ovs_missing
from tcpchimney.links.packet import random_local_mac
from tcpchimney.team.lacp import DistributingChanged, LacpAggregator, LacpEvent, LacpPort, PartnerLost
from tcpchimney.team.lacpdu import decode_lacp_frame, encode_lacp_frame, is_slow_protocols_frame
from tcpchimney.wire.errors import DecodeError

pytestmark = needs("userspace OVS", ovs_missing())

TICK = 0.02  # carrier poll and timer granularity of the driver


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TeamDriver:
    """Runs an aggregator's ports on member links from the asyncio loop (the glue a real team would have)."""

    def __init__(self, team: LacpAggregator, links: list[MemberLink]) -> None:
        self.team = team
        self.links = links
        self.src_macs = [random_local_mac() for _ in links]
        self.loop = asyncio.get_running_loop()
        self.drop_tx: set[int] = set()  # member indexes whose LACPDUs we swallow (carrier stays up)
        self.drop_rx: set[int] = set()  # member indexes whose received LACPDUs we ignore
        self.events: list[tuple[float, LacpEvent]] = []
        self.rx_pdus = [0] * len(links)
        self.rx_bad = 0
        self._task: asyncio.Task[None] | None = None
        for i, link in enumerate(links):
            link.set_receiver(partial(self._on_frame, i))
            link.set_link_listener(partial(self._on_carrier, i))

    def now(self) -> float:
        return self.loop.time()

    async def start(self) -> None:
        for i, link in enumerate(self.links):
            await link.start(self.loop)
            self.team.ports[i].set_carrier(link.poll_carrier(), self.now())
        self._flush()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self._task

    def _on_frame(self, i: int, frame: bytes) -> None:
        if not is_slow_protocols_frame(frame) or i in self.drop_rx:
            return
        try:
            _, pdu = decode_lacp_frame(frame)
        except DecodeError:
            self.rx_bad += 1
            return
        self.rx_pdus[i] += 1
        self.team.ports[i].handle_lacpdu(pdu, self.now())
        self._flush()

    def _on_carrier(self, i: int, up: bool) -> None:
        self.team.ports[i].set_carrier(up, self.now())
        self._flush()

    def _flush(self) -> None:
        now = self.now()
        for port, pdu in self.team.pdus_to_send(now):
            i = self.team.ports.index(port)
            if i not in self.drop_tx:
                self.links[i].transmit(encode_lacp_frame(pdu, self.src_macs[i]))
        self.events.extend((now, e) for e in self.team.pop_events())

    async def _run(self) -> None:
        while True:
            for link in self.links:
                link.poll_carrier()  # our end loses carrier when OVS's end goes down
            due = self.team.next_timer()
            if due is not None and due <= self.now():
                self.team.handle_timer(self.now())
            self._flush()
            await asyncio.sleep(TICK)

    async def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        start = self.now()
        while not cond():
            if self.now() - start > timeout:
                raise AssertionError(f"timed out waiting for {what}: {self.team.ports}")
            await asyncio.sleep(TICK)
        return self.now() - start

    def lost_since(self, mark: float, port: int) -> list[PartnerLost]:
        return [e for t, e in self.events if t >= mark and isinstance(e, PartnerLost) and e.port == port]


def test_ovs_partner_starts_and_cleans_up() -> None:
    ovs = OvsPartner()
    with pytest.raises(ZeroDivisionError), ovs:
        pids = list(ovs.pids.values())
        ns_name, run_dir = ovs.ns.name if ovs.ns else "", ovs.run_dir or ""
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        assert ovs.ns is not None and ovs.ns.name in list_namespaces()
        assert ovs.run_dir is not None and os.path.isdir(ovs.run_dir)
        assert all(kernel_carrier(m.team_ifname) for m in ovs.members)
        show = ovs.lacp_show()
        assert show["bond"] == "tcbond0" and show["lacp_time"] == "fast"
        assert set(show["members"]) == {m.ovs_ifname for m in ovs.members}
        assert ovs.bond_show()["bond_mode"] == "balance-tcp"
        _ = 1 / 0  # cleanup must also happen when the body fails
    assert not any(_alive(pid) for pid in pids)
    assert ns_name not in list_namespaces()
    assert not os.path.exists(run_dir)
    assert not any(os.path.exists(f"/sys/class/net/{m.team_ifname}") for m in ovs.members)


def test_failed_start_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    ovs = OvsPartner()
    real_vsctl = ovs.vsctl

    def failing_vsctl(*args: str) -> str:
        if args and args[0] == "add-bond":
            raise OvsError("injected failure")
        return real_vsctl(*args)

    monkeypatch.setattr(ovs, "vsctl", failing_vsctl)
    with pytest.raises(OvsError, match="injected"):
        ovs.start()
    pids = list(ovs.pids.values())
    assert len(pids) == 2  # both daemons had started before the failure
    assert not any(_alive(pid) for pid in pids)
    assert ovs.ns is not None and ovs.ns.name not in list_namespaces()
    assert ovs.run_dir is not None and not os.path.exists(ovs.run_dir)
    assert not any(os.path.exists(f"/sys/class/net/{m.team_ifname}") for m in ovs.members)


def test_lacp_against_ovs_bond() -> None:
    with OvsPartner(bond_mode="balance-tcp", lacp_time="fast") as ovs:
        asyncio.run(_exercise(ovs))


async def _exercise(ovs: OvsPartner) -> None:
    links = [ovs.open_member_link(i) for i in range(2)]
    system = random_local_mac()
    team = LacpAggregator([LacpPort(system, i + 1, 0x22, fast=True) for i in range(2)])
    driver = TeamDriver(team, links)
    t0 = time.monotonic()
    await driver.start()
    try:
        await asyncio.to_thread(ovs.wait_bond_current, 20.0)
        await driver.wait_for(lambda: len(team.distributing_ports()) == 2, 10.0, "both ports distributing")
        print(f"\nconverged: OVS current and both ports COLLECTING_DISTRIBUTING after {time.monotonic() - t0:.3f} s")
        show = ovs.lacp_show()
        for i, member in enumerate(ovs.members):
            partner = show["members"][member.ovs_ifname]["partner"]
            assert partner["sys_id"] == team.ports[i].system_mac.hex(":")
            assert partner["port_id"] == str(team.ports[i].port_number)
            assert "synchronized" in partner["state"].split() and "collecting" in partner["state"].split()
            assert team.ports[i].partner.system == bytes.fromhex(show["sys_id"].replace(":", ""))
        assert driver.rx_bad == 0

        # 1. Carrier loss seen by OVS: our end of member 0 goes down.
        mark = driver.now()
        t = time.monotonic()
        links[0].set_carrier(False)
        await asyncio.to_thread(ovs.wait_until, lambda o: not o.member_current(0), 10.0)
        ovs_s = time.monotonic() - t
        await driver.wait_for(lambda: not team.ports[0].distributing, 2.0, "port 1 to stop")
        assert [e.reason for e in driver.lost_since(mark, 1)] == ["carrier"]
        assert ovs.member_current(1) and team.ports[1].distributing
        print(f"our end of member 0 down: OVS noticed after {ovs_s:.3f} s; our port at once (it took the link down)")
        t = time.monotonic()
        links[0].set_carrier(True)
        await asyncio.to_thread(ovs.wait_bond_current, 20.0)
        await driver.wait_for(lambda: len(team.distributing_ports()) == 2, 10.0, "rejoin after carrier")
        print(f"member 0 rejoined after {time.monotonic() - t:.3f} s")

        # 2. Carrier loss seen by us: OVS's end of member 1 goes down.
        mark = driver.now()
        t = time.monotonic()
        ovs.set_member_link(1, False)
        ours_s = await driver.wait_for(lambda: not team.ports[1].distributing, 5.0, "port 2 to notice")
        ovs_s = await asyncio.to_thread(ovs.wait_until, lambda o: not o.member_current(1), 10.0)
        assert [e.reason for e in driver.lost_since(mark, 2)] == ["carrier"]
        assert team.ports[0].distributing
        print(f"OVS end of member 1 down: we noticed after {ours_s:.3f} s, OVS reported it after {ovs_s:.3f} s")
        ovs.set_member_link(1, True)
        await asyncio.to_thread(ovs.wait_bond_current, 20.0)
        await driver.wait_for(lambda: len(team.distributing_ports()) == 2, 10.0, "rejoin after OVS link down")
        print(f"member 1 rejoined after {time.monotonic() - t:.3f} s (whole down/up cycle)")

        # 3. LACPDU loss, carrier up: we stop transmitting on member 0.
        mark = driver.now()
        t = time.monotonic()
        driver.drop_tx.add(0)
        await asyncio.to_thread(ovs.wait_until, lambda o: not o.member_current(0), 15.0)
        ovs_s = time.monotonic() - t
        status, enabled = ovs.member_status(0)
        await driver.wait_for(lambda: not team.ports[0].distributing, 15.0, "port 1 to notice OVS")
        ours_s = driver.now() - mark
        reasons = [e.reason for e in driver.lost_since(mark, 1)]
        assert reasons == ["sync-cleared"], reasons  # OVS detaches the member and says so in its PDUs
        assert ovs.member_current(1) and team.ports[1].distributing
        print(
            f"our LACPDUs on member 0 stopped: OVS marked it {status!r} (enabled={enabled}) after {ovs_s:.3f} s; "
            f"our port saw sync cleared after {ours_s:.3f} s"
        )
        t = time.monotonic()
        driver.drop_tx.discard(0)
        await asyncio.to_thread(ovs.wait_bond_current, 20.0)
        await driver.wait_for(lambda: len(team.distributing_ports()) == 2, 10.0, "rejoin after PDU loss")
        print(f"member 0 rejoined after {time.monotonic() - t:.3f} s")

        # 4. OVS's LACPDUs on member 1 stop reaching us (we ignore them): our receive machine expires.
        mark = driver.now()
        t = time.monotonic()
        driver.drop_rx.add(1)
        await driver.wait_for(lambda: not team.ports[1].distributing, 15.0, "port 2 to expire")
        ours_s = driver.now() - mark
        assert [e.reason for e in driver.lost_since(mark, 2)] == ["expired"]
        await asyncio.to_thread(ovs.wait_until, lambda o: not o.member_current(1), 15.0)
        ovs_s = time.monotonic() - t
        print(
            f"OVS LACPDUs on member 1 ignored: our port expired after {ours_s:.3f} s; "
            f"OVS stopped using the member after {ovs_s:.3f} s"
        )
        t = time.monotonic()
        driver.drop_rx.discard(1)
        await asyncio.to_thread(ovs.wait_bond_current, 20.0)
        await driver.wait_for(lambda: len(team.distributing_ports()) == 2, 10.0, "rejoin after PDU loss")
        print(f"member 1 rejoined after {time.monotonic() - t:.3f} s")

        dist = [e for _, e in driver.events if isinstance(e, DistributingChanged)]
        assert [e.distributing for e in dist if e.port == 1] == [True, False, True, False, True]
        assert [e.distributing for e in dist if e.port == 2] == [True, False, True, False, True]
    finally:
        await driver.stop()
