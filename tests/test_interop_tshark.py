"""The tshark wire checks can fail: synthetic captures with each defect are flagged, a clean one is not."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from interop_support import IN_CI
from tcpchimney.trace.pcap import PcapWriter
from tcpchimney.trace.tshark import analyze
from tcpchimney.wire.addr import ip_to_bytes, mac_to_bytes
from tcpchimney.wire.frame import build_tcp_frame
from tcpchimney.wire.tcp import ACK, RST, SYN, TcpOptions, TcpSegment

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None and not IN_CI, reason="needs tshark")

US, THEM = "10.9.0.2", "10.9.0.1"
MAC_US, MAC_THEM = mac_to_bytes("02:00:00:00:00:02"), mac_to_bytes("02:00:00:00:00:01")
ISS_THEM, ISS_US = 1000, 5000


def _frame(from_us: bool, seg: TcpSegment) -> bytes:
    if from_us:
        return build_tcp_frame(MAC_US, MAC_THEM, ip_to_bytes(US), ip_to_bytes(THEM), seg)
    return build_tcp_frame(MAC_THEM, MAC_US, ip_to_bytes(THEM), ip_to_bytes(US), seg)


def _capture(path: Path, tail: list[tuple[bool, TcpSegment]]) -> str:
    """A handshake with window scale 2 on both sides, then ``tail``."""
    head = [
        (False, TcpSegment(40000, 80, ISS_THEM, 0, SYN, 65535, options=TcpOptions(mss=1460, window_scale=2))),
        (True, TcpSegment(80, 40000, ISS_US, ISS_THEM + 1, SYN | ACK, 65535, options=TcpOptions(1460, 2))),
        (False, TcpSegment(40000, 80, ISS_THEM + 1, ISS_US + 1, ACK, 1000)),
    ]
    with PcapWriter(path, epoch=1.7e9) as w:
        for i, (ours, seg) in enumerate(head + tail):
            w.write(_frame(ours, seg), i * 0.001)
    return str(path)


def _data(seq: int, n: int) -> tuple[bool, TcpSegment]:
    return False, TcpSegment(40000, 80, seq, ISS_US + 1, ACK, 1000, payload=bytes(n))


def _ack(ack: int, win: int) -> tuple[bool, TcpSegment]:
    return True, TcpSegment(80, 40000, ISS_US + 1, ack, ACK, win)


def test_clean_capture_has_no_problems(tmp_path: Path) -> None:
    s = ISS_THEM + 1
    path = _capture(tmp_path / "ok.pcap", [_data(s, 100), _ack(s + 100, 1000), _data(s + 100, 100), _ack(s + 200, 975)])
    res = analyze(path, US)
    assert res.problems() == [] and res.packets == 7 and res.packets_from_ours == 3


def test_window_shrink_is_flagged(tmp_path: Path) -> None:
    s = ISS_THEM + 1
    # right edge: s+100 + 1000*4, then s+200 + 900*4 = 400 bytes to the left
    path = _capture(
        tmp_path / "shrink.pcap", [_data(s, 100), _ack(s + 100, 1000), _data(s + 100, 100), _ack(s + 200, 900)]
    )
    res = analyze(path, US)
    assert res.window_shrinks == [(7, 300)]


def test_rst_and_bad_checksum_and_ack_lost_segment_are_flagged(tmp_path: Path) -> None:
    s = ISS_THEM + 1
    tail: list[tuple[bool, TcpSegment]] = [
        _ack(s + 5000, 1000),  # ACKs data the capture never saw
        (True, TcpSegment(80, 40000, ISS_US + 1, 0, RST, 0)),
    ]
    path = _capture(tmp_path / "bad.pcap", tail)
    with open(path, "ab") as fh:  # append one frame with a corrupted TCP checksum
        corrupt = bytearray(_frame(*_ack(s, 1000)))
        corrupt[14 + 20 + 16] ^= 0xFF  # the TCP checksum's high byte
        fh.write(struct.pack("<IIII", 1700000001, 0, len(corrupt), len(corrupt)) + bytes(corrupt))
    res = analyze(path, US)
    problems = " ".join(res.problems())
    assert res.rst_from_ours == [5]
    assert res.bad_checksums == [6]
    assert res.ack_lost_segment
    assert "RST" in problems and "checksum" in problems and "ack_lost_segment" in problems
    assert res.problems(allow_rst=True) and "RST" not in " ".join(res.problems(allow_rst=True))
