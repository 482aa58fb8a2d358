"""Services and control operations on the real host stack + SoftToe, in the deterministic simulator.

The peer (a software-only host stack) is the client; ``StackControl.handle`` is called directly (the socket layer
is covered by test_control_server.py).  Every control operation is interleaved with traffic whose bytes are
checked, so an operation that lost or duplicated data would fail here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tcpchimney.control.protocol import encode
from tcpchimney.control.server import StackControl
from tcpchimney.scenario.world import HOST_IP, SimWorld, WorldConfig
from tcpchimney.services import ServiceRegistry, pseudo_random_bytes, pseudo_random_sha256, start_services
from tcpchimney.sim.aio import run_sim

PORTS = {"echo": 7, "discard": 9, "sink": 5001, "source": 5002, "http": 80}


class Env:
    def __init__(self) -> None:
        self.world = w = SimWorld(WorldConfig(seed=3))
        self.registry = ServiceRegistry(clock=w.clock.now)
        self.ctl = StackControl(w.host, {w.nic_id: w.nic}, self.registry, info={"name": "sim"})

    def do(self, op: str, **args: Any) -> dict[str, Any]:
        response = self.ctl.handle({"op": op, **args})
        json.loads(encode(response))  # every answer must be plain JSON
        assert response["ok"], response
        return response

    def rows(self) -> dict[int, dict[str, Any]]:
        return {r["id"]: r for r in self.do("list")["connections"]}

    def owner(self, cid: int) -> str:
        return str(self.rows()[cid]["owner"])


async def _echo_round(reader: Any, writer: Any, n: int, seed: int) -> None:
    data = pseudo_random_bytes(n, seed)
    writer.write(data)
    await writer.drain()
    assert await reader.readexactly(n) == data


async def _http_get(reader: Any, writer: Any, n: int) -> None:
    writer.write(f"GET /bytes/{n} HTTP/1.1\r\nHost: sim\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {n}\r\n".encode() in head
    assert await reader.readexactly(n) == pseudo_random_bytes(n, 0x7C41)


def test_control_operations_on_a_live_stack_keep_every_byte() -> None:
    env = Env()
    w = env.world

    async def main() -> None:
        await start_services(lambda h, p: w.host.start_server(h, p), PORTS, env.registry)
        er, ew = await w.peer.open_connection(HOST_IP, 7)
        hr, hw = await w.peer.open_connection(HOST_IP, 80)
        await _echo_round(er, ew, 50_000, 1)
        await _http_get(hr, hw, 120_000)
        await asyncio.sleep(0.2)
        rows = env.rows()
        assert len(rows) == 2
        echo_id = next(i for i, r in rows.items() if r["local"].endswith(":7"))
        http_id = next(i for i, r in rows.items() if r["local"].endswith(":80"))
        assert {r["owner"] for r in rows.values()} == {"nic0"}  # the default policy offloads at once
        assert rows[http_id]["state"] == "ESTABLISHED" and rows[http_id]["nic"] == 0

        # retrieve: the NIC asks, the host uploads (and keeps it for the UPLOAD_REQUESTED back-off)
        assert env.do("retrieve", conn=http_id, reason="upload_requested")["nic"] == 0
        await asyncio.sleep(0.1)
        assert env.owner(http_id) == "host" and env.owner(echo_id) == "nic0"
        assert env.do("stats")["host"]["retrieves_received"] == 1
        await _http_get(hr, hw, 70_000)

        # offload on request, then a host-initiated terminate
        env.do("offload", conn=http_id)
        await asyncio.sleep(0.1)
        assert env.owner(http_id) == "nic0"
        await _http_get(hr, hw, 90_000)
        env.do("terminate", conn=echo_id, reason="test")
        await asyncio.sleep(0.1)
        assert env.owner(echo_id) == "host"
        await _echo_round(er, ew, 30_000, 2)

        # UPLOAD_ALL without automatic resume: everything comes home and stays there until resume
        env.do("upload_all", resume_after=None)
        await asyncio.sleep(0.2)
        assert {r["owner"] for r in env.rows().values()} == {"host"}
        assert env.do("stats")["nics"]["nic0"]["paused"] is True
        await _echo_round(er, ew, 20_000, 3)
        env.do("resume")
        await asyncio.sleep(2.0)  # past the host's back-off
        assert env.do("stats")["nics"]["nic0"]["paused"] is False
        assert {r["owner"] for r in env.rows().values()} == {"nic0"}

        # link down: the host's policy uploads everything; link up: offloads again
        env.do("link", up="down")
        await asyncio.sleep(0.2)
        assert {r["owner"] for r in env.rows().values()} == {"host"}
        # a request sent while the carrier is down is answered once it is back (retransmission)
        get = asyncio.ensure_future(_http_get(hr, hw, 40_000))
        await asyncio.sleep(0.5)
        assert not get.done()
        env.do("link", up=True)
        await get
        await asyncio.sleep(2.0)
        assert {r["owner"] for r in env.rows().values()} == {"nic0"}
        await _echo_round(er, ew, 10_000, 4)
        await _http_get(hr, hw, 10_000)

        # errors from the real NIC come back as answers
        bad = env.ctl.handle({"op": "retrieve", "conn": 999})
        assert bad["ok"] is False and "unknown connection" in bad["error"]

        # sink and source through the stack, results in the registry
        sr, sw = await w.peer.open_connection(HOST_IP, 5001)
        sw.write(pseudo_random_bytes(80_000, 11))
        await sw.drain()
        sw.write_eof()
        line = await sr.readline()
        assert line == f"80000 {pseudo_random_sha256(80_000, 11)}\n".encode()
        qr, qw = await w.peer.open_connection(HOST_IP, 5002)
        qw.write(b"150000\n")
        await qw.drain()
        assert await qr.read() == pseudo_random_bytes(150_000)
        for wr in (ew, hw, sw, qw):
            wr.close()
        await asyncio.sleep(1.0)

    run_sim(w.clock, main(), 120)
    assert w.violations() == []
    stats = env.do("stats")
    host = stats["host"]
    assert host["upload_alls"] == 1 and host["terminations"]["by_requester"]["host"] >= 1
    assert stats["nics"]["nic0"]["stats"]["retrieves"] == {"UPLOAD_REQUESTED": 1}
    results = env.do("results")["results"]
    by_service = {r["service"]: r for r in results}
    assert by_service["sink"]["sha256_in"] == pseudo_random_sha256(80_000, 11)
    assert by_service["source"]["sha256_out"] == pseudo_random_sha256(150_000)
    assert by_service["echo"]["bytes_in"] == by_service["echo"]["bytes_out"] == 110_000
    assert by_service["http"]["requests"] == 5
