from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tcpchimney.trace.pcap import PcapWriter, read_pcap

FRAMES = [bytes(range(60)), b"\xff" * 1514, b"\x01\x02\x03"]


def test_write_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    with PcapWriter(path, epoch=1_700_000_000.0) as writer:
        writer.write(FRAMES[0], 0.0)
        writer.write(FRAMES[1], 0.000123)
        writer.write(FRAMES[2], 2.5)
        assert writer.frames_written == 3
    records = read_pcap(path)
    assert [frame for _, frame in records] == FRAMES
    times = [t - 1_700_000_000.0 for t, _ in records]
    assert times == pytest.approx([0.0, 0.000123, 2.5], abs=1e-6)


def test_global_header_layout(tmp_path: Path) -> None:
    path = tmp_path / "hdr.pcap"
    PcapWriter(path, snaplen=1000).close()
    data = path.read_bytes()
    assert len(data) == 24
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", data)
    assert (magic, major, minor, zone, sigfigs, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 0, 0, 1000, 1)
    assert read_pcap(path) == []


def test_snaplen_truncates_but_records_original_length(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    with PcapWriter(path, snaplen=100) as writer:
        writer.write(b"\xab" * 300, 1.0)
    data = path.read_bytes()
    sec, usec, incl, orig = struct.unpack_from("<IIII", data, 24)
    assert (sec, usec, incl, orig) == (1, 0, 100, 300)
    assert read_pcap(path) == [(1.0, b"\xab" * 100)]


def test_microsecond_rounding_carries_into_seconds() -> None:
    stream = io.BytesIO()
    writer = PcapWriter(stream)
    writer.write(b"x", 0.9999996)
    writer.close()
    assert not stream.closed  # a caller's stream stays open
    sec, usec, _, _ = struct.unpack_from("<IIII", stream.getvalue(), 24)
    assert (sec, usec) == (1, 0)


def test_closed_writer_and_bad_files(tmp_path: Path) -> None:
    writer = PcapWriter(io.BytesIO())
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError):
        writer.write(b"x", 0.0)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 24)
    with pytest.raises(ValueError):
        read_pcap(bad)
    path = tmp_path / "cut.pcap"
    with PcapWriter(path) as w:
        w.write(b"y" * 50, 0.0)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError):
        read_pcap(path)


def test_big_endian_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "be.pcap"
    path.write_bytes(
        struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack(">IIII", 3, 500000, 2, 2) + b"hi"
    )
    assert read_pcap(path) == [(3.5, b"hi")]


@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos not installed")
def test_capinfos_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "ws.pcap"
    with PcapWriter(path) as writer:
        for i, frame in enumerate(FRAMES):
            writer.write(frame, i * 0.1)
    out = subprocess.run(["capinfos", "-c", str(path)], capture_output=True, text=True, timeout=30, check=True)
    assert "3" in out.stdout
