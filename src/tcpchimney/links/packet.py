"""Real-wire links pumped by asyncio: the shared fd pump (``FdLink``) and ``VethLink`` (AF_PACKET on a veth).

``VethLink`` creates a veth pair whose peer end lives in a ``PeerNamespace`` with an IPv4 address (the Linux kernel
there is the peer), while the root end stays up with no address and carries our frames through an AF_PACKET
``SOCK_RAW`` socket bound to it.  Checksum and segmentation offloads are turned off on the peer end (ethtool ioctls
issued from inside the namespace), so every frame we read is at most MTU-sized and carries complete checksums.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import secrets
import socket
import struct
from dataclasses import dataclass

from pyroute2 import IPRoute

from tcpchimney.links.base import FrameReceiver, LinkListener
from tcpchimney.links.netns import PeerNamespace, netlink_call, write_sysctl

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23
SOL_PACKET = 263

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
ETHTOOL_SSG = 0x19
ETHTOOL_STSO = 0x1F
ETHTOOL_SGSO = 0x24
ETHTOOL_SGRO = 0x2C
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_GTSO = 0x1E

# Frames handed to the receiver per readiness callback, so one busy link cannot starve the loop.
READ_BUDGET = 256


@dataclass(slots=True)
class FdLinkStats:
    rx_frames: int = 0
    rx_bytes: int = 0
    rx_dropped: int = 0  # read but not delivered (no receiver, malformed, closed)
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # carrier down, closed, or the kernel refused the write


class FdLink:
    """A ``LinkPort`` over one non-blocking file descriptor, read from an asyncio loop's ``add_reader``.

    Subclasses provide ``_read_frame`` (one frame or None when the fd is drained) and ``_write_frame``.
    """

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self._fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None
        self._receiver: FrameReceiver | None = None
        self._listener: LinkListener | None = None
        self._carrier = True
        self._closed = False
        self.stats = FdLinkStats()

    @property
    def up(self) -> bool:
        return self._carrier and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self._fd

    def set_receiver(self, receiver: FrameReceiver) -> None:
        self._receiver = receiver

    def set_link_listener(self, listener: LinkListener) -> None:
        self._listener = listener

    async def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start pumping received frames to the receiver from ``loop`` (default: the running loop)."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        if self._loop is not None:
            return
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def transmit(self, frame: bytes) -> None:
        stats = self.stats
        if self._closed or not self._carrier:
            stats.tx_dropped += 1
            return
        try:
            self._write_frame(frame)
        except OSError:
            # EAGAIN (queue full), ENOBUFS, EIO while the peer side is down: a lossy wire, like the real one.
            stats.tx_dropped += 1
            return
        stats.tx_frames += 1
        stats.tx_bytes += len(frame)

    def _on_readable(self) -> None:
        stats = self.stats
        for _ in range(READ_BUDGET):
            if self._closed:
                return
            try:
                frames = self._read_frame()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stats.rx_dropped += 1
                return
            if frames is None:
                return
            for frame in frames:
                receiver = self._receiver
                if receiver is None or not self._carrier:
                    stats.rx_dropped += 1
                    continue
                stats.rx_frames += 1
                stats.rx_bytes += len(frame)
                receiver(frame)

    def _notify(self, up: bool) -> None:
        listener = self._listener
        if listener is None:
            return
        if self._loop is not None:
            self._loop.call_soon(listener, up)
        else:
            listener(up)

    def _read_frame(self) -> list[bytes] | None:
        """Frames from one read (several when a GSO super-frame is split); None when nothing is pending."""
        raise NotImplementedError

    def _write_frame(self, frame: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop pumping and close the fd.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._close_fd()

    def _close_fd(self) -> None:
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, up={self.up})"


def ethtool_set(sock: socket.socket, ifname: str, cmd: int, value: int) -> None:
    """One legacy ``ethtool_value`` set command (e.g. ``ETHTOOL_STXCSUM``) on ``ifname`` in ``sock``'s namespace."""
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, value), 8)
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)


def ethtool_get(sock: socket.socket, ifname: str, cmd: int) -> int:
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, 0), 8)
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return int(struct.unpack("II", buf.raw)[1])


def disable_offloads(ifname: str) -> None:
    """Turn off tx checksum, TSO, GSO and GRO on ``ifname`` in the caller's namespace (errors on a feature the driver
    does not let us change are ignored; the tx-checksum one is what matters and veth supports it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ethtool_set(sock, ifname, ETHTOOL_STXCSUM, 0)
        for cmd in (ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO):
            with contextlib.suppress(OSError):
                ethtool_set(sock, ifname, cmd, 0)


def offload_state(ifname: str) -> tuple[int, int]:
    """(tx-checksumming, tcp-segmentation-offload) of ``ifname`` in the caller's namespace: 0 off, 1 on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return ethtool_get(sock, ifname, ETHTOOL_GTXCSUM), ethtool_get(sock, ifname, ETHTOOL_GTSO)


def namespace_addresses(ns: PeerNamespace, subnet: int | None) -> tuple[int, str, str]:
    """(subnet, peer_ip, local_ip) of a link into ``ns``: the kernel there is ``10.77.<subnet>.1`` and our stack
    ``.2``; ``subnet`` None takes the namespace's next free one."""
    subnet = ns.next_subnet() if subnet is None else subnet
    return subnet, f"10.77.{subnet}.1", f"10.77.{subnet}.2"


def open_packet_socket(ifname: str, rcvbuf: int) -> socket.socket:
    """A non-blocking AF_PACKET ``SOCK_RAW`` socket bound to ``ifname`` (in the caller's namespace)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # Linux >= 4.20; else filtered on read
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class PacketSocketLink(FdLink):
    """An ``FdLink`` over an AF_PACKET socket (see ``open_packet_socket``); closing it closes the socket."""

    def __init__(self, name: str, sock: socket.socket) -> None:
        self._sock = sock
        super().__init__(name, sock.fileno())

    def _read_frame(self) -> list[bytes] | None:
        while True:
            try:
                frame, addr = self._sock.recvfrom(65536)
            except BlockingIOError:
                return None
            if addr[2] != PACKET_OUTGOING:  # our own transmissions echo back on an ETH_P_ALL socket
                return [frame]

    def _write_frame(self, frame: bytes) -> None:
        self._sock.send(frame)

    def _close_fd(self) -> None:
        self._sock.close()  # not os.close: the socket object owns the fd and would close it again


def random_local_mac() -> bytes:
    """A random locally administered unicast MAC."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)


class VethLink(PacketSocketLink):
    """A veth pair: the peer end inside ``ns`` at ``10.77.<subnet>.1/prefix_len``, our end read/written through
    AF_PACKET.  Suggested addresses for our stack: ``local_ip`` (``.2``) and ``local_mac`` (random, different from the
    root veth's own MAC so the root kernel treats our traffic as another host's and never routes it).

    ``set_carrier(False)`` takes the root end administratively down, so the peer end loses carrier.
    """

    def __init__(
        self,
        ns: PeerNamespace,
        *,
        subnet: int | None = None,
        prefix_len: int = 24,
        mtu: int = 1500,
        name: str | None = None,
        rcvbuf: int = 4 << 20,
    ) -> None:
        self.ns = ns
        self.mtu = mtu
        subnet, self.peer_ip, self.local_ip = namespace_addresses(ns, subnet)
        self.prefix_len = prefix_len
        self.local_mac = random_local_mac()
        tag = secrets.token_hex(4)
        ifname = name if name is not None else f"tcv{tag}a"
        self.peer_ifname = f"tcv{tag}b" if name is None else f"{name[:13]}p"
        if len(ifname) > 15 or len(self.peer_ifname) > 15:
            raise ValueError("interface names are limited to 15 characters")
        try:
            index, self.peer_mac, self.root_mac = netlink_call(lambda: self._create_pair(ifname))
            while self.local_mac == self.root_mac:
                self.local_mac = random_local_mac()
            sock = open_packet_socket(ifname, rcvbuf)
        except BaseException:
            delete_link(ifname)
            raise
        self._index = index
        super().__init__(ifname, sock)

    def _create_pair(self, ifname: str) -> tuple[int, bytes, bytes]:
        """Create the pair in our namespace, silence and de-offload it, move the peer end in; (index, macs)."""
        ns = self.ns
        with IPRoute() as ipr:
            ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": self.peer_ifname})
            index = int(ipr.link_lookup(ifname=ifname)[0])
            ipr.link("set", index=index, mtu=self.mtu)
            # Our end must stay silent (no IPv6 RS/MLD, no forwarding) and carry no address.
            write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")
            write_sysctl(f"net/ipv4/conf/{ifname}/forwarding", "0")
            disable_offloads(ifname)
            disable_offloads(self.peer_ifname)  # offload settings survive the move into the namespace
            ns.move_link_in(self.peer_ifname)
            peer_mac = ns.configure_link(self.peer_ifname, self.peer_ip, self.prefix_len, self.mtu)
            ipr.link("set", index=index, state="up")
            root_mac = _mac_bytes(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))
        return index, peer_mac, root_mac

    def set_carrier(self, up: bool) -> None:
        """Administratively take our end down (the peer end loses carrier) or back up; listeners are told."""
        if up == self._carrier or self._closed:
            return

        def set_state() -> None:
            with IPRoute() as ipr:
                ipr.link("set", index=self._index, state="up" if up else "down")

        netlink_call(set_state)
        self._carrier = up
        self._notify(up)

    def close(self) -> None:
        """Close the socket and delete the veth pair (both ends).  Idempotent."""
        if self._closed:
            return
        super().close()
        delete_link(self.name)


def _mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def delete_link(ifname: str) -> None:
    """Delete ``ifname`` (in the caller's namespace) if it exists; errors are ignored (clean-up paths)."""

    def delete() -> None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if found:
                ipr.link("del", index=found[0])

    with contextlib.suppress(Exception):
        netlink_call(delete)
