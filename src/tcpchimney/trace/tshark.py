"""Run tshark on a capture and extract what the real-wire tests assert from its TCP analysis.

``analyze(pcap, ours)`` makes two tshark passes (needs the ``tshark`` binary: ``apt-get install tshark``):

* every TCP packet with its source, stream, flags, raw ACK, calculated window and checksum status (checksum
  validation switched on with ``-o tcp.check_checksum:TRUE``), from which it counts RSTs sent by ``ours``, bad
  checksums, and window shrinks: for each stream the right edge ``ack + (win << scale)`` advertised by ``ours``
  must never move left (SYNs and RSTs do not advertise a window edge and are skipped);
* the packets tshark flags ``tcp.analysis.ack_lost_segment`` (an ACK for data the capture never saw).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

_FIELDS = (
    "frame.number",
    "ip.src",
    "tcp.stream",
    "tcp.flags",
    "tcp.ack_raw",
    "tcp.window_size",
    "tcp.window_size_scalefactor",
    "tcp.checksum.status",
    "tcp.len",
    "frame.len",
    "frame.cap_len",
)
_SYN = 0x02
_RST = 0x04
_ACK = 0x10
# tcp.checksum.status (Wireshark's proto_checksum_enum_e): 0 bad, 1 good, 2 unverified, 3 not present
CHECKSUM_BAD = 0
CHECKSUM_GOOD = 1


class TsharkError(RuntimeError):
    """tshark is missing or failed."""


@dataclass
class WireAnalysis:
    """What ``analyze`` found in one capture (frame numbers are tshark's, for a human to look at)."""

    packets: int = 0
    packets_from_ours: int = 0
    streams: int = 0
    rst_from_ours: list[int] = field(default_factory=list)
    bad_checksums: list[int] = field(default_factory=list)
    unverified_checksums: int = 0  # not checked (tshark could not, or the capture was truncated)
    window_shrinks: list[tuple[int, int]] = field(default_factory=list)  # (frame, bytes the right edge moved left)
    ack_lost_segment: list[int] = field(default_factory=list)
    retransmissions: int = 0

    def problems(self, *, allow_rst: bool = False) -> list[str]:
        """Human-readable list of everything that violates the wire checks (empty when clean)."""
        out = []
        if self.rst_from_ours and not allow_rst:
            out.append(f"RST sent by our stack in frames {self.rst_from_ours[:10]}")
        if self.bad_checksums:
            out.append(f"bad TCP checksums in frames {self.bad_checksums[:10]}")
        if self.window_shrinks:
            out.append(f"window right edge moved left (frame, bytes): {self.window_shrinks[:10]}")
        if self.ack_lost_segment:
            out.append(f"tcp.analysis.ack_lost_segment in frames {self.ack_lost_segment[:10]}")
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "packets": self.packets,
            "packets_from_ours": self.packets_from_ours,
            "streams": self.streams,
            "rst_from_ours": len(self.rst_from_ours),
            "bad_checksums": len(self.bad_checksums),
            "unverified_checksums": self.unverified_checksums,
            "window_shrinks": len(self.window_shrinks),
            "ack_lost_segment": len(self.ack_lost_segment),
            "retransmissions": self.retransmissions,
        }


def tshark_path() -> str | None:
    return shutil.which("tshark")


def run_tshark(pcap: str, display_filter: str, fields: tuple[str, ...], *, timeout: float = 300.0) -> list[list[str]]:
    """``tshark -r pcap -Y filter -T fields -e ...`` with checksum validation on; one list per packet."""
    exe = tshark_path()
    if exe is None:
        raise TsharkError("tshark not found (apt-get install tshark)")
    args = [exe, "-r", pcap, "-n", "-o", "tcp.check_checksum:TRUE", "-o", "tcp.analyze_sequence_numbers:TRUE"]
    args += ["-Y", display_filter, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    for f in fields:
        args += ["-e", f]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise TsharkError(f"tshark failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def count_matching(pcap: str, display_filter: str) -> list[int]:
    """Frame numbers of the packets matching ``display_filter``."""
    return [int(row[0]) for row in run_tshark(pcap, display_filter, ("frame.number",)) if row and row[0]]


def _int(text: str, default: int = 0) -> int:
    if not text:
        return default
    return int(text, 16) if text.startswith("0x") else int(text)


def analyze(pcap: str, ours: str) -> WireAnalysis:
    """Analyse a capture of TCP traffic between ``ours`` (our stack's IPv4 address) and the kernel peer."""
    res = WireAnalysis()
    edges: dict[int, int] = {}  # stream -> last right edge ours advertised
    streams: set[int] = set()
    for row in run_tshark(pcap, "tcp", _FIELDS):
        row += [""] * (len(_FIELDS) - len(row))
        frame, src, stream_s, flags_s, ack_s, win_s, scale_s, csum_s, _len, wire_len, cap_len = row[: len(_FIELDS)]
        res.packets += 1
        stream = _int(stream_s, -1)
        streams.add(stream)
        if src != ours:
            continue
        res.packets_from_ours += 1
        flags = _int(flags_s)
        csum = _int(csum_s, -1)
        if cap_len != wire_len:
            res.unverified_checksums += 1  # truncated by the snap length: tshark cannot check it
        elif csum == CHECKSUM_BAD:
            res.bad_checksums.append(int(frame))
        elif csum != CHECKSUM_GOOD:
            res.unverified_checksums += 1
        if flags & _RST:
            res.rst_from_ours.append(int(frame))
            continue
        if flags & _SYN or not flags & _ACK or not win_s:
            continue
        scale = _int(scale_s, -1)
        if scale == -1:
            continue  # tshark did not see the handshake: the window cannot be scaled
        edge = (_int(ack_s) + _int(win_s)) & 0xFFFFFFFF
        last = edges.get(stream)
        if last is not None:
            moved = (edge - last) & 0xFFFFFFFF
            if moved >= 0x80000000:  # negative in sequence space
                res.window_shrinks.append((int(frame), 0x100000000 - moved))
                continue  # keep the larger edge: one shrink is reported once
        edges[stream] = edge
    res.streams = len(streams)
    res.ack_lost_segment = count_matching(pcap, "tcp.analysis.ack_lost_segment")
    res.retransmissions = len(count_matching(pcap, f"ip.src=={ours} && tcp.analysis.retransmission"))
    return res
