"""What a NIC is plugged into: one end of a link that carries whole Ethernet frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

FrameReceiver = Callable[[bytes], None]
LinkListener = Callable[[bool], None]


class LinkPort(Protocol):
    """One end of a link.  The simulator, TAP and AF_PACKET links all provide this."""

    name: str

    @property
    def up(self) -> bool: ...

    def transmit(self, frame: bytes) -> None:
        """Put one Ethernet frame (no FCS) on the link; dropped silently while the link is down."""

    def set_receiver(self, receiver: FrameReceiver) -> None:
        """Frames arriving from the other end are passed to `receiver`."""

    def set_link_listener(self, listener: LinkListener) -> None:
        """`listener(up)` is called whenever the carrier goes down or up."""
