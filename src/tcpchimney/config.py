"""Configuration of ``chimney serve``: a TOML file (``--config``) overridden by command-line flags.

Example (every key optional; the values shown are the defaults)::

    name = "chimney"          # names the control socket /run/tcpchimney/<name>.sock
    link = "tap"              # "tap" or "veth"
    nics = 1                  # SoftToe NICs, each on its own link into the one peer namespace
    mtu = 1500
    addr = []                 # our address per NIC, "ip/prefix" (default 10.77.<i>.2/24)
    peer_addr = []            # the Linux peer's address per NIC, "ip" (default: .1 of our subnet, or .2)
    socket = ""               # control socket path ("" = default)
    seed = 0                  # the host stack's random seed (ISNs, ports)
    trace = ""                # JSON-lines trace file ("" = no trace)
    tap_offload = false       # let the TAP kernel side use checksum/segmentation offload (GSO frames)
    ns_prefix = "tcpch"
    max_connections = 1024    # per NIC

    [services]                # port per service; 0 or false disables it
    echo = 7
    discard = 9
    sink = 5001
    source = 5002
    http = 80
    http_root = ""            # "" = no files, only the virtual /bytes/N
    seed = 31809              # seed of the pseudo-random bytes of source and /bytes/N

    [policy]                  # the host's offload policy (host/policy.py OffloadPolicy)
    enabled = true
    offload_after = 0.0
    min_bytes = 0
    honor_optional = true
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tcpchimney.services import DEFAULT_PORTS, DEFAULT_SEED

LINK_KINDS = ("tap", "veth")
MAX_NICS = 16


class ConfigError(ValueError):
    """A configuration value or file that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class ServeConfig:
    name: str = "chimney"
    link: str = "tap"
    nics: int = 1
    mtu: int = 1500
    addr: tuple[str, ...] = ()
    peer_addr: tuple[str, ...] = ()
    socket: str | None = None
    seed: int = 0
    trace: str | None = None
    tap_offload: bool = False
    ns_prefix: str = "tcpch"
    max_connections: int = 1024
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    http_root: str | None = None
    data_seed: int = DEFAULT_SEED
    offload: bool = True
    offload_after: float = 0.0
    min_bytes: int = 0
    honor_optional: bool = True
    team: int = 0  # > 0: one NIC team of this many SoftToe members behind a userspace OVS LACP bond

    def validate(self) -> ServeConfig:
        if self.link not in LINK_KINDS:
            raise ConfigError(f"link must be one of {', '.join(LINK_KINDS)}, not {self.link!r}")
        if not 1 <= self.nics <= MAX_NICS:
            raise ConfigError(f"nics must be 1..{MAX_NICS}, not {self.nics}")
        if not 576 <= self.mtu <= 9216:
            raise ConfigError(f"mtu must be 576..9216, not {self.mtu}")
        if len(self.addr) > self.nics or len(self.peer_addr) > self.nics:
            raise ConfigError(f"more addresses than NICs ({self.nics})")
        if not self.name or "/" in self.name:
            raise ConfigError(f"bad name {self.name!r}")
        if self.max_connections < 0 or self.min_bytes < 0 or self.offload_after < 0:
            raise ConfigError("max_connections, min_bytes and offload_after must be >= 0")
        if self.team and not 2 <= self.team <= 8:
            raise ConfigError(f"team must be 0 (none) or 2..8 members, not {self.team}")
        if self.team and (self.addr or self.peer_addr):
            raise ConfigError("with a team the addresses come from the OVS partner: drop addr/peer_addr")
        used: dict[int, str] = {}
        for service, port in self.ports.items():
            if service not in DEFAULT_PORTS:
                raise ConfigError(f"unknown service {service!r} (known: {', '.join(DEFAULT_PORTS)})")
            if not 0 <= port <= 65535:
                raise ConfigError(f"port of {service} must be 0..65535, not {port}")
            if port and port in used:
                raise ConfigError(f"{service} and {used[port]} both on port {port}")
            if port:
                used[port] = service
        plan_addresses(self)  # raises on bad or overlapping addresses
        return self


@dataclass(frozen=True)
class NicAddresses:
    """Where NIC ``index`` sits: our interface and the Linux peer's address on one link subnet."""

    index: int
    local_ip: str
    peer_ip: str
    prefix_len: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(f"{self.local_ip}/{self.prefix_len}").network


def _host_in(net: ipaddress.IPv4Network, avoid: ipaddress.IPv4Address, what: str) -> ipaddress.IPv4Address:
    for candidate in (net.network_address + 1, net.network_address + 2):
        if candidate != avoid and candidate in net and candidate != net.broadcast_address:
            return candidate
    raise ConfigError(f"no room for {what} in {net}")


def plan_addresses(cfg: ServeConfig) -> list[NicAddresses]:
    """Concrete addresses of every NIC: given ones, else the links' defaults (ours 10.77.<i>.2, peer .1, /24)."""
    plans: list[NicAddresses] = []
    for i in range(cfg.nics):
        ours_text = cfg.addr[i] if i < len(cfg.addr) else None
        peer_text = cfg.peer_addr[i] if i < len(cfg.peer_addr) else None
        try:
            if ours_text is None and peer_text is None:
                ours = ipaddress.IPv4Interface(f"10.77.{i}.2/24")
                peer = ipaddress.IPv4Address(f"10.77.{i}.1")
            elif ours_text is not None:
                ours = ipaddress.IPv4Interface(ours_text if "/" in ours_text else f"{ours_text}/24")
                if peer_text is not None:
                    peer = ipaddress.IPv4Address(peer_text.split("/")[0])
                else:
                    peer = _host_in(ours.network, ours.ip, "the peer")
            else:
                assert peer_text is not None
                peer_if = ipaddress.IPv4Interface(peer_text if "/" in peer_text else f"{peer_text}/24")
                peer = peer_if.ip
                ours = ipaddress.IPv4Interface(
                    f"{_host_in(peer_if.network, peer, 'our address')}/{peer_if.network.prefixlen}"
                )
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"nic{i}: bad address: {exc}") from exc
        net = ours.network
        if net.prefixlen > 30:
            raise ConfigError(f"nic{i}: prefix /{net.prefixlen} leaves no room for two hosts")
        for ip, what in ((ours.ip, "our address"), (peer, "the peer address")):
            if ip not in net or ip in (net.network_address, net.broadcast_address):
                raise ConfigError(f"nic{i}: {what} {ip} is not a host address of {net}")
        if peer == ours.ip:
            raise ConfigError(f"nic{i}: our address and the peer's are both {peer}")
        for other in plans:
            if other.network.overlaps(net):
                raise ConfigError(f"nic{i}: subnet {net} overlaps nic{other.index}'s {other.network}")
        plans.append(NicAddresses(i, str(ours.ip), str(peer), net.prefixlen))
    return plans


# ---------------------------------------------------------------------------------------------- TOML
_TOP = {
    "name": str,
    "link": str,
    "nics": int,
    "mtu": int,
    "addr": (list, str),
    "peer_addr": (list, str),
    "socket": str,
    "seed": int,
    "trace": str,
    "tap_offload": bool,
    "ns_prefix": str,
    "max_connections": int,
    "team": int,
}
_POLICY = {"enabled": bool, "offload_after": (int, float), "min_bytes": int, "honor_optional": bool}


def _check_type(where: str, value: Any, want: Any) -> None:
    kinds = want if isinstance(want, tuple) else (want,)
    if (want is int and isinstance(value, bool)) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")


def _as_tuple(where: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    for v in items:
        _check_type(where, v, str)
    return tuple(items)


def config_from_dict(data: dict[str, Any], base: ServeConfig | None = None) -> ServeConfig:
    """A ``ServeConfig`` from parsed TOML (unknown keys are errors: they are usually typos)."""
    cfg = base or ServeConfig()
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("services", "policy"):
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            continue
        if key not in _TOP:
            raise ConfigError(f"unknown key {key!r} (known: {', '.join([*_TOP, 'services', 'policy'])})")
        _check_type(key, value, _TOP[key])
        if key in ("addr", "peer_addr"):
            changes[key] = _as_tuple(key, value)
        elif key in ("socket", "trace"):
            changes[key] = value or None
        else:
            changes[key] = value
    ports = dict(cfg.ports)
    for key, value in data.get("services", {}).items():
        where = f"services.{key}"
        if key == "http_root":
            _check_type(where, value, str)
            changes["http_root"] = value or None
        elif key == "seed":
            _check_type(where, value, int)
            changes["data_seed"] = value
        elif key in DEFAULT_PORTS:
            if value is False:
                value = 0
            elif value is True:
                value = DEFAULT_PORTS[key]
            _check_type(where, value, int)
            ports[key] = value
        else:
            raise ConfigError(f"unknown key {where!r}")
    changes["ports"] = ports
    policy_names = {"enabled": "offload"}
    for key, value in data.get("policy", {}).items():
        if key not in _POLICY:
            raise ConfigError(f"unknown key 'policy.{key}' (known: {', '.join(_POLICY)})")
        _check_type(f"policy.{key}", value, _POLICY[key])
        changes[policy_names.get(key, key)] = float(value) if key == "offload_after" else value
    return replace(cfg, **changes)


def load_config(path: str) -> ServeConfig:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config_from_dict(data)


def with_overrides(cfg: ServeConfig, **flags: Any) -> ServeConfig:
    """``cfg`` with every flag that is not None applied (``ports`` entries merge into the configured ones)."""
    known = {f.name for f in fields(ServeConfig)}
    changes: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        if key == "ports":
            merged = dict(cfg.ports)
            merged.update(value)
            value = merged
        elif key in ("addr", "peer_addr"):
            value = _as_tuple(key, value)
        changes[key] = value
    return replace(cfg, **changes)
