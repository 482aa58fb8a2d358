"""PeerNamespace: creation, removal on every exit path, running things inside, stale cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from pyroute2 import netns as pr_netns

from netns_support import NAMESPACES
from tcpchimney.links.netns import NamespaceCallError, PeerNamespace, cleanup_stale, list_namespaces

pytestmark = NAMESPACES


def test_namespace_created_and_removed() -> None:
    with PeerNamespace() as ns:
        assert ns.name in list_namespaces()
        assert ns.name.startswith(f"tcpch{os.getpid()}x")
        assert ns.exists
        assert ns.link_names() == ["lo"]
    assert ns.name not in list_namespaces()
    assert not ns.exists
    ns.close()  # idempotent


def test_namespace_removed_when_body_raises() -> None:
    name = None
    with pytest.raises(ZeroDivisionError), PeerNamespace() as ns:
        name = ns.name
        assert name in list_namespaces()
        _ = 1 / 0
    assert name is not None and name not in list_namespaces()


def test_two_namespaces_have_distinct_names() -> None:
    with PeerNamespace() as a, PeerNamespace() as b:
        assert a.name != b.name
        assert {a.name, b.name} <= set(list_namespaces())


def test_call_runs_inside_the_namespace() -> None:
    def netns_inode() -> int:
        return os.stat("/proc/self/ns/net").st_ino

    def ipv6_disabled() -> str:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6") as f:
            return f.read().strip()

    with PeerNamespace() as ns:
        inside = ns.call(netns_inode)
        assert inside != os.stat("/proc/self/ns/net").st_ino
        assert inside == os.stat(ns.path).st_ino
        assert ns.call(ipv6_disabled) == "1"
        with pytest.raises(NamespaceCallError, match="ZeroDivisionError"):
            ns.call(lambda: 1 // 0)


def test_popen_runs_inside_and_is_killed_on_close() -> None:
    with PeerNamespace() as ns:
        out = ns.run(["cat", "/proc/net/dev"], capture_output=True, text=True, check=True).stdout
        assert "lo:" in out and "eth0" not in out
        sleeper = ns.popen(["sleep", "60"])
    assert sleeper.wait(timeout=10) != 0  # killed by close()


def test_cleanup_stale_removes_only_dead_owners_with_our_prefix() -> None:
    dead_pid = 4_000_000
    while True:
        try:
            os.kill(dead_pid, 0)
        except ProcessLookupError:
            break
        dead_pid += 1
    prefix = "tcpchst"
    stale = f"{prefix}{dead_pid}xdeadbeef"
    foreign = f"{prefix}other{dead_pid}"
    pr_netns.create(stale)
    pr_netns.create(foreign)
    try:
        with PeerNamespace(prefix=prefix) as live:
            removed = cleanup_stale(prefix)
            assert removed == [stale]
            names = list_namespaces()
            assert stale not in names
            assert live.name in names  # our own pid is alive
            assert foreign in names  # does not match the naming scheme
    finally:
        for name in (stale, foreign):
            if name in list_namespaces():
                pr_netns.remove(name)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_namespace(signum: int) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from tcpchimney.links.netns import PeerNamespace
        ns = PeerNamespace(prefix="tcpchsig")
        print(ns.name, flush=True)
        time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        assert name in list_namespaces()
        proc.send_signal(signum)
        proc.wait(timeout=20)
        assert name not in list_namespaces()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cleanup_stale("tcpchsig")


def test_atexit_removes_namespace_on_normal_exit() -> None:
    script = "from tcpchimney.links.netns import PeerNamespace\nprint(PeerNamespace(prefix='tcpchae').name)\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    name = out.stdout.strip()
    assert name.startswith("tcpchae")
    assert name not in list_namespaces()
