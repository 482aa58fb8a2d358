"""``TapLink``: a TAP device whose netdev lives in a ``PeerNamespace`` while we hold its fd.

The device is created in the caller's namespace (``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR``), moved into the peer
namespace (the fd stays valid), given ``10.77.<subnet>.1/prefix_len`` there and brought up, with no default route.
The Linux kernel in the namespace is the peer; our stack is "the wire" reading and writing frames on the fd.

Every frame on the fd carries a 10-byte ``virtio_net_hdr``.  With ``offload=True`` (``TUNSETOFFLOAD`` with
CSUM|TSO4|TSO6) the kernel may hand us frames whose TCP checksum is only partial (``NEEDS_CSUM``) and TCP
super-segments of up to 64 KB (``GSO_TCPV4``): the checksum is always completed here, and super-segments are either
passed up whole (``rx_gso="pass"``: a valid IPv4/TCP frame longer than the MTU) or cut into MTU-sized segments
(``rx_gso="segment"``).  In the other direction an IPv4/TCP frame longer than ``14 + mtu`` is sent as a GSO
super-segment for the kernel to segment; anything else too long is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
from typing import Literal

from tcpchimney.links.netns import PeerNamespace
from tcpchimney.links.packet import FdLink, namespace_addresses, random_local_mac
from tcpchimney.wire.checksum import internet_checksum

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETCARRIER = 0x400454E2
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04

VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_ECN = 0x80

_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little-endian)
_NO_VNET = bytes(VNET_HDR_LEN)
_IPV4_TYPE = b"\x08\x00"
_TCP_FIN_PSH = 0x09
_TCP_CWR = 0x80
_READ_SIZE = 65536 + VNET_HDR_LEN + 64

_from_bytes = int.from_bytes


def complete_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Finish a ``NEEDS_CSUM`` frame: the field holds the pseudo-header sum; fold in everything from ``csum_start``."""
    pos = csum_start + csum_offset
    end = len(frame)
    if frame[12:14] == _IPV4_TYPE and end >= 18:
        ip_total = _from_bytes(frame[16:18], "big")
        if ip_total and 14 + ip_total <= end:
            end = 14 + ip_total  # the checksum covers the datagram, not trailing padding
    if pos + 2 > end:
        raise ValueError("checksum field outside the frame")
    csum = internet_checksum(frame[csum_start:end])
    return frame[:pos] + csum.to_bytes(2, "big") + frame[pos + 2 :]


def _ipv4_header_checksum(hdr: bytearray) -> None:
    hdr[10:12] = b"\0\0"
    hdr[10:12] = internet_checksum(bytes(hdr)).to_bytes(2, "big")


def segment_tcpv4(frame: bytes, gso_size: int) -> list[bytes]:
    """Cut an Ethernet/IPv4/TCP super-segment into segments carrying at most ``gso_size`` payload bytes each, with
    fresh IP ids, lengths and checksums, and TCP sequence numbers, flags and checksums as TSO hardware would."""
    l3 = 18 if frame[12:14] == b"\x81\x00" else 14
    ihl = (frame[l3] & 0x0F) * 4
    l4 = l3 + ihl
    thl = (frame[l4 + 12] >> 4) * 4
    data_off = l4 + thl
    ip_total = _from_bytes(frame[l3 + 2 : l3 + 4], "big")
    end = l3 + ip_total if ip_total else len(frame)
    payload = frame[data_off:end]
    if gso_size <= 0 or len(payload) <= gso_size:
        return [frame[:end]]
    eth = frame[:l3]
    ip_id = _from_bytes(frame[l3 + 4 : l3 + 6], "big")
    seq = _from_bytes(frame[l4 + 4 : l4 + 8], "big")
    flags = frame[l4 + 13]
    src_dst = frame[l3 + 12 : l3 + 20]
    pseudo_base = _from_bytes(src_dst[:4], "big") + _from_bytes(src_dst[4:], "big") + 6
    out: list[bytes] = []
    n = (len(payload) + gso_size - 1) // gso_size
    for i in range(n):
        chunk = payload[i * gso_size : (i + 1) * gso_size]
        ip = bytearray(frame[l3:l4])
        ip[2:4] = (ihl + thl + len(chunk)).to_bytes(2, "big")
        ip[4:6] = ((ip_id + i) & 0xFFFF).to_bytes(2, "big")
        _ipv4_header_checksum(ip)
        tcp = bytearray(frame[l4:data_off])
        tcp[4:8] = ((seq + i * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags
        if i != n - 1:
            f &= ~_TCP_FIN_PSH
        if i != 0:
            f &= ~_TCP_CWR
        tcp[13] = f
        tcp[16:18] = b"\0\0"
        csum = internet_checksum(bytes(tcp) + chunk, pseudo_base + thl + len(chunk))
        tcp[16:18] = csum.to_bytes(2, "big")
        out.append(b"".join((eth, ip, tcp, chunk)))
    return out


def gso_header_for(frame: bytes, mtu: int) -> tuple[bytes, bytes] | None:
    """For an IPv4/TCP frame longer than ``14 + mtu``: (virtio_net_hdr asking the kernel to segment it, the frame
    with its TCP checksum field replaced by the pseudo-header sum).  None when the frame is not IPv4/TCP."""
    if frame[12:14] != _IPV4_TYPE or len(frame) < 34 or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    l4 = 14 + ihl
    if len(frame) < l4 + 20:
        return None
    thl = (frame[l4 + 12] >> 4) * 4
    tcp_len = len(frame) - l4
    mss = mtu - ihl - thl
    if mss <= 0:
        return None
    r = (_from_bytes(frame[26:30], "big") + _from_bytes(frame[30:34], "big") + 6 + tcp_len) % 0xFFFF
    partial = (r or 0xFFFF).to_bytes(2, "big")
    gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    if frame[l4 + 13] & _TCP_CWR:
        gso_type |= VIRTIO_NET_HDR_GSO_ECN
    hdr = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, l4 + thl, mss, l4, 16)
    return hdr, frame[: l4 + 16] + partial + frame[l4 + 18 :]


class TapLink(FdLink):
    """A ``LinkPort`` on a TAP fd whose device sits in ``ns`` at ``10.77.<subnet>.1/prefix_len``.

    Suggested addresses for our stack: ``local_ip`` (``.2``) and ``local_mac``.  ``peer_mac`` is the kernel side's
    MAC.  ``set_carrier(up)`` toggles the device carrier (``TUNSETCARRIER``) as seen by the namespace's kernel.
    """

    def __init__(
        self,
        ns: PeerNamespace,
        *,
        subnet: int | None = None,
        prefix_len: int = 24,
        mtu: int = 1500,
        offload: bool = False,
        rx_gso: Literal["pass", "segment"] = "pass",
        name: str | None = None,
    ) -> None:
        if rx_gso not in ("pass", "segment"):
            raise ValueError("rx_gso must be 'pass' or 'segment'")
        ifname = name if name is not None else f"tct{secrets.token_hex(4)}"
        if len(ifname) > 15:
            raise ValueError("interface names are limited to 15 characters")
        self.ns = ns
        self.mtu = mtu
        self.offload = offload
        self.rx_gso = rx_gso
        subnet, self.peer_ip, self.local_ip = namespace_addresses(ns, subnet)
        self.prefix_len = prefix_len
        self.local_mac = random_local_mac()
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
            if offload:
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            ns.move_link_in(ifname)
            self.peer_mac = ns.configure_link(ifname, self.peer_ip, prefix_len, mtu)
            while self.local_mac == self.peer_mac:
                self.local_mac = random_local_mac()
        except BaseException:
            os.close(fd)  # a non-persistent TAP device disappears with its last fd
            raise
        super().__init__(ifname, fd)
        self.gso_frames_in = 0
        self.gso_frames_out = 0

    def _read_frame(self) -> list[bytes] | None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return None
        if len(data) <= VNET_HDR_LEN + 14:
            self.stats.rx_dropped += 1
            return []
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack_from(data)
        frame = data[VNET_HDR_LEN:]
        if gso_type != VIRTIO_NET_HDR_GSO_NONE:
            self.gso_frames_in += 1
            if gso_type & ~VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_TCPV4:
                self.stats.rx_dropped += 1  # TCPv6/UDP super-frames: not ours to handle
                return []
            if self.rx_gso == "segment":
                return segment_tcpv4(frame, gso_size)  # recomputes every checksum
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            try:
                frame = complete_checksum(frame, csum_start, csum_offset)
            except ValueError:
                self.stats.rx_dropped += 1
                return []
        return [frame]

    def _write_frame(self, frame: bytes) -> None:
        if len(frame) <= 14 + self.mtu:
            os.writev(self._fd, (_NO_VNET, frame))
            return
        gso = gso_header_for(frame, self.mtu)
        if gso is None:
            raise OSError("frame longer than the MTU and not IPv4/TCP")
        self.gso_frames_out += 1
        os.writev(self._fd, gso)

    def set_carrier(self, up: bool) -> None:
        """Carrier on/off as the namespace's kernel sees it; our link listener is told (from the loop)."""
        if up == self._carrier or self._closed:
            return
        fcntl.ioctl(self._fd, TUNSETCARRIER, struct.pack("i", 1 if up else 0))
        self._carrier = up
        self._notify(up)

    def close(self) -> None:
        """Stop pumping and close the fd; the TAP device (in the namespace) goes away with it.  Idempotent."""
        with contextlib.suppress(OSError):
            super().close()
