"""``chimney ctl`` against a control server on a fake stack, and ``chimney serve`` configuration (no namespaces)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.cli.main import build_parser, main
from tcpchimney.cli.serve import config_from_args, describe
from tcpchimney.config import ConfigError, ServeConfig, config_from_dict, load_config, plan_addresses, with_overrides
from tcpchimney.control import ControlServer
from test_control_server import Rig


@pytest.fixture
def sock_path() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="chc", dir="/tmp")
    try:
        yield os.path.join(d, "c.sock")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_ctl(rig: Rig, path: str, *argvs: list[str]) -> list[tuple[int, str, str]]:
    """Run each ``chimney ctl`` command line against a server on ``rig``; (status, stdout, stderr) of each."""
    results: list[tuple[int, str, str]] = []

    def client() -> None:
        for argv in argvs:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["ctl", "--socket", path, *argv])
            results.append((code, out.getvalue(), err.getvalue()))

    async def serve() -> None:
        async with ControlServer(rig.control.handle, path):
            await asyncio.wait_for(asyncio.to_thread(client), 30)

    asyncio.run(serve())
    return results


def test_ctl_tables_and_json(sock_path: str) -> None:
    rig = Rig()
    (code, out, _), (jcode, jout, _), (scode, sout, _) = run_ctl(
        rig, sock_path, ["list"], ["--json", "list"], ["stats"]
    )
    assert code == 0 and jcode == 0 and scode == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "OWNER", "MODE", "LOCAL", "REMOTE", "WRITTEN", "READ"]
    assert lines[2].split() == ["2", "ESTABLISHED", "nic1", "offloaded", "10.77.0.2:80", "10.77.0.1:40001", "10", "20"]
    assert lines[-1] == "(3 connections)"
    data = json.loads(jout)
    assert data["ok"] is True and [c["id"] for c in data["connections"]] == [1, 2, 3]
    assert "[nics]" in sout and "  nic1.target_id = 9" in sout and "  offloads = 1" in sout


def test_ctl_ops_reach_the_stack_and_errors_set_the_status(sock_path: str) -> None:
    rig = Rig()
    s1 = rig.host.socks[1]
    res = run_ctl(
        rig,
        sock_path,
        ["retrieve", "2", "high_drop_rate"],
        ["retrieve", "2", "3"],
        ["retrieve", "1"],
        ["terminate", "2", "--reason", "test"],
        ["offload", "1", "--nic", "nic0"],
        ["upload_all", "--nic", "1", "--resume-after", "1.5"],
        ["upload-all", "--no-resume"],
        ["pause", "--nic", "0"],
        ["resume"],
        ["link", "down", "--nic", "nic1"],
        ["results"],
    )
    codes = [r[0] for r in res]
    assert codes == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert "not offloaded" in res[2][2]
    assert res[0][1].strip() == "ok conn=2 nic=1 reason=HIGH_DROP_RATE"
    assert res[10][1].split() == ["ID", "SERVICE", "PEER", "IN", "OUT", "SHA256", "REQS", "STATUS"]
    assert rig.nic1.calls == [
        ("retrieve", s1.connection, UploadReason.HIGH_DROP_RATE),
        ("retrieve", s1.connection, UploadReason.SMALL_IO),
        ("upload_all", 1.5),
        ("upload_all", None),
        ("resume",),
        ("link", False),
    ]
    assert rig.nic0.calls == [("upload_all", None), ("pause",), ("resume",)]
    assert [(c[0], c[2]) for c in rig.host.calls] == [("terminate", "test"), ("offload", 5)]


def test_ctl_without_a_server_fails_cleanly(sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "--socket", sock_path, "list"]) == 2
    assert sock_path in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- serve configuration
def test_toml_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "serve.toml"
    toml.write_text(
        'name = "lab"\nlink = "veth"\nnics = 2\naddr = ["10.9.0.1/24"]\nmtu = 9000\n'
        '[services]\necho = false\nhttp = 8080\nhttp_root = "/srv"\nseed = 5\n'
        "[policy]\nenabled = false\noffload_after = 2\n"
    )
    cfg = load_config(str(toml))
    assert (cfg.name, cfg.link, cfg.nics, cfg.mtu, cfg.addr) == ("lab", "veth", 2, 9000, ("10.9.0.1/24",))
    assert cfg.ports["echo"] == 0 and cfg.ports["http"] == 8080 and cfg.ports["sink"] == 5001
    assert (cfg.http_root, cfg.data_seed, cfg.offload, cfg.offload_after) == ("/srv", 5, False, 2.0)
    args = build_parser().parse_args(
        ["serve", "--config", str(toml), "--link", "tap", "--addr", "10.9.0.1/24,10.9.1.1/24", "--echo-port", "7"]
    )
    merged = config_from_args(args)
    assert (merged.link, merged.addr, merged.ports["echo"], merged.ports["http"]) == (
        "tap",
        ("10.9.0.1/24", "10.9.1.1/24"),
        7,
        8080,
    )
    assert merged.name == "lab"  # not overridden


@pytest.mark.parametrize(
    "data",
    [
        {"nics": "2"},
        {"colour": "blue"},
        {"services": {"gopher": 70}},
        {"services": {"echo": 99999}},
        {"services": {"echo": 80, "http": 80}},
        {"policy": {"sometimes": True}},
        {"link": "wifi"},
        {"nics": 0},
        {"addr": ["10.1.0.1/24", "10.1.0.9/24"], "nics": 2},
        {"addr": "10.1.0.1/31"},
        {"addr": "10.1.0.1/24", "peer_addr": "10.2.0.1"},
        {"addr": "10.1.0.1/24", "peer_addr": "10.1.0.1"},
        {"addr": "10.1.0.0/24"},
        {"addr": "bogus"},
    ],
)
def test_bad_configuration_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(data).validate()


def test_address_plans() -> None:
    plans = plan_addresses(ServeConfig(nics=2))
    assert [(p.local_ip, p.peer_ip, p.prefix_len) for p in plans] == [
        ("10.77.0.2", "10.77.0.1", 24),
        ("10.77.1.2", "10.77.1.1", 24),
    ]
    cfg = with_overrides(ServeConfig(), addr=["10.77.0.1/24"])  # the peer moves to .2
    assert [(p.local_ip, p.peer_ip) for p in plan_addresses(cfg)] == [("10.77.0.1", "10.77.0.2")]
    cfg = with_overrides(ServeConfig(nics=2), peer_addr=["192.168.5.20/28"])
    p0, p1 = plan_addresses(cfg)
    assert (p0.local_ip, p0.peer_ip, p0.prefix_len) == ("192.168.5.17", "192.168.5.20", 28)
    assert (p1.local_ip, p1.peer_ip) == ("10.77.1.2", "10.77.1.1")
    with pytest.raises(ConfigError):
        with_overrides(ServeConfig(), bogus=1)
    with pytest.raises(ConfigError):
        load_config("/nonexistent/serve.toml")


def test_banner_names_namespace_addresses_and_curl() -> None:
    info = {
        "name": "chimney",
        "pid": 1,
        "namespace": "tcpch1x00",
        "nics": [
            {
                "nic": "nic0",
                "link": "tap",
                "ifname": "tct0",
                "peer_ifname": "tct0",
                "addr": "10.77.0.2/24",
                "mac": "02:00:00:00:00:01",
                "peer_addr": "10.77.0.1",
            }
        ],
        "services": {"http": 80, "source": 5002},
        "http_root": None,
        "socket": "/run/tcpchimney/chimney.sock",
    }
    text = "\n".join(describe(info))
    assert "ip netns exec tcpch1x00 curl" in text and "http://10.77.0.2/bytes/1000000" in text
    assert "peer 10.77.0.1" in text and "/run/tcpchimney/chimney.sock" in text
