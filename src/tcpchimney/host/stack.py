"""``HostStack``: the userspace TCP/IP host (ARP, ICMP echo, TCP) that offloads connections through its ``Chimney``.

The software path (frames in -> engine -> frames out) lives here and is kept lean: one parse, one dict lookup, the
engine, and one lazily re-armed timer per connection.  Everything on the chimney side (offload trees, completions,
target requests) is in ``offload.py``; this class forwards the ``ChimneyHost`` handlers there.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

from tcpchimney.chimney.objects import NetBufferList, OffloadBlock
from tcpchimney.clock import Scheduler
from tcpchimney.host.arp import ArpCache
from tcpchimney.host.connection import CLOSED, OFFLOADED, SOFTWARE, Connection, Key
from tcpchimney.host.interfaces import Interface
from tcpchimney.host.offload import OffloadManager
from tcpchimney.host.policy import OffloadPolicy
from tcpchimney.host.routes import RouteTable
from tcpchimney.host.sockets import Listener, TcpSocket
from tcpchimney.tcp.engine import (
    TcpClosed,
    TcpConfig,
    TcpConnected,
    TcpConnection,
    TcpDataReceived,
    TcpEvent,
    TcpPeerClosed,
    TcpReset,
    TcpSendAcked,
    TcpTimedOut,
)
from tcpchimney.tcp.state import TcpState
from tcpchimney.trace.tracer import NullTracer, Tracer
from tcpchimney.wire.addr import BROADCAST_MAC, ip_to_bytes, ip_to_str
from tcpchimney.wire.arp import ARP_REPLY, ARP_REQUEST, arp_reply_to, arp_request
from tcpchimney.wire.drops import DropCounter
from tcpchimney.wire.frame import (
    ArpFrame,
    IcmpFrame,
    TcpFrame,
    build_arp_frame,
    build_icmp_frame,
    build_tcp_frame,
    parse_tcp_fast,
    safe_parse,
)
from tcpchimney.wire.icmp import ICMP_ECHO_REQUEST, IcmpEcho, echo_reply_to
from tcpchimney.wire.tcp import ACK, RST, SYN, TcpSegment

EPHEMERAL_LOW = 49152
EPHEMERAL_HIGH = 65535


class HostStack:
    """A host: interfaces on NICs (offload targets), routes, ARP, ICMP echo, TCP, sockets, and the chimney.

    See the package brief for the public API; every public method is non-blocking and runs on ``scheduler``.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        name: str = "host",
        tcp_config: TcpConfig | None = None,
        policy: OffloadPolicy | None = None,
        tracer: Tracer | None = None,
        seed: int = 0,
        on_violation: str = "raise",
        chimney: Any = None,
        verify_checksums: bool = True,
    ) -> None:
        self.scheduler = scheduler
        # One bound method for every connection's timer (``self._on_timer`` would make a new one per arming, and
        # each would live as long as its timer: one more object per connection for the cyclic GC).
        self._on_timer_cb = self._on_timer
        self.name = name
        self.tcp_config = tcp_config or TcpConfig()
        self.policy = policy if policy is not None else OffloadPolicy()
        self.tracer: Tracer = tracer if tracer is not None else NullTracer()
        self.verify_checksums = verify_checksums
        self.rng = random.Random(seed)
        self.drops = DropCounter()
        self.interfaces: list[Interface] = []
        self._ifaces_by_tid: dict[int, list[Interface]] = {}
        self._local_ips: dict[bytes, Interface] = {}
        self.routes = RouteTable()
        self.arp = ArpCache(scheduler, self._send_arp_request, self.drops)
        self._conns: dict[Key, Connection] = {}
        self._listeners: dict[int, Listener] = {}
        self._next_port = EPHEMERAL_LOW + self.rng.randrange(EPHEMERAL_HIGH - EPHEMERAL_LOW)
        self._ip_id = self.rng.randrange(0x8000)
        self.frames_in = 0
        self.frames_out = 0
        self.rst_sent = 0
        self.echo_replies = 0
        self.violations: list[Exception] = []
        if chimney is None:
            from tcpchimney.chimney.mediator import Chimney

            chimney = Chimney(scheduler, tracer=tracer, on_violation=on_violation)
        self.chimney = chimney
        self._off = OffloadManager(self)
        chimney.bind_host(self)

    # ================================================================================================ configuration
    def add_nic(self, nic: Any) -> int:
        target_id: int = self.chimney.register_target(nic)
        self._off.add_target(target_id, nic)
        self._ifaces_by_tid.setdefault(target_id, [])
        return target_id

    def add_interface(self, target_id: int, mac: bytes, ip: str, prefix_len: int, mtu: int = 1500) -> Interface:
        if target_id not in self._ifaces_by_tid:
            raise ValueError(f"unknown target {target_id}: call add_nic first")
        iface = Interface.create(target_id, mac, ip, prefix_len, mtu, self.tcp_config)
        self.interfaces.append(iface)
        self._ifaces_by_tid[target_id].append(iface)
        self._local_ips[iface.ip] = iface
        self.routes.add(iface.ip, prefix_len, None, iface)
        return iface

    def add_route(self, network: str, prefix_len: int, gateway: str | None, interface: Interface) -> None:
        self.routes.add(ip_to_bytes(network), prefix_len, ip_to_bytes(gateway) if gateway else None, interface)

    def add_static_neighbor(self, ip: str, mac: bytes) -> None:
        self.arp.add_static(ip_to_bytes(ip), bytes(mac))

    # ================================================================================================ sockets API
    def connect(self, remote_ip: str, remote_port: int, local_port: int | None = None) -> TcpSocket:
        dst = ip_to_bytes(remote_ip)
        hit = self.routes.lookup(dst)
        if hit is None:
            raise OSError(f"no route to {remote_ip}")
        iface, next_hop = hit
        if local_port is None:
            local_port = self._ephemeral_port(iface.ip, dst, remote_port)
        key: Key = (iface.ip, local_port, dst, remote_port)
        if key in self._conns:
            raise OSError(f"address in use: {ip_to_str(iface.ip)}:{local_port} -> {remote_ip}:{remote_port}")
        c = Connection(key, iface, next_hop)
        c.engine = TcpConnection.connect(
            iface.tcp_config, local_port, remote_port, self.rng.getrandbits(32), self.scheduler.now()
        )
        sock = c.sock = TcpSocket(self, c)
        self._conns[key] = c
        self._trace_owner(c)
        self._service(c)
        return sock

    def listen(self, port: int, on_accept: Callable[[TcpSocket], None], backlog: int = 128) -> Listener:
        if port in self._listeners:
            raise OSError(f"port {port} already listening")
        lst = Listener(self, port, on_accept, backlog)
        self._listeners[port] = lst
        return lst

    def _unlisten(self, lst: Listener) -> None:
        if self._listeners.get(lst.port) is lst:
            del self._listeners[lst.port]

    async def open_connection(self, ip: str, port: int) -> tuple[Any, Any]:
        from tcpchimney.host.streams import open_connection

        return await open_connection(self, ip, port)

    async def start_server(
        self, client_connected_cb: Callable[[Any, Any], Awaitable[None] | None], port: int, backlog: int = 128
    ) -> Any:
        from tcpchimney.host.streams import start_server

        return await start_server(self, client_connected_cb, port, backlog)

    # ================================================================================================ offload control
    def offload(self, sock: TcpSocket, target_id: int | None = None) -> None:
        self._off.request_offload(sock.connection, target_id)

    def terminate(self, sock: TcpSocket, reason: str = "host") -> None:
        self._off.request_terminate(sock.connection, "host", reason)

    def terminate_all(self, target_id: int) -> None:
        self._off.terminate_all(target_id, "host", "terminate_all", release=True)

    def offload_handle(self, sock: TcpSocket) -> Connection | None:
        """The handle a target knows the connection by (None unless it is offloaded)."""
        c = sock.connection
        return c if c.mode == OFFLOADED else None

    def owner_of(self, sock: TcpSocket) -> str:
        return sock.connection.owner

    @property
    def connections(self) -> list[TcpSocket]:
        return [c.sock for c in self._conns.values() if c.sock is not None and (c.listener is None or c.accepted)]

    @property
    def stats(self) -> dict[str, Any]:
        s = self._off.stats()
        s.update(
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            drops=self.drops.as_dict(),
            drops_total=self.drops.total,
            rst_sent=self.rst_sent,
            echo_replies=self.echo_replies,
            arp_requests=self.arp.requests_sent,
            connections=len(self._conns),
            violations=len(self.violations),
        )
        return s

    def target_info(self, target_id: int) -> Any:
        return self._off.targets[target_id]

    # ================================================================================================ ChimneyHost
    def on_initiate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._off.on_initiate_complete(target_id, tree)

    def on_terminate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._off.on_terminate_complete(target_id, tree)

    def on_update_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._off.on_update_complete(target_id, tree)

    def on_invalidate_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._off.count("invalidates_completed")

    def on_query_offload_complete(self, target_id: int, tree: OffloadBlock) -> None:
        self._off.count("queries_completed")

    def on_tcp_send_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self._off.on_send_complete(handle, nbls)

    def on_tcp_receive_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self._off.on_receive_complete(handle, nbls)

    def on_tcp_disconnect_complete(self, handle: Any, nbl: NetBufferList) -> None:
        self._off.on_disconnect_complete(handle, nbl)

    def on_tcp_forward_complete(self, handle: Any, nbls: list[NetBufferList]) -> None:
        self._off.on_forward_complete(handle, nbls)

    def on_tcp_event(self, handle: Any, event_type: int, info: int) -> None:
        self._off.on_tcp_event(handle, event_type, info)

    def on_tcp_receive_indicate(self, handle: Any, nbl: NetBufferList) -> tuple[int, int]:
        return self._off.on_receive_indicate(handle, nbl)

    def on_status_indication(self, target_id: int, status: int, info: Any) -> None:
        self._off.on_status_indication(target_id, status, info)

    def on_offload_event(self, target_id: int, block: OffloadBlock | None, code: int) -> None:
        self._off.count("offload_events")

    def on_contract_violation(self, violation: Exception) -> None:
        self.violations.append(violation)
        self._off.on_violation(violation)

    # ================================================================================================ receive path
    def on_receive_frame(self, target_id: int, frame: bytes) -> None:
        self.frames_in += 1
        # The per-packet path: a plain TCP/IPv4 frame for a connection the host runs is parsed once, into the
        # segment alone; everything else (and any frame the fast parser declines) takes the full parse below.
        hit = parse_tcp_fast(frame, self.verify_checksums)
        if hit is not None:
            src, dst, seg = hit
            c = self._conns.get((dst, seg.dst_port, src, seg.src_port))
            if c is not None and c.mode == SOFTWARE:
                if self.tracer.enabled:
                    self._trace_segment(c, "in", seg)
                c.engine.handle_segment(seg, self.scheduler.now())  # type: ignore[union-attr]
                self._service(c)
                return
        parsed = safe_parse(frame, self.drops, self.verify_checksums)
        if parsed is None:
            return
        if type(parsed) is TcpFrame:
            ip = parsed.ip
            seg = parsed.seg
            c = self._conns.get((ip.dst, seg.dst_port, ip.src, seg.src_port))
            if c is not None and c.mode == SOFTWARE:
                if self.tracer.enabled:
                    self._trace_segment(c, "in", seg)
                c.engine.handle_segment(seg, self.scheduler.now())  # type: ignore[union-attr]
                self._service(c)
                return
            self._tcp_slow(target_id, frame, parsed, c)
        elif type(parsed) is ArpFrame:
            self._on_arp(target_id, parsed)
        elif type(parsed) is IcmpFrame:
            self._on_icmp(target_id, parsed)
        else:
            self.drops.count("unhandled-protocol")

    def _tcp_slow(self, target_id: int, frame: bytes, parsed: TcpFrame, c: Connection | None) -> None:
        seg = parsed.seg
        if c is None:
            iface = self._local_ips.get(parsed.ip.dst)
            if iface is None:
                self.drops.count("not-for-us")
                return
            flags = seg.flags
            if flags & (SYN | ACK | RST) == SYN:
                lst = self._listeners.get(seg.dst_port)
                if lst is not None:
                    self._passive_open(iface, parsed, lst)
                    return
            self._reply_rst(target_id, parsed)
            return
        if c.mode == CLOSED:  # a connection that died while offloaded and is still being cleaned up
            self._reply_rst(target_id, parsed)
            return
        if self.tracer.enabled:
            self._trace_segment(c, "in", seg)
        self._off.frame_for_offloaded(c, frame, seg)

    def _passive_open(self, iface: Interface, parsed: TcpFrame, lst: Listener) -> None:
        if lst.pending >= lst.backlog:
            self.drops.count("syn-backlog-full")
            return
        seg = parsed.seg
        remote = parsed.ip.src
        hit = self.routes.lookup(remote)
        if hit is not None:
            iface, next_hop = hit
        else:
            next_hop = remote
        key: Key = (parsed.ip.dst, seg.dst_port, remote, seg.src_port)
        c = Connection(key, iface, next_hop)
        c.listener = lst
        lst.pending += 1
        c.engine = TcpConnection.accept(iface.tcp_config, seg, self.rng.getrandbits(32), self.scheduler.now())
        c.sock = TcpSocket(self, c)
        self._conns[key] = c
        if self.tracer.enabled:
            self._trace_segment(c, "in", seg)
        self._trace_owner(c)
        self._service(c)

    # ================================================================================================ engine driving
    def _service(self, c: Connection) -> None:
        """Hand the engine's events to the application, send what it has, and re-arm its timer.

        Events go first so that what the application does in its callbacks (read, write, close) is folded into the
        same segments; a nested call from such a callback returns at once (the outer pass sends for it).
        """
        eng = c.engine
        if eng is None or c.busy:
            return
        c.busy = True
        try:
            now = self.scheduler.now()
            events = eng.pop_events()
            for _ in range(16):
                if events:
                    self._handle_events(c, events)
                    if c.engine is not eng:
                        return
                segs = eng.segments_to_send(now)
                if segs:
                    xmit = self._xmit
                    for seg in segs:
                        xmit(c, seg)
                events = eng.pop_events()
                if not events:
                    break
        finally:
            c.busy = False
        if c.mode != SOFTWARE:
            return
        t = eng.next_timer()
        if t is not None:
            h = c.timer
            if h is not None:
                if c.timer_when <= t:
                    return
                h.cancel()
            c.timer_when = t
            c.timer = self.scheduler.call_at(t, self._on_timer_cb, c)

    def _on_timer(self, c: Connection) -> None:
        c.timer = None
        eng = c.engine
        if eng is None or c.mode != SOFTWARE:
            return
        t = eng.next_timer()
        if t is None:
            return
        now = self.scheduler.now()
        if t <= now:
            eng.handle_timer(now)
        self._service(c)

    def _cancel_timer(self, c: Connection) -> None:
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None

    def _handle_events(self, c: Connection, events: list[TcpEvent]) -> None:
        sock = c.sock
        for ev in events:
            if c.mode == CLOSED:
                return
            cls = type(ev)
            if cls is TcpDataReceived:
                if c.waiting_bytes:
                    self._off.consider(c)
                if sock is not None and sock.on_readable is not None and (c.listener is None or c.accepted):
                    sock.on_readable()
            elif cls is TcpSendAcked:
                if c.waiting_bytes:
                    self._off.consider(c)
                if sock is not None and sock.on_writable is not None:
                    sock.on_writable()
            elif cls is TcpConnected:
                self._on_connected(c)
            elif cls is TcpPeerClosed:
                c.peer_closed = True
                if sock is not None and sock.on_readable is not None and (c.listener is None or c.accepted):
                    sock.on_readable()
            elif cls is TcpReset:
                # A RST after both FINs and all our data went through (e.g. TIME_WAIT hit by the peer's answer to a
                # duplicated last ACK, RFC 1337) does not undo a completed exchange.
                eng = c.engine
                done = c.peer_closed and c.app_closed and eng is not None and eng.unacked_send_bytes == 0
                self._finish(c, "closed" if done else "reset")
            elif cls is TcpTimedOut:
                self._finish(c, "timeout")
            elif cls is TcpClosed:
                self._finish(c, "reset" if c.app_aborted else "closed")

    def _on_connected(self, c: Connection) -> None:
        c.established_at = self.scheduler.now()
        eng = c.engine
        if c.app_closed and eng is not None and not eng.send_closed:
            eng.close()  # the close queued in SYN_SENT
            self._service(c)
        sock = c.sock
        lst = c.listener
        if lst is not None and not c.accepted:
            c.accepted = True
            lst.pending -= 1
            lst.accepted += 1
            if sock is not None:
                lst.on_accept(sock)
            if sock is not None and c.engine is not None and c.engine.readable and sock.on_readable is not None:
                sock.on_readable()
        elif sock is not None and sock.on_connected is not None:
            sock.on_connected()
        if c.mode == SOFTWARE:
            self._off.consider(c)

    def _finish(self, c: Connection, reason: str) -> None:
        """The connection is over for the application (``on_closed(reason)`` runs once)."""
        if c.mode == CLOSED:
            return
        c.mode = CLOSED
        c.close_reason = reason
        self._cancel_timer(c)
        if c.policy_timer is not None:
            c.policy_timer.cancel()
            c.policy_timer = None
        if self._conns.get(c.key) is c:
            del self._conns[c.key]
        lst = c.listener
        if lst is not None and not c.accepted:
            lst.pending -= 1
        self._off.on_finished(c)
        if self.tracer.enabled:
            self.tracer.emit("closed", conn=c.label, reason=reason)
        sock = c.sock
        if sock is not None and (lst is None or c.accepted):
            if sock.on_readable is not None and sock.readable:
                sock.on_readable()
            if sock.on_closed is not None:
                sock.on_closed(reason)

    # ================================================================================================ socket ops
    def _sock_write(self, c: Connection, data: bytes) -> None:
        if c.mode == CLOSED:
            raise ConnectionResetError(f"connection {c.label} is {c.close_reason}")
        if c.app_closed or c.app_aborted:
            raise BrokenPipeError(f"write after close on {c.label}")
        if not data:
            return
        if c.sock is not None:
            c.sock.bytes_written += len(data)
        if c.mode == SOFTWARE:
            c.engine.send(data)  # type: ignore[union-attr]
            self._service(c)
        elif c.mode == OFFLOADED:
            self._off.post_send(c, data)
        else:
            c.pending_writes.append(data)

    def _sock_read(self, c: Connection, max_bytes: int) -> bytes:
        buf = c.rx_buf
        out = b""
        if buf:
            if max_bytes < 0 or max_bytes >= len(buf):
                out = bytes(buf)
                buf.clear()
            else:
                out = bytes(buf[:max_bytes])
                del buf[:max_bytes]
            if c.mode == OFFLOADED and c.rx_refused:
                self._off.reenable_receive(c)
        eng = c.engine
        if eng is not None and (max_bytes < 0 or len(out) < max_bytes) and eng.readable:
            more = eng.read(max_bytes - len(out) if max_bytes >= 0 else -1)
            out = out + more if out else more
            if c.mode == SOFTWARE:
                self._service(c)  # the window opened: the engine may want to say so
        if out and c.sock is not None:
            c.sock.bytes_read += len(out)
            if c.waiting_bytes:
                self._off.consider(c)
        return out

    def _sock_close(self, c: Connection) -> None:
        if c.app_closed or c.app_aborted or c.mode == CLOSED:
            return
        c.app_closed = True
        if c.mode == SOFTWARE:
            eng = c.engine
            assert eng is not None
            if eng.state == TcpState.SYN_SENT:
                return  # RFC 9293 3.10.4: queue the close until the connection is established
            eng.close()
            self._service(c)
        elif c.mode == OFFLOADED:
            self._off.post_disconnect(c)
        # offloading / terminating: applied when the operation completes

    def _sock_abort(self, c: Connection) -> None:
        if c.app_aborted or c.mode == CLOSED:
            return
        c.app_aborted = True
        if c.mode == SOFTWARE:
            eng = c.engine
            assert eng is not None
            eng.abort()
            self._service(c)
            self._finish(c, "reset")
        elif c.mode == OFFLOADED:
            self._off.post_abort(c)

    # ================================================================================================ transmit
    def _xmit(self, c: Connection, seg: TcpSegment) -> None:
        if self.tracer.enabled:
            self._trace_segment(c, "out", seg)
        iface = c.iface
        key = c.key
        ident = self._ip_id
        self._ip_id = (ident + 1) & 0x7FFF
        entry = self.arp._entries.get(c.next_hop)
        mac = entry.mac if entry is not None else None
        if mac is not None:
            self.frames_out += 1
            self.chimney.send_frame(iface.target_id, build_tcp_frame(iface.mac, mac, key[0], key[2], seg, ident=ident))
            return

        def later(mac: bytes) -> None:
            self._send_frame(iface, build_tcp_frame(iface.mac, mac, key[0], key[2], seg, ident=ident))

        self.arp.resolve(iface, c.next_hop, later)

    def _send_frame(self, iface: Interface, frame: bytes) -> None:
        self.frames_out += 1
        self.chimney.send_frame(iface.target_id, frame)

    def _next_ident(self) -> int:
        ident = self._ip_id
        self._ip_id = (ident + 1) & 0x7FFF
        return ident

    def _reply_rst(self, target_id: int, parsed: TcpFrame) -> None:
        """RFC 9293 3.10.7.1: answer a segment for no connection with a RST (never a RST for a RST)."""
        seg = parsed.seg
        if seg.flags & RST:
            self.drops.count("rst-no-connection")
            return
        if seg.flags & ACK:
            rst = TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            rst = TcpSegment(seg.dst_port, seg.src_port, 0, (seg.seq + seg.seg_len) & 0xFFFFFFFF, RST | ACK, 0)
        iface = self._local_ips.get(parsed.ip.dst)
        if iface is None:
            return
        self.rst_sent += 1
        if self.tracer.enabled:
            self.tracer.emit(
                "segment",
                conn=f"{ip_to_str(parsed.ip.dst)}:{seg.dst_port}>{ip_to_str(parsed.ip.src)}:{seg.src_port}",
                dir="out",
                seq=rst.seq,
                ack=rst.ack,
                len=0,
                flags=rst.flags,
                owner="host",
                host=self.name,
            )
        frame = build_tcp_frame(iface.mac, parsed.eth.src, parsed.ip.dst, parsed.ip.src, rst, ident=self._next_ident())
        self._send_frame(iface, frame)

    # ================================================================================================ ARP / ICMP
    def _send_arp_request(self, iface: Interface, ip: bytes) -> None:
        self._send_frame(iface, build_arp_frame(iface.mac, BROADCAST_MAC, arp_request(iface.mac, iface.ip, ip)))

    def _on_arp(self, target_id: int, parsed: ArpFrame) -> None:
        arp = parsed.arp
        iface = self._local_ips.get(arp.target_ip)
        for_us = iface is not None and iface.target_id == target_id
        # RFC 826 merge: update an entry we have; add one when the packet is for us.
        before = self.arp.peek(arp.sender_ip)
        self.arp.learn(arp.sender_ip, arp.sender_mac, create=for_us)
        if before is not None and before != arp.sender_mac and self.arp.peek(arp.sender_ip) == arp.sender_mac:
            self._off.neighbor_mac_changed(arp.sender_ip, arp.sender_mac)
        if arp.op == ARP_REQUEST and for_us:
            assert iface is not None
            self._send_frame(iface, build_arp_frame(iface.mac, arp.sender_mac, arp_reply_to(arp, iface.mac)))
        elif arp.op != ARP_REPLY and arp.op != ARP_REQUEST:
            self.drops.count("arp-bad-op")

    def _on_icmp(self, target_id: int, parsed: IcmpFrame) -> None:
        icmp = parsed.icmp
        iface = self._local_ips.get(parsed.ip.dst)
        if iface is None:
            self.drops.count("not-for-us")
            return
        if isinstance(icmp, IcmpEcho) and icmp.type == ICMP_ECHO_REQUEST:
            self.echo_replies += 1
            frame = build_icmp_frame(
                iface.mac, parsed.eth.src, iface.ip, parsed.ip.src, echo_reply_to(icmp), ident=self._next_ident()
            )
            self._send_frame(iface, frame)
            return
        mtu = getattr(icmp, "next_hop_mtu", None)
        if mtu:
            self.drops.count("icmp-frag-needed-ignored")
        else:
            self.drops.count("icmp-ignored")

    def ping(self, ip: str, ident: int = 1, seq: int = 1, payload: bytes = b"") -> None:
        """Send one ICMP echo request (replies count in ``stats['drops']['icmp-ignored']``; mostly for tests)."""
        dst = ip_to_bytes(ip)
        hit = self.routes.lookup(dst)
        if hit is None:
            raise OSError(f"no route to {ip}")
        iface, nh = hit
        echo = IcmpEcho(ICMP_ECHO_REQUEST, 0, ident, seq, payload)
        ip_ident = self._next_ident()
        self.arp.resolve(
            iface,
            nh,
            lambda mac: self._send_frame(iface, build_icmp_frame(iface.mac, mac, iface.ip, dst, echo, ident=ip_ident)),
        )

    # ================================================================================================ helpers
    def _ephemeral_port(self, local: bytes, remote: bytes, rport: int) -> int:
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = EPHEMERAL_LOW + (port - EPHEMERAL_LOW + 1) % span
            if (local, port, remote, rport) not in self._conns and port not in self._listeners:
                return port
        raise OSError("no free ephemeral port")

    def _trace_segment(self, c: Connection, direction: str, seg: TcpSegment) -> None:
        self.tracer.emit(
            "segment",
            conn=c.label,
            dir=direction,
            seq=seg.seq,
            ack=seg.ack,
            len=len(seg.payload),
            flags=seg.flags,
            owner="host",
            host=self.name,
        )

    def _trace_owner(self, c: Connection) -> None:
        if self.tracer.enabled:
            self.tracer.emit("owner", conn=c.label, owner=c.owner, host=self.name)

    def __repr__(self) -> str:
        return f"HostStack({self.name!r}, conns={len(self._conns)})"
