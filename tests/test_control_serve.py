"""``run_serve`` end to end on a real asyncio loop, with in-memory links instead of namespaces/TAP/veth.

The peer is a software-only host stack on the same ``AsyncioScheduler``; the control socket is real (a temporary
Unix socket) and is driven by ``ControlClient`` and ``chimney ctl`` from a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpchimney.cli.main import main as cli_main
from tcpchimney.cli.serve import run_serve
from tcpchimney.clock import AsyncioScheduler
from tcpchimney.config import NicAddresses, ServeConfig, with_overrides
from tcpchimney.control import ControlClient
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.stack import HostStack
from tcpchimney.services import pseudo_random_bytes
from tcpchimney.targets.softtoe import SoftToe


class MemPort:
    """One end of an in-memory Ethernet cable (frames are delivered from the loop, never re-entrantly)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.name = name
        self._loop = loop
        self.other: MemPort | None = None
        self._receiver: Callable[[bytes], None] | None = None
        self.closed = False
        self.frames = 0

    @property
    def up(self) -> bool:
        return not self.closed

    def transmit(self, frame: bytes) -> None:
        if self.other is not None and not self.closed:
            self.frames += 1
            self._loop.call_soon(self.other._deliver, bytes(frame))

    def _deliver(self, frame: bytes) -> None:
        if self._receiver is not None and not self.closed:
            self._receiver(frame)

    def set_receiver(self, receiver: Callable[[bytes], None]) -> None:
        self._receiver = receiver

    def set_link_listener(self, listener: Callable[[bool], None]) -> None:
        pass


class MemLink(MemPort):
    """Stands in for TapLink/VethLink: our end of the cable, plus the attributes ``run_serve`` reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, plan: NicAddresses) -> None:
        super().__init__(loop, f"mem{plan.index}")
        self.peer_ip = plan.peer_ip
        self.prefix_len = plan.prefix_len
        self.local_mac = bytes([2, 0, 0, 0, 1, plan.index])
        self.peer_ifname = f"mem{plan.index}p"
        self.started = False
        self.stats = {"frames": 0}

    async def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True


class FakeNamespace:
    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}fake"
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Peer:
    """The Linux side, played by a software-only HostStack with one NIC per link."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sched = AsyncioScheduler(loop)
        self.stack = HostStack(self.sched, name="peer", policy=OffloadPolicy(enabled=False), seed=99)
        self.links: list[MemLink] = []
        self.namespaces: list[FakeNamespace] = []

    def namespace(self, prefix: str) -> FakeNamespace:
        ns = FakeNamespace(prefix)
        self.namespaces.append(ns)
        return ns

    def link(self, cfg: ServeConfig, ns: Any, plan: NicAddresses) -> MemLink:
        ours = MemLink(self.loop, plan)
        theirs = MemPort(self.loop, f"peer{plan.index}")
        ours.other, theirs.other = theirs, ours
        mac = bytes([2, 0, 0, 0, 2, plan.index])
        nic = SoftToe(self.sched, theirs, mac, name=f"peer-nic{plan.index}", offload_enabled=False)
        tid = self.stack.add_nic(nic)
        self.stack.add_interface(tid, mac, plan.peer_ip, plan.prefix_len, cfg.mtu)
        self.links.append(ours)
        return ours


@pytest.fixture
def sock_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="chs", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _ctl(path: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["ctl", "--socket", path, *argv])
    return code, out.getvalue()


def test_serve_runs_services_and_control_until_stopped(sock_dir: str, tmp_path: Path) -> None:
    sock = os.path.join(sock_dir, "serve.sock")
    info_file = tmp_path / "info.json"
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hi from chimney serve\n")
    cfg = with_overrides(
        ServeConfig(),
        nics=2,
        addr=["10.77.0.1/24"],  # nic0 as in the README example; nic1 keeps the default plan
        socket=sock,
        http_root=str(tmp_path / "www"),
        ports={"echo": 7, "discard": 0},
    ).validate()
    lines: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        peer = Peer(loop)
        stop = asyncio.Event()
        ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        task = asyncio.create_task(
            run_serve(
                cfg,
                out=lines.append,
                stop=stop,
                info_file=str(info_file),
                namespace_factory=peer.namespace,
                link_factory=peer.link,
                on_ready=ready.set_result,
            )
        )
        info = await asyncio.wait_for(ready, 10)
        assert [n["addr"] for n in info["nics"]] == ["10.77.0.1/24", "10.77.1.2/24"]
        assert [n["peer_addr"] for n in info["nics"]] == ["10.77.0.2", "10.77.1.1"]
        assert all(link.started for link in peer.links)

        # HTTP on nic0: a file and /bytes/N on one keep-alive connection
        r, w = await peer.stack.open_connection("10.77.0.1", 80)
        w.write(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /bytes/200000 HTTP/1.1\r\nHost: t\r\n\r\n")
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        assert b"Content-Length: 22\r\n" in head and await r.readexactly(22) == b"hi from chimney serve\n"
        await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        assert await asyncio.wait_for(r.readexactly(200_000), 10) == pseudo_random_bytes(200_000)
        # echo on nic1, left open so ``list`` sees it
        er, ew = await peer.stack.open_connection("10.77.1.2", 7)
        ew.write(b"ping\n")
        await ew.drain()
        assert await asyncio.wait_for(er.readline(), 10) == b"ping\n"
        await asyncio.sleep(0.2)

        def control() -> dict[str, Any]:
            with ControlClient(sock, timeout=10) as c:
                rows = c.call("list")["connections"]
                http_row = next(x for x in rows if x["local"] == "10.77.0.1:80")
                retrieve = c.call("retrieve", conn=http_row["id"])
                return {"rows": rows, "stats": c.call("stats"), "info": c.call("info"), "retrieve": retrieve}

        got = await asyncio.wait_for(asyncio.to_thread(control), 20)
        owners = {x["local"]: x["owner"] for x in got["rows"]}
        assert owners == {"10.77.0.1:80": "nic0", "10.77.1.2:7": "nic1"}
        assert sorted(got["stats"]["nics"]) == ["nic0", "nic1"]
        assert got["info"]["info"]["namespace"] == "tcpchfake"
        assert got["retrieve"]["nic"] == 0
        await asyncio.sleep(0.1)
        code, table = await asyncio.to_thread(_ctl, sock, "list")
        assert code == 0 and "(2 connections)" in table
        http_line = next(x for x in table.splitlines() if "10.77.0.1:80" in x)
        assert http_line.split()[2] == "host"  # uploaded by the retrieve
        # the uploaded connection still carries every byte
        w.write(b"GET /bytes/50000 HTTP/1.1\r\nHost: t\r\n\r\n")
        await w.drain()
        await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        assert await asyncio.wait_for(r.readexactly(50_000), 10) == pseudo_random_bytes(50_000)
        for wr in (w, ew):
            wr.close()
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0
        assert all(link.closed for link in peer.links) and all(ns.closed for ns in peer.namespaces)

    asyncio.run(main())
    assert not os.path.exists(sock)
    assert json.loads(info_file.read_text())["socket"] == sock
    text = "\n".join(lines)
    assert "peer namespace tcpchfake" in text and "curl" in text and "http://10.77.0.1/bytes/1000000" in text
    assert lines[-1] == "chimney serve: stopping"


def test_sigterm_stops_serve_cleanly(sock_dir: str) -> None:
    sock = os.path.join(sock_dir, "term.sock")
    cfg = with_overrides(ServeConfig(), socket=sock).validate()
    lines: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        peer = Peer(loop)
        ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        task = asyncio.create_task(
            run_serve(
                cfg,
                out=lines.append,
                duration=30,  # a safety stop: the test must not depend on it
                namespace_factory=peer.namespace,
                link_factory=peer.link,
                on_ready=ready.set_result,
            )
        )
        await asyncio.wait_for(ready, 10)
        assert os.path.exists(sock)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop's handler that run_serve installed
        assert await asyncio.wait_for(task, 5) == 0
        assert peer.links[0].closed and peer.namespaces[0].closed

    asyncio.run(main())
    assert not os.path.exists(sock)
    assert lines[-1] == "chimney serve: stopping"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler removed again
