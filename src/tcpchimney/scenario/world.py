"""A simulated world: the tcpchimney host with one or more emulated NICs, a link, and a software-only peer host.

Used by the demo, the benchmark and the conservation tests, so that all three exercise the same wiring.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.stack import HostStack
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
class WorldConfig:
    seed: int = 0
    mtu: int = 1500
    impairments: Impairments = field(default_factory=Impairments)
    policy: OffloadPolicy = field(default_factory=OffloadPolicy)
    host_tcp: TcpConfig | None = None
    peer_tcp: TcpConfig | None = None
    nic_max_connections: int = 4096
    on_violation: str = "raise"
    trace: bool = False
    detectors: DetectorConfig | None = None


class SimWorld:
    """host (offloads to `nic`) <-- SimLink --> peer (software only)."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config = config or WorldConfig()
        self.network = SimNetwork(config.seed)
        self.clock = self.network.clock
        self.rng = random.Random(config.seed ^ 0x5EED)
        self.tracer: Tracer = Tracer(self.clock.now) if config.trace else NullTracer()
        mss = config.mtu - 40
        host_tcp = config.host_tcp or TcpConfig(mss=mss)
        peer_tcp = config.peer_tcp or TcpConfig(mss=mss)
        self.link: SimLink = self.network.link(config.impairments, name="wire")
        self.nic = SoftToe(
            self.clock,
            self.link.a,
            HOST_MAC,
            name="nic0",
            max_connections=config.nic_max_connections,
            tcp_config=host_tcp,
            tracer=self.tracer,
            detectors=config.detectors,
        )
        self.host = HostStack(
            self.clock,
            name="host",
            tcp_config=host_tcp,
            policy=config.policy,
            tracer=self.tracer,
            seed=config.seed,
            on_violation=config.on_violation,
        )
        self.nic_id = self.host.add_nic(self.nic)
        self.host.add_interface(self.nic_id, HOST_MAC, HOST_IP, 24, mtu=config.mtu)
        self.peer_nic = SoftToe(self.clock, self.link.b, PEER_MAC, name="peer-nic", offload_enabled=False)
        self.peer = HostStack(
            self.clock,
            name="peer",
            tcp_config=peer_tcp,
            policy=OffloadPolicy(enabled=False),
            seed=config.seed + 1,
        )
        peer_nic_id = self.peer.add_nic(self.peer_nic)
        self.peer.add_interface(peer_nic_id, PEER_MAC, PEER_IP, 24, mtu=config.mtu)

    @property
    def now(self) -> float:
        return self.clock.now()

    def run_until(self, t: float, stop: object = None) -> None:
        self.clock.run_until(t, stop)  # type: ignore[arg-type]

    def violations(self) -> list[Exception]:
        return list(self.host.chimney.violations) + list(self.peer.chimney.violations)
