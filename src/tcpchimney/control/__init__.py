"""Control of a running ``chimney serve``: JSON lines over a Unix socket (see ``protocol.py``)."""

from tcpchimney.control.client import ControlClient, find_socket
from tcpchimney.control.protocol import OPS, ControlError
from tcpchimney.control.server import ControlServer, StackControl, default_socket_path

__all__ = [
    "OPS",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "StackControl",
    "default_socket_path",
    "find_socket",
]
