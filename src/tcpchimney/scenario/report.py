"""Reporting pieces shared by the demos: a status line and the host counters every result carries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Progress:
    """One status line, rewritten in place on a terminal, printed once a second otherwise."""

    def __init__(self, write: Callable[[str], None] | None, tty: bool) -> None:
        self._write = write
        self._tty = tty
        self._last = 0.0

    def show(self, text: str, now: float) -> None:
        if self._write is None:
            return
        if self._tty:
            self._write("\r\x1b[2K" + text)
        elif now - self._last >= 1.0:
            self._last = now
            self._write(text + "\n")

    def done(self) -> None:
        if self._write is not None and self._tty:
            self._write("\n")


def host_counters(stats: dict[str, Any]) -> dict[str, Any]:
    """Offloads, terminations (by reason and by requester), UPLOAD_ALL cycles and resumes from ``HostStack.stats``."""
    terminations = stats.get("terminations", {})
    return {
        "offloads": stats.get("offloads", 0),
        "terminations": {
            "by_reason": dict(terminations.get("by_reason", {})),
            "by_requester": dict(terminations.get("by_requester", {})),
        },
        "upload_all_cycles": stats.get("upload_alls", 0),
        "resumes": stats.get("resumes", 0),
    }
