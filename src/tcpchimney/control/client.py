"""A blocking client for the control socket (used by ``chimney ctl`` and by scripts)."""

from __future__ import annotations

import glob
import json
import os
import socket
from typing import Any

from tcpchimney.control.protocol import MAX_LINE, ControlError, encode

ENV_SOCKET = "CHIMNEY_SOCKET"
RUN_DIR = "/run/tcpchimney"


class ControlClient:
    """One connection to a control socket; ``request`` returns the response dict, ``call`` raises on errors."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rb")

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        self._sock.sendall(encode({"op": op, **args}))
        line = self._file.readline(MAX_LINE + 1)
        if not line:
            raise ConnectionError("the control server closed the connection")
        response = json.loads(line)
        if not isinstance(response, dict) or "ok" not in response:
            raise ControlError(f"malformed response: {line[:200]!r}")
        return response

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        response = self.request(op, **args)
        if not response["ok"]:
            raise ControlError(str(response.get("error")))
        return response

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_socket(explicit: str | None = None, run_dir: str = RUN_DIR) -> str:
    """The socket to talk to: ``explicit``, ``$CHIMNEY_SOCKET``, the only/``chimney`` socket in ``run_dir``, or
    ``./chimney.sock``."""
    if explicit:
        return explicit
    env = os.environ.get(ENV_SOCKET)
    if env:
        return env
    preferred = os.path.join(run_dir, "chimney.sock")
    if os.path.exists(preferred):
        return preferred
    found = sorted(glob.glob(os.path.join(run_dir, "*.sock")))
    if len(found) == 1:
        return found[0]
    return os.path.abspath("chimney.sock")
