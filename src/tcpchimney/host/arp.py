"""ARP cache with timeouts and a queue of packets waiting for resolution (RFC 826 / RFC 1122 2.3.2.2)."""

from __future__ import annotations

from collections.abc import Callable

from tcpchimney.clock import Scheduler, TimerHandle
from tcpchimney.host.interfaces import Interface
from tcpchimney.wire.drops import DropCounter

Pending = Callable[[bytes], None]  # called with the resolved MAC
RequestFn = Callable[[Interface, bytes], None]  # send a who-has for an IP on an interface


class ArpEntry:
    __slots__ = ("iface", "ip", "mac", "pending", "static", "timer", "tries", "updated")

    def __init__(self, ip: bytes, iface: Interface | None) -> None:
        self.ip = ip
        self.iface = iface
        self.mac: bytes | None = None
        self.updated = 0.0
        self.pending: list[Pending] = []
        self.tries = 0
        self.timer: TimerHandle | None = None
        self.static = False


class ArpCache:
    """``timeout``: an entry older than this is refreshed (still used meanwhile); unresolved requests are retried
    every ``retry`` seconds up to ``max_tries`` times, then their queued packets are dropped."""

    def __init__(
        self,
        scheduler: Scheduler,
        send_request: RequestFn,
        drops: DropCounter,
        *,
        timeout: float = 300.0,
        retry: float = 1.0,
        max_tries: int = 3,
        max_pending: int = 256,
    ) -> None:
        self._sched = scheduler
        self._send_request = send_request
        self._drops = drops
        self.timeout = timeout
        self.retry = retry
        self.max_tries = max_tries
        self.max_pending = max_pending
        self._entries: dict[bytes, ArpEntry] = {}
        self.requests_sent = 0

    def lookup(self, ip: bytes) -> bytes | None:
        entry = self._entries.get(ip)
        if entry is None or entry.mac is None:
            return None
        if not entry.static and self._sched.now() - entry.updated > self.timeout and entry.timer is None:
            self._request(entry)  # refresh in the background; keep using the old answer meanwhile
        return entry.mac

    def peek(self, ip: bytes) -> bytes | None:
        """The MAC known for ``ip`` (no refresh, no side effect)."""
        entry = self._entries.get(ip)
        return None if entry is None else entry.mac

    def resolve(self, iface: Interface, ip: bytes, then: Pending) -> None:
        """Call ``then(mac)`` now if ``ip`` is known, else when it resolves (dropped if it never does)."""
        entry = self._entries.get(ip)
        if entry is not None and entry.mac is not None:
            self.lookup(ip)
            then(entry.mac)
            return
        if entry is None:
            entry = self._entries[ip] = ArpEntry(ip, iface)
        if entry.iface is None:
            entry.iface = iface
        if len(entry.pending) >= self.max_pending:
            entry.pending.pop(0)
            self._drops.count("arp-queue-full")
        entry.pending.append(then)
        if entry.timer is None:
            self._request(entry)

    def learn(self, ip: bytes, mac: bytes, *, create: bool = True) -> bool:
        """Record ``ip`` is-at ``mac`` (``create=False``: only update an existing entry); flush waiting packets."""
        entry = self._entries.get(ip)
        if entry is None:
            if not create:
                return False
            entry = self._entries[ip] = ArpEntry(ip, None)
        if entry.static:
            return True
        entry.mac = mac
        entry.updated = self._sched.now()
        entry.tries = 0
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        pending, entry.pending = entry.pending, []
        for then in pending:
            then(mac)
        return True

    def add_static(self, ip: bytes, mac: bytes) -> None:
        self.learn(ip, mac)
        self._entries[ip].static = True

    def known(self, ip: bytes) -> bool:
        entry = self._entries.get(ip)
        return entry is not None and entry.mac is not None

    def entries(self) -> dict[bytes, bytes]:
        return {ip: e.mac for ip, e in self._entries.items() if e.mac is not None}

    def _request(self, entry: ArpEntry) -> None:
        if entry.iface is None:
            return
        entry.tries += 1
        self.requests_sent += 1
        self._send_request(entry.iface, entry.ip)
        entry.timer = self._sched.call_later(self.retry, self._on_retry, entry)

    def _on_retry(self, entry: ArpEntry) -> None:
        entry.timer = None
        if entry.tries < self.max_tries:
            self._request(entry)
            return
        entry.tries = 0
        if entry.pending:
            for _ in entry.pending:
                self._drops.count("arp-unresolved")
            entry.pending = []
        if entry.mac is None:
            del self._entries[entry.ip]
