"""Real wire, Linux kernel peer: many connections, urgent data, idle retrievals, UPLOAD_ALL/RESUME, curl, loss.

Every transfer is checked byte-exact (SHA-256 on both ends); the capture of the kernel side is checked by tshark.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from interop_support import IN_CI, LINKS, NETNS, assert_clean, churning, run, wire_check, with_services
from tcpchimney.chimney.constants import UploadReason
from tcpchimney.scenario.wire_world import WireConfig, WireWorld, fast_policy
from tcpchimney.services import pseudo_random_sha256
from tcpchimney.targets.detectors import DetectorConfig

pytestmark = NETNS


def _sink_ok(result: dict[str, object]) -> bool:
    reply = str(result.get("reply", "")).split()
    return "error" not in result and reply == [str(result["sent"]), str(result["sha"])]


@LINKS
def test_hundred_concurrent_connections(link: str, tmp_path: Path) -> None:
    pcap = str(tmp_path / "many.pcapng")

    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            await with_services(w)
            await w.start_capture(pcap)
            res, counts = await churning(
                w,
                lambda: w.peer("many", each="echo", port=7, n=32 * 1024, count=100, together=True, timeout=90),
                interval=0.1,
            )
            await w.stop_captures()
            results = res["results"]
            assert len(results) == 100
            bad = [r for r in results if "error" in r or r["received"] != r["sent"] or r["echo_sha"] != r["sha"]]
            assert not bad, bad[:3]
            assert w.host.stats["offloads"] >= 100  # every connection went to the NIC at least once
            assert counts.retrieves + counts.terminates > 0
            assert_clean(w)

    run(body(), timeout=120)
    res = wire_check(pcap, "10.77.0.2")
    assert res.streams >= 100 and res.unverified_checksums == 0


@LINKS
def test_urgent_data_retrieved_and_host_carries_on(link: str) -> None:
    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            registry = await with_services(w)
            r = await w.peer("oob", port=5001, n=2 * 1024 * 1024, seed=3, gap=0.3, timeout=60)
            # The urgent byte is delivered inline (RFC 6093): the sink saw every byte the kernel sent, in order.
            assert r["reply"].split() == [str(r["sent"]), r["sha"]], r
            assert w.nic.stats.retrieves["RECEIVED_URGENT_DATA"] >= 1
            assert w.host.stats["by_reason"].get("RECEIVED_URGENT_DATA", 0) >= 1
            sink = registry.results("sink")[-1]
            assert sink.sha256_in == r["sha"]
            assert_clean(w)

    run(body(), timeout=60)


@LINKS
def test_idle_connections_retrieved_for_low_activity(link: str) -> None:
    detectors = DetectorConfig(idle_timeout=0.4, sweep_interval=0.1, repeat_interval=0.5)

    async def body() -> None:
        async with WireWorld(WireConfig(link=link, detectors=detectors)) as w:
            await with_services(w)
            res = await w.peer("many", each="idle", port=5001, n=256 * 1024, count=5, idle=2.0, timeout=60)
            results = res["results"]
            assert all(_sink_ok(r) for r in results), results
            assert w.nic.stats.retrieves["LOW_ACTIVITY"] >= 5
            assert w.host.stats["by_reason"].get("LOW_ACTIVITY", 0) >= 5
            assert_clean(w)

    run(body(), timeout=60)


@LINKS
def test_upload_all_mid_transfer_then_resume_and_reoffload(link: str, tmp_path: Path) -> None:
    pcap = str(tmp_path / "upload_all.pcapng")

    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            await with_services(w)
            await w.start_capture(pcap, snaplen=96)
            senders = await w.peer_start(
                "many", each="send", port=5001, n=12 * 1024 * 1024, count=3, pause_every=1 << 20, pause=0.02
            )
            receivers = await w.peer_start("many", each="recv", port=5002, n=12 * 1024 * 1024, count=3)
            assert await w.wait_for(lambda: len(w.offloaded()) >= 6, 10)
            await asyncio.sleep(0.3)
            w.nic.request_upload_all(resume_after=None)
            assert await w.wait_for(lambda: not w.offloaded() and not w.nic.upload_all_pending, 10)
            assert w.host.stats["upload_alls"] == 1
            await asyncio.sleep(0.3)
            assert not w.offloaded()  # paused: nothing goes back to the NIC
            transfers_running = len(w.host.connections)
            assert transfers_running >= 6
            w.nic.resume()
            assert await w.wait_for(lambda: len(w.offloaded()) >= 1, 5)
            ups = (await senders.line(90))["results"]
            downs = (await receivers.line(90))["results"]
            await w.stop_captures()
            assert all(_sink_ok(r) for r in ups), ups
            want = pseudo_random_sha256(12 * 1024 * 1024)
            assert all(r.get("received") == 12 * 1024 * 1024 and r["sha"] == want for r in downs), downs
            assert w.host.stats["resumes"] >= 1
            assert_clean(w)

    run(body(), timeout=120)
    wire_check(pcap, "10.77.0.2")


@pytest.mark.skipif(shutil.which("curl") is None and not IN_CI, reason="needs curl (apt-get install curl)")
@LINKS
def test_curl_download_while_offloaded_and_retrieved(link: str) -> None:
    n = 48 * 1024 * 1024

    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            registry = await with_services(w)

            async def download() -> str:
                url = f"http://{w.local_ip}:8080/bytes/{n}"
                proc = await w.exec_in_ns(
                    "sh", "-c", f"curl -sS --fail --max-time 60 --limit-rate 24M {url} | sha256sum"
                )
                out, err = await asyncio.wait_for(proc.communicate(), 70)
                assert proc.returncode == 0, err
                return out.decode().split()[0]

            digest, counts = await churning(w, download, interval=0.2)
            assert digest == pseudo_random_sha256(n)
            assert counts.retrieves >= 2 and counts.terminates >= 1
            http = registry.results("http")
            assert http and http[-1].sha256_out == digest
            assert_clean(w)

    run(body(), timeout=90)


@LINKS
def test_loss_with_offloads_and_terminations(link: str, tmp_path: Path) -> None:
    """3 % random drop of frames arriving at the kernel (nftables) while connections move back and forth."""
    pcap = str(tmp_path / "loss.pcapng")
    n = 3 * 1024 * 1024

    async def body() -> None:
        async with WireWorld(WireConfig(link=link, policy=fast_policy())) as w:
            await with_services(w)
            await w.set_loss(3)
            await w.start_capture(pcap)  # whole frames: every checksum of ours is verified

            async def transfers() -> tuple[dict[str, object], dict[str, object]]:
                ups = await w.peer_start("many", each="send", port=5001, n=n, count=4)
                downs = await w.peer_start("many", each="recv", port=5002, n=n, count=4)
                return await ups.line(90), await downs.line(90)

            (ups, downs), counts = await churning(
                w, transfers, interval=0.2, reasons=(UploadReason.HIGH_DROP_RATE, UploadReason.UPLOAD_REQUESTED)
            )
            await w.stop_captures()
            dropped = await w.loss_counter()
            assert all(_sink_ok(r) for r in ups["results"]), ups  # type: ignore[attr-defined]
            want = pseudo_random_sha256(n)
            assert all(r.get("received") == n and r["sha"] == want for r in downs["results"]), downs  # type: ignore[attr-defined]
            assert dropped > 0
            assert counts.retrieves + counts.terminates > 0
            assert_clean(w)

    run(body(), timeout=150)
    res = wire_check(pcap, "10.77.0.2")
    assert res.retransmissions > 0  # the loss was real and our side repaired it
    assert res.unverified_checksums == 0


@LINKS
def test_carrier_loss_uploads_and_carrier_back_reoffloads(link: str) -> None:
    """The link's real carrier goes down mid-transfer: LINK_STATE reaches the host through the NIC, the host
    uploads every connection (the NIC does not decide that), the carrier comes back, the transfer finishes exactly
    and is offloaded again."""
    n = 24 * 1024 * 1024

    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            await with_services(w)
            recv = await w.peer_start("recv", port=5002, n=n, read_pause=0.001)
            assert await w.wait_for(lambda: len(w.offloaded()) == 1, 10)
            offloads = w.host.stats["offloads"]
            w.link.set_carrier(False)
            assert await w.wait_for(lambda: not w.offloaded() and len(w.host.connections) == 1, 5)
            assert w.host.stats["by_reason"].get("link_down", 0) == 1
            await asyncio.sleep(0.3)
            assert not w.offloaded()  # the host keeps it while the link is down
            w.link.set_carrier(True)
            assert await w.wait_for(lambda: w.host.stats["offloads"] > offloads, 10)
            r = await recv.line(60)
            assert (r["received"], r["sha"]) == (n, pseudo_random_sha256(n))
            assert_clean(w)

    run(body(), timeout=90)
