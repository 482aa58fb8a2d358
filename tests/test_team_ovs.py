"""The team on a real wire: host -> TeamTarget(2 SoftToe members on AF_PACKET veths) -> Open vSwitch LACP bond
(userspace, in a namespace) -> the namespace kernel running an echo server.  200 concurrent transfers, a member link
taken down in the middle (and brought back): every byte echoed exactly, no contract violation.

OVS hashes flows with its own function (balance-tcp), so frames of an offloaded connection often arrive on the
other member: they go up and the host forwards them to the member that runs the connection.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from netns_support import needs
from tcpchimney.clock import AsyncioScheduler
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.stack import HostStack
from tcpchimney.links.ovs import MemberLink, OvsPartner, ovs_missing
from tcpchimney.links.packet import random_local_mac
from tcpchimney.scenario.team_wire import ECHO_SERVER, EchoFlows, wait_for
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.team.team import TeamTarget

pytestmark = needs("userspace OVS", ovs_missing())

PORT = 7100
CONNS = 200
SIZE = 60_000
CHUNK = 8192
WALL_LIMIT = 90.0


def test_200_kernel_transfers_through_the_team_survive_a_member_link_down() -> None:
    with OvsPartner(members=2, bond_mode="balance-tcp", lacp_time="fast") as ovs:
        assert ovs.ns is not None
        # The OVS ends of the member veths are kernel interfaces of the namespace too: with the default
        # arp_ignore=0 they would answer our ARP for the peer with their own MACs (frames sent there bypass the
        # bridge's address).  Only the interface that holds the address may answer.
        done = ovs.ns.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore"], capture_output=True)
        assert done.returncode == 0, done.stderr
        server = ovs.ns.popen([sys.executable, "-c", ECHO_SERVER, ovs.peer_ip, str(PORT)], stdout=-1, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        asyncio.run(_exercise(ovs))


async def _exercise(ovs: OvsPartner) -> None:
    loop = asyncio.get_running_loop()
    sched = AsyncioScheduler(loop)
    links: list[MemberLink] = [ovs.open_member_link(i) for i in range(2)]
    mac = random_local_mac()
    nics = [SoftToe(sched, link, mac, name=f"nic{i}") for i, link in enumerate(links)]
    team = TeamTarget(sched, list(nics), name="team0", mac=mac)
    host = HostStack(sched, name="host", policy=OffloadPolicy(host_backoff=0.2))
    tid = host.add_nic(team)
    host.add_interface(tid, mac, ovs.local_ip, ovs.prefix_len)
    for link in links:
        await link.start(loop)
        link.poll_carrier()

    async def poll_carrier() -> None:
        while True:
            for link in links:
                link.poll_carrier()
            await asyncio.sleep(0.02)

    poller = asyncio.create_task(poll_carrier())
    try:
        await wait_for(lambda: team.active_members() == [0, 1], 20.0, "LACP convergence")
        await asyncio.to_thread(ovs.wait_bond_current, 20.0)
        await asyncio.sleep(0.05)
        rng = random.Random(11)
        echo = EchoFlows(host, ovs.peer_ip, PORT, loop)
        echo.CHUNK = CHUNK
        flows = [echo.start(rng.randbytes(SIZE)) for _ in range(CONNS)]
        await wait_for(lambda: team.offloaded_connections() >= CONNS // 4, 20.0, "offloads")
        assert all(s["connections"] > 0 for s in team.member_states())
        running = sum(1 for f in flows if not f.eof)
        assert running > CONNS // 2  # the link goes down in the middle of the transfers
        t_down = time.monotonic()
        ovs.set_member_link(0, False)
        await wait_for(lambda: team.active_members() == [1], 5.0, "the team to notice")
        detect = time.monotonic() - t_down
        await wait_for(lambda: not team.uploading, 10.0, "RESUME")
        initiates = nics[1].stats.initiates
        await wait_for(lambda: nics[1].stats.initiates > initiates, 10.0, "offloads to the survivor")
        await asyncio.sleep(0.5)
        assert team.member_states()[0]["connections"] == 0
        ovs.set_member_link(0, True)
        await wait_for(lambda: all(f.eof or f.closed for f in flows), WALL_LIMIT, "all transfers")
        await wait_for(lambda: team.active_members() == [0, 1], 20.0, "the member to rejoin")
        for i, flow in enumerate(flows):
            assert flow.closed in (None, "closed"), (i, flow.closed)
            assert bytes(flow.echoed) == flow.data, (i, len(flow.echoed))
        violations = list(host.chimney.violations) + list(team.lower.violations)
        assert violations == []
        rec = team.failovers.records[0]
        assert rec.member == 0 and rec.reason == "carrier"
        print(
            f"\n{running} transfers running at the link loss; team noticed it after {detect:.3f} s; "
            f"failover uploaded {rec.connections} connections "
            f"({rec.on_member} on the failed member); host forwarded {host.stats.get('frames_forwarded', 0)} frames"
        )
    finally:
        poller.cancel()
        for link in links:
            link.close()
