"""Throw-away network namespaces for the Linux peer of a real-wire link.

``PeerNamespace`` creates a uniquely named namespace (``<prefix><pid>x<hex>``) and removes it on ``__exit__``
(also when the body raises), at interpreter exit, and on SIGTERM/SIGINT.  A namespace left behind by a crashed run
is found by ``cleanup_stale(prefix)``: the pid in its name is no longer alive.

Processes and Python callables run inside the namespace through ``setns(2)`` in a forked child, so the calling
process never leaves its own namespace.  Needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import errno
import os
import pickle
import re
import secrets
import select
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as _pr_netns

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
DEFAULT_PREFIX = "tcpch"

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open on ``fd`` (only ever called in a forked child)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _name_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"(\d+)x([0-9a-f]+)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Remove namespaces named by ``PeerNamespace(prefix)`` whose creating process is gone; returns their names.

    Only exact matches of our naming scheme are touched, and never one whose owner pid is still running.
    """
    pattern = _name_pattern(prefix)
    removed: list[str] = []
    for name in list_namespaces():
        m = pattern.fullmatch(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            _pr_netns.remove(name)
            removed.append(name)
    return removed


# -- process-wide safety net: every live namespace is removed at exit or on SIGTERM/SIGINT ---------------------------
_live: dict[str, PeerNamespace] = {}
_live_lock = threading.RLock()  # re-entrant: the signal handler may interrupt a holder
_handlers_installed = False
_previous_handlers: dict[int, Any] = {}


def _cleanup_all() -> None:
    # Forked children (ours and pyroute2's) inherit atexit and signal handlers: only the creator cleans up.
    pid = os.getpid()
    with _live_lock:
        namespaces = [ns for ns in _live.values() if ns._owner_pid == pid]
    for ns in namespaces:
        with contextlib.suppress(Exception):
            ns.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _cleanup_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    # SIG_IGN: cleaned up, otherwise ignored as before


def _install_safety_net() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_cleanup_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still covers normal exits
    for signum in (signal.SIGTERM, signal.SIGINT):
        _previous_handlers[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)


class NamespaceCallError(RuntimeError):
    """A callable run with ``PeerNamespace.call`` raised; the message holds the child's traceback."""


class PeerNamespace:
    """A network namespace that exists for the lifetime of the object (use it as a context manager).

    ``disable_ipv6`` (default) turns IPv6 off for every interface in the namespace so the Linux peer does not chatter
    router solicitations and MLD reports onto our links.
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, disable_ipv6: bool = True) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,15}", prefix):
            raise ValueError(f"bad namespace prefix {prefix!r}")
        self.prefix = prefix
        self.name = f"{prefix}{os.getpid()}x{secrets.token_hex(4)}"
        self._closed = False
        self._owner_pid = os.getpid()
        self._children: list[subprocess.Popen[Any]] = []
        self._subnets = 0
        _install_safety_net()
        _pr_netns.create(self.name)
        with _live_lock:
            _live[self.name] = self
        try:
            # lo up: the kernel answers for its own addresses through it.
            _bring_lo_up(self.name)
            if disable_ipv6:
                self.call(_disable_ipv6)
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str:
        return os.path.join(NETNS_RUN_DIR, self.name)

    @property
    def exists(self) -> bool:
        return os.path.exists(self.path)

    def next_subnet(self) -> int:
        """A fresh third octet for a ``10.77.<n>.0/24`` link subnet in this namespace (0, 1, 2, ...)."""
        n = self._subnets
        self._subnets += 1
        if n > 255:
            raise RuntimeError("no more link subnets in this namespace")
        return n

    def open_fd(self) -> int:
        """An ``O_RDONLY`` fd on the namespace (for ``setns``); the caller closes it."""
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    # -- interfaces (netlink through pyroute2; safe to call from inside a running asyncio loop) -------------------
    def move_link_in(self, ifname: str) -> None:
        """Move interface ``ifname`` from the caller's namespace into this one (open fds on it stay valid)."""

        def move() -> None:
            with IPRoute() as ipr:
                ipr.link("set", index=_lookup(ipr, ifname), net_ns_fd=self.name)

        netlink_call(move)

    def configure_link(self, ifname: str, address: str, prefix_len: int, mtu: int | None = None) -> bytes:
        """Inside the namespace: set the MTU, add ``address/prefix_len``, bring ``ifname`` up; returns its MAC.

        No routes are added beyond the connected subnet (no default route)."""

        def configure() -> str:
            with IPRoute(netns=self.name) as ipr:
                index = _lookup(ipr, ifname)
                if mtu is not None:
                    ipr.link("set", index=index, mtu=mtu)
                ipr.addr("add", index=index, address=address, prefixlen=prefix_len)
                ipr.link("set", index=index, state="up")
                return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))

        return bytes.fromhex(netlink_call(configure).replace(":", ""))

    def link_names(self) -> list[str]:
        """Names of the interfaces inside the namespace."""

        def names() -> list[str]:
            with IPRoute(netns=self.name) as ipr:
                return sorted(str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links())

        return netlink_call(names)

    # -- running things inside -----------------------------------------------------------------------------------
    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the namespace (``subprocess.Popen`` arguments).  It is killed on ``close()``."""
        if self._closed:
            raise RuntimeError(f"namespace {self.name} is closed")
        fd = self.open_fd()
        try:
            proc = subprocess.Popen(list(args), preexec_fn=lambda: setns(fd), **kwargs)  # setns between fork and exec
        finally:
            os.close(fd)
        self._children.append(proc)
        return proc

    def run(self, args: Sequence[str], timeout: float = 30.0, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command inside the namespace to completion (``subprocess.run`` style; ``check`` is up to you)."""
        check = kwargs.pop("check", False)
        if kwargs.pop("capture_output", False):
            kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
        proc = self.popen(args, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._children.remove(proc)
        result = subprocess.CompletedProcess(list(args), proc.returncode, out, err)
        if check:
            result.check_returncode()
        return result

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Run ``fn(*args)`` in a forked child that has entered the namespace; return its (picklable) result.

        The child never returns into the caller's code: it exits with ``os._exit`` after sending the result.
        """
        if self._closed:
            raise RuntimeError(f"namespace {self.name} is closed")
        fd = self.open_fd()
        rfd, wfd = os.pipe()
        try:
            pid = os.fork()
        except BaseException:
            os.close(rfd)
            os.close(wfd)
            os.close(fd)
            raise
        if pid == 0:  # child
            code = 0
            try:
                os.close(rfd)
                setns(fd)
                payload = pickle.dumps((True, fn(*args)))
            except BaseException:
                code = 1
                payload = pickle.dumps((False, traceback.format_exc()))
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(wfd, view) :]
            finally:
                os._exit(code)
        os.close(fd)
        os.close(wfd)
        try:
            data = _read_all(rfd, timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            os.close(rfd)
            os.waitpid(pid, 0)
        if not data:
            raise NamespaceCallError("child died without a result")
        ok, value = pickle.loads(data)
        if not ok:
            raise NamespaceCallError(f"{getattr(fn, '__name__', fn)!s} failed in {self.name}:\n{value}")
        return value

    # -- lifetime --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Kill processes we started inside and remove the namespace (and with it every device inside).

        Idempotent; safe to call from a signal handler or atexit."""
        if self._closed:
            return
        self._closed = True
        for proc in self._children:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
        self._children.clear()
        try:
            _pr_netns.remove(self.name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        finally:
            with _live_lock:
                _live.pop(self.name, None)

    def __enter__(self) -> PeerNamespace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PeerNamespace({self.name!r}, closed={self._closed})"


def _read_all(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("namespace call timed out")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def write_sysctl(path: str, value: str) -> None:
    """Write ``value`` to ``/proc/sys/<path>`` (a slash path such as ``net/ipv6/conf/all/disable_ipv6``).

    Run through ``PeerNamespace.call`` it writes the namespace's copy (``/proc/sys/net`` follows the opener)."""
    with open("/proc/sys/" + path, "w") as f:
        f.write(value)


def netlink_call(fn: Callable[[], T]) -> T:
    """Run ``fn`` (which uses pyroute2's synchronous API) now and return its result.

    pyroute2 >= 0.9 drives its sync API with an asyncio loop of its own, which cannot run in a thread whose asyncio
    loop is already running; in that case ``fn`` runs on a short-lived worker thread while the caller waits (setup
    and carrier changes only, never per packet)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink") as pool:
        return pool.submit(fn).result()


def _lookup(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise OSError(errno.ENODEV, f"no interface {ifname!r}")
    return int(found[0])


def _disable_ipv6() -> None:
    for scope in ("all", "default", "lo"):
        write_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6", "1")


def _bring_lo_up(name: str) -> None:
    def up() -> None:
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=_lookup(ipr, "lo"), state="up")

    netlink_call(up)
