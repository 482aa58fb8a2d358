"""The receive delivery algorithm of an offloaded connection (reference 7.1).

In-order bytes go FIFO into posted receive buffers; with no post they are indicated.  Bytes leave the engine only
when they are handed over: an indication that is refused (wholly or partly) leaves the rest in ``tc.hold``, in
front of the engine's readable bytes, and indications stay off until the host posts a receive (a zero-byte post
just re-enables them).  Push mode: a partly filled post completes on PSH, on the push timer, or when the peer's
FIN is next in the stream.
"""

from __future__ import annotations

from typing import Any

from tcpchimney.chimney.constants import NdisStatus
from tcpchimney.chimney.objects import NetBufferList
from tcpchimney.targets.contexts import PostRecord, TcpContext

MAX_INDICATION = 256 * 1024  # bytes per receive indication when the host gave no RcvIndicationSize
_SUCCESS = NdisStatus.SUCCESS
_ACCEPTED_ALL = int(NdisStatus.SUCCESS)


def deliver(tc: TcpContext, chimney: Any, now: float, push_timeout: float) -> None:
    """One delivery pass (must not be re-entered for the same connection; ``SoftToe._service`` guarantees it)."""
    eng = tc.engine
    posts = tc.posts
    completed: list[NetBufferList] = []
    for _ in range(100_000):  # bounded: every turn consumes a post or bytes, or stops
        avail = len(tc.hold) + eng.readable
        if posts:
            post = posts[0]
            cap = post.nbl.capacity
            if cap <= 0:
                posts.popleft()  # a zero-byte post only re-enables indications
                completed.append(finish_post(post, _SUCCESS))
                tc.indicate_enabled = True
                continue
            if avail == 0:
                break
            data = take(tc, cap - post.filled)
            post.chunks.append(data)
            post.filled += len(data)
            tc.push_deadline = now + push_timeout  # restarted whenever data lands
            if post.filled >= cap:
                posts.popleft()
                completed.append(finish_post(post, _SUCCESS))
                tc.indicate_enabled = True
                continue
            break
        if avail == 0 or not tc.indicate_enabled:
            break
        if completed:  # older bytes first: complete the posts before indicating newer ones
            chimney.tcp_receive_complete(tc.handle, completed)
            completed = []
            posts = tc.posts  # re-read: a post made inside the completion may have created the queue
            if tc.terminating or posts:  # the host may have posted again from inside the completion
                continue
        size = tc.cached.rcv_indication_size or MAX_INDICATION
        chunk = take(tc, min(avail, size))
        status, consumed = chimney.tcp_receive_indicate(tc.handle, NetBufferList(data=chunk))
        posts = tc.posts  # re-read: the host may post (creating the queue) from inside the indication
        consumed = max(0, min(int(consumed), len(chunk)))
        if int(status) == _ACCEPTED_ALL and consumed == len(chunk):
            continue
        tc.hold = chunk[consumed:] + tc.hold
        tc.indicate_enabled = False  # refused: wait for a post
        break
    if posts and posts[0].filled:
        fin_next = tc.peer_fin and not tc.hold and not eng.readable
        if tc.push_seen or fin_next or (tc.push_deadline is not None and now >= tc.push_deadline):
            completed.append(finish_post(posts.popleft(), _SUCCESS))
            tc.push_deadline = None
    tc.push_seen = False
    if completed:
        chimney.tcp_receive_complete(tc.handle, completed)
    starved = bool(tc.hold or eng.readable) and not tc.posts and not tc.indicate_enabled
    tc.detectors.set_starved(starved, now)


def take(tc: TcpContext, n: int) -> bytes:
    """The next ``n`` undelivered bytes: the held-back ones first, then from the engine."""
    hold = tc.hold
    if hold:
        if n <= len(hold):
            tc.hold = hold[n:]
            return hold[:n]
        tc.hold = b""
        return hold + tc.engine.read(n - len(hold))
    return tc.engine.read(n)


def finish_post(post: PostRecord, status: int) -> NetBufferList:
    """Write what a post received into its NBL (one join) and set its completion status."""
    nbl = post.nbl
    if post.chunks:
        joined = b"".join(post.chunks)
        nbl.data = nbl.data + joined if nbl.data else joined
    nbl.bytes_transferred = post.filled
    nbl.status = status
    return nbl
