"""Real wire: ``chimney demo --team`` (our stack -> 2-member team -> userspace OVS LACP bond -> kernel echo server),
the OVS detection baseline of ``chimney bench failover``, and ``chimney serve --team`` driven by ``chimney ctl``."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from netns_support import needs
from tcpchimney.cli import ctl, team_cmd
from tcpchimney.cli.serve import run_serve
from tcpchimney.config import ServeConfig, with_overrides
from tcpchimney.control import ControlClient
from tcpchimney.links.ovs import ovs_missing
from tcpchimney.scenario.team_wire import (
    ECHO_PORT,
    EchoFlows,
    TeamWire,
    TeamWireConfig,
    TeamWireDemoConfig,
    measure_ovs_detection,
    run_team_wire_demo,
    wait_for,
)

pytestmark = needs("userspace OVS", ovs_missing())


def test_team_demo_on_the_real_wire(tmp_path: Path) -> None:
    cfg = TeamWireDemoConfig(connections=50, min_bytes=128 * 1024, max_bytes=384 * 1024, out=str(tmp_path), seed=4)
    lines: list[str] = []
    result, events = asyncio.run(run_team_wire_demo(cfg, live=lines.append))
    assert result["connections"] == 50 and result["completed"] == 50, result["reset"]
    assert result["mismatched_bytes"] == 0 and result["bytes_verified"] == result["bytes_sent"] > 0
    assert all(t["exact"] and t["sha256_sent"] == t["sha256_echoed"] for t in result["transfers"])
    assert result["contract_violations"] == 0, result["violations"]
    fo = result["failover"]
    assert fo["member"] == 0 and fo["reason"] == "carrier" and fo["running_at_failure"] > 0
    assert fo["t_resume"] >= fo["t_host_owns_all"] >= fo["t_detect"]
    assert fo["first_reoffload_s"] > fo["link_down_to_resume_s"] > fo["team_detect_s"] > 0
    assert "rejoin_s" in fo
    members = result["members"]
    assert [m["active"] for m in members["after_failover"]] == [False, True]
    assert [m["active"] for m in members["after_rejoin"]] == [True, True]
    assert all(m["lacp"]["distributing"] for m in members["after_rejoin"])
    ovs_members = result["ovs_lacp"]["members"]
    assert len(ovs_members) == 2 and all("current" in m["status"] for m in ovs_members.values())
    text = "\n".join(lines)
    assert "LINK DOWN" in text and "UPLOAD_ALL" in text and "OFFLOAD_RESUME" in text and "rejoined" in text
    trace = Path(result["trace"])
    assert trace.exists() and any(json.loads(x)["kind"] == "failover" for x in trace.read_text().splitlines())
    conn = team_cmd.plot_team(events, str(tmp_path / "p.png"), "test")
    assert conn is not None and (tmp_path / "p.png").stat().st_size > 10_000
    out = "\n".join(team_cmd.summary_lines(result))
    assert "link down -> team noticed" in out and "BAD" not in out


def test_ovs_detection_baseline_carrier_and_lost_lacpdus() -> None:
    base = asyncio.run(measure_ovs_detection(carrier_trials=1, lacp_trials=1))
    assert len(base["carrier"]) == 1 and len(base["lacp"]) == 1
    # Lost LACPDUs: OVS waits for its fast-timer expiry (3 x 1 s), far longer than a carrier loss.
    assert base["lacp_median_s"] > 2.0 > base["carrier_median_s"] > 0
    assert base["team_lacp_median_s"] > 2.0 > base["team_carrier_median_s"] > 0
    assert base["violations"] == 0


def test_bench_failover_command_writes_the_json(tmp_path: Path) -> None:
    args = argparse.Namespace(quick=True, json_out=str(tmp_path / "failover.json"))
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = team_cmd.cmd_bench_failover(args)
    assert code == 0, buf.getvalue()
    report = json.loads((tmp_path / "failover.json").read_text())
    assert report["baseline_unavailable"] is None, report["baseline_unavailable"]
    assert report["baseline_ovs_detection_s"]["carrier"] > 0
    assert {(r["mode"], r["connections"]) for r in report["rows"]} == {
        (m, n) for m in ("carrier", "silent") for n in (10, 100, 1000)
    }
    assert all(r["to_host_ratio"] is not None and r["bytes_exact"] for r in report["rows"])
    assert "lost LACPDUs" in buf.getvalue()


def test_mute_lacp_alone_makes_the_partner_drop_the_member_while_data_flows() -> None:
    async def run() -> None:
        async with TeamWire(TeamWireConfig()) as w:
            await w.converge()
            await w.start_echo_server()
            flows = EchoFlows(w.the_host, w.peer_ip, ECHO_PORT, asyncio.get_running_loop())
            for i in range(8):
                flows.start(bytes([i]) * 50_000)
            w.mute_lacp(1, True)
            await wait_for(lambda: 1 not in w.the_team.active_members(), 10.0, "the team to drop member 1")
            assert w.ports[1].lacp_dropped > 0
            assert w.the_team.failovers.records[0].reason in ("sync-cleared", "expired")
            await wait_for(lambda: flows.all_done, 30.0, "transfers")
            assert all(f.exact for f in flows.flows)
            w.mute_lacp(1, False)
            await w.converge()
            assert w.violations() == []

    asyncio.run(run())


def test_serve_team_and_ctl_members_member_down_up() -> None:
    sock_dir = tempfile.mkdtemp(prefix="tcpch-ctl-")
    path = os.path.join(sock_dir, "team.sock")
    cfg = with_overrides(ServeConfig(), name="teamtest", team=2, socket=path, ports={"echo": 0}).validate()

    async def run() -> None:
        stop = asyncio.Event()
        ready: dict[str, Any] = {}
        task = asyncio.create_task(run_serve(cfg, stop=stop, out=lambda s: None, on_ready=ready.update))
        try:
            await wait_for(lambda: bool(ready) or task.done(), 60.0, "serve --team to be ready")
            assert not task.done(), task.result()
            assert len(ready["nics"]) == 2 and ready["nics"][0]["link"] == "ovs-lacp"

            def call(op: str, **args: Any) -> dict[str, Any]:
                with ControlClient(path) as client:
                    return client.request(op, **args)

            resp = await asyncio.to_thread(call, "members")
            assert resp["ok"], resp
            assert [m["active"] for m in resp["members"]] == [True, True]
            assert all(m["lacp"]["in_sync"] and m["lacp"]["distributing"] for m in resp["members"])
            assert "SEL,SYNC,COL,DIST" in ctl.render("members", resp)
            down = await asyncio.to_thread(call, "member", member=0, up=False)
            assert down["ok"] and down["via"] == "link", down

            async def active() -> list[bool]:
                r = await asyncio.to_thread(call, "members")
                return [m["active"] for m in r["members"]]

            for _ in range(200):
                if await active() == [False, True]:
                    break
                await asyncio.sleep(0.05)
            r = await asyncio.to_thread(call, "members")
            assert r["members"][0]["carrier"] is False and r["members"][0]["link_up"] is False
            assert r["failovers"] and r["failovers"][0]["reason"] == "carrier"
            assert (await asyncio.to_thread(call, "member", member=0, up=True))["ok"]
            for _ in range(400):
                if await active() == [True, True]:
                    break
                await asyncio.sleep(0.05)
            assert await active() == [True, True]
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 60.0) == 0

    try:
        asyncio.run(run())
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
