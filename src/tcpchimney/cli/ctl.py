"""``chimney ctl [--socket PATH] [--json] <op> [args]``: talk to a running ``chimney serve``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tcpchimney.control.client import ControlClient, find_socket
from tcpchimney.control.protocol import ControlError


def _nic(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help="control socket (default $CHIMNEY_SOCKET, /run/tcpchimney/*.sock, ./chimney.sock)")
    p.add_argument("--json", action="store_true", help="print the JSON response")
    p.add_argument("--timeout", type=float, default=10.0)
    ops = p.add_subparsers(dest="op", required=True, metavar="op")
    ops.add_parser("list", help="connections: id, TCP state, owner, bytes, 4-tuple")
    ops.add_parser("stats", help="host, chimney, NIC, link and service statistics")
    res = ops.add_parser("results", help="per-connection results of the services (bytes, SHA-256)")
    res.add_argument("--service")
    res.add_argument("--limit", type=int)
    ops.add_parser("info", help="what the server runs (namespace, addresses, services)")
    ops.add_parser("ping")
    r = ops.add_parser("retrieve", help="make the NIC request the retrieval (upload) of a connection")
    r.add_argument("conn", help="connection id from `list` (or its local>remote label)")
    r.add_argument("reason", nargs="?", help="upload reason name or number (default upload_requested)")
    t = ops.add_parser("terminate", help="host-initiated terminate offload (upload) of a connection")
    t.add_argument("conn")
    t.add_argument("--reason", default="ctl")
    o = ops.add_parser("offload", help="ask the host to offload a connection now")
    o.add_argument("conn")
    o.add_argument("--nic", type=_nic)
    u = ops.add_parser("upload_all", aliases=["upload-all"], help="the NIC indicates UPLOAD_ALL (then RESUME)")
    u.add_argument("--nic", type=_nic, help="NIC index or name (default every NIC)")
    g = u.add_mutually_exclusive_group()
    g.add_argument("--resume-after", type=float, default=0.0, help="seconds after the last upload (default 0)")
    g.add_argument("--no-resume", action="store_true", help="stay paused until `resume`")
    for name, text in (("pause", "OFFLOAD_PAUSE: offload nothing new"), ("resume", "OFFLOAD_RESUME")):
        x = ops.add_parser(name, help=text)
        x.add_argument("--nic", type=_nic)
    lk = ops.add_parser("link", help="emulated link state of a NIC")
    lk.add_argument("state", choices=["up", "down"])
    lk.add_argument("--nic", type=_nic)
    ops.add_parser("members", help="NIC team members: carrier, active, LACP flags, partner, connections")
    mb = ops.add_parser("member", help="take a NIC team member's link down or up (LACP and the partner see it)")
    mb.add_argument("index", type=int, help="member index (from `members`)")
    mb.add_argument("state", choices=["up", "down"])


def request_from_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    op = "upload_all" if args.op == "upload-all" else args.op
    a: dict[str, Any] = {}
    if op in ("retrieve", "terminate", "offload"):
        a["conn"] = int(args.conn) if args.conn.isdigit() else args.conn
    if op == "retrieve" and args.reason is not None:
        a["reason"] = int(args.reason) if args.reason.isdigit() else args.reason
    if op == "terminate":
        a["reason"] = args.reason
    if op in ("offload", "upload_all", "pause", "resume", "link") and args.nic is not None:
        a["nic"] = args.nic
    if op == "upload_all":
        a["resume_after"] = None if args.no_resume else args.resume_after
    if op == "link":
        a["up"] = args.state == "up"
    if op == "member":
        a["member"] = args.index
        a["up"] = args.state == "up"
    if op == "results":
        if args.service:
            a["service"] = args.service
        if args.limit is not None:
            a["limit"] = args.limit
    return op, a


def cmd_ctl(args: argparse.Namespace) -> int:
    op, req = request_from_args(args)
    path = find_socket(args.socket)
    try:
        with ControlClient(path, timeout=args.timeout) as client:
            response = client.request(op, **req)
    except (OSError, ControlError, ValueError) as exc:
        print(f"chimney ctl: {path}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(response, indent=2, sort_keys=True))
    elif not response.get("ok"):
        print(f"error: {response.get('error')}", file=sys.stderr)
    else:
        print(render(op, response))
    return 0 if response.get("ok") else 1


# ---------------------------------------------------------------------------------------------- rendering
def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)] if rows else []
    if not rows:
        widths = [len(h) for h in header]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        if not obj:
            return [(prefix, "{}")] if prefix else []
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        return [kv for i, x in enumerate(obj) for kv in _flatten(x, f"{prefix}[{i}]")]
    return [(prefix, obj)]


def render(op: str, response: dict[str, Any]) -> str:
    if op == "list":
        conns = response["connections"]
        rows = [
            [
                str(c["id"]),
                c["state"],
                c["owner"],
                str(c.get("mode") or "-"),
                c["local"],
                c["remote"],
                str(c["bytes_written"]),
                str(c["bytes_read"]),
            ]
            for c in conns
        ]
        head = ["ID", "STATE", "OWNER", "MODE", "LOCAL", "REMOTE", "WRITTEN", "READ"]
        return table(rows, head) + f"\n({len(conns)} connections)"
    if op == "results":
        res = response["results"]
        rows = [
            [
                str(r["id"]),
                r["service"],
                r["peer"],
                str(r["bytes_in"]),
                str(r["bytes_out"]),
                (r.get("sha256_in") or r.get("sha256_out") or "-")[:16],
                str(r.get("requests") or "-"),
                r["status"],
            ]
            for r in res
        ]
        return table(rows, ["ID", "SERVICE", "PEER", "IN", "OUT", "SHA256", "REQS", "STATUS"])
    if op == "stats":
        parts = []
        for section in ("host", "chimney", "nics", "links", "services"):
            value = response.get(section)
            if value is None:
                continue
            parts.append(f"[{section}]")
            parts.extend(f"  {k} = {v}" for k, v in _flatten(value))
        return "\n".join(parts)
    if op == "members":
        return render_members(response)
    if op == "info":
        return "\n".join(f"{k} = {v}" for k, v in _flatten(response["info"]))
    body = {k: v for k, v in response.items() if k != "ok"}
    return "ok" + ("".join(f" {k}={v}" for k, v in body.items()) if body else "")


def _flags(lacp: dict[str, Any] | None) -> str:
    if not lacp:
        return "-"
    names = (("selected", "SEL"), ("in_sync", "SYNC"), ("collecting", "COL"), ("distributing", "DIST"))
    return ",".join(short for key, short in names if lacp.get(key)) or "none"


def render_members(response: dict[str, Any]) -> str:
    rows = []
    for m in response["members"]:
        partner = m.get("partner") or {}
        rows.append(
            [
                str(m["index"]),
                str(m["name"]),
                "up" if m.get("carrier") else "DOWN",
                "yes" if m.get("active") else "no",
                _flags(m.get("lacp")),
                f"{partner.get('system', '-')}/key {partner.get('key', '-')}/port {partner.get('port', '-')}"
                if partner
                else "-",
                str(m.get("connections")),
                str(m.get("last_loss") or "-"),
            ]
        )
    head = ["#", "NIC", "CARRIER", "ACTIVE", "LACP", "PARTNER", "CONNS", "LAST LOSS"]
    tail = (
        f"team {response.get('team')}: active {response.get('active')}, offloaded {response.get('offloaded')}, "
        f"{'UPLOAD_ALL in progress, ' if response.get('uploading') else ''}"
        f"{len(response.get('failovers') or [])} failovers"
    )
    return table(rows, head) + "\n" + tail
