"""A small HTTP/1.1 file server: GET and HEAD of files under a root directory, keep-alive, Content-Length.

* ``/bytes/N`` is virtual: N pseudo-random bytes (``pseudo_random_chunks(N, seed)``), so large downloads need no
  files; the SHA-256 of the body is sent in ``X-Content-SHA256`` and registered.
* No directory traversal: the decoded path may not contain ``..`` segments, NUL or backslashes, and the resolved
  file (after symlinks) must lie inside the root.  A directory serves its ``index.html`` if there is one.
* HTTP/1.1 keeps the connection open unless the client sends ``Connection: close``; HTTP/1.0 closes unless it
  asks for keep-alive.  Request bodies (Content-Length) are read and ignored; chunked request bodies are refused.
* Range is not supported (the whole entity is always sent, 200).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import mimetypes
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpchimney.services import DEFAULT_SEED, ServiceRegistry, close_writer, pseudo_random_chunks

MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 1 << 20  # ignored request bodies larger than this close the connection instead
MAX_VIRTUAL = 1 << 40
IDLE_TIMEOUT = 60.0
FILE_CHUNK = 256 * 1024
SERVER = "tcpchimney"

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    def __init__(self, status: int, detail: str = "", close: bool = False) -> None:
        super().__init__(detail or REASONS.get(status, ""))
        self.status = status
        self.close = close


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


async def _read_line(reader: Any) -> bytes:
    try:
        line: bytes = await reader.readline()
    except ValueError as exc:  # asyncio's LimitOverrunError / line longer than the stream limit
        raise HttpError(431, "line too long", close=True) from exc
    if len(line) > MAX_LINE:
        raise HttpError(431, "line too long", close=True)
    return line


async def read_request(reader: Any, idle_timeout: float | None = IDLE_TIMEOUT) -> Request | None:
    """The next request's head, or None at a clean EOF (or idle timeout) between requests."""
    while True:
        try:
            line = await asyncio.wait_for(_read_line(reader), idle_timeout)
        except TimeoutError:
            return None
        if not line:
            return None
        if line.strip():
            break  # RFC 9112 2.2: ignore empty lines before a request line
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "malformed request line", close=True)
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise HttpError(505, close=True)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        version = "HTTP/1.1"
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = await _read_line(reader)
        if not raw:
            raise HttpError(400, "EOF inside the request head", close=True)
        text = raw.decode("latin-1").rstrip("\r\n")
        if not text:
            return Request(method, target, version, headers)
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line", close=True)
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise HttpError(431, "too many header lines", close=True)


async def _skip_body(reader: Any, req: Request) -> None:
    if "transfer-encoding" in req.headers:
        raise HttpError(501, "request bodies with Transfer-Encoding are not supported", close=True)
    length = req.headers.get("content-length")
    if length is None:
        return
    if not length.isdigit():
        raise HttpError(400, "bad Content-Length", close=True)
    n = int(length)
    if n > MAX_BODY:
        raise HttpError(413, close=True)
    if n:
        await reader.readexactly(n)


def resolve_path(root: Path, target: str) -> Path:
    """The file ``target`` (a request target) names under ``root``; HttpError 400/403/404 otherwise."""
    path = urllib.parse.urlsplit(target).path if not target.startswith("/") else target.split("?", 1)[0]
    path = path.split("#", 1)[0]
    try:
        decoded = urllib.parse.unquote(path, errors="strict") if "%" in path else path
    except UnicodeDecodeError as exc:
        raise HttpError(400, "bad percent-encoding") from exc
    if not decoded.startswith("/") or "\x00" in decoded or "\\" in decoded:
        raise HttpError(400, "bad path")
    segments = [s for s in decoded.split("/") if s]
    if any(s == ".." for s in segments):
        raise HttpError(403, "path leaves the root")
    root_real = root.resolve()
    candidate = root_real.joinpath(*segments) if segments else root_real
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        raise HttpError(404) from exc
    if real != root_real and root_real not in real.parents:
        raise HttpError(403, "path leaves the root")  # a symlink pointing outside
    if real.is_dir():
        index = real / "index.html"
        if not index.is_file():
            raise HttpError(404, "directory without index.html")
        real = index
    if not real.is_file():
        raise HttpError(404)
    if not os.access(real, os.R_OK):
        raise HttpError(403)
    return real


def virtual_bytes_count(target: str) -> int | None:
    """N for ``/bytes/N`` (None for any other path)."""
    path = target.split("?", 1)[0]
    if not path.startswith("/bytes/"):
        return None
    rest = path[len("/bytes/") :].rstrip("/")
    if not rest.isdigit() or len(rest) > 16:
        raise HttpError(400, "expected /bytes/<decimal count>")
    n = int(rest)
    if n > MAX_VIRTUAL:
        raise HttpError(400, f"at most {MAX_VIRTUAL} bytes")
    return n


def _head(status: int, headers: list[tuple[str, str]], keep_alive: bool, version: str = "HTTP/1.1") -> bytes:
    lines = [f"{version} {status} {REASONS.get(status, 'Unknown')}"]
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    lines.append(f"Server: {SERVER}")
    lines.extend(f"{k}: {v}" for k, v in headers)
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Conn:
    """One HTTP connection's state (the registry result and the options)."""

    def __init__(self, reader: Any, writer: Any, root: Path | None, seed: int, result: Any) -> None:
        self.reader = reader
        self.writer = writer
        self.root = root
        self.seed = seed
        self.result = result

    def _count_out(self, n: int) -> None:
        if self.result is not None:
            self.result.bytes_out += n

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self._count_out(len(data))
        await self.writer.drain()

    async def send_error(self, err: HttpError, keep_alive: bool, head_only: bool = False) -> None:
        body = f"{err.status} {REASONS.get(err.status, '')}: {err}\n".encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        if err.status == 405:
            headers.append(("Allow", "GET, HEAD"))
        await self.send(_head(err.status, headers, keep_alive) + (b"" if head_only else body))

    async def respond(self, req: Request, keep_alive: bool) -> None:
        head_only = req.method == "HEAD"
        n = virtual_bytes_count(req.target)
        if n is not None:
            headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))]
            if head_only:
                await self.send(_head(200, headers, keep_alive))
                return
            h = hashlib.sha256()
            await self.send(_head(200, headers, keep_alive))
            for block in pseudo_random_chunks(n, self.seed):
                h.update(block)
                await self.send(block)
            if self.result is not None:
                self.result.sha256_out = h.hexdigest()
            return
        if self.root is None:
            raise HttpError(404, "no document root")
        path = resolve_path(self.root, req.target)
        size = path.stat().st_size
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = [("Content-Type", ctype), ("Content-Length", str(size))]
        mtime = path.stat().st_mtime
        headers.append(("Last-Modified", email.utils.formatdate(mtime, usegmt=True)))
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise HttpError(403, "cannot open") from exc
        with fh:
            await self.send(_head(200, headers, keep_alive))
            if head_only:
                return
            left = size
            while left > 0:
                block = fh.read(min(FILE_CHUNK, left))
                if not block:
                    break
                left -= len(block)
                await self.send(block)
            if left:
                # The file shrank under us: the promised length cannot be met, so the connection must end.
                raise ConnectionAbortedError("file shrank while sending")


async def serve_http(
    reader: Any,
    writer: Any,
    *,
    root: str | os.PathLike[str] | None = None,
    registry: ServiceRegistry | None = None,
    seed: int = DEFAULT_SEED,
    idle_timeout: float | None = IDLE_TIMEOUT,
) -> None:
    result = registry.start("http", writer) if registry is not None else None
    conn = _Conn(reader, writer, Path(root) if root is not None else None, seed, result)
    error: BaseException | None = None
    try:
        while True:
            try:
                req = await read_request(reader, idle_timeout)
            except HttpError as err:
                await conn.send_error(err, keep_alive=False)
                break
            if req is None:
                break
            keep_alive = req.keep_alive
            try:
                await _skip_body(reader, req)  # first, so a refused request's body is not read as the next one
                if req.method not in ("GET", "HEAD"):
                    raise HttpError(405 if req.method.isalpha() and req.method.isupper() else 400)
                await conn.respond(req, keep_alive)
            except HttpError as err:
                keep_alive = keep_alive and not err.close
                await conn.send_error(err, keep_alive, head_only=req.method == "HEAD")
            if result is not None:
                result.requests += 1
                result.extra["last"] = f"{req.method} {req.target}"
            if not keep_alive:
                break
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        error = exc
    finally:
        await close_writer(writer)
        if result is not None and registry is not None:
            registry.finish(result, error)
