"""Small pieces of the SoftToe on their own: the 4-tuple peek, MTU splitting, detector arithmetic."""

from __future__ import annotations

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.targets.detectors import BacklogEstimator, ConnectionDetectors, DetectorConfig
from tcpchimney.targets.nic_table import ConnectionTable, connection_key, peek_tcp_key
from tcpchimney.targets.softtoe import split_segment
from tcpchimney.tcp.engine import TcpStats
from tcpchimney.wire.frame import build_tcp_frame
from tcpchimney.wire.tcp import ACK, FIN, PSH, TcpSegment

A = b"\x02\x00\x00\x00\x00\x01"
B = b"\x02\x00\x00\x00\x00\x02"
LOCAL = bytes([10, 0, 0, 1])
REMOTE = bytes([10, 0, 0, 2])


def _frame_from_peer(vlan: int = 0) -> bytes:
    seg = TcpSegment(80, 40000, 1, 2, ACK, 100, b"data")
    return build_tcp_frame(B, A, REMOTE, LOCAL, seg, vlan=vlan)


def test_peek_matches_connection_key() -> None:
    key = connection_key(LOCAL, REMOTE, 40000, 80)
    assert peek_tcp_key(_frame_from_peer()) == key
    assert peek_tcp_key(_frame_from_peer(vlan=5)) == key
    table: ConnectionTable[str] = ConnectionTable()
    assert not table
    table.add(key, "conn")
    assert table and table.lookup(_frame_from_peer()) == "conn"
    table.remove(key)
    assert table.lookup(_frame_from_peer()) is None


def test_peek_refuses_what_the_parser_would_refuse() -> None:
    frame = bytearray(_frame_from_peer())
    frag = bytearray(frame)
    frag[20] |= 0x20  # MF
    assert peek_tcp_key(bytes(frag)) is None
    opts = bytearray(frame)
    opts[14] = 0x46  # IHL 6: IP options
    assert peek_tcp_key(bytes(opts)) is None
    udp = bytearray(frame)
    udp[23] = 17
    assert peek_tcp_key(bytes(udp)) is None
    assert peek_tcp_key(bytes(frame[:30])) is None
    assert peek_tcp_key(b"\xff" * 12 + b"\x08\x06" + b"\x00" * 28) is None  # ARP


def test_split_keeps_sequence_and_puts_fin_psh_last() -> None:
    seg = TcpSegment(1, 2, 0xFFFFFF00, 7, ACK | PSH | FIN, 50, bytes(range(250)) * 4)
    pieces = split_segment(seg, 300)
    assert b"".join(p.payload for p in pieces) == seg.payload
    assert [p.seq for p in pieces] == [(0xFFFFFF00 + i * 300) & 0xFFFFFFFF for i in range(4)]
    assert all(p.flags == ACK for p in pieces[:-1]) and pieces[-1].flags == ACK | PSH | FIN


def test_small_io_counts_consecutive_small_posts_only() -> None:
    det = ConnectionDetectors(DetectorConfig(small_io_bytes=100, small_io_count=3), TcpStats(), 0.0)
    assert [det.on_receive_post(10) for _ in range(2)] == [None, None]
    assert det.on_receive_post(1000) is None  # a big post breaks the run
    assert det.on_receive_post(0) is None  # zero-byte posts do not count
    assert [det.on_receive_post(10) for _ in range(3)] == [None, None, UploadReason.SMALL_IO]


def test_rate_limit_and_ratio_windows() -> None:
    cfg = DetectorConfig(repeat_interval=10.0, drop_min_segments=10, drop_ratio=0.5, drop_window=5.0)
    stats = TcpStats()
    det = ConnectionDetectors(cfg, stats, 0.0)
    assert det.allowed(UploadReason.HIGH_DROP_RATE, 0.0)
    det.fired(UploadReason.HIGH_DROP_RATE, 0.0)
    assert not det.allowed(UploadReason.HIGH_DROP_RATE, 9.0)
    assert det.allowed(UploadReason.HIGH_DROP_RATE, 10.0)
    stats.segments_out, stats.retransmitted_segments, stats.bytes_out = 9, 9, 1
    assert UploadReason.HIGH_DROP_RATE not in det.sweep(stats, 1.0)  # below the minimum sample count
    stats.segments_out, stats.retransmitted_segments, stats.bytes_out = 20, 4, 2
    assert UploadReason.HIGH_DROP_RATE not in det.sweep(stats, 2.0)  # 20 % < 50 %
    stats.segments_out, stats.retransmitted_segments, stats.bytes_out = 40, 24, 3
    assert UploadReason.HIGH_DROP_RATE in det.sweep(stats, 3.0)


def test_backlog_estimator_throttles() -> None:
    cfg = DetectorConfig(send_backlog_min_interval=1.0, send_backlog_min_change=0.25, send_backlog_horizon=0.1)
    est = BacklogEstimator(cfg, 0.0)
    v1 = est.sample(10_000_000, 1.0)  # 10 MB/s -> 1 MB
    assert v1 == 1_000_000
    assert est.sample(10_500_000, 1.5) is None  # too soon
    assert est.sample(21_000_000, 2.5) is None  # ~1.05 MB: change too small
    assert est.sample(61_000_000, 3.5) == 4_000_000  # 40 MB/s -> 4 MB (the max is 4 MiB)
    assert est.sample(61_000_000, 5.0) is None  # idle
