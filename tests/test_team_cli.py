"""``chimney demo --team --sim`` end to end (JSON, trace, plot), the live timeline, and the failover bench table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tcpchimney.cli import team_cmd
from tcpchimney.scenario.team_wire import Timeline, failover_phases
from tcpchimney.trace.plot import load_trace


def _demo_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--sim", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default="out")
    team_cmd.add_team_arguments(p)
    return p.parse_args(list(argv))


def test_sim_team_demo_json_trace_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _demo_args("--team", "--sim", "--json", "--seed", "2", "--team-connections", "20", "--out", str(tmp_path))
    assert args.team
    code = team_cmd.cmd_demo_team(args)
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    for key in ("connections", "bytes_sent", "bytes_verified", "mismatched_bytes", "terminations"):
        assert key in result
    assert result["connections"] == 20 and result["mismatched_bytes"] == 0
    assert result["bytes_verified"] == result["bytes_sent"] > 0
    assert result["contract_violations"] == 0
    assert result["terminations"]["by_reason"].get("upload_all", 0) > 0
    fo = result["failover"]
    assert fo["member"] == 0 and fo["reason"] == "carrier"
    assert fo["first_reoffload_s"] >= fo["link_down_to_resume_s"] >= 0
    assert set(result["members"]) >= {"before_failure", "after_failover", "after_rejoin"}
    after = result["members"]["after_failover"]
    assert after[0]["active"] is False and after[1]["active"] is True
    events = load_trace(result["trace"])
    assert any(e["kind"] == "failover" for e in events)
    assert result["plot"] and Path(result["plot"]).stat().st_size > 10_000
    assert result["plot_connection"] in {e.get("conn") for e in events}


def test_sim_team_demo_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = team_cmd.cmd_demo_team(_demo_args("--team", "--sim", "--team-connections", "8", "--out", str(tmp_path)))
    text = capsys.readouterr().out
    assert code == 0, text
    assert "LINK DOWN" in text and "UPLOAD_ALL" in text and "RESUME" in text
    assert "members before failure:" in text and "SEL,SYNC,COL,DIST" in text
    assert "mismatched bytes" in text and "trace:" in text


def test_timeline_groups_runs_and_skips_routine_terminations() -> None:
    events = [
        {"t": 1.0, "kind": "failover", "member": "nic0", "cause": "link down"},
        {"t": 1.001, "kind": "upload_all", "host": "host", "target": "team0", "connections": 3},
        *({"t": 1.002 + i * 0.001, "kind": "terminate_done", "host": "host", "reason": "upload_all"} for i in range(3)),
        {"t": 1.006, "kind": "terminate_done", "host": "host", "reason": "final"},
        {"t": 1.007, "kind": "resume", "host": "host", "target": "team0", "max_connections": 10},
        {"t": 1.2, "kind": "offload_done", "host": "host", "target": "team0"},
        {"t": 1.3, "kind": "offload_done", "host": "host", "target": "team0"},
        {"t": 1.4, "kind": "segment", "conn": "x"},
        {"t": 1.5, "kind": "offload_done", "host": "peer", "target": "team0"},  # another host: not ours
        {"t": 2.0, "kind": "member_restored", "member": "nic0"},
        {"t": 2.1, "kind": "team.join", "members": [0]},
    ]
    lines = Timeline(t0=1.0).lines(events)
    assert len(lines) == 7, lines
    assert "LINK DOWN" in lines[0] and "+0.0 ms" in lines[0]
    assert "3 terminations done (upload_all) over 2.0 ms" in lines[2]
    assert "2 offloads done" in lines[4] and "+200.0 ms" in lines[4]
    phases = failover_phases(events)
    assert phases["link_down_to_resume_s"] == pytest.approx(0.007)
    assert phases["first_reoffload_s"] == pytest.approx(0.2)
    assert phases["last_reoffload_s"] == pytest.approx(0.5)  # the peer's offload_done is not filtered here
    assert phases["rejoin_s"] == pytest.approx(0.1)


def test_failover_rows_take_ratios_to_the_matching_baseline() -> None:
    sim = [
        {
            "mode": mode,
            "connections": n,
            "to_host_virtual_s": virt,
            "to_host_cpu_s": 0.01,
            "to_reoffloaded_virtual_s": virt,
            "to_reoffloaded_cpu_s": 0.02,
            "bytes_exact": True,
            "violations": 0,
        }
        for mode, n, virt in (("carrier", 10, 0.0), ("silent", 10, 2.99))
    ]
    baseline = {"carrier_median_s": 0.01, "lacp_median_s": 3.0, "carrier": [0.01], "lacp": [3.0]}
    baseline |= {"team_carrier_median_s": 0.005, "team_lacp_median_s": 2.95}
    rows = team_cmd.failover_rows(sim, baseline)
    assert rows[0]["to_host_ratio"] == pytest.approx(1.0)
    assert rows[0]["to_reoffloaded_ratio"] == pytest.approx(2.0)
    assert rows[1]["ovs_detection_s"] == 3.0 and rows[1]["to_host_ratio"] == pytest.approx(1.0)
    table = "\n".join(team_cmd.failover_table(rows, baseline, None))
    assert "carrier loss" in table and "lost LACPDUs" in table and "1.00x" in table and "2.00x" in table
    none = team_cmd.failover_rows(sim, None)
    assert none[0]["to_host_ratio"] is None
    text = "\n".join(team_cmd.failover_table(none, None, "needs root"))
    assert "could not be measured: needs root" in text and "n/a" in text
