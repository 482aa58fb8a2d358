from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tcpchimney.trace.plot import (
    _ack_steps,
    _owner_spans,
    _rel,
    busiest_connection,
    list_connections,
    load_trace,
    plot_busiest,
    plot_time_sequence,
)

CONN = "10.0.0.1:5000>10.0.0.2:80"
OTHER = "10.0.0.1:5001>10.0.0.2:80"


def synthetic_trace() -> list[dict[str, object]]:
    base = 0xFFFFF000  # sequence numbers wrap during the transfer
    events: list[dict[str, object]] = [
        {
            "t": 0.0,
            "kind": "segment",
            "conn": CONN,
            "dir": "out",
            "seq": base,
            "ack": 0,
            "len": 0,
            "flags": "S",
            "owner": "host",
        },
        {
            "t": 0.001,
            "kind": "segment",
            "conn": CONN,
            "dir": "in",
            "seq": 9,
            "ack": base + 1,
            "len": 0,
            "flags": "S.",
            "owner": "host",
        },
    ]
    seq = base + 1
    t = 0.002
    owner = "host"
    for i in range(40):
        if i == 10:
            events.append({"t": t, "kind": "owner", "conn": CONN, "owner": "nic0"})
            owner = "nic0"
        if i == 25:
            events.append({"t": t, "kind": "retrieve", "conn": CONN, "reason": "LOW_ACTIVITY", "target": "nic0"})
            events.append({"t": t, "kind": "terminate_start", "conn": CONN, "by": "host", "reason": "x"})
        if i == 27:
            events.append({"t": t, "kind": "terminate_done", "conn": CONN, "by": "host", "reason": "x"})
            events.append({"t": t, "kind": "owner", "conn": CONN, "owner": "host"})
            owner = "host"
        events.append(
            {
                "t": t,
                "kind": "segment",
                "conn": CONN,
                "dir": "out",
                "seq": seq & 0xFFFFFFFF,
                "ack": 10,
                "len": 1000,
                "flags": ".",
                "owner": owner,
            }
        )
        if i == 15:  # a retransmission
            events.append(
                {
                    "t": t + 0.0005,
                    "kind": "segment",
                    "conn": CONN,
                    "dir": "out",
                    "seq": (seq - 1000) & 0xFFFFFFFF,
                    "ack": 10,
                    "len": 1000,
                    "flags": ".",
                    "owner": owner,
                }
            )
        events.append(
            {
                "t": t + 0.001,
                "kind": "segment",
                "conn": CONN,
                "dir": "in",
                "seq": 10,
                "ack": (seq + 1000) & 0xFFFFFFFF,
                "len": 0,
                "flags": ".",
                "owner": owner,
            }
        )
        seq += 1000
        t += 0.002
    events.append({"t": 0.03, "kind": "upload_all", "target": "nic0"})
    events.append({"t": 0.035, "kind": "resume", "target": "nic0"})
    events.append(
        {
            "t": 0.01,
            "kind": "segment",
            "conn": OTHER,
            "dir": "out",
            "seq": 1,
            "ack": 0,
            "len": 0,
            "flags": "S",
            "owner": "host",
        }
    )
    return events


def write_jsonl(path: Path, events: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + "\n")


def test_load_and_list(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    events = synthetic_trace()
    write_jsonl(path, events)
    loaded = load_trace(path)
    assert loaded == events
    assert list_connections(loaded) == [CONN, OTHER]


def test_load_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t": 0, "kind": "x"}\nnot json\n')
    with pytest.raises(ValueError, match=":2:"):
        load_trace(path)


def test_plot_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "ts.png"
    plot_time_sequence(synthetic_trace(), CONN, str(out), title="synthetic")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_plot_connection_with_only_markers(tmp_path: Path) -> None:
    out = tmp_path / "m.png"
    events: list[dict[str, object]] = [{"t": 1.0, "kind": "failover", "conn": CONN, "target": "nic0"}]
    plot_time_sequence(events, CONN, str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_unknown_conn_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown connection") as exc:
        plot_time_sequence(synthetic_trace(), "1.2.3.4:1>5.6.7.8:2", str(tmp_path / "x.png"))
    assert CONN in str(exc.value)
    assert not (tmp_path / "x.png").exists()


def test_owner_spans_and_relative_sequence() -> None:
    events = [e for e in synthetic_trace() if e.get("conn") == CONN]
    spans = _owner_spans(events, 0.0, 1.0)
    assert [owner for _, _, owner in spans] == ["host", "nic0", "host"]
    assert spans[0][0] == 0.0 and spans[-1][1] == 1.0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert _rel(5, 0xFFFFFFF0) == 21
    assert _rel(0xFFFFFFF0, 5) == -21


def test_ack_steps_skip_segments_without_the_ack_flag() -> None:
    # A connection our side accepted: the peer's SYN has ack 0 and no ACK flag; it must not be drawn as an ACK.
    ins: list[dict[str, object]] = [
        {"t": 0.0, "kind": "segment", "dir": "in", "seq": 9, "ack": 0, "len": 0, "flags": 0x02},
        {"t": 0.1, "kind": "segment", "dir": "in", "seq": 10, "ack": 5001, "len": 0, "flags": 0x10},
        {"t": 0.2, "kind": "segment", "dir": "in", "seq": 10, "ack": 0, "len": 0, "flags": "S"},
        {"t": 0.3, "kind": "segment", "dir": "in", "seq": 10, "ack": 6001, "len": 0, "flags": "."},
        {"t": 0.4, "kind": "segment", "dir": "in", "seq": 10, "ack": 7001, "len": 0, "flags": 0x11},
    ]
    assert _ack_steps(ins, 5001) == ([0.1, 0.3, 0.4], [0, 1000, 2000])


def test_plot_passive_open_with_integer_flags(tmp_path: Path) -> None:
    # Traces written by the stack record flags as the integer flag byte.
    events: list[dict[str, object]] = [
        {"t": 0.0, "kind": "segment", "conn": CONN, "dir": "in", "seq": 9, "ack": 0, "len": 0, "flags": 0x02},
        {"t": 0.001, "kind": "segment", "conn": CONN, "dir": "out", "seq": 100, "ack": 10, "len": 0, "flags": 0x12},
        {"t": 0.002, "kind": "segment", "conn": CONN, "dir": "in", "seq": 10, "ack": 101, "len": 0, "flags": 0x10},
        {"t": 0.003, "kind": "segment", "conn": CONN, "dir": "out", "seq": 101, "ack": 10, "len": 500, "flags": 0x18},
        {"t": 0.004, "kind": "segment", "conn": CONN, "dir": "in", "seq": 10, "ack": 601, "len": 0, "flags": 0x10},
    ]
    out = tmp_path / "passive.png"
    plot_time_sequence(events, CONN, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_busiest_connection_and_plot_busiest(tmp_path: Path) -> None:
    events = synthetic_trace()
    assert busiest_connection(events) == CONN  # OTHER changed owner never and sent no data
    assert busiest_connection([e for e in events if e.get("conn") != CONN]) is None
    out = tmp_path / "busy.png"
    assert plot_busiest(events, str(out), lambda conn: f"busy {conn}") == CONN
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert plot_busiest([], str(tmp_path / "none.png"), str) is None
    assert not (tmp_path / "none.png").exists()
