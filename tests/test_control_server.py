"""Control server + client over a temporary Unix socket, driving ``StackControl`` on a fake stack."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.control import ControlClient, ControlError, ControlServer, StackControl
from tcpchimney.control.protocol import parse_bool, parse_reason, to_jsonable
from tcpchimney.services import ServiceRegistry
from tcpchimney.targets.nic_stats import NicConnectionInfo
from tcpchimney.tcp.state import TcpState


class RetrieveForbidden(RuntimeError):
    pass


class FakeConn:
    def __init__(self, label: str) -> None:
        self.mode_name = "software"
        self.label = label


class FakeSock:
    def __init__(self, key: tuple[str, int, str, int]) -> None:
        self.key = key
        self.state = TcpState.ESTABLISHED
        self.owner = "host"
        self.bytes_written = 10
        self.bytes_read = 20
        self.connection = FakeConn(f"{key[0]}:{key[1]}>{key[2]}:{key[3]}")


@dataclass
class NicStats:
    frames_in: int = 3
    retrieves: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"frames_in": self.frames_in, "retrieves": dict(self.retrieves)}


class FakeNic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[Any, ...]] = []
        self.running: list[FakeSock] = []
        self.stats = NicStats()
        self.paused = False

    def connections(self) -> list[NicConnectionInfo]:
        return [NicConnectionInfo(s.connection, *s.key, s.state, 100, 200, since=0.0) for s in self.running]

    def request_retrieve(self, handle: Any, reason: UploadReason) -> None:
        if reason == UploadReason.TIMEOUT_EXPIRATION:
            raise RetrieveForbidden("RETRIEVE is forbidden in FIN_WAIT_1")
        self.calls.append(("retrieve", handle, reason))

    def request_upload_all(self, resume_after: float | None = 0.0) -> None:
        self.calls.append(("upload_all", resume_after))

    def pause(self) -> None:
        self.paused = True
        self.calls.append(("pause",))

    def resume(self) -> None:
        self.paused = False
        self.calls.append(("resume",))

    def set_link(self, up: bool) -> None:
        self.calls.append(("link", up))


class FakeChimney:
    stats = {"initiates": 4, "violations": 0}


class FakeHost:
    def __init__(self) -> None:
        self.socks = [FakeSock(("10.77.0.2", 80, "10.77.0.1", 40000 + i)) for i in range(3)]
        self.calls: list[tuple[Any, ...]] = []
        self.chimney = FakeChimney()

    @property
    def connections(self) -> list[FakeSock]:
        return list(self.socks)

    def offload(self, sock: FakeSock, target_id: int | None = None) -> None:
        self.calls.append(("offload", sock, target_id))

    def terminate(self, sock: FakeSock, reason: str = "host") -> None:
        self.calls.append(("terminate", sock, reason))

    @property
    def stats(self) -> dict[str, Any]:
        return {"offloads": 1, "terminations": {"by_reason": {UploadReason.LOW_ACTIVITY: 2}}, "rto": float("inf")}


class Rig:
    """A fake stack with two NICs (target ids 5 and 9); sock 1 runs on nic1."""

    def __init__(self) -> None:
        self.host = FakeHost()
        self.nic0, self.nic1 = FakeNic("nic0"), FakeNic("nic1")
        s = self.host.socks[1]
        s.owner = "nic1"
        s.connection.mode_name = "offloaded"
        self.nic1.running.append(s)
        self.registry = ServiceRegistry()
        self.control = StackControl(
            self.host, {5: self.nic0, 9: self.nic1}, self.registry, info={"name": "test"}, links={"tap0": self.nic0}
        )


@pytest.fixture
def sock_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="chc", dir="/tmp")  # short: Unix socket paths are limited to 108 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def with_server(path: str, rig: Rig, body: Callable[[ControlClient], None]) -> None:
    """Serve ``rig`` on ``path`` in an asyncio loop while ``body`` runs the blocking client in a thread."""

    async def main() -> None:
        async with ControlServer(rig.control.handle, path):
            await asyncio.wait_for(asyncio.to_thread(_client, path, body), 30)
        assert not os.path.exists(path)  # the socket file is removed on close

    asyncio.run(main())


def _client(path: str, body: Callable[[ControlClient], None]) -> None:
    with ControlClient(path, timeout=10) as client:
        body(client)


def test_list_ids_are_stable_and_show_nic_side(sock_dir: str) -> None:
    rig = Rig()
    path = os.path.join(sock_dir, "c.sock")

    def body(c: ControlClient) -> None:
        rows = c.call("list")["connections"]
        assert [r["id"] for r in rows] == [1, 2, 3]
        assert rows[0]["local"] == "10.77.0.2:80" and rows[0]["remote"] == "10.77.0.1:40000"
        assert rows[0]["state"] == "ESTABLISHED" and rows[0]["owner"] == "host" and "nic" not in rows[0]
        assert (rows[1]["owner"], rows[1]["mode"], rows[1]["nic"], rows[1]["nic_bytes_in"]) == (
            "nic1",
            "offloaded",
            1,
            100,
        )
        assert (rows[2]["bytes_written"], rows[2]["bytes_read"]) == (10, 20)
        rig.host.socks.pop(0)  # closed: its id is gone, the others keep theirs
        rig.host.socks.append(FakeSock(("10.77.0.2", 80, "10.77.0.1", 50000)))
        rows = c.call("list")["connections"]
        assert [r["id"] for r in rows] == [2, 3, 4]

    with_server(path, rig, body)


def test_retrieve_goes_to_the_nic_running_the_connection(sock_dir: str) -> None:
    rig = Rig()
    path = os.path.join(sock_dir, "c.sock")
    offloaded = rig.host.socks[1]

    def body(c: ControlClient) -> None:
        r = c.call("retrieve", conn=2, reason="low_activity")
        assert (r["nic"], r["reason"]) == (1, "LOW_ACTIVITY")
        c.call("retrieve", conn="2", reason=10)
        c.call("retrieve", conn="10.77.0.2:80>10.77.0.1:40001")  # by label, default reason
        assert c.request("retrieve", conn=1)["error"] == "connection 1 is not offloaded (owner host)"
        assert "unknown connection 99" in c.request("retrieve", conn=99)["error"]
        assert "missing" in c.request("retrieve")["error"]
        assert "unknown reason" in c.request("retrieve", conn=2, reason="sleepy")["error"]
        err = c.request("retrieve", conn=2, reason="timeout_expiration")
        assert not err["ok"] and "RetrieveForbidden" in err["error"] and "FIN_WAIT_1" in err["error"]

    with_server(path, rig, body)
    assert rig.nic1.calls == [
        ("retrieve", offloaded.connection, UploadReason.LOW_ACTIVITY),
        ("retrieve", offloaded.connection, UploadReason.UPLOAD_REQUESTED),
        ("retrieve", offloaded.connection, UploadReason.UPLOAD_REQUESTED),
    ]
    assert rig.nic0.calls == []


def test_nic_ops_target_one_or_every_nic(sock_dir: str) -> None:
    rig = Rig()
    path = os.path.join(sock_dir, "c.sock")

    def body(c: ControlClient) -> None:
        assert c.call("pause", nic=1)["nics"] == [1]
        assert c.call("resume")["nics"] == [0, 1]
        assert c.call("upload_all", nic="nic0", resume_after=2.5)["resume_after"] == 2.5
        assert c.call("upload_all", nic=1, resume_after=None)["resume_after"] is None
        assert c.call("link", nic=0, up="down")["up"] is False
        assert c.call("link", up=True)["nics"] == [0, 1]
        assert "unknown nic 7" in c.request("pause", nic=7)["error"]
        assert "unknown nic 'eth9'" in c.request("pause", nic="eth9")["error"]
        assert "missing" in c.request("link", nic=0)["error"]
        assert "bad value" in c.request("link", nic=0, up="sideways")["error"]
        assert "resume_after" in c.request("upload_all", resume_after=-1)["error"]
        assert "resume_after" in c.request("upload_all", resume_after="soon")["error"]

    with_server(path, rig, body)
    assert rig.nic0.calls == [("resume",), ("upload_all", 2.5), ("link", False), ("link", True)]
    assert rig.nic1.calls == [("pause",), ("resume",), ("upload_all", None), ("link", True)]


def test_terminate_and_offload_call_the_host(sock_dir: str) -> None:
    rig = Rig()
    path = os.path.join(sock_dir, "c.sock")
    s0, s1 = rig.host.socks[0], rig.host.socks[1]

    def body(c: ControlClient) -> None:
        assert c.call("terminate", conn=2)["owner"] == "nic1"
        c.call("terminate", conn=2, reason="maintenance")
        c.call("offload", conn=1)
        c.call("offload", conn=1, nic="nic1")
        assert "unknown connection" in c.request("terminate", conn=0)["error"]
        assert "unknown nic" in c.request("offload", conn=1, nic=2)["error"]

    with_server(path, rig, body)
    assert rig.host.calls == [
        ("terminate", s1, "ctl"),
        ("terminate", s1, "maintenance"),
        ("offload", s0, None),
        ("offload", s0, 9),
    ]


def test_stats_results_info_and_protocol_errors(sock_dir: str) -> None:
    rig = Rig()
    path = os.path.join(sock_dir, "c.sock")

    class W:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("10.77.0.1", 4444)

    r = rig.registry.start("sink", W())
    r.bytes_in, r.sha256_in = 5, "ab" * 32
    rig.registry.finish(r)
    rig.registry.start("echo", W())

    def body(c: ControlClient) -> None:
        st = c.call("stats")
        assert st["host"]["offloads"] == 1
        assert st["host"]["terminations"]["by_reason"] == {"LOW_ACTIVITY": 2}
        assert st["host"]["rto"] == "inf"
        assert st["chimney"] == {"initiates": 4, "violations": 0}
        assert st["nics"]["nic1"]["target_id"] == 9 and st["nics"]["nic1"]["connections"] == 1
        assert st["nics"]["nic0"]["stats"] == {"frames_in": 3, "retrieves": {}}
        assert st["links"]["tap0"] == {"frames_in": 3, "retrieves": {}}
        assert st["services"]["open"] == 1 and st["services"]["totals"]["sink"]["bytes_in"] == 5
        res = c.call("results")["results"]
        assert [(x["service"], x["status"]) for x in res] == [("sink", "done"), ("echo", "open")]
        assert res[0]["sha256_in"] == "ab" * 32 and res[0]["peer"] == "10.77.0.1:4444"
        assert [x["service"] for x in c.call("results", service="echo")["results"]] == ["echo"]
        assert len(c.call("results", limit=1)["results"]) == 1
        assert c.call("info")["info"] == {"name": "test"}
        assert c.call("ping")["pong"] is True
        assert "retrieve" in c.call("ops")["ops"]
        bad = c.request("fly")
        assert bad["ok"] is False and "unknown op 'fly'" in bad["error"]
        with pytest.raises(ControlError):
            c.call("fly")

    with_server(path, rig, body)


def test_raw_protocol_bad_lines_keep_the_connection(sock_dir: str) -> None:
    rig = Rig()
    path = os.path.join(sock_dir, "c.sock")

    def body(_: ControlClient) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b'not json\n[1,2]\n{"x":1}\n\n{"op":"ping"}\n')
            f = s.makefile("rb")
            answers = [json.loads(f.readline()) for _ in range(4)]
        assert [a["ok"] for a in answers] == [False, False, False, True]
        assert "bad JSON" in answers[0]["error"] and "object" in answers[1]["error"] and "op" in answers[2]["error"]

    with_server(path, rig, body)


def test_stale_socket_is_replaced_and_a_live_one_or_a_file_refused(sock_dir: str) -> None:
    rig = Rig()
    path = os.path.join(sock_dir, "c.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens

    async def main() -> None:
        async with ControlServer(rig.control.handle, path):
            with pytest.raises(FileExistsError):
                await ControlServer(rig.control.handle, path).start()
        other = os.path.join(sock_dir, "plain")
        with open(other, "w") as fh:
            fh.write("x")
        with pytest.raises(FileExistsError):
            await ControlServer(rig.control.handle, other).start()
        assert os.path.exists(other)

    asyncio.run(main())


def test_protocol_helpers() -> None:
    assert parse_reason(None) is UploadReason.UPLOAD_REQUESTED
    assert parse_reason("HighDropRate") is UploadReason.HIGH_DROP_RATE
    assert parse_reason("no-buffer-preposting") is UploadReason.NO_BUFFER_PREPOSTING
    assert parse_reason("NoBufferProposting") is UploadReason.NO_BUFFER_PREPOSTING
    assert parse_reason(" 11 ") is UploadReason.HARDWARE_FAILURE
    for bad in (0, 12, True, "x", 1.5):
        with pytest.raises(ControlError):
            parse_reason(bad)
    assert parse_bool("UP", "up") is True and parse_bool(0, "up") is False
    assert to_jsonable({"a": (1, b"\x01"), TcpState.CLOSED: {2}, "n": float("nan")}) == {
        "a": [1, "01"],
        "CLOSED": [2],
        "n": "nan",
    }
