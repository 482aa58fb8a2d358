from __future__ import annotations

import pytest

from tcpchimney.wire.addr import BROADCAST_MAC, ip_in_subnet, ip_to_bytes, ip_to_str, mac_to_bytes, mac_to_str
from tcpchimney.wire.drops import DropCounter
from tcpchimney.wire.errors import DecodeError


def test_ip_round_trip() -> None:
    assert ip_to_bytes("10.0.0.1") == b"\x0a\x00\x00\x01"
    assert ip_to_str(b"\xc0\xa8\x01\xff") == "192.168.1.255"
    assert ip_to_str(ip_to_bytes("172.16.254.3")) == "172.16.254.3"
    with pytest.raises(ValueError):
        ip_to_bytes("10.1")
    with pytest.raises(ValueError):
        ip_to_bytes("256.0.0.1")
    with pytest.raises(ValueError):
        ip_to_str(b"\x01\x02\x03")


def test_mac_round_trip() -> None:
    assert mac_to_bytes("02:00:00:00:00:0a") == b"\x02\x00\x00\x00\x00\x0a"
    assert mac_to_bytes("02-AB-00-00-00-0A") == b"\x02\xab\x00\x00\x00\x0a"
    assert mac_to_str(b"\x02\xab\x00\x00\x00\x0a") == "02:ab:00:00:00:0a"
    assert mac_to_str(BROADCAST_MAC) == "ff:ff:ff:ff:ff:ff"
    for bad in ("02:00:00:00:00", "02:00:00:00:00:zz", "0200:00:00:00:00:01", "02:00:00:00:00:001"):
        with pytest.raises(ValueError):
            mac_to_bytes(bad)


def test_ip_in_subnet() -> None:
    net = ip_to_bytes("10.1.2.0")
    assert ip_in_subnet(ip_to_bytes("10.1.2.200"), net, 24)
    assert not ip_in_subnet(ip_to_bytes("10.1.3.1"), net, 24)
    assert ip_in_subnet(ip_to_bytes("10.1.3.1"), net, 16)
    assert ip_in_subnet(ip_to_bytes("8.8.8.8"), net, 0)
    assert ip_in_subnet(ip_to_bytes("10.1.2.0"), net, 32)
    assert not ip_in_subnet(ip_to_bytes("10.1.2.1"), net, 32)
    # host bits in the network address are ignored
    assert ip_in_subnet(ip_to_bytes("10.1.2.9"), ip_to_bytes("10.1.2.77"), 24)
    with pytest.raises(ValueError):
        ip_in_subnet(net, net, 33)


def test_drop_counter() -> None:
    drops = DropCounter()
    assert drops.total == 0
    assert drops["tcp-bad-checksum"] == 0
    drops.count("tcp-bad-checksum")
    drops.count("tcp-bad-checksum")
    drops.count("ipv4-fragment")
    assert drops["tcp-bad-checksum"] == 2
    assert drops["ipv4-fragment"] == 1
    assert drops.total == 3
    snapshot = drops.as_dict()
    assert snapshot == {"tcp-bad-checksum": 2, "ipv4-fragment": 1}
    snapshot["x"] = 5  # a copy: mutating it does not touch the counter
    assert drops["x"] == 0


def test_decode_error_carries_reason() -> None:
    err = DecodeError("ipv4-bad-checksum", "detail here")
    assert err.reason == "ipv4-bad-checksum"
    assert "detail here" in str(err)
    assert str(DecodeError("tcp-truncated")) == "tcp-truncated"
