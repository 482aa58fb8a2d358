"""Real wire: the host terminates an offloaded connection in every state the kernel peer can drive it into
(ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, LAST_ACK, CLOSING) and the exchange finishes byte-exact.

Our stack is the client (``open_connection``) of a kernel peer driven step by step (``interactive``).  States in
which our FIN must stay unacknowledged are held there by making the peer drop everything from us (nftables), then
released after the upload.  tshark checks the capture: no RST from us, no window shrink, no bad checksum.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from interop_support import NETNS, assert_clean, run, wire_check
from tcpchimney.scenario.wire_world import WireConfig, WireWorld
from tcpchimney.services import pseudo_random_bytes
from tcpchimney.tcp.state import TcpState

pytestmark = NETNS

N = 256 * 1024


def _nic_state(w: WireWorld, sock: object) -> TcpState | None:
    handle = w.host.offload_handle(sock)  # type: ignore[arg-type]
    if handle is None:
        return None
    tc = w.nic.context_for(handle)
    return None if tc is None else tc.engine.state


async def _terminate_in(w: WireWorld, sock: object, state: TcpState) -> None:
    """Wait until the NIC runs the connection in ``state``, terminate it, wait until the host has it back."""
    assert await w.wait_for(lambda: _nic_state(w, sock) == state, 10), (state, sock)
    terms = w.host.stats["terminations"]["total"]
    w.host.terminate(sock, "test")  # type: ignore[arg-type]
    assert await w.wait_for(lambda: w.host.stats["terminations"]["total"] > terms, 10)
    assert sock.owner == "host"  # type: ignore[attr-defined]
    assert sock.state in (state, TcpState.TIME_WAIT, TcpState.CLOSED) or sock.state == state  # type: ignore[attr-defined]


@pytest.mark.parametrize("link", ["tap", "veth"])
@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "LAST_ACK", "CLOSING"])
def test_terminate_in_state(link: str, state: str, tmp_path: Path) -> None:
    pcap = str(tmp_path / "state.pcapng")
    ours = pseudo_random_bytes(N, 42)
    ours_sha = hashlib.sha256(ours).hexdigest()

    async def body() -> None:
        async with WireWorld(WireConfig(link=link)) as w:
            await w.start_capture(pcap)
            peer = await w.peer_start("interactive", listen=True, port=7000)
            assert (await peer.line())["ready"]
            reader, writer = await w.host.open_connection(w.peer_ip, 7000)
            assert (await peer.line())["connected"]
            sock = writer.socket
            assert await w.wait_for(lambda: sock.owner != "host", 5)

            async def read_all() -> bytes:
                out = bytearray()
                for _ in range(100000):
                    data = await reader.read(1 << 16)
                    if not data:
                        break
                    out += data
                return bytes(out)

            async def peer_sends_to_eof(seed: int) -> None:
                """The peer sends N bytes and its FIN; we read them all to EOF, exactly."""
                sent = await peer.ask(op="send", n=N, seed=seed)
                await peer.ask(op="shutdown")
                theirs = await read_all()
                assert hashlib.sha256(theirs).hexdigest() == sent["sha"]

            if state == "ESTABLISHED":
                writer.write(ours)
                got = await peer.ask(op="recv", n=N // 2)
                await _terminate_in(w, sock, TcpState.ESTABLISHED)
                rest = await peer.ask(op="recv", n=N - N // 2)
                assert got["received"] + rest["received"] == N
                sent = await peer.ask(op="send", n=N, seed=7)
                theirs = await reader.readexactly(N)
                assert hashlib.sha256(theirs).hexdigest() == sent["sha"]
                writer.close()
                await peer.ask(op="recv")
                await peer.ask(op="close")
            elif state == "FIN_WAIT_1":
                await w.block_from_us(True)
                writer.write(ours)
                writer.close()  # data + FIN unacknowledged: FIN_WAIT_1
                await _terminate_in(w, sock, TcpState.FIN_WAIT_1)
                await w.block_from_us(False)
                got = await peer.ask(op="recv")
                assert (got["received"], got["sha"], got["eof"]) == (N, ours_sha, True)
                await peer_sends_to_eof(seed=8)
                await peer.ask(op="close")
            elif state == "FIN_WAIT_2":
                writer.write(ours)
                writer.close()
                got = await peer.ask(op="recv", n=N)  # the peer reads everything (so it can ACK our FIN) ...
                assert (got["received"], got["sha"]) == (N, ours_sha)
                await _terminate_in(w, sock, TcpState.FIN_WAIT_2)  # ... but keeps its side open
                got = await peer.ask(op="recv")
                assert (got["received"], got["eof"]) == (0, True)
                await peer_sends_to_eof(seed=9)
                await peer.ask(op="close")
            elif state == "CLOSE_WAIT":
                sent = await peer.ask(op="send", n=N, seed=10)
                await peer.ask(op="shutdown")
                await _terminate_in(w, sock, TcpState.CLOSE_WAIT)
                theirs = await read_all()
                assert hashlib.sha256(theirs).hexdigest() == sent["sha"]
                writer.write(ours)
                writer.close()
                got = await peer.ask(op="recv")
                assert (got["received"], got["sha"], got["eof"]) == (N, ours_sha, True)
                await peer.ask(op="close")
            elif state == "LAST_ACK":
                await peer_sends_to_eof(seed=11)
                await w.block_from_us(True)
                writer.write(ours)
                writer.close()  # after the peer's FIN: LAST_ACK until our data and FIN are acknowledged
                await _terminate_in(w, sock, TcpState.LAST_ACK)
                await w.block_from_us(False)
                got = await peer.ask(op="recv")
                assert (got["received"], got["sha"], got["eof"]) == (N, ours_sha, True)
                await peer.ask(op="close")
            elif state == "CLOSING":
                await w.block_from_us(True)
                writer.write(ours)
                writer.close()  # FIN_WAIT_1 (nothing of ours is acknowledged) ...
                assert await w.wait_for(lambda: _nic_state(w, sock) == TcpState.FIN_WAIT_1, 10)
                await peer.ask(op="shutdown")  # ... and the peer's FIN crosses ours: CLOSING
                await _terminate_in(w, sock, TcpState.CLOSING)
                await w.block_from_us(False)
                got = await peer.ask(op="recv")
                assert (got["received"], got["sha"], got["eof"]) == (N, ours_sha, True)
                assert await reader.read() == b""
                await peer.ask(op="close")
            # Over for both ends: closed, or TIME_WAIT when we closed first (2 MSL runs on the host).
            done = await w.wait_for(lambda: sock.closed_reason is not None or sock.state == TcpState.TIME_WAIT, 15)
            assert done, sock
            assert sock.closed_reason in (None, "closed")
            await w.stop_captures()
            assert_clean(w)

    run(body(), timeout=60)
    wire_check(pcap, "10.77.0.2")
