"""Team control ops (``members`` / ``member``) on ``StackControl`` with the simulated team (``TeamWorld``), the
``chimney ctl`` argument mapping and rendering for them, and ``serve --team`` configuration checks."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tcpchimney.cli import ctl
from tcpchimney.config import ConfigError, ServeConfig, with_overrides
from tcpchimney.control.server import StackControl
from tcpchimney.scenario.team_world import PEER_IP, TeamWorld, TeamWorldConfig


def _world() -> tuple[TeamWorld, StackControl]:
    w = TeamWorld(TeamWorldConfig(seed=3))
    assert w.converge()
    nics = {m.target_id: m.nic for m in w.team.members}

    def member_link(index: int, up: bool) -> None:
        if up:
            w.restore_link(index)
        else:
            w.fail_link(index)

    return w, StackControl(w.host, nics, team=w.team, member_link=member_link)


def _offload_some(w: TeamWorld, n: int) -> None:
    got: list[Any] = []
    w.peer.listen(9000, got.append)
    for _ in range(n):
        w.host.connect(PEER_IP, 9000).write(b"x" * 1000)
    w.run_for(2.0, lambda: w.team.offloaded_connections() == n)
    assert w.team.offloaded_connections() == n


def test_members_reports_lacp_flags_partner_and_connections() -> None:
    w, control = _world()
    _offload_some(w, 12)
    resp = control.handle({"op": "members"})
    assert resp["ok"], resp
    rows = resp["members"]
    assert [r["index"] for r in rows] == [0, 1]
    for r in rows:
        assert r["carrier"] is True and r["active"] is True
        assert r["lacp"] == {
            "selected": True,
            "in_sync": True,
            "collecting": True,
            "distributing": True,
            "rx_state": "CURRENT",
            "mux_state": "COLLECTING_DISTRIBUTING",
        }
        assert r["partner"]["system"] == "02:00:00:aa:00:01"  # SimLacpPartner's system id
        assert r["partner"]["port"] == r["index"] + 1
    assert sum(r["connections"] for r in rows) == 12
    assert resp["active"] == [0, 1] and resp["offloaded"] == 12 and resp["uploading"] is False
    assert "members" in control.handle({"op": "ops"})["ops"]


def test_member_down_fails_over_at_link_level_and_up_rejoins() -> None:
    w, control = _world()
    _offload_some(w, 10)
    on0 = w.team.member_states()[0]["connections"]
    resp = control.handle({"op": "member", "member": 0, "up": False})
    assert resp["ok"] and resp["via"] == "link", resp
    w.run_for(
        1.0, lambda: bool(w.team.failovers.records) and not w.team.uploading and w.team.offloaded_connections() == 10
    )
    rows = control.handle({"op": "members"})
    m0 = rows["members"][0]
    assert m0["carrier"] is False and m0["active"] is False and m0["connections"] == 0
    assert m0["lacp"]["distributing"] is False and m0["last_loss"] == "carrier"
    assert rows["active"] == [1]
    assert rows["failovers"][0]["member"] == 0 and rows["failovers"][0]["on_member"] == on0
    assert w.team.member_states()[1]["connections"] == 10  # re-offloaded on the survivor
    assert w.switch.distributing() == [1]  # the partner saw it too
    resp = control.handle({"op": "member", "member": "0", "up": "up"})
    assert resp["ok"], resp
    w.run_for(5.0, lambda: w.team.active_members() == [0, 1])
    assert control.handle({"op": "members"})["active"] == [0, 1]
    assert w.violations() == []


def test_member_without_link_hook_uses_the_team_and_errors_are_answers() -> None:
    w = TeamWorld(TeamWorldConfig(seed=1))
    assert w.converge()
    control = StackControl(w.host, {m.target_id: m.nic for m in w.team.members}, team=w.team)
    resp = control.handle({"op": "member", "member": 1, "up": False})
    assert resp["ok"] and resp["via"] == "team"
    w.run_for(0.5)
    assert w.team.active_members() == [0]
    assert control.handle({"op": "member", "member": 1, "up": True})["ok"]
    w.run_for(5.0, lambda: w.team.active_members() == [0, 1])
    assert w.team.active_members() == [0, 1]
    assert not control.handle({"op": "member", "member": 5, "up": True})["ok"]
    assert not control.handle({"op": "member", "member": 0})["ok"]
    plain = StackControl(w.host, {})
    assert not plain.handle({"op": "members"})["ok"]  # no team: unknown op
    assert "members" not in plain.handle({"op": "ops"})["ops"]


def _ctl_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    ctl.add_arguments(p)
    return p.parse_args(list(argv))


def test_ctl_maps_member_and_members_and_renders_the_table() -> None:
    assert ctl.request_from_args(_ctl_args("members")) == ("members", {})
    assert ctl.request_from_args(_ctl_args("--json", "member", "1", "down")) == ("member", {"member": 1, "up": False})
    assert ctl.request_from_args(_ctl_args("member", "0", "up")) == ("member", {"member": 0, "up": True})
    w, control = _world()
    _offload_some(w, 4)
    control.handle({"op": "member", "member": 1, "up": False})
    w.run_for(0.5)
    text = ctl.render("members", control.handle({"op": "members"}))
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["#", "NIC", "CARRIER", "ACTIVE", "LACP"]
    assert "SEL,SYNC,COL,DIST" in lines[1] and "DOWN" in lines[2]
    assert "active [0]" in lines[-1]


def test_serve_team_config_is_validated() -> None:
    assert with_overrides(ServeConfig(), team=2).validate().team == 2
    with pytest.raises(ConfigError):
        with_overrides(ServeConfig(), team=1).validate()
    with pytest.raises(ConfigError):
        with_overrides(ServeConfig(), team=2, addr=["10.1.1.2/24"]).validate()
