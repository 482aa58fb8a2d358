"""`chimney demo` (real wire) and `chimney bench wire` end to end through the command line, small sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from interop_support import NETNS

pytestmark = NETNS

CHIMNEY = [sys.executable, "-m", "tcpchimney.cli.main"]


def test_real_wire_demo_json_and_artifacts(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CHIMNEY, "demo", "--json", "--connections", "6", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    result = json.loads(out.stdout)
    for key in (
        "connections",
        "bytes_sent",
        "bytes_verified",
        "mismatched_bytes",
        "terminations",
        "contract_violations",
    ):
        assert key in result
    assert result["connections"] == result["expected_connections"] >= 8
    assert result["bytes_verified"] == result["bytes_sent"] > 0 and result["mismatched_bytes"] == 0
    assert result["contract_violations"] == 0
    assert result["upload_all_cycles"] == 1 and result["resumes"] >= 1
    reasons = set(result["nic_retrieve_reasons"])
    assert {"LOW_ACTIVITY", "RECEIVED_URGENT_DATA"} <= reasons and len(reasons) >= 4
    for key in ("trace", "pcap", "plot"):
        assert Path(result[key]).stat().st_size > 0, key
    assert result["wire_check"]["packets_from_ours"] > 0


def test_bench_wire_quick_writes_every_figure(tmp_path: Path) -> None:
    path = tmp_path / "wire.json"
    out = subprocess.run(
        [*CHIMNEY, "bench", "wire", "--quick", "--json-out", str(path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(path.read_text())
    base = data["baseline_kernel_veth"]
    assert all(base[k] > 0 for k in ("linux_to_stack_MBps", "stack_to_linux_MBps", "connect_ms", "connections_per_s"))
    for link in ("tap", "veth"):
        figures = data["links"][link]
        for path_kind in ("software", "offload"):
            assert figures[f"{path_kind}_linux_to_stack_MBps"] > 0
            assert figures[f"{path_kind}_stack_to_linux_MBps"] > 0
        assert figures["offloads"] >= 2  # the offloaded path really ran on the NIC
        assert figures["connect_in_ms"] > 0 and figures["connect_out_ms"] > 0 and figures["connections_per_s"] > 0
    assert "ratio" in out.stdout
