"""A simulated world with a NIC team: host -> TeamTarget(SoftToe members) -> SimLinks -> LACP partner switch ->
peer host (software only), the team counterpart of ``scenario.world.SimWorld``."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.stack import HostStack
from tcpchimney.sim.lacp_partner import SimLacpPartner
from tcpchimney.sim.link import Impairments, SimLink
from tcpchimney.sim.network import SimNetwork
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.team.team import TeamTarget
from tcpchimney.trace.tracer import NullTracer, Tracer
from tcpchimney.wire.addr import mac_to_bytes

HOST_IP = "10.0.0.1"
PEER_IP = "10.0.0.2"
TEAM_MAC = mac_to_bytes("02:00:00:00:00:01")
PEER_MAC = mac_to_bytes("02:00:00:00:00:02")


@dataclass
class TeamWorldConfig:
    seed: int = 0
    members: int = 2
    mtu: int = 1500
    lacp: bool = True
    impairments: Impairments = field(default_factory=Impairments)
    policy: OffloadPolicy = field(default_factory=OffloadPolicy)
    host_tcp: TcpConfig | None = None
    peer_tcp: TcpConfig | None = None
    nic_max_connections: int = 4096
    on_violation: str = "raise"
    trace: bool = False


class TeamWorld:
    """host (offloads to `team`) -- member links -- LACP partner switch -- peer link -- peer (software only)."""

    def __init__(self, config: TeamWorldConfig | None = None) -> None:
        self.config = config = config or TeamWorldConfig()
        self.network = SimNetwork(config.seed)
        self.clock = self.network.clock
        self.rng = random.Random(config.seed ^ 0x7EA)
        self.tracer: Tracer = Tracer(self.clock.now) if config.trace else NullTracer()
        mss = config.mtu - 40
        host_tcp = config.host_tcp or TcpConfig(mss=mss)
        peer_tcp = config.peer_tcp or TcpConfig(mss=mss)
        self.links: list[SimLink] = [
            self.network.link(config.impairments, name=f"member{i}") for i in range(config.members)
        ]
        self.nics = [
            SoftToe(
                self.clock,
                link.a,
                TEAM_MAC,
                name=f"nic{i}",
                max_connections=config.nic_max_connections,
                tcp_config=host_tcp,
                tracer=self.tracer,
            )
            for i, link in enumerate(self.links)
        ]
        self.team = TeamTarget(self.clock, list(self.nics), name="team0", mac=TEAM_MAC, lacp=config.lacp)
        self.host = HostStack(
            self.clock,
            name="host",
            tcp_config=host_tcp,
            policy=config.policy,
            tracer=self.tracer,
            seed=config.seed,
            on_violation=config.on_violation,
        )
        self.team_id = self.host.add_nic(self.team)
        self.host.add_interface(self.team_id, TEAM_MAC, HOST_IP, 24, mtu=config.mtu)
        self.peer_link = self.network.link(Impairments(delay=0.0001), name="peer")
        self.switch = SimLacpPartner(self.clock, [link.b for link in self.links], self.peer_link.a, lacp=config.lacp)
        self.peer_nic = SoftToe(self.clock, self.peer_link.b, PEER_MAC, name="peer-nic", offload_enabled=False)
        self.peer = HostStack(
            self.clock, name="peer", tcp_config=peer_tcp, policy=OffloadPolicy(enabled=False), seed=config.seed + 1
        )
        peer_nic_id = self.peer.add_nic(self.peer_nic)
        self.peer.add_interface(peer_nic_id, PEER_MAC, PEER_IP, 24, mtu=config.mtu)

    @property
    def now(self) -> float:
        return self.clock.now()

    def run_until(self, t: float, stop: Callable[[], bool] | None = None) -> None:
        self.clock.run_until(t, stop)

    def run_for(self, dt: float, stop: Callable[[], bool] | None = None) -> None:
        self.clock.run_until(self.clock.now() + dt, stop)

    def converge(self, limit: float = 10.0) -> bool:
        """Run until every member is active (LACP in sync both ways); False if it did not happen by ``limit`` s."""
        n = len(self.nics)

        def done() -> bool:
            return len(self.team.active_members()) == n and len(self.switch.distributing()) == n

        if not done():
            self.run_for(limit, done)
        return done()

    def fail_link(self, index: int) -> None:
        """Carrier loss on member ``index``'s link (both ends see it)."""
        self.links[index].set_up(False)

    def restore_link(self, index: int) -> None:
        self.links[index].set_up(True)

    def violations(self) -> list[Exception]:
        return (
            list(self.host.chimney.violations) + list(self.peer.chimney.violations) + list(self.team.lower.violations)
        )
