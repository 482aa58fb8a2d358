"""The failover benchmark runs end to end on a small size and writes its report (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from tcpchimney.bench.failover import run_failover_bench


def test_failover_bench_report(tmp_path: Path) -> None:
    path = tmp_path / "failover.json"
    report = run_failover_bench(path, sizes=(6,))
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report))
    assert data["baseline_ovs_detection_s"] is None
    assert [r["mode"] for r in data["rows"]] == ["carrier", "silent"]
    for row in data["rows"]:
        assert row["connections"] == 6 and row["reoffloaded"] == 6
        assert row["on_members_after"][0] == 0 and row["on_members_after"][1] == 6
        assert row["bytes_exact"] and row["violations"] == 0
        assert row["to_reoffloaded_cpu_s"] >= row["to_host_cpu_s"] >= 0
