"""Classic libpcap capture files (microsecond timestamps), so simulated traffic opens in Wireshark/tcpdump."""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
PCAP_MAGIC = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D  # nanosecond variant, accepted by read_pcap

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Writes frames to ``path_or_stream``.  ``epoch`` is added to every timestamp (simulated time starts at 0.0,
    which would show as 1970; pass e.g. ``time.time()`` at start for wall-clock-looking captures)."""

    def __init__(
        self,
        path_or_stream: str | Path | BinaryIO,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 262144,
        epoch: float = 0.0,
    ) -> None:
        if isinstance(path_or_stream, (str, Path)):
            self._stream: BinaryIO = open(path_or_stream, "wb")  # noqa: SIM115 - closed in close()
            self._owned = True
        else:
            self._stream = path_or_stream
            self._owned = False
        self.snaplen = snaplen
        self.epoch = epoch
        self.frames_written = 0
        self._closed = False
        self._stream.write(_GLOBAL.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, linktype))

    def write(self, frame: bytes, timestamp: float) -> None:
        if self._closed:
            raise ValueError("PcapWriter is closed")
        ts = timestamp + self.epoch
        if ts < 0:
            raise ValueError(f"negative capture timestamp {ts}")
        usec_total = round(ts * 1_000_000)
        sec, usec = divmod(usec_total, 1_000_000)
        incl = min(len(frame), self.snaplen)
        self._stream.write(_RECORD.pack(sec, usec, incl, len(frame)))
        self._stream.write(frame[:incl] if incl < len(frame) else frame)
        self.frames_written += 1

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it (a caller's stream is left open)."""
        if self._closed:
            return
        self._closed = True
        self._stream.flush()
        if self._owned:
            self._stream.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_pcap(path: str | Path) -> list[tuple[float, bytes]]:
    """Every record as ``(timestamp, captured bytes)``; either byte order, micro- or nanosecond magic."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError("not a pcap file: too short")
    magic_le = int.from_bytes(data[:4], "little")
    if magic_le in (PCAP_MAGIC, PCAP_MAGIC_NS):
        endian = "<"
        magic = magic_le
    else:
        magic = int.from_bytes(data[:4], "big")
        if magic not in (PCAP_MAGIC, PCAP_MAGIC_NS):
            raise ValueError(f"not a pcap file: magic {data[:4].hex()}")
        endian = ">"
    divisor = 1e9 if magic == PCAP_MAGIC_NS else 1e6
    record = struct.Struct(endian + "IIII")
    out: list[tuple[float, bytes]] = []
    off = 24
    while off < len(data):
        if off + 16 > len(data):
            raise ValueError("truncated pcap record header")
        sec, frac, incl, _orig = record.unpack_from(data, off)
        off += 16
        if off + incl > len(data):
            raise ValueError("truncated pcap record")
        out.append((sec + frac / divisor, data[off : off + incl]))
        off += incl
    return out
