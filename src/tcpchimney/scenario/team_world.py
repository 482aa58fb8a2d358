"""A simulated world with a NIC team: host -> TeamTarget(SoftToe members) -> SimLinks -> LACP partner switch ->
peer host (software only), the team counterpart of ``scenario.world.SimWorld``."""

from __future__ import annotations

from dataclasses import dataclass

from tcpchimney.scenario.world import HOST_IP, HOST_MAC, PEER_IP, PEER_MAC, BaseWorldConfig, WorldBase
from tcpchimney.sim.lacp_partner import SimLacpPartner
from tcpchimney.sim.link import Impairments, SimLink
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.team.team import TeamTarget

__all__ = ["HOST_IP", "PEER_IP", "PEER_MAC", "TEAM_MAC", "TeamWorld", "TeamWorldConfig"]

TEAM_MAC = HOST_MAC


@dataclass
class TeamWorldConfig(BaseWorldConfig):
    members: int = 2
    lacp: bool = True


class TeamWorld(WorldBase):
    """host (offloads to `team`) -- member links -- LACP partner switch -- peer link -- peer (software only)."""

    def __init__(self, config: TeamWorldConfig | None = None) -> None:
        self.config = config = config or TeamWorldConfig()
        super().__init__(config, rng_salt=0x7EA)
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
                tcp_config=self.host_tcp,
                tracer=self.tracer,
            )
            for i, link in enumerate(self.links)
        ]
        self.team = TeamTarget(self.clock, list(self.nics), name="team0", mac=TEAM_MAC, lacp=config.lacp)
        self.team_id = self._add_host(config, self.team, TEAM_MAC)
        self.peer_link = self.network.link(Impairments(delay=0.0001), name="peer")
        self.switch = SimLacpPartner(self.clock, [link.b for link in self.links], self.peer_link.a, lacp=config.lacp)
        self._add_peer(config, self.peer_link.b)

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
        return super().violations() + list(self.team.lower.violations)
