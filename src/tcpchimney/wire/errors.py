"""The one exception every decoder raises: a malformed or policy-rejected packet, named by a short reason."""

from __future__ import annotations


class DecodeError(Exception):
    """A packet could not be decoded.  ``reason`` is a short kebab-case key (e.g. ``"ipv4-bad-checksum"``)
    suitable for a drop counter; ``detail`` is free text for humans."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
