"""Sans-IO LACP (IEEE 802.1AX) for one NIC team: ``LacpPort`` per member link, ``LacpAggregator`` per team.

No sockets, threads or clocks: the caller passes ``now`` (seconds, any monotonic origin) to every input, asks
``next_timer()`` when to call ``handle_timer``, and after every input collects ``pdus_to_send(now)`` and
``pop_events()``.  A port starts with its carrier down; ``set_carrier(True, now)`` starts it.

Implemented, simplified from 802.1AX:

* receive machine CURRENT / EXPIRED / DEFAULTED (plus PORT_DISABLED while the carrier is down); ``current_while``
  is 3 x our periodic time (fast 1 s -> 3 s, slow 30 s -> 90 s), EXPIRED lasts the short timeout (3 s);
* periodic transmit at the partner's requested rate (its Timeout bit), immediately when it switches to fast;
* selection: one aggregator per team, latched on the first partner (system priority, system, key) seen; a port is
  SELECTED while its recorded partner matches it (a lone port without an aggregator selects any partner);
* mux machine with coupled control DETACHED -> WAITING -> ATTACHED -> COLLECTING_DISTRIBUTING and a short
  ``wait_while`` (``wait_time``, no cross-port Ready wait);
* NTT with at most 3 LACPDUs per fast periodic time (1 s).

A member carries traffic (``distributing``) only in COLLECTING_DISTRIBUTING while the partner reports it in sync
and collecting.  A partner whose PDUs carry its Expired bit is treated as out of sync (it no longer hears us).

Events are edge-triggered: ``PartnerSynced`` / ``PartnerLost(reason)`` when "the partner has this port in sync"
turns on / off, ``DistributingChanged`` when ``distributing`` flips.  ``PartnerLost.reason``: ``"carrier"``
(``set_carrier(False)``), ``"expired"`` (current_while ran out), ``"sync-cleared"`` (a PDU: the partner cleared
Sync, advertises Expired, or changed identity; or the aggregator re-latched elsewhere), ``"defaulted"`` (entering
DEFAULTED while still in sync; unreachable in practice because EXPIRED already clears the partner's sync).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from tcpchimney.team.lacpdu import NULL_INFO, LacpDu, LacpInfo, LacpState

FAST_PERIODIC_TIME = 1.0
SLOW_PERIODIC_TIME = 30.0
SHORT_TIMEOUT_TIME = 3 * FAST_PERIODIC_TIME
LONG_TIMEOUT_TIME = 3 * SLOW_PERIODIC_TIME
TX_LIMIT = 3  # LACPDUs per FAST_PERIODIC_TIME
DEFAULT_WAIT_TIME = 0.1  # 802.1AX uses 2 s to gather members; a team of known members needs no long wait

_ACT = LacpState.ACTIVITY
_TIMEOUT = LacpState.TIMEOUT
_AGG = LacpState.AGGREGATION
_SYNC = LacpState.SYNCHRONIZATION
_COL = LacpState.COLLECTING
_DIST = LacpState.DISTRIBUTING
_DEFAULTED = LacpState.DEFAULTED
_EXPIRED = LacpState.EXPIRED
# State bits a partner must echo back correctly, else we owe it a PDU (802.1AX update_NTT).
_NTT_BITS = _ACT | _TIMEOUT | _SYNC | _AGG

LostReason = Literal["expired", "carrier", "sync-cleared", "defaulted"]
LagId = tuple[int, bytes, int]  # partner (system priority, system, key)


class RxState(StrEnum):
    PORT_DISABLED = "PORT_DISABLED"
    EXPIRED = "EXPIRED"
    DEFAULTED = "DEFAULTED"
    CURRENT = "CURRENT"


class MuxState(StrEnum):
    DETACHED = "DETACHED"
    WAITING = "WAITING"
    ATTACHED = "ATTACHED"
    COLLECTING_DISTRIBUTING = "COLLECTING_DISTRIBUTING"


@dataclass(frozen=True, slots=True)
class PartnerSynced:
    port: int  # our port number
    at: float
    partner: LacpInfo


@dataclass(frozen=True, slots=True)
class PartnerLost:
    port: int
    at: float
    reason: LostReason


@dataclass(frozen=True, slots=True)
class DistributingChanged:
    port: int
    at: float
    distributing: bool


LacpEvent = PartnerSynced | PartnerLost | DistributingChanged


@dataclass(slots=True)
class LacpPortStats:
    rx_pdus: int = 0
    rx_ignored: int = 0  # carrier down, or our own PDU looped back
    tx_pdus: int = 0
    tx_rate_limited: int = 0  # pdus_to_send calls that had to hold NTT back
    expired: int = 0
    defaulted: int = 0


def _aged_out(sent_at: float, now: float) -> bool:
    """A transmission at ``sent_at`` no longer counts against the rate limit (with slack for float rounding)."""
    return now - sent_at >= FAST_PERIODIC_TIME - 1e-9


class LacpPort:
    """The LACP state of one member link (the "actor" side)."""

    def __init__(
        self,
        system_mac: bytes,
        port_number: int,
        key: int,
        *,
        system_priority: int = 32768,
        port_priority: int = 32768,
        fast: bool = True,
        active: bool = True,
        wait_time: float = DEFAULT_WAIT_TIME,
    ) -> None:
        if len(system_mac) != 6:
            raise ValueError("system_mac must be 6 bytes")
        for name, value in (
            ("port_number", port_number),
            ("key", key),
            ("system_priority", system_priority),
            ("port_priority", port_priority),
        ):
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} {value} out of range")
        if port_number == 0:
            raise ValueError("port number 0 is reserved")
        self.system_mac = bytes(system_mac)
        self.port_number = port_number
        self.key = key
        self.system_priority = system_priority
        self.port_priority = port_priority
        self.fast = fast
        self.active = active
        self.wait_time = wait_time
        self.stats = LacpPortStats()
        # Administrative partner defaults: nobody, asking for our own rate so a lone active port keeps probing.
        self._partner_admin = NULL_INFO.with_state(_TIMEOUT if fast else 0)
        self._partner = self._partner_admin
        self._carrier = False
        self._rx = RxState.PORT_DISABLED
        self._defaulted = True
        self._expired = False
        self._selected = False
        self._mux = MuxState.DETACHED
        self._ntt = False
        self._current_while: float | None = None
        self._periodic_at: float | None = None
        self._wait_while: float | None = None
        self._tx_times: deque[float] = deque()
        self._now = 0.0
        self._cause: LostReason = "sync-cleared"
        self._was_synced = False
        self._was_distributing = False
        self._events: list[LacpEvent] = []
        self._aggregator: LacpAggregator | None = None

    # -- read-only view ------------------------------------------------------------------------------------------
    @property
    def carrier(self) -> bool:
        return self._carrier

    @property
    def rx_state(self) -> RxState:
        return self._rx

    @property
    def mux_state(self) -> MuxState:
        return self._mux

    @property
    def selected(self) -> bool:
        return self._selected

    @property
    def partner(self) -> LacpInfo:
        """The partner as last recorded (its Synchronization bit is our verdict, see 802.1AX recordPDU)."""
        return self._partner

    @property
    def partner_current(self) -> bool:
        return self._rx is RxState.CURRENT

    @property
    def in_sync(self) -> bool:
        """Attached to the aggregator and the partner has this port in sync."""
        return (
            self._carrier
            and self._selected
            and self._mux in (MuxState.ATTACHED, MuxState.COLLECTING_DISTRIBUTING)
            and self._partner.has(_SYNC)
        )

    @property
    def collecting(self) -> bool:
        return self._mux is MuxState.COLLECTING_DISTRIBUTING

    @property
    def distributing(self) -> bool:
        """Usable for traffic: we collect/distribute and the partner has us in sync and collecting."""
        return self._mux is MuxState.COLLECTING_DISTRIBUTING and self._partner.has(_SYNC | _COL)

    @property
    def actor_state(self) -> int:
        state = _AGG
        if self.active:
            state |= _ACT
        if self.fast:
            state |= _TIMEOUT
        if self._mux in (MuxState.ATTACHED, MuxState.COLLECTING_DISTRIBUTING):
            state |= _SYNC
        if self._mux is MuxState.COLLECTING_DISTRIBUTING:
            state |= _COL | _DIST
        if self._defaulted:
            state |= _DEFAULTED
        if self._expired:
            state |= _EXPIRED
        return int(state)

    @property
    def actor(self) -> LacpInfo:
        return LacpInfo(
            self.system_priority, self.system_mac, self.key, self.port_priority, self.port_number, self.actor_state
        )

    def lag_id(self) -> LagId:
        """The recorded partner's aggregation identity."""
        p = self._partner
        return (p.system_priority, p.system, p.key)

    def pop_events(self) -> list[LacpEvent]:
        events, self._events = self._events, []
        return events

    # -- inputs ----------------------------------------------------------------------------------------------------
    def set_carrier(self, up: bool, now: float) -> None:
        """The member link's carrier went up or down (down also stops transmission and the timers)."""
        self._now = now
        if up == self._carrier:
            return
        self._carrier = up
        if up:
            self._enter_expired(now)  # 802.1AX: PORT_DISABLED -> EXPIRED once the port is enabled
            self._ntt = True
        else:
            self._cause = "carrier"
            self._rx = RxState.PORT_DISABLED
            self._partner = self._partner.with_state(self._partner.state & ~_SYNC)
            self._current_while = self._periodic_at = self._wait_while = None
            self._expired = False
            self._ntt = False
        self._settle(now)

    def handle_lacpdu(self, pdu: LacpDu, now: float) -> None:
        """A LACPDU arrived on this member."""
        self._now = now
        if not self._carrier or pdu.actor.system == self.system_mac:
            self.stats.rx_ignored += 1  # disabled port, or our own PDU looped back through a hub/bridge
            return
        self.stats.rx_pdus += 1
        self._record_pdu(pdu, now)
        self._settle(now)

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now`` (earliest first)."""
        self._now = now
        for _ in range(8):  # each timer fires at most once per call; bounded anyway
            due = [
                (t, name)
                for t, name in (
                    (self._current_while, "current"),
                    (self._wait_while, "wait"),
                    (self._periodic_at, "periodic"),
                )
                if t is not None and t <= now
            ]
            if not due:
                break
            _, name = min(due)
            if name == "current":
                self._current_while = None
                if self._rx is RxState.CURRENT:
                    self.stats.expired += 1
                    self._cause = "expired"
                    self._enter_expired(now)
                elif self._rx is RxState.EXPIRED:
                    self.stats.defaulted += 1
                    self._cause = "defaulted"
                    self._enter_defaulted()
            elif name == "wait":
                self._wait_while = None  # Ready: the mux may attach
            else:
                self._periodic_at = None
                self._ntt = True
            self._settle(now)

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must next run (``None``: nothing pending until the next input)."""
        times = [t for t in (self._current_while, self._wait_while, self._periodic_at) if t is not None]
        if self._ntt and self._may_transmit():
            times.append(self._tx_release_time())
        return min(times) if times else None

    def pdus_to_send(self, now: float) -> list[LacpDu]:
        """The LACPDU owed now (NTT), if the rate limit allows; call after every input."""
        self._now = now
        if not self._ntt:
            return []
        if not self._may_transmit():
            self._ntt = False
            return []
        times = self._tx_times
        while times and _aged_out(times[0], now):
            times.popleft()
        if len(times) >= TX_LIMIT:
            self.stats.tx_rate_limited += 1
            return []
        times.append(now)
        self._ntt = False
        self.stats.tx_pdus += 1
        return [LacpDu(self.actor, self._partner)]

    # -- receive machine -------------------------------------------------------------------------------------------
    def _enter_expired(self, now: float) -> None:
        self._rx = RxState.EXPIRED
        # Partner no longer in sync; ask it (through our PDUs' partner TLV) for fast PDUs while we wait.
        self._partner = self._partner.with_state((self._partner.state & ~_SYNC) | _TIMEOUT)
        self._current_while = now + SHORT_TIMEOUT_TIME
        self._expired = True

    def _enter_defaulted(self) -> None:
        self._rx = RxState.DEFAULTED
        self._partner = self._partner_admin
        self._defaulted = True
        self._expired = False
        self._current_while = None

    def _record_pdu(self, pdu: LacpDu, now: float) -> None:
        actor = self.actor
        if not self._partner.same_identity(pdu.actor):
            # A different partner (or first contact): leave the aggregator before re-selection (update_Selected).
            self._cause = "sync-cleared"
            self._selected = False
            self._run_mux(now)
        mirror = pdu.partner
        matched = mirror.same_identity(actor)
        if not matched or (mirror.state ^ actor.state) & _NTT_BITS:
            self._ntt = True  # the partner's view of us is stale (update_NTT)
        theirs = pdu.actor
        sync = ((matched and theirs.has(_SYNC)) or (not theirs.has(_AGG) and theirs.has(_SYNC))) and (
            theirs.has(_ACT) or (self.active and mirror.has(_ACT))
        )
        if theirs.has(_EXPIRED):
            # The partner stopped hearing us: by 802.1AX its EXPIRED state has cleared our sync, though some
            # partners (Open vSwitch) keep advertising Sync/Collecting meanwhile.  Stop using the link now
            # rather than when the partner finally defaults (another short timeout later).
            sync = False
        self._partner = theirs.with_state((theirs.state & ~_SYNC) | (_SYNC if sync else 0))
        self._defaulted = False
        self._expired = False
        self._rx = RxState.CURRENT
        self._current_while = now + (SHORT_TIMEOUT_TIME if self.fast else LONG_TIMEOUT_TIME)

    # -- selection, mux, periodic ----------------------------------------------------------------------------------
    def _selectable(self, alone: bool) -> bool:
        """Has a recorded partner this port could aggregate with (individual partners only when alone)."""
        return self._carrier and self._rx in (RxState.CURRENT, RxState.EXPIRED) and (alone or self._partner.has(_AGG))

    def _settle(self, now: float) -> None:
        if self._aggregator is not None:
            self._aggregator._reselect(now, origin=self)
        else:
            self._selected = self._selectable(alone=True)
        self._settle_local(now)

    def _settle_local(self, now: float) -> None:
        self._run_mux(now)
        self._update_periodic(now)
        self._emit_edges(now)
        self._cause = "sync-cleared"

    def _run_mux(self, now: float) -> None:
        for _ in range(6):
            mux = self._mux
            if mux is MuxState.DETACHED:
                if not self._selected:
                    return
                self._mux = MuxState.WAITING
                self._wait_while = now + self.wait_time if self.wait_time > 0 else None
            elif mux is MuxState.WAITING:
                if not self._selected:
                    self._mux = MuxState.DETACHED
                    self._wait_while = None
                    self._ntt = True
                elif self._wait_while is None:
                    self._mux = MuxState.ATTACHED
                    self._ntt = True
                else:
                    return
            elif mux is MuxState.ATTACHED:
                if not self._selected:
                    self._mux = MuxState.DETACHED
                    self._ntt = True
                elif self._partner.has(_SYNC):
                    self._mux = MuxState.COLLECTING_DISTRIBUTING
                    self._ntt = True
                else:
                    return
            else:  # COLLECTING_DISTRIBUTING
                if self._selected and self._partner.has(_SYNC):
                    return
                self._mux = MuxState.ATTACHED
                self._ntt = True

    def _may_transmit(self) -> bool:
        return self._carrier and (self.active or self._partner.has(_ACT))

    def _update_periodic(self, now: float) -> None:
        if not self._may_transmit():
            self._periodic_at = None
            return
        period = FAST_PERIODIC_TIME if self._partner.has(_TIMEOUT) else SLOW_PERIODIC_TIME
        if self._periodic_at is None:
            self._periodic_at = now + period
        elif self._periodic_at > now + period:
            # The partner switched to the short timeout: transmit now, then at the fast rate (802.1AX 6.4.13).
            self._ntt = True
            self._periodic_at = now + period

    def _tx_release_time(self) -> float:
        live = [t for t in self._tx_times if not _aged_out(t, self._now)]
        if len(live) < TX_LIMIT:
            return self._now
        return live[0] + FAST_PERIODIC_TIME

    def _emit_edges(self, now: float) -> None:
        synced = self.in_sync
        if synced != self._was_synced:
            self._was_synced = synced
            if synced:
                self._events.append(PartnerSynced(self.port_number, now, self._partner))
            else:
                self._events.append(PartnerLost(self.port_number, now, self._cause))
        distributing = self.distributing
        if distributing != self._was_distributing:
            self._was_distributing = distributing
            self._events.append(DistributingChanged(self.port_number, now, distributing))

    def __repr__(self) -> str:
        return (
            f"LacpPort({self.port_number}, carrier={self._carrier}, rx={self._rx.value}, mux={self._mux.value}, "
            f"selected={self._selected}, distributing={self.distributing})"
        )


class LacpAggregator:
    """The single aggregator of one team: latches on one partner and selects the ports that see that partner.

    All ports must share the actor system and key.  Driving the ports (inputs, timers, PDUs) stays per port; the
    helpers here just loop over them.
    """

    def __init__(self, ports: Iterable[LacpPort] = ()) -> None:
        self._ports: list[LacpPort] = []
        self._lag: LagId | None = None
        for port in ports:
            self.add_port(port)

    def add_port(self, port: LacpPort) -> None:
        if port._aggregator is not None:
            raise ValueError(f"port {port.port_number} already belongs to an aggregator")
        if self._ports:
            first = self._ports[0]
            mine = (port.system_mac, port.system_priority, port.key)
            if mine != (first.system_mac, first.system_priority, first.key):
                raise ValueError("all ports of one aggregator need the same system and key")
            if any(p.port_number == port.port_number for p in self._ports):
                raise ValueError(f"duplicate port number {port.port_number}")
        port._aggregator = self
        self._ports.append(port)
        port._settle(port._now)

    @property
    def ports(self) -> tuple[LacpPort, ...]:
        return tuple(self._ports)

    @property
    def partner_id(self) -> LagId | None:
        """(system priority, system MAC, key) of the partner this aggregator is latched on."""
        return self._lag

    def port(self, port_number: int) -> LacpPort:
        for p in self._ports:
            if p.port_number == port_number:
                return p
        raise KeyError(port_number)

    def distributing_ports(self) -> list[LacpPort]:
        """Members usable for traffic right now (in port order)."""
        return [p for p in self._ports if p.distributing]

    def pop_events(self) -> list[LacpEvent]:
        """Events of every port, in time order (stable per port)."""
        events = [e for p in self._ports for e in p.pop_events()]
        events.sort(key=lambda e: e.at)
        return events

    def next_timer(self) -> float | None:
        times = [t for t in (p.next_timer() for p in self._ports) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for p in self._ports:
            p.handle_timer(now)

    def pdus_to_send(self, now: float) -> list[tuple[LacpPort, LacpDu]]:
        return [(p, pdu) for p in self._ports for pdu in p.pdus_to_send(now)]

    def _reselect(self, now: float, origin: LacpPort) -> None:
        alone = len(self._ports) == 1
        candidates = [p for p in self._ports if p._selectable(alone)]
        if not any(p.lag_id() == self._lag for p in candidates):
            # Latch on the partner of the best-ranked candidate (lowest port priority, then port number).
            best = min(candidates, key=lambda p: (p.port_priority, p.port_number), default=None)
            self._lag = best.lag_id() if best is not None else None
        for p in self._ports:
            selected = p in candidates and p.lag_id() == self._lag
            if p is origin:
                p._selected = selected
            elif selected != p._selected:
                p._selected = selected
                p._now = now
                p._settle_local(now)
