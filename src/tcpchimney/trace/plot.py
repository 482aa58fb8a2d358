"""Time-sequence plots from a JSON-lines trace (``Tracer`` output), with the offload owner shaded behind.

Uses matplotlib's object API with the Agg canvas directly, so importing this never changes the global backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

Event = dict[str, Any]

# Events drawn as vertical markers: kind -> (colour, line style).
MARKER_STYLES: dict[str, tuple[str, Any]] = {
    "retrieve": ("tab:purple", "--"),
    "terminate_start": ("tab:orange", "--"),
    "terminate_done": ("tab:orange", "-"),
    "upload_all": ("tab:red", "-."),
    "resume": ("tab:green", "-."),
    "failover": ("black", ":"),
}
_TARGET_COLOURS = ["tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
_HOST_COLOUR = "lightgrey"


def load_trace(path: str | Path) -> list[Event]:
    """One dict per non-blank line; raises ValueError naming the line of any malformed record."""
    events: list[Event] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected an object, got {type(record).__name__}")
            events.append(record)
    return events


def list_connections(events: list[Event]) -> list[str]:
    """Connection ids in order of first appearance."""
    seen: dict[str, None] = {}
    for e in events:
        conn = e.get("conn")
        if isinstance(conn, str):
            seen.setdefault(conn, None)
    return list(seen)


def busiest_connection(events: list[Event]) -> str | None:
    """The connection with the most ownership changes and more than ten data segments sent: the most instructive
    plot.  None when no connection qualifies."""
    changes: dict[str, int] = {}
    segs: dict[str, int] = {}
    for ev in events:
        conn = ev.get("conn")
        if not isinstance(conn, str):
            continue
        kind = ev.get("kind")
        if kind in ("owner", "retrieve", "terminate_done"):
            changes[conn] = changes.get(conn, 0) + 1
        elif kind == "segment" and ev.get("dir") == "out" and ev.get("len", 0):
            segs[conn] = segs.get(conn, 0) + 1  # data we sent: the plot's sequence line climbs
    candidates = [c for c in changes if segs.get(c, 0) > 10]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (changes[c], segs[c]))


def plot_busiest(events: list[Event], out_png: str, title: Callable[[str], str]) -> str | None:
    """``plot_time_sequence`` of ``busiest_connection(events)`` titled ``title(conn)``; the connection, or None (and
    no file) when none qualifies."""
    conn = busiest_connection(events)
    if conn is None:
        return None
    plot_time_sequence(events, conn, out_png, title=title(conn))
    return conn


def _rel(value: int, base: int) -> int:
    """Signed 32-bit sequence-space distance from ``base`` (survives wrap-around)."""
    return ((value - base + 0x80000000) & 0xFFFFFFFF) - 0x80000000


_FLAG_LETTERS = {0x01: "F", 0x02: "S", 0x10: "A"}


def _has_flag(e: Event, bit: int) -> bool:
    """Whether segment event ``e`` carries TCP flag ``bit`` (FIN 0x01, SYN 0x02 or ACK 0x10).

    Traces record ``flags`` as the integer flag byte; hand-written ones may use tcpdump letters ("S.", "F", "." for
    ACK).  A segment without a ``flags`` field counts as carrying only ACK.
    """
    flags = e.get("flags")
    if isinstance(flags, int):
        return bool(flags & bit)
    if isinstance(flags, str):
        return _FLAG_LETTERS[bit] in flags or (bit == 0x10 and "." in flags)
    return bit == 0x10


def _ack_steps(ins: list[Event], base: int) -> tuple[list[float], list[int]]:
    """(times, ACK values relative to ``base``) of the received segments that acknowledge something.

    A segment without the ACK flag (the peer's SYN on a connection our side accepted) carries no acknowledgement,
    whatever its ack field holds, so it is skipped rather than drawn as a drop to a far-off value.
    """
    ack_t: list[float] = []
    ack_v: list[int] = []
    for e in ins:
        if "ack" in e and _has_flag(e, 0x10):
            ack_t.append(e["t"])
            ack_v.append(_rel(int(e["ack"]), base))
    return ack_t, ack_v


def _owner_spans(conn_events: list[Event], t0: float, t1: float) -> list[tuple[float, float, str]]:
    """Contiguous (start, end, owner) spans from ``owner`` events and the ``owner`` field of segments."""
    spans: list[tuple[float, float, str]] = []
    current: str | None = None
    start = t0
    for e in conn_events:
        owner = e.get("owner")
        if not isinstance(owner, str) or e.get("kind") not in ("owner", "segment"):
            continue
        if current is None:
            current = owner  # the first owner seen also holds the connection before it
        elif owner != current:
            spans.append((start, e["t"], current))
            current, start = owner, e["t"]
    if current is not None:
        spans.append((start, t1, current))
    return spans


def plot_time_sequence(events: list[Event], conn: str, out_png: str, title: str | None = None) -> None:
    """Sent sequence numbers ("out" segments, relative to the first) and received ACKs ("in") against time for
    ``conn``, with owner spans shaded and offload lifecycle events marked.  Raises ValueError for an unknown conn.
    """
    known = list_connections(events)
    if conn not in known:
        shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        raise ValueError(f"unknown connection {conn!r}; the trace has: {shown or 'no connections'}")
    conn_events = sorted((e for e in events if e.get("conn") == conn), key=lambda e: e.get("t", 0.0))
    markers = sorted(
        (e for e in events if e.get("kind") in MARKER_STYLES and e.get("conn", conn) == conn),
        key=lambda e: e.get("t", 0.0),
    )
    times = [e["t"] for e in conn_events + markers if "t" in e]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    if t1 <= t0:
        t1 = t0 + 1e-6

    segments = [e for e in conn_events if e.get("kind") == "segment"]
    outs = [e for e in segments if e.get("dir") == "out"]
    ins = [e for e in segments if e.get("dir") == "in"]
    base: int | None = outs[0]["seq"] if outs else None
    if base is None:
        acked = [e["ack"] for e in ins if "ack" in e and _has_flag(e, 0x10)]
        base = acked[0] if acked else 0

    fig = Figure(figsize=(11, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    legend: list[Any] = []

    # Owner shading.
    colours: dict[str, str] = {}
    for start, end, owner in _owner_spans(conn_events, t0, t1):
        if owner not in colours:
            colours[owner] = (
                _HOST_COLOUR
                if owner == "host"
                else _TARGET_COLOURS[sum(1 for o in colours if o != "host") % len(_TARGET_COLOURS)]
            )
            legend.append(Patch(facecolor=colours[owner], alpha=0.25, label=f"owner: {owner}"))
        ax.axvspan(start, end, color=colours[owner], alpha=0.25, linewidth=0)

    # Sent data: a vertical bar per segment from its first to its last sequence number; retransmissions in red.
    new_x: list[float] = []
    new_lo: list[int] = []
    new_hi: list[int] = []
    re_x: list[float] = []
    re_lo: list[int] = []
    re_hi: list[int] = []
    highest: int | None = None
    for e in outs:
        seg_len = int(e.get("len", 0)) + _has_flag(e, 0x02) + _has_flag(e, 0x01)
        if seg_len <= 0:
            continue  # pure ACKs occupy no sequence space
        lo = _rel(int(e["seq"]), base)
        hi = lo + seg_len
        if highest is not None and lo < highest:
            re_x.append(e["t"])
            re_lo.append(lo)
            re_hi.append(hi)
        else:
            new_x.append(e["t"])
            new_lo.append(lo)
            new_hi.append(hi)
        highest = hi if highest is None else max(highest, hi)
    if new_x:
        ax.vlines(new_x, new_lo, new_hi, colors="tab:blue", linewidth=1.5)
        ax.plot(new_x, new_hi, linestyle="none", marker="_", color="tab:blue", markersize=4)
        legend.append(Line2D([], [], color="tab:blue", label="sent (seq .. seq+len)"))
    if re_x:
        ax.vlines(re_x, re_lo, re_hi, colors="tab:red", linewidth=1.5)
        legend.append(Line2D([], [], color="tab:red", label="retransmitted"))

    # Received cumulative ACKs as a step line.
    ack_t, ack_v = _ack_steps(ins, base)
    if ack_t:
        ax.step(ack_t, ack_v, where="post", color="tab:green", linewidth=1)
        legend.append(Line2D([], [], color="tab:green", label="ACK received"))

    # Lifecycle markers.
    labelled: set[str] = set()
    for e in markers:
        kind = e["kind"]
        colour, style = MARKER_STYLES[kind]
        ax.axvline(e.get("t", t0), color=colour, linestyle=style, linewidth=1.2)
        if kind not in labelled:
            labelled.add(kind)
            legend.append(Line2D([], [], color=colour, linestyle=style, label=kind))

    ax.set_xlim(t0, t1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("sequence number (relative)")
    ax.set_title(title if title is not None else f"time-sequence: {conn}")
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(handles=legend, loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
