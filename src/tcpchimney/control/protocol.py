"""The control protocol: one JSON object per line over a Unix stream socket.

Request ``{"op": "<name>", ...arguments}``; response ``{"ok": true, ...}`` or ``{"ok": false, "error": "<text>"}``.
A connection may carry any number of requests; each gets exactly one response line, in order.

Operations (arguments in brackets are optional):

=============  =========================================================================================
``ping``       -> ``{"pong": true}``
``ops``        -> ``{"ops": [...]}``
``info``       -> what the server reports about itself (name, namespace, addresses, services)
``list``       -> ``{"connections": [{id, local, remote, state, owner, mode, bytes_written, bytes_read,...}]}``
``retrieve``   ``conn``, [``reason``: name or number, default UPLOAD_REQUESTED] -> the NIC requests retrieval
``upload_all`` [``nic``], [``resume_after``: seconds or null for no automatic resume, default 0]
``pause``      [``nic``] (default every NIC)
``resume``     [``nic``]
``terminate``  ``conn``, [``reason``] -> host-initiated terminate offload (upload)
``offload``    ``conn``, [``nic``] -> ask the host to offload now
``link``       ``up`` (bool or "up"/"down"), [``nic``]
``stats``      -> ``{"host", "chimney", "nics", "links", "services"}``
``results``    [``service``], [``limit``] -> per-connection service results
=============  =========================================================================================

``conn`` is the integer id shown by ``list`` (or the ``local>remote`` label); ``nic`` is an index (0, 1, ...) or
a NIC name.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from typing import Any

from tcpchimney.chimney.constants import UploadReason

MAX_LINE = 1 << 20
OPS = (
    "ping",
    "ops",
    "info",
    "list",
    "retrieve",
    "upload_all",
    "pause",
    "resume",
    "terminate",
    "offload",
    "link",
    "stats",
    "results",
)


class ControlError(Exception):
    """A request that cannot be carried out; its text is the response's ``error``."""


def encode(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(to_jsonable(obj), separators=(",", ":"), allow_nan=False) + "\n").encode()


def decode_request(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"bad JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ControlError("a request must be a JSON object")
    op = obj.get("op")
    if not isinstance(op, str):
        raise ControlError('a request needs "op" (a string)')
    return obj


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values from stats objects: enums by name, dataclasses as dicts, bytes as hex, inf as a string."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj.name if isinstance(obj, enum.Enum) else obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray):
        return obj.hex()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        as_dict = getattr(obj, "as_dict", None)
        if callable(as_dict):
            return to_jsonable(as_dict())
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    as_dict = getattr(obj, "as_dict", None)
    if callable(as_dict):
        return to_jsonable(as_dict())
    return str(obj)


def parse_reason(value: Any) -> UploadReason:
    """An ``UploadReason`` from a number, a name (``upload_requested``, ``UploadRequested``) or None (default)."""
    if value is None:
        return UploadReason.UPLOAD_REQUESTED
    if isinstance(value, bool):
        raise ControlError(f"bad reason {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            return UploadReason(int(value))
        except ValueError as exc:
            raise ControlError(f"unknown reason number {value}") from exc
    if isinstance(value, str):
        key = value.strip().replace("-", "").replace("_", "").replace(" ", "").lower()
        for r in UploadReason:
            if r.name.replace("_", "").lower() == key:
                return r
        if key == "nobufferproposting":
            return UploadReason.NO_BUFFER_PREPOSTING
    names = ", ".join(r.name.lower() for r in UploadReason)
    raise ControlError(f"unknown reason {value!r} (one of: {names}, or 1-{len(UploadReason)})")


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("up", "on", "true", "1", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("down", "off", "false", "0", "no"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ControlError(f'bad value for "{name}": {value!r} (expected up/down or true/false)')
