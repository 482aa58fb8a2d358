"""The team on a real wire: host -> TeamTarget(2 SoftToe members on AF_PACKET veths) -> Open vSwitch LACP bond
(userspace, in a namespace) -> the namespace kernel running an echo server.  200 concurrent transfers, a member link
taken down in the middle (and brought back): every byte echoed exactly, no contract violation.

OVS hashes flows with its own function (balance-tcp), so frames of an offloaded connection often arrive on the
other member: they go up and the host forwards them to the member that runs the connection.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import textwrap
import time
from dataclasses import dataclass, field

import pytest

from tcpchimney.clock import AsyncioScheduler
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.sockets import TcpSocket
from tcpchimney.host.stack import HostStack
from tcpchimney.links.ovs import MemberLink, OvsPartner, ovs_missing
from tcpchimney.links.packet import random_local_mac
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.team.team import TeamTarget

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        os.environ.get("CI") != "true" and ovs_missing() is not None,
        reason=f"userspace OVS unavailable: {ovs_missing()}",
    ),
]

PORT = 7100
CONNS = 200
SIZE = 60_000
CHUNK = 8192
HIGH_WATER = 64 * 1024
WALL_LIMIT = 90.0

ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys

    async def echo(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main(ip, port):
        server = await asyncio.start_server(echo, ip, port, backlog=1024)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@dataclass
class Flow:
    data: bytes
    sock: TcpSocket | None = None
    written: int = 0
    echoed: bytearray = field(default_factory=bytearray)
    eof: bool = False
    closed: str | None = None


def _pump(flow: Flow, loop: asyncio.AbstractEventLoop) -> None:
    sock = flow.sock
    if sock is None or flow.closed is not None:
        return
    while flow.written < len(flow.data) and sock.send_buffered < HIGH_WATER:
        sock.write(flow.data[flow.written : flow.written + CHUNK])
        flow.written = min(flow.written + CHUNK, len(flow.data))
    if flow.written >= len(flow.data):
        sock.close()
    else:
        loop.call_later(0.002, _pump, flow, loop)


def _read(flow: Flow) -> None:
    sock = flow.sock
    if sock is None:
        return
    flow.echoed += sock.read()
    if sock.at_eof:
        flow.eof = True


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
        await _wait(lambda: team.active_members() == [0, 1], 20.0, "LACP convergence")
        await asyncio.to_thread(ovs.wait_bond_current, 20.0)
        await asyncio.sleep(0.05)
        rng = random.Random(11)
        flows = [Flow(rng.randbytes(SIZE)) for _ in range(CONNS)]
        for flow in flows:
            sock = host.connect(ovs.peer_ip, PORT)
            flow.sock = sock
            sock.on_readable = lambda flow=flow: _read(flow)
            sock.on_closed = lambda reason, flow=flow: setattr(flow, "closed", reason)
            _pump(flow, loop)
        await _wait(lambda: team.offloaded_connections() >= CONNS // 4, 20.0, "offloads")
        assert all(s["connections"] > 0 for s in team.member_states())
        running = sum(1 for f in flows if not f.eof)
        assert running > CONNS // 2  # the link goes down in the middle of the transfers
        t_down = time.monotonic()
        ovs.set_member_link(0, False)
        await _wait(lambda: team.active_members() == [1], 5.0, "the team to notice")
        detect = time.monotonic() - t_down
        await _wait(lambda: not team.uploading, 10.0, "RESUME")
        initiates = nics[1].stats.initiates
        await _wait(lambda: nics[1].stats.initiates > initiates, 10.0, "offloads to the survivor")
        await asyncio.sleep(0.5)
        assert team.member_states()[0]["connections"] == 0
        ovs.set_member_link(0, True)
        await _wait(lambda: all(f.eof or f.closed for f in flows), WALL_LIMIT, "all transfers")
        await _wait(lambda: team.active_members() == [0, 1], 20.0, "the member to rejoin")
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


async def _wait(cond: object, timeout: float, what: str) -> None:
    assert callable(cond)
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
