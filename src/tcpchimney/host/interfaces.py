"""An IPv4 interface of the host: one address on one NIC (offload target)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tcpchimney.tcp.engine import TcpConfig
from tcpchimney.wire.addr import ip_to_bytes, ip_to_str

_DEFAULT_MSS = TcpConfig().mss


@dataclass(eq=False)
class Interface:
    target_id: int
    mac: bytes
    ip: bytes
    prefix_len: int
    mtu: int = 1500
    tcp_config: TcpConfig = field(default_factory=TcpConfig)  # the stack's config with MSS bounded by the MTU
    up: bool = True

    @classmethod
    def create(cls, target_id: int, mac: bytes, ip: str, prefix_len: int, mtu: int, base: TcpConfig) -> Interface:
        from dataclasses import replace

        if not 0 <= prefix_len <= 32:
            raise ValueError(f"bad prefix length {prefix_len}")
        if mtu < 68:
            raise ValueError(f"MTU {mtu} too small")
        # MSS = MTU - 40; a config that asks for a smaller MSS than the default keeps it (it is deliberate).
        mss = mtu - 40 if base.mss == _DEFAULT_MSS else min(base.mss, mtu - 40)
        config = base if mss == base.mss else replace(base, mss=mss)
        return cls(target_id, bytes(mac), ip_to_bytes(ip), prefix_len, mtu, config)

    @property
    def ip_str(self) -> str:
        return ip_to_str(self.ip)

    @property
    def mss(self) -> int:
        return self.mtu - 40

    def __repr__(self) -> str:
        return f"Interface(target={self.target_id}, {self.ip_str}/{self.prefix_len}, mtu={self.mtu})"
