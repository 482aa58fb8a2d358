"""Real wire, bulk: 64 MB each way between the Linux kernel and our stack while connections move between the host
and the NIC mid-transfer (target-requested retrievals and host terminations), byte-exact, checked by tshark."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from interop_support import LINKS, NETNS, assert_clean, churning, run, wire_check, with_services
from tcpchimney.scenario.wire_world import WireConfig, WireWorld
from tcpchimney.services import pseudo_random_sha256

pytestmark = NETNS

BULK = 64 * 1024 * 1024


@LINKS
def test_bulk_kernel_to_stack_and_back_with_handoffs(link: str, tmp_path: Path) -> None:
    pcap = str(tmp_path / "bulk.pcapng")

    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            registry = await with_services(w)
            await w.start_capture(pcap, snaplen=96)  # headers only: 64 MB of payload stays out of the file

            # Linux -> our sink
            t0 = w.sched.now()
            up, churn_up = await churning(w, lambda: w.peer("send", port=5001, n=BULK, seed=11, timeout=90))
            print("up", w.sched.now() - t0, churn_up)
            assert up["sent"] == BULK
            count, digest = up["reply"].split()
            assert (int(count), digest) == (BULK, up["sha"])
            sink = registry.results("sink")
            assert sink and sink[-1].sha256_in == up["sha"]

            # our source -> Linux
            down, churn_down = await churning(w, lambda: w.peer("recv", port=5002, n=BULK, timeout=90))
            assert down["received"] == BULK
            assert down["sha"] == pseudo_random_sha256(BULK)

            await w.stop_captures()
            for c in (churn_up, churn_down):
                assert c.retrieves + c.terminates >= 2, c  # the hand-offs really happened mid-transfer
            stats = w.host.stats
            assert stats["offloads"] >= 4
            assert stats["retrieves_received"] >= 2
            assert_clean(w)

    run(body(), timeout=150)
    res = wire_check(pcap, "10.77.0.2")
    assert res.streams >= 2


@LINKS
def test_stack_client_to_kernel_server(link: str) -> None:
    """Our stack connects out to a kernel server: 16 MB up to its sink, 16 MB down from its source."""
    n = 16 * 1024 * 1024

    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            sink = await w.peer_start("serve", port=6001, mode="sink", ip="0.0.0.0")
            source = await w.peer_start("serve", port=6002, mode="source", ip="0.0.0.0", seed=0)
            assert (await sink.line())["ready"] and (await source.line())["ready"]

            async def upload() -> str:
                reader, writer = await w.host.open_connection(w.peer_ip, 6001)
                h = hashlib.sha256()
                block = bytes(range(256)) * 256
                for i in range(n // len(block)):
                    chunk = block[i % 256 :] + block[: i % 256]
                    h.update(chunk)
                    writer.write(chunk)
                    await writer.drain()
                writer.write_eof()
                answer = (await reader.read()).decode().split()
                writer.close()
                assert answer == [str(n), h.hexdigest()]
                return answer[1]

            async def download() -> str:
                reader, writer = await w.host.open_connection(w.peer_ip, 6002)
                writer.write(b"%d\n" % n)
                h = hashlib.sha256()
                got = 0
                while True:
                    data = await reader.read(1 << 18)
                    if not data:
                        break
                    h.update(data)
                    got += len(data)
                writer.close()
                assert got == n
                return h.hexdigest()

            await churning(w, upload)
            digest, _ = await churning(w, download)
            assert digest == pseudo_random_sha256(n, 0)
            assert_clean(w)

    run(body(), timeout=120)


@pytest.mark.parametrize("link", ["tap"])
def test_tap_offload_gso_super_segments(link: str) -> None:
    """TAP with IFF_VNET_HDR + TUNSETOFFLOAD: the kernel hands us up to 64 KB super-segments, byte-exact."""
    n = 16 * 1024 * 1024

    async def body() -> None:
        async with WireWorld(WireConfig(link=link, tap_offload=True)) as w:
            await with_services(w)
            up, _ = await churning(w, lambda: w.peer("send", port=5001, n=n, seed=5, timeout=60))
            assert up["reply"].split() == [str(n), up["sha"]]
            down, _ = await churning(w, lambda: w.peer("recv", port=5002, n=n, timeout=60))
            assert (down["received"], down["sha"]) == (n, pseudo_random_sha256(n))
            assert w.link.gso_frames_in > 0
            assert_clean(w)

    run(body(), timeout=90)
