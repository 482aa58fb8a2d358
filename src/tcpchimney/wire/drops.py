"""Counts dropped packets by reason so receive paths can discard silently yet observably."""

from __future__ import annotations


class DropCounter:
    """A tally of drops keyed by reason string (e.g. ``"tcp-bad-checksum"``)."""

    __slots__ = ("_counts", "_total")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._total = 0

    def count(self, reason: str) -> None:
        counts = self._counts
        counts[reason] = counts.get(reason, 0) + 1
        self._total += 1

    @property
    def total(self) -> int:
        return self._total

    def as_dict(self) -> dict[str, int]:
        """A copy of the per-reason counts (only reasons seen at least once)."""
        return dict(self._counts)

    def __getitem__(self, reason: str) -> int:
        return self._counts.get(reason, 0)

    def __repr__(self) -> str:
        return f"DropCounter(total={self._total}, {self._counts!r})"
