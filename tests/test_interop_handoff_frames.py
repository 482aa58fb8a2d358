"""Regression (found on the real wire): frames the NIC passes up between its mandatory RETRIEVE and the host's
terminate must wait for the upload, not be forwarded back to a NIC that rejects them (UPLOAD_IN_PROGRESS) and so
lost.  Simulated link, no privileges needed."""

from __future__ import annotations

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.host.connection import OFFLOADED
from tcpchimney.sim.link import Impairments
from test_host_support import Pump, establish, make_pair, pattern

SLOW = Impairments(delay=0.005, rate_bps=20_000_000)  # transfers last long enough to act in the middle of them


def test_frames_passed_up_after_mandatory_retrieve_wait_for_the_upload() -> None:
    pair = make_pair(impairments=SLOW, capture=True)
    client, server = establish(pair)
    a, b = pattern(400_000, 11), pattern(300_000, 12)
    Pump(pair, client.sock, a, close=True)
    Pump(pair, server.sock, b, close=True)
    pair.run(0.005)
    pair.host.offload(client.sock)
    assert pair.run_until(lambda: client.sock.owner == "nic0", 2.0)
    pair.run(0.02)
    conn = client.sock.connection
    handle = pair.host.offload_handle(client.sock)
    assert handle is not None
    # the latest frame the peer sent to this connection (re-delivering it is a harmless duplicate for TCP)
    port = client.sock.local_address[1]
    frame = next(f for f, d in reversed(pair.captured) if d == "ba" and int.from_bytes(f[36:38], "big") == port)

    pair.nic.request_retrieve(handle, UploadReason.UPLOAD_REQUESTED)  # the NIC stops the connection now
    assert conn.mode == OFFLOADED and conn.terminate_scheduled
    forwarded = pair.host._off.counters.get("frames_forwarded", 0)
    pair.host.on_receive_frame(pair.target_id, frame)  # as the stopped NIC passes it up
    assert pair.host._off.counters.get("frames_forwarded", 0) == forwarded
    assert len(conn.pending_frames) == 1

    assert pair.run_until(lambda: client.sock.owner == "host", 2.0)
    assert conn.pending_frames == []  # replayed into the host's engine after the upload
    assert pair.run_until(lambda: client.eof and server.eof, 60.0)
    assert bytes(server.data) == a and bytes(client.data) == b
    assert pair.violations() == []
