"""The control server: JSON lines on a Unix socket, carried out on a running host stack.

``StackControl`` turns requests into calls on the documented APIs only (``HostStack.connections / offload /
terminate / stats``, ``host.chimney.stats``, SoftToe ``request_retrieve / request_upload_all / pause / resume /
set_link / connections / stats``), so tests drive it with small fakes.  ``ControlServer`` is the socket around it.
Everything runs on the event loop thread that runs the stack: the stack's methods are non-blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tcpchimney.control.protocol import (
    MAX_LINE,
    OPS,
    ControlError,
    decode_request,
    encode,
    error,
    ok,
    parse_bool,
    parse_reason,
    to_jsonable,
)
from tcpchimney.services import ServiceRegistry


def _fmt_addr(ip: Any, port: Any) -> str:
    return f"{ip}:{port}"


class StackControl:
    """Carries out control operations on ``host`` and its NICs.

    ``nics`` maps target id -> NIC in the order users number them (index 0, 1, ...).  ``links`` (optional) maps a
    NIC name to its real link, whose ``stats`` are reported too.  ``info`` is returned by the ``info`` op.
    """

    def __init__(
        self,
        host: Any,
        nics: Mapping[int, Any],
        registry: ServiceRegistry | None = None,
        *,
        links: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        team: Any = None,
        member_link: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.host = host
        # A NIC team (``TeamTarget``): ``members`` / ``member`` ops.  ``member_link(index, up)`` takes a member's
        # link down/up at link level (so LACP and the partner see it); without it the team's fail/restore is used.
        self.team = team
        self.member_link = member_link
        self.nics: list[tuple[int, Any]] = list(nics.items())
        self.registry = registry
        self.links = dict(links or {})
        self.info = dict(info or {})
        self._ids: dict[Any, int] = {}  # socket object -> id shown by ``list`` (stable while it lives)
        self._next_id = 1
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": lambda a: {"pong": True},
            "ops": lambda a: {"ops": list(OPS)},
            "info": lambda a: {"info": self.info},
            "list": self.op_list,
            "retrieve": self.op_retrieve,
            "upload_all": self.op_upload_all,
            "pause": self.op_pause,
            "resume": self.op_resume,
            "terminate": self.op_terminate,
            "offload": self.op_offload,
            "link": self.op_link,
            "stats": self.op_stats,
            "results": self.op_results,
        }
        if team is not None:
            self._ops["members"] = self.op_members
            self._ops["member"] = self.op_member
            self._ops["ops"] = lambda a: {"ops": [*OPS, *TEAM_OPS]}

    # -- dispatch ----------------------------------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        fn = self._ops.get(op) if isinstance(op, str) else None
        if fn is None:
            return error(f"unknown op {op!r} (known: {', '.join(OPS)})")
        try:
            return ok(**fn(request))
        except ControlError as exc:
            return error(str(exc))
        except Exception as exc:  # a stack refusal (RetrieveForbidden, OSError...) is an answer, not a crash
            return error(f"{op}: {type(exc).__name__}: {exc}")

    # -- connections ---------------------------------------------------------------------------------------------
    def _sockets(self) -> list[tuple[int, Any]]:
        socks = list(self.host.connections)
        ids: dict[Any, int] = {}
        for s in socks:
            cid = self._ids.get(s)
            if cid is None:
                cid = self._next_id
                self._next_id += 1
            ids[s] = cid
        self._ids = ids  # forget connections that are gone
        return sorted(((cid, s) for s, cid in ids.items()), key=lambda x: x[0])

    def _resolve(self, args: dict[str, Any]) -> tuple[int, Any]:
        ref = args.get("conn", args.get("id"))
        if ref is None:
            raise ControlError('missing "conn" (a connection id from "list")')
        socks = self._sockets()
        if _is_number(ref):
            want = int(ref)
            for cid, s in socks:
                if cid == want:
                    return cid, s
        elif isinstance(ref, str):
            for cid, s in socks:
                if _label(s) == ref.strip():
                    return cid, s
        raise ControlError(f"unknown connection {ref!r}")

    def _nic_conns(self) -> dict[int, tuple[int, Any, Any]]:
        """id(handle) -> (nic index, nic, info) for every connection some NIC runs."""
        out: dict[int, tuple[int, Any, Any]] = {}
        for i, (_tid, nic) in enumerate(self.nics):
            for info in nic.connections():
                out[id(info.handle)] = (i, nic, info)
        return out

    def _find_on_nic(self, sock: Any) -> tuple[int, Any, Any] | None:
        conn = getattr(sock, "connection", None)
        key = tuple(sock.key)
        for i, (_tid, nic) in enumerate(self.nics):
            for info in nic.connections():
                if conn is not None and info.handle is conn:
                    return i, nic, info
                if (info.local_ip, info.local_port, info.remote_ip, info.remote_port) == key:
                    return i, nic, info
        return None

    def _row(self, cid: int, s: Any, on_nic: dict[int, tuple[int, Any, Any]]) -> dict[str, Any]:
        lip, lport, rip, rport = s.key
        conn = getattr(s, "connection", None)
        state = s.state
        row: dict[str, Any] = {
            "id": cid,
            "local": _fmt_addr(lip, lport),
            "remote": _fmt_addr(rip, rport),
            "key": [lip, lport, rip, rport],
            "state": getattr(state, "name", str(state)),
            "owner": s.owner,
            "mode": getattr(conn, "mode_name", None),
            "bytes_written": s.bytes_written,
            "bytes_read": s.bytes_read,
        }
        hit = on_nic.get(id(conn)) if conn is not None else None
        if hit is not None:
            i, _nic, info = hit
            row["nic"] = i
            row["nic_state"] = getattr(info.state, "name", str(info.state))
            row["nic_bytes_in"] = info.bytes_in
            row["nic_bytes_out"] = info.bytes_out
        return row

    def op_list(self, args: dict[str, Any]) -> dict[str, Any]:
        on_nic = self._nic_conns()
        return {"connections": [self._row(cid, s, on_nic) for cid, s in self._sockets()]}

    def op_retrieve(self, args: dict[str, Any]) -> dict[str, Any]:
        cid, sock = self._resolve(args)
        reason = parse_reason(args.get("reason"))
        hit = self._find_on_nic(sock)
        if hit is None:
            raise ControlError(f"connection {cid} is not offloaded (owner {sock.owner})")
        i, nic, info = hit
        nic.request_retrieve(info.handle, reason)
        return {"conn": cid, "nic": i, "reason": reason.name}

    def op_terminate(self, args: dict[str, Any]) -> dict[str, Any]:
        cid, sock = self._resolve(args)
        reason = str(args.get("reason") or "ctl")
        self.host.terminate(sock, reason)
        return {"conn": cid, "owner": sock.owner}

    def op_offload(self, args: dict[str, Any]) -> dict[str, Any]:
        cid, sock = self._resolve(args)
        target_id = None
        if args.get("nic") is not None:
            index = self._nic_indexes(args.get("nic"))[0]
            target_id = self.nics[index][0]
        self.host.offload(sock, target_id)
        return {"conn": cid, "owner": sock.owner}

    # -- NICs ----------------------------------------------------------------------------------------------------
    def _nic_indexes(self, ref: Any) -> list[int]:
        """Index of the NIC ``ref`` names (index or name); every NIC when ``ref`` is None."""
        if ref is None:
            if not self.nics:
                raise ControlError("no NICs")
            return list(range(len(self.nics)))
        if _is_number(ref):
            i = int(ref)
            if 0 <= i < len(self.nics):
                return [i]
        elif isinstance(ref, str):
            for i, (_tid, nic) in enumerate(self.nics):
                if getattr(nic, "name", None) == ref:
                    return [i]
        raise ControlError(f"unknown nic {ref!r} ({len(self.nics)} NICs: {', '.join(self._nic_names())})")

    def _nic_names(self) -> list[str]:
        return [str(getattr(nic, "name", i)) for i, (_tid, nic) in enumerate(self.nics)]

    def _each_nic(self, args: dict[str, Any], fn: Callable[[Any], None]) -> dict[str, Any]:
        done = []
        for i in self._nic_indexes(args.get("nic")):
            fn(self.nics[i][1])
            done.append(i)
        return {"nics": done}

    def op_upload_all(self, args: dict[str, Any]) -> dict[str, Any]:
        resume_after = args.get("resume_after", 0.0)
        if resume_after is not None:
            if isinstance(resume_after, bool) or not isinstance(resume_after, int | float | str):
                raise ControlError(f"bad resume_after {resume_after!r}")
            try:
                resume_after = float(resume_after)
            except ValueError as exc:
                raise ControlError(f"bad resume_after {resume_after!r}") from exc
            if resume_after < 0:
                raise ControlError("resume_after must be >= 0 (or null for no automatic resume)")
        out = self._each_nic(args, lambda nic: nic.request_upload_all(resume_after))
        out["resume_after"] = resume_after
        return out

    def op_pause(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._each_nic(args, lambda nic: nic.pause())

    def op_resume(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._each_nic(args, lambda nic: nic.resume())

    def op_link(self, args: dict[str, Any]) -> dict[str, Any]:
        if "up" not in args and "state" not in args:
            raise ControlError('missing "up" (up/down)')
        up = parse_bool(args.get("up", args.get("state")), "up")
        out = self._each_nic(args, lambda nic: nic.set_link(up))
        out["up"] = up
        return out

    # -- team ----------------------------------------------------------------------------------------------------
    def _team(self) -> Any:
        if self.team is None:
            raise ControlError("this stack runs no NIC team (start it with `chimney serve --team N`)")
        return self.team

    def op_members(self, args: dict[str, Any]) -> dict[str, Any]:
        team = self._team()
        links = [getattr(m.nic, "_port", None) for m in team.members]
        rows = [_team_member_row(st, links[i]) for i, st in enumerate(team.member_states())]
        return {
            "team": getattr(team, "name", "team"),
            "members": rows,
            "active": list(team.active_members()),
            "uploading": bool(team.uploading),
            "offloaded": int(team.offloaded_connections()),
            "failovers": [r.as_dict() for r in team.failovers.records],
        }

    def op_member(self, args: dict[str, Any]) -> dict[str, Any]:
        team = self._team()
        ref: Any = args.get("member", args.get("index"))
        if not _is_number(ref) or not 0 <= int(ref) < len(team.members):
            raise ControlError(f"bad member {ref!r} (0..{len(team.members) - 1})")
        index = int(ref)
        if "up" not in args and "state" not in args:
            raise ControlError('missing "up" (up/down)')
        up = parse_bool(args.get("up", args.get("state")), "up")
        if self.member_link is not None:
            self.member_link(index, up)
            how = "link"
        elif up:
            team.restore_member(index)
            how = "team"
        else:
            team.fail_member(index)
            how = "team"
        return {"member": index, "up": up, "via": how, "active": list(team.active_members())}

    # -- statistics ----------------------------------------------------------------------------------------------
    def op_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        chimney = getattr(self.host, "chimney", None)
        nics: dict[str, Any] = {}
        for i, (tid, nic) in enumerate(self.nics):
            entry: dict[str, Any] = {"index": i, "target_id": tid}
            for attr in ("paused", "upload_all_pending", "buffered_bytes"):
                if hasattr(nic, attr):
                    entry[attr] = getattr(nic, attr)
            entry["connections"] = len(nic.connections())
            entry["stats"] = to_jsonable(getattr(nic, "stats", None))
            nics[str(getattr(nic, "name", i))] = entry
        return {
            "host": to_jsonable(self.host.stats),
            "chimney": to_jsonable(getattr(chimney, "stats", None)),
            "nics": nics,
            "links": {name: to_jsonable(getattr(link, "stats", None)) for name, link in self.links.items()},
            "services": self.registry.summary() if self.registry is not None else None,
        }

    def op_results(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.registry is None:
            return {"results": []}
        service = args.get("service")
        rows = [r.as_dict() for r in self.registry.results(service if isinstance(service, str) else None)]
        limit = args.get("limit")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            rows = rows[-limit:] if limit else []
        return {"results": rows}


TEAM_OPS = ("members", "member")


def _team_member_row(state: Mapping[str, Any], link: Any) -> dict[str, Any]:
    lacp = state.get("lacp") or {}
    row: dict[str, Any] = {
        "index": state.get("index"),
        "name": state.get("name"),
        "carrier": state.get("carrier"),
        "link_up": bool(getattr(link, "up", state.get("carrier"))) if link is not None else state.get("carrier"),
        "active": state.get("active"),
        "admin_down": state.get("admin_down"),
        "connections": state.get("connections"),
        "failures": state.get("failures"),
        "last_loss": state.get("last_loss"),
        "lacp": None,
    }
    if lacp:
        row["lacp"] = {
            k: lacp.get(k) for k in ("selected", "in_sync", "collecting", "distributing", "rx_state", "mux_state")
        }
        row["partner"] = lacp.get("partner")
    return row


def _is_number(ref: Any) -> bool:
    return (isinstance(ref, int) and not isinstance(ref, bool)) or (isinstance(ref, str) and ref.strip().isdigit())


def _label(sock: Any) -> str:
    lip, lport, rip, rport = sock.key
    return f"{lip}:{lport}>{rip}:{rport}"


Handler = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]


class ControlServer:
    """Serves ``handler(request) -> response`` as JSON lines on the Unix socket ``path``.

    ``start()`` refuses to replace a path that is not a socket, and replaces a stale socket file (nobody
    listening).  ``close()`` stops listening, drops clients and removes the socket file.
    """

    def __init__(self, handler: Handler, path: str, mode: int = 0o660) -> None:
        self.handler = handler
        self.path = path
        self.mode = mode
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.requests = 0

    async def start(self) -> None:
        _prepare_socket_path(self.path)
        self._server = await asyncio.start_unix_server(self._client, path=self.path, limit=MAX_LINE)
        with contextlib.suppress(OSError):
            os.chmod(self.path, self.mode)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in list(self._clients):
            w.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE: answer, then drop the client (the stream is unusable)
                    writer.write(encode(error(f"request longer than {MAX_LINE} bytes")))
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(encode(await self._answer(line)))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        self.requests += 1
        try:
            request = decode_request(line)
            response = self.handler(request)
            if asyncio.iscoroutine(response) or isinstance(response, Awaitable):
                response = await response
            return dict(response)
        except ControlError as exc:
            return error(str(exc))
        except Exception as exc:
            return error(f"internal error: {type(exc).__name__}: {exc}")


def _prepare_socket_path(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: nobody is listening
        return
    finally:
        probe.close()
    raise FileExistsError(f"{path}: another server is listening there")


def default_socket_path(name: str = "chimney", run_dir: str = "/run/tcpchimney") -> str:
    """``/run/tcpchimney/<name>.sock`` when that directory can be used, else ``./<name>.sock``."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        if os.access(run_dir, os.W_OK | os.X_OK):
            return os.path.join(run_dir, f"{name}.sock")
    except OSError:
        pass
    return os.path.abspath(f"{name}.sock")
