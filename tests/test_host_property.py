"""Random interleavings of every host/target request during lossy bidirectional transfers: every byte arrives once."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpchimney.chimney.constants import UploadReason
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.sim.link import Impairments
from tcpchimney.targets.softtoe import RetrieveForbidden
from test_host_support import Pair, Pump, Sink, establish, make_pair, pattern

KINDS = ["offload", "terminate", "retrieve", "upload_all", "pause_resume", "link_flap"]

step = st.tuples(st.floats(0.0, 0.6), st.sampled_from(KINDS), st.integers(0, 7), st.sampled_from(list(UploadReason)))


def act(pair: Pair, sinks: list[Sink], kind: str, pick: int, reason: UploadReason) -> None:
    sock = sinks[pick % len(sinks)].sock
    if kind == "offload":
        pair.host.offload(sock)
    elif kind == "terminate":
        pair.host.terminate(sock)
    elif kind == "retrieve":
        handle = pair.host.offload_handle(sock)
        if handle is not None and reason is not UploadReason.HARDWARE_FAILURE:
            with contextlib.suppress(RetrieveForbidden):
                pair.nic.request_retrieve(handle, reason)
    elif kind == "upload_all":
        pair.nic.request_upload_all(0.05)
    elif kind == "pause_resume":
        pair.nic.pause()
        pair.clock.call_later(0.05, pair.nic.resume)
    else:
        pair.nic.set_link(False)
        pair.clock.call_later(0.01, pair.nic.set_link, True)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    loss=st.sampled_from([0.0, 0.02, 0.05]),
    sizes=st.lists(st.tuples(st.integers(0, 60_000), st.integers(0, 60_000)), min_size=1, max_size=3),
    plan=st.lists(step, max_size=8),
    honor=st.booleans(),
)
def test_random_requests_conserve_bytes(
    seed: int, loss: float, sizes: list[tuple[int, int]], plan: list[tuple[float, str, int, UploadReason]], honor: bool
) -> None:
    imp = Impairments(delay=0.002, jitter=0.0005, loss=loss, duplicate=loss / 2, reorder=loss, rate_bps=50_000_000)
    pair = make_pair(
        policy=OffloadPolicy(offload_after=0.01, backoff={}, honor_optional=honor, host_backoff=0.02),
        impairments=imp,
        seed=seed,
    )
    ends = [establish(pair, 100 + i) for i in range(len(sizes))]
    data = []
    for i, ((client, server), (up, down)) in enumerate(zip(ends, sizes, strict=True)):
        a, b = pattern(up, seed + 2 * i), pattern(down, seed + 2 * i + 1)
        Pump(pair, client.sock, a, close=True)
        Pump(pair, server.sock, b, close=True)
        data.append((a, b))
    clients = [c for c, _ in ends]
    for at, kind, pick, reason in plan:
        pair.clock.call_at(pair.clock.now() + at, act, pair, clients, kind, pick, reason)
    done = lambda: all(c.eof and s.eof for c, s in ends)  # noqa: E731
    assert pair.run_until(done, 300.0), [(c.sock, s.sock) for c, s in ends]
    for (client, server), (a, b) in zip(ends, data, strict=True):
        assert client.closed in (None, "closed") and server.closed in (None, "closed")
        assert bytes(server.data) == a and bytes(client.data) == b
    assert pair.violations() == []
