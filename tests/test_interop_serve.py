"""`chimney serve` on a real link and `chimney ctl` against it: curl downloads from the HTTP service in the peer
namespace while ctl makes the NIC request retrievals, UPLOAD_ALL/RESUME and a link flap; the download is byte-exact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from interop_support import IN_CI, NETNS
from tcpchimney.links.netns import setns
from tcpchimney.services import pseudo_random_sha256

pytestmark = [
    *NETNS,
    pytest.mark.skipif(shutil.which("curl") is None and not IN_CI, reason="needs curl (apt-get install curl)"),
]

CHIMNEY = [sys.executable, "-m", "tcpchimney.cli.main"]


def _ctl(sock: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [*CHIMNEY, "ctl", "--socket", sock, "--json", *args], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stderr + out.stdout
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _in_ns(ns: str, args: list[str]) -> subprocess.Popen[bytes]:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: setns(fd))
    finally:
        os.close(fd)


def _wait(pred: object, timeout: float) -> bool:
    for _ in range(int(timeout / 0.05)):
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(pred())  # type: ignore[operator]


@pytest.mark.parametrize("link", ["tap", "veth"])
def test_serve_and_ctl_on_a_real_link(link: str, tmp_path: Path) -> None:
    info_file = tmp_path / "info.json"
    sock = str(tmp_path / "ctl.sock")
    serve = subprocess.Popen(
        [*CHIMNEY, "serve", "--link", link, "--duration", "40", "--info-file", str(info_file), "--socket", sock,
         "--http-port", "8080", "--offload-after", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert _wait(lambda: info_file.exists() and info_file.stat().st_size > 0, 20), serve.stderr
        time.sleep(0.2)
        info = json.loads(info_file.read_text())
        ns = info["namespace"]
        ours = info["nics"][0]["addr"].split("/")[0]
        n = 16 * 1024 * 1024
        curl = _in_ns(ns, ["sh", "-c", f"curl -sS --fail --limit-rate 4M http://{ours}:8080/bytes/{n} | sha256sum"])

        def conns() -> list[dict[str, Any]]:
            return list(_ctl(sock, "list")["connections"])

        assert _wait(lambda: any(c["owner"] != "host" for c in conns()), 10)
        cid = str(conns()[0]["id"])
        _ctl(sock, "retrieve", cid, "LOW_ACTIVITY")
        assert _wait(lambda: all(c["owner"] == "host" for c in conns()), 5)
        _ctl(sock, "offload", cid)
        assert _wait(lambda: any(c["owner"] != "host" for c in conns()), 10)
        _ctl(sock, "upload_all")
        assert _wait(lambda: all(c["owner"] == "host" for c in conns()), 5)
        _ctl(sock, "resume")
        _ctl(sock, "offload", cid)
        assert _wait(lambda: any(c["owner"] != "host" for c in conns()), 10)
        _ctl(sock, "link", "down")
        assert _wait(lambda: all(c["owner"] == "host" for c in conns()), 5)
        _ctl(sock, "link", "up")
        _ctl(sock, "terminate", cid)
        out, err = curl.communicate(timeout=60)
        assert curl.returncode == 0, err
        assert out.decode().split()[0] == pseudo_random_sha256(n, info["data_seed"])
        stats = _ctl(sock, "stats")
        host = stats["host"]
        assert host["retrieves_received"] >= 1 and host["upload_alls"] == 1
        assert host["violations"] == 0
    finally:
        serve.terminate()
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(5)
    assert serve.returncode in (0, -15), serve.stderr.read().decode() if serve.stderr else ""
    assert not any(name == ns for name in os.listdir("/run/netns")), "namespace left behind"
