"""Parsing ``ovs-appctl lacp/show`` and ``bond/show`` output (captured from Open vSwitch 3.1, userspace datapath).

Runs everywhere: no OVS needed."""

from __future__ import annotations

from tcpchimney.links.ovs import parse_bond_show, parse_lacp_show
from tcpchimney.team.lacpdu import LacpDu, LacpInfo, decode_lacp_frame, encode_lacp_frame

LACP_SHOW = """\
---- tcbond0 ----
  status: active negotiated
  sys_id: c2:07:99:c5:07:44
  sys_priority: 65534
  aggregation key: 1
  lacp_time: fast

member: tco8655100b: current attached
  port_id: 1
  port_priority: 65535
  may_enable: true

  actor sys_id: c2:07:99:c5:07:44
  actor sys_priority: 65534
  actor port_id: 1
  actor port_priority: 65535
  actor key: 1
  actor state: activity timeout aggregation synchronized collecting distributing

  partner sys_id: 02:00:00:00:00:01
  partner sys_priority: 32768
  partner port_id: 1
  partner port_priority: 32768
  partner key: 34
  partner state: activity timeout aggregation synchronized collecting distributing

member: tco8655101b: current attached
  port_id: 2
  port_priority: 65535
  may_enable: true

  actor sys_id: c2:07:99:c5:07:44
  actor sys_priority: 65534
  actor port_id: 2
  actor port_priority: 65535
  actor key: 1
  actor state: activity timeout aggregation synchronized collecting distributing

  partner sys_id: 02:00:00:00:00:01
  partner sys_priority: 32768
  partner port_id: 2
  partner port_priority: 32768
  partner key: 34
  partner state: activity timeout aggregation synchronized collecting distributing
"""

BOND_SHOW = """\
---- tcbond0 ----
bond_mode: balance-tcp
bond may use recirculation: yes, Recirc-ID : 1
bond-hash-basis: 0
lb_output action: disabled, bond-id: -1
updelay: 0 ms
downdelay: 0 ms
next rebalance: 6910 ms
lacp_status: negotiated
lacp_fallback_ab: false
active-backup primary: <none>
active member mac: fa:b4:2b:87:db:0d(tco8655100b)

member tco8655100b: enabled
  active member
  may_enable: true

member tco8655101b: enabled
  may_enable: true

"""

# A LACPDU sent by that OVS on member 2 once in sync with our port 2 (captured on our veth end).
OVS_FRAME = bytes.fromhex(
    "0180c2000002e657131cf5a0880901010114fffec20799c507440001ffff00023f000000021480000200000000010022"
    "800000023f00000003100000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000"
)


def test_parse_lacp_show() -> None:
    show = parse_lacp_show(LACP_SHOW)
    assert show["bond"] == "tcbond0"
    assert show["status"] == "active negotiated"
    assert show["lacp_time"] == "fast"
    assert show["sys_id"] == "c2:07:99:c5:07:44"
    members = show["members"]
    assert list(members) == ["tco8655100b", "tco8655101b"]
    m = members["tco8655101b"]
    assert m["status"] == "current attached"
    assert m["may_enable"] == "true"
    assert m["port_id"] == "2"
    assert m["actor"]["port_id"] == "2" and m["actor"]["key"] == "1"
    assert m["partner"]["sys_id"] == "02:00:00:00:00:01"
    assert m["partner"]["key"] == "34"
    assert "synchronized" in m["partner"]["state"].split()


def test_parse_bond_show() -> None:
    show = parse_bond_show(BOND_SHOW)
    assert show["bond"] == "tcbond0"
    assert show["bond_mode"] == "balance-tcp"
    assert show["lacp_status"] == "negotiated"
    assert show["members"] == {
        "tco8655100b": {"state": "enabled", "may_enable": "true"},
        "tco8655101b": {"state": "enabled", "may_enable": "true"},
    }


def test_parse_older_slave_wording() -> None:
    old = LACP_SHOW.replace("member: ", "slave: ")
    assert parse_lacp_show(old)["members"] == parse_lacp_show(LACP_SHOW)["members"]
    old_bond = BOND_SHOW.replace("member tco", "slave tco")
    assert parse_bond_show(old_bond)["members"] == parse_bond_show(BOND_SHOW)["members"]


def test_decode_an_ovs_lacpdu() -> None:
    src, pdu = decode_lacp_frame(OVS_FRAME)
    assert src == bytes.fromhex("e657131cf5a0")
    assert pdu == LacpDu(
        actor=LacpInfo(0xFFFE, bytes.fromhex("c20799c50744"), 1, 0xFFFF, 2, 0x3F),
        partner=LacpInfo(0x8000, bytes.fromhex("020000000001"), 0x22, 0x8000, 2, 0x3F),
        collector_max_delay=0,
    )
    assert encode_lacp_frame(pdu, src) == OVS_FRAME  # OVS zeroes every reserved byte, as we do
