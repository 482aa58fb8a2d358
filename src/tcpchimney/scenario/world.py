"""A simulated world: the tcpchimney host with one or more emulated NICs, a link, and a software-only peer host.

Used by the demo, the benchmark and the conservation tests, so that all three exercise the same wiring.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpchimney.chimney.interfaces import OffloadTarget
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.stack import HostStack
from tcpchimney.links.base import LinkPort
from tcpchimney.sim.link import Impairments, SimLink
from tcpchimney.sim.network import SimNetwork
from tcpchimney.targets.detectors import DetectorConfig
from tcpchimney.targets.softtoe import SoftToe
from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.trace.tracer import NullTracer, Tracer
from tcpchimney.wire.addr import mac_to_bytes

HOST_IP = "10.0.0.1"
PEER_IP = "10.0.0.2"
HOST_MAC = mac_to_bytes("02:00:00:00:00:01")
PEER_MAC = mac_to_bytes("02:00:00:00:00:02")


@dataclass
class BaseWorldConfig:
    """What every simulated world is configured with (construct the subclasses with keywords)."""

    seed: int = 0
    mtu: int = 1500
    impairments: Impairments = field(default_factory=Impairments)
    policy: OffloadPolicy = field(default_factory=OffloadPolicy)
    host_tcp: TcpConfig | None = None
    peer_tcp: TcpConfig | None = None
    nic_max_connections: int = 4096
    on_violation: str = "raise"
    trace: bool = False


@dataclass
class WorldConfig(BaseWorldConfig):
    detectors: DetectorConfig | None = None


class WorldBase:
    """The parts every simulated world shares: the network and its clock, an RNG, the tracer, the host stack and a
    software-only peer.  Subclasses build their offload targets and links in between, in the order they need."""

    host: HostStack  # set by _add_host
    peer: HostStack  # set by _add_peer, with peer_nic
    peer_nic: SoftToe

    def __init__(self, config: BaseWorldConfig, rng_salt: int) -> None:
        self.network = SimNetwork(config.seed)
        self.clock = self.network.clock
        self.rng = random.Random(config.seed ^ rng_salt)
        self.tracer: Tracer = Tracer(self.clock.now) if config.trace else NullTracer()
        mss = config.mtu - 40
        self.host_tcp = config.host_tcp or TcpConfig(mss=mss)
        self.peer_tcp = config.peer_tcp or TcpConfig(mss=mss)

    def _add_host(self, config: BaseWorldConfig, target: OffloadTarget, mac: bytes) -> int:
        """The host stack, offloading to ``target``, with ``HOST_IP`` on it; returns the target's NIC id."""
        self.host = HostStack(
            self.clock,
            name="host",
            tcp_config=self.host_tcp,
            policy=config.policy,
            tracer=self.tracer,
            seed=config.seed,
            on_violation=config.on_violation,
        )
        nic_id = self.host.add_nic(target)
        self.host.add_interface(nic_id, mac, HOST_IP, 24, mtu=config.mtu)
        return nic_id

    def _add_peer(self, config: BaseWorldConfig, port: LinkPort) -> None:
        """The software-only peer (``PEER_IP``) behind ``port``."""
        self.peer_nic = SoftToe(self.clock, port, PEER_MAC, name="peer-nic", offload_enabled=False)
        self.peer = HostStack(
            self.clock,
            name="peer",
            tcp_config=self.peer_tcp,
            policy=OffloadPolicy(enabled=False),
            seed=config.seed + 1,
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

    def violations(self) -> list[Exception]:
        return list(self.host.chimney.violations) + list(self.peer.chimney.violations)


class SimWorld(WorldBase):
    """host (offloads to `nic`) <-- SimLink --> peer (software only)."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config = config or WorldConfig()
        super().__init__(config, rng_salt=0x5EED)
        self.link: SimLink = self.network.link(config.impairments, name="wire")
        self.nic = SoftToe(
            self.clock,
            self.link.a,
            HOST_MAC,
            name="nic0",
            max_connections=config.nic_max_connections,
            tcp_config=self.host_tcp,
            tracer=self.tracer,
            detectors=config.detectors,
        )
        self.nic_id = self._add_host(config, self.nic, HOST_MAC)
        self._add_peer(config, self.link.b)
