"""A userspace Open vSwitch LACP partner for tests: ``OvsPartner`` runs ovsdb-server and ovs-vswitchd inside a
``PeerNamespace`` with a private run directory, so nothing touches (or needs) a system OVS or its kernel module.

Layout::

    our namespace                     | OvsPartner namespace
    MemberLink 0 (AF_PACKET) -- veth -- member 0 --+
    MemberLink 1 (AF_PACKET) -- veth -- member 1 --+-- bond (lacp=active, fast) -- bridge (datapath_type=netdev)
                                                                                  +-- internal port: peer_ip/24

The bridge is in standalone mode (NORMAL L2 switching), so the Linux kernel in the namespace reaches our team at
``local_ip`` through the internal port and the bond.  Every process is started by us without ``--detach`` and
stopped by its PID; ``stop()`` (also run by ``__exit__``, at interpreter exit, and when start fails) kills them,
removes the namespace (and with it the OVS ends of the veths), deletes our veth ends and the temp directory.

Needs root and the ``openvswitch-switch`` package (ovsdb-server, ovs-vswitchd, ovs-vsctl, ovs-appctl,
ovsdb-tool, vswitch.ovsschema).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute

from tcpchimney.links.netns import PeerNamespace, netlink_call, write_sysctl
from tcpchimney.links.packet import PacketSocketLink, delete_link, disable_offloads, open_packet_socket

OVS_BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl")
SCHEMA_CANDIDATES = ("/usr/share/openvswitch/vswitch.ovsschema", "/usr/local/share/openvswitch/vswitch.ovsschema")
BRIDGE = "tcbr0"
BOND = "tcbond0"
APT_PACKAGES = ("openvswitch-switch",)  # pulls openvswitch-common (ovs-appctl, ovsdb-tool) and the schema


def ovs_schema_path() -> str | None:
    env = os.environ.get("OVS_SCHEMA")
    for path in ((env,) if env else ()) + SCHEMA_CANDIDATES:
        if os.path.exists(path):
            return path
    return None


def ovs_missing() -> str | None:
    """Why OVS cannot run here (``None`` when it can): a missing binary or schema, or not root."""
    for name in OVS_BINARIES:
        if shutil.which(name) is None:
            return f"{name} not found (apt-get install {' '.join(APT_PACKAGES)})"
    if ovs_schema_path() is None:
        return "vswitch.ovsschema not found"
    if os.geteuid() != 0:
        return "needs root"
    return None


class OvsError(RuntimeError):
    """An OVS command failed or OVS did not reach the awaited state; the message carries its output."""


@dataclass(frozen=True, slots=True)
class OvsMember:
    index: int
    ovs_ifname: str  # bond member, inside the namespace
    team_ifname: str  # its veth peer in the caller's namespace: open it with ``OvsPartner.open_member_link``
    team_ifmac: bytes  # the kernel MAC of our end (frames may use any source MAC)


class MemberLink(PacketSocketLink):
    """AF_PACKET on an existing interface of the caller's namespace (our end of a bond member's veth).

    ``set_carrier(False)`` takes our end administratively down, so OVS's end loses carrier; ``poll_carrier()``
    reads the kernel's view (our end loses carrier when OVS's end goes down) and tells the link listener."""

    def __init__(self, ifname: str, rcvbuf: int = 1 << 20) -> None:
        self._admin_up = True
        super().__init__(ifname, open_packet_socket(ifname, rcvbuf))
        self._carrier = kernel_carrier(ifname)

    def set_carrier(self, up: bool) -> None:
        """Administratively bring our end up or down (the OVS end's carrier follows)."""
        if up == self._admin_up or self._closed:
            return
        set_link_state(self.name, up)
        self._admin_up = up
        self.poll_carrier()

    def poll_carrier(self) -> bool:
        """Refresh the carrier from the kernel; the listener hears about a change.  Returns the carrier."""
        if self._closed:
            return False
        up = self._admin_up and kernel_carrier(self.name)
        if up != self._carrier:
            self._carrier = up
            self._notify(up)
        return up


def kernel_carrier(ifname: str) -> bool:
    """The carrier of ``ifname`` in the caller's namespace (False while it is administratively down)."""
    try:
        with open(f"/sys/class/net/{ifname}/carrier") as f:
            return f.read().strip() == "1"
    except OSError:  # EINVAL while down, ENOENT once deleted
        return False


def set_link_state(ifname: str, up: bool, netns: str | None = None) -> None:
    def apply() -> None:
        with IPRoute(**({"netns": netns} if netns else {})) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise OSError(f"no interface {ifname!r}")
            ipr.link("set", index=found[0], state="up" if up else "down")

    netlink_call(apply)


class OvsPartner:
    """Open vSwitch in userspace with an LACP bond of ``members`` veth-backed ports (see the module docstring).

    Use as a context manager (``start()`` on enter, ``stop()`` on exit)."""

    def __init__(
        self,
        members: int = 2,
        *,
        bond_mode: str = "balance-tcp",
        lacp_time: str = "fast",
        lacp: str = "active",
        mtu: int = 1500,
        prefix: str = "tcpovs",
        command_timeout: float = 10.0,
    ) -> None:
        if not 2 <= members <= 8:
            raise ValueError("a bond has 2..8 members")
        if bond_mode not in ("balance-tcp", "balance-slb", "active-backup"):
            raise ValueError(f"bad bond_mode {bond_mode!r}")
        if lacp_time not in ("fast", "slow") or lacp not in ("active", "passive"):
            raise ValueError("lacp_time is fast|slow, lacp is active|passive")
        self.n_members = members
        self.bond_mode = bond_mode
        self.lacp_time = lacp_time
        self.lacp = lacp
        self.mtu = mtu
        self.prefix = prefix
        self.command_timeout = command_timeout
        self.ns: PeerNamespace | None = None
        self.run_dir: str | None = None
        self.members: list[OvsMember] = []
        self.peer_ip = ""  # the namespace kernel's address, on the bridge's internal port
        self.local_ip = ""  # suggested address for our team
        self.prefix_len = 24
        self.peer_mac = b""
        self._procs: dict[str, subprocess.Popen[Any]] = {}
        self._links: list[MemberLink] = []
        self._team_ifnames: list[str] = []
        self._started = False
        self._stopped = False

    # -- paths -----------------------------------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        assert self.run_dir is not None
        return os.path.join(self.run_dir, name)

    @property
    def db_remote(self) -> str:
        return "unix:" + self._path("db.sock")

    @property
    def vswitchd_ctl(self) -> str:
        return self._path("ovs-vswitchd.ctl")

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the daemons we started (name -> pid)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        assert self.run_dir is not None
        # Every default path of every OVS tool points into our run directory, never at a system OVS.
        for var in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"):
            env[var] = self.run_dir
        return env

    # -- lifetime --------------------------------------------------------------------------------------------------
    def __enter__(self) -> OvsPartner:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> OvsPartner:
        if self._started:
            raise RuntimeError("already started")
        reason = ovs_missing()
        if reason is not None:
            raise OvsError(reason)
        self._started = True
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.run_dir = tempfile.mkdtemp(prefix="tcpch-ovs-")
        schema = ovs_schema_path()
        assert schema is not None
        self._run(["ovsdb-tool", "create", self._path("conf.db"), schema])
        self.ns = ns = PeerNamespace(self.prefix)
        # The OVS ends of the member veths are kernel interfaces of the namespace too: with the default arp_ignore=0
        # they would answer our ARP for the peer with their own MACs (frames sent there bypass the bridge).  Only the
        # interface that holds the address may answer.
        ns.call(write_sysctl, "net/ipv4/conf/all/arp_ignore", "1")
        self._spawn(
            "ovsdb-server",
            [
                "ovsdb-server",
                self._path("conf.db"),
                "--remote=punix:" + self._path("db.sock"),
                "--pidfile=" + self._path("ovsdb-server.pid"),
                "--unixctl=" + self._path("ovsdb-server.ctl"),
                "--log-file=" + self._path("ovsdb-server.log"),
                "--no-chdir",
                "-vconsole:off",
            ],
        )
        self._wait_for(lambda: os.path.exists(self._path("db.sock")), "ovsdb-server socket")
        self.vsctl("--no-wait", "init")
        self._spawn(
            "ovs-vswitchd",
            [
                "ovs-vswitchd",
                self.db_remote,
                "--disable-system",  # userspace datapath only: no kernel module needed or touched
                "--pidfile=" + self._path("ovs-vswitchd.pid"),
                "--unixctl=" + self.vswitchd_ctl,
                "--log-file=" + self._path("ovs-vswitchd.log"),
                "--no-chdir",
                "-vconsole:off",
            ],
        )
        self._wait_for(lambda: self._appctl_ok("version"), "ovs-vswitchd control socket")
        subnet = ns.next_subnet()
        self.peer_ip, self.local_ip = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
        tag = secrets.token_hex(3)
        for i in range(self.n_members):
            self.members.append(self._make_member(i, f"tco{tag}{i}a", f"tco{tag}{i}b"))
        self.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev", "fail_mode=standalone")
        bond_args = [
            "add-bond",
            BRIDGE,
            BOND,
            *(m.ovs_ifname for m in self.members),
            f"lacp={self.lacp}",
            f"bond_mode={self.bond_mode}",
            f"other_config:lacp-time={self.lacp_time}",
            "other_config:lacp-fallback-ab=false",
        ]
        self.vsctl(*bond_args)
        self._wait_for(lambda: BRIDGE in ns.link_names(), "bridge internal port")
        self.peer_mac = ns.configure_link(BRIDGE, self.peer_ip, self.prefix_len, self.mtu)

    def _make_member(self, index: int, ours: str, theirs: str) -> OvsMember:
        ns = self.ns
        assert ns is not None

        def create() -> bytes:
            with IPRoute() as ipr:
                ipr.link("add", ifname=ours, kind="veth", peer={"ifname": theirs})
                self._team_ifnames.append(ours)
                idx = int(ipr.link_lookup(ifname=ours)[0])
                ipr.link("set", index=idx, mtu=self.mtu)
                ipr.link("set", index=int(ipr.link_lookup(ifname=theirs)[0]), mtu=self.mtu)
                # Our end carries only what our team writes: no IPv6 chatter, no address, no forwarding.
                write_sysctl(f"net/ipv6/conf/{ours}/disable_ipv6", "1")
                write_sysctl(f"net/ipv4/conf/{ours}/forwarding", "0")
                disable_offloads(ours)
                disable_offloads(theirs)
                ipr.link("set", index=int(ipr.link_lookup(ifname=theirs)[0]), net_ns_fd=ns.name)
                ipr.link("set", index=idx, state="up")
                return bytes.fromhex(str(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")).replace(":", ""))

        mac = netlink_call(create)
        set_link_state(theirs, True, ns.name)
        return OvsMember(index, theirs, ours, mac)

    def stop(self) -> None:
        """Stop everything we started (by PID), remove the namespace, our veth ends and the run directory.

        Idempotent and exception-safe: every step runs even when an earlier one fails."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        for link in self._links:
            with contextlib.suppress(Exception):
                link.close()
        # vswitchd first (it is ovsdb-server's client), politely, then by force.
        for name in ("ovs-vswitchd", "ovsdb-server"):
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
        if self.ns is not None:
            with contextlib.suppress(Exception):
                self.ns.close()  # also kills any child still alive and removes the OVS veth ends
        for ifname in self._team_ifnames:
            delete_link(ifname)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- commands --------------------------------------------------------------------------------------------------
    def _run(self, args: list[str], check: bool = True) -> str:
        try:
            res = subprocess.run(
                args, env=self._env(), capture_output=True, text=True, timeout=self.command_timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise OvsError(f"{' '.join(args)}: timed out") from exc
        if check and res.returncode != 0:
            raise OvsError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()} {self._log_tail()}")
        return res.stdout

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.ns is not None
        log = open(self._path(name + ".stderr"), "wb")  # noqa: SIM115 - the child owns it from here
        try:
            self._procs[name] = self.ns.popen(
                args, env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    def _wait_for(self, ready: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else self.command_timeout)
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise OvsError(f"{name} exited with {proc.returncode} while waiting for {what}{self._log_tail()}")
            if ready():
                return
            time.sleep(0.02)
        raise OvsError(f"timed out waiting for {what}{self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        if self.run_dir is None:
            return ""
        out = []
        for name in ("ovs-vswitchd.log", "ovsdb-server.log", "ovs-vswitchd.stderr", "ovsdb-server.stderr"):
            with contextlib.suppress(OSError), open(self._path(name)) as f:
                tail = f.read().splitlines()[-lines:]
                if tail:
                    out.append(f"\n--- {name} ---\n" + "\n".join(tail))
        return "".join(out)

    def vsctl(self, *args: str) -> str:
        return self._run(["ovs-vsctl", "--db=" + self.db_remote, f"--timeout={int(self.command_timeout)}", *args])

    def appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", "-t", self.vswitchd_ctl, f"--timeout={int(self.command_timeout)}", *args])

    def _appctl_ok(self, *args: str) -> bool:
        try:
            self.appctl(*args)
        except OvsError:
            return False
        return True

    # -- state -----------------------------------------------------------------------------------------------------
    def lacp_show(self) -> dict[str, Any]:
        """``ovs-appctl lacp/show`` of the bond, parsed (see ``parse_lacp_show``)."""
        return parse_lacp_show(self.appctl("lacp/show", BOND))

    def bond_show(self) -> dict[str, Any]:
        """``ovs-appctl bond/show`` of the bond, parsed (see ``parse_bond_show``)."""
        return parse_bond_show(self.appctl("bond/show", BOND))

    def member_status(self, index: int) -> tuple[str, bool]:
        """(LACP status words such as ``"current attached"``, bond member enabled) of member ``index``."""
        name = self.members[index].ovs_ifname
        lacp = self.lacp_show()["members"].get(name, {})
        bond = self.bond_show()["members"].get(name, {})
        return str(lacp.get("status", "")), bond.get("state") == "enabled"

    def member_current(self, index: int) -> bool:
        """OVS sees our PDUs on this member (LACP current) and the bond uses it (enabled)."""
        status, enabled = self.member_status(index)
        return "current" in status.split() and enabled

    def wait_bond_current(self, timeout: float = 20.0, members: Iterable[int] | None = None) -> dict[str, Any]:
        """Poll until OVS reports every member in ``members`` (default all) LACP-current, attached and enabled;
        returns the final ``lacp_show()``.  Raises ``OvsError`` with the last output on timeout."""
        wanted = list(range(self.n_members)) if members is None else list(members)
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while True:
            last = self.lacp_show()
            bond = self.bond_show()
            ok = True
            for i in wanted:
                name = self.members[i].ovs_ifname
                status = str(last["members"].get(name, {}).get("status", "")).split()
                if not ("current" in status and "attached" in status):
                    ok = False
                if bond["members"].get(name, {}).get("state") != "enabled":
                    ok = False
            if ok:
                return last
            if time.monotonic() >= deadline:
                raise OvsError(f"bond not current after {timeout} s: {last} {bond}")
            time.sleep(0.05)

    def wait_until(self, predicate: Callable[[OvsPartner], bool], timeout: float, interval: float = 0.02) -> float:
        """Poll ``predicate(self)`` until true; returns the seconds it took (raises ``OvsError`` on timeout).

        Each poll runs ovs-appctl, so the resolution is a few tens of milliseconds."""
        start = time.monotonic()
        while True:
            if predicate(self):
                return time.monotonic() - start
            if time.monotonic() - start >= timeout:
                raise OvsError(f"condition not reached within {timeout} s: {self.lacp_show()}")
            time.sleep(interval)

    # -- links -----------------------------------------------------------------------------------------------------
    def set_member_link(self, index: int, up: bool) -> None:
        """Bring the OVS end of member ``index`` administratively up or down (our end's carrier follows)."""
        assert self.ns is not None
        set_link_state(self.members[index].ovs_ifname, up, self.ns.name)

    def open_member_link(self, index: int) -> MemberLink:
        """An AF_PACKET ``FdLink`` on our end of member ``index`` (closed by ``stop()``)."""
        link = MemberLink(self.members[index].team_ifname)
        self._links.append(link)
        return link


# -- output parsers (OVS 2.x says "slave", 3.x "member") ---------------------------------------------------------
_HEADER = re.compile(r"^---- (\S+) ----$")
_LACP_MEMBER = re.compile(r"^(?:member|slave): (\S+): (.*)$")
_BOND_MEMBER = re.compile(r"^(?:member|slave) (\S+): (\S+)$")


def _parse_show(
    text: str,
    member_line: re.Pattern[str],
    new_member: Callable[[str], dict[str, Any]],
    set_member_key: Callable[[dict[str, Any], str, str], None],
) -> dict[str, Any]:
    """The shared shape of ``ovs-appctl lacp/show`` and ``bond/show``: a ``---- <bond> ----`` header, ``key: value``
    lines of the bond, then per member a line matching ``member_line`` (ifname, rest) and its ``key: value`` lines."""
    out: dict[str, Any] = {"members": {}}
    member: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _HEADER.match(line):
            out["bond"] = m.group(1)
            continue
        if m := member_line.match(line):
            member = new_member(m.group(2))
            out["members"][m.group(1)] = member
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if member is None:
            out[key] = value
        else:
            set_member_key(member, key, value)
    return out


def _set_lacp_member_key(member: dict[str, Any], key: str, value: str) -> None:
    who, _, rest = key.partition(" ")
    if who in ("actor", "partner") and rest:
        member[who][rest] = value
    else:
        member[key] = value


def parse_lacp_show(text: str) -> dict[str, Any]:
    """``{"bond": name, <bond keys>, "members": {ifname: {"status": "current attached", "port_id": "1", ...,
    "actor": {"sys_id": ..., "state": "activity timeout ..."}, "partner": {...}}}}`` (values are strings)."""
    return _parse_show(
        text, _LACP_MEMBER, lambda rest: {"status": rest.strip(), "actor": {}, "partner": {}}, _set_lacp_member_key
    )


def parse_bond_show(text: str) -> dict[str, Any]:
    """``{"bond": name, "bond_mode": ..., "lacp_status": ..., "members": {ifname: {"state": "enabled", ...}}}``."""
    return _parse_show(text, _BOND_MEMBER, lambda rest: {"state": rest}, dict.__setitem__)
