"""Tracing sink shared by every layer: ``tracer.emit(kind, **fields)`` records one event at the scheduler's time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any


class Tracer:
    """Collects events in memory and optionally writes them as JSON lines."""

    def __init__(self, now: Callable[[], float], stream: IO[str] | None = None, keep: bool = True) -> None:
        self._now = now
        self._stream = stream
        self._keep = keep
        self.events: list[dict[str, Any]] = []
        self.enabled = True

    def emit(self, kind: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"t": round(self._now(), 9), "kind": kind, **fields}
        if self._keep:
            self.events.append(record)
        if self._stream is not None:
            self._stream.write(json.dumps(record, default=_default) + "\n")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.flush()


class NullTracer(Tracer):
    """Records nothing (the hot path checks ``enabled`` before building fields)."""

    def __init__(self) -> None:
        super().__init__(lambda: 0.0, None, keep=False)
        self.enabled = False

    def emit(self, kind: str, **fields: Any) -> None:
        return


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "name"):
        return value.name
    return str(value)
