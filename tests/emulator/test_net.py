"""Transports (fpisa.net): frames agree with scapy's reading of them, UDP
round trips, and raw Ethernet on a veth pair (root only)."""

import os
import shutil
import subprocess
import uuid

import pytest

from fpisa.net import EthEndpoint, RawEthernetTransport, UdpTransport, build_frame, parse_address, parse_frame
from fpisa.protocol import UDP_PORT

FRAME = dict(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02", src_ip="10.0.0.1",
             dst_ip="10.0.0.254", src_port=40000, dst_port=UDP_PORT)


def test_built_frame_reads_back_in_scapy_with_valid_checksum():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    frame = build_frame(b"hello fpisa", **FRAME)
    pkt = Ether(frame)
    assert pkt[Ether].src == FRAME["src_mac"] and pkt[Ether].dst == FRAME["dst_mac"]
    assert pkt[IP].src == "10.0.0.1" and pkt[IP].dst == "10.0.0.254"
    assert pkt[UDP].sport == 40000 and pkt[UDP].dport == UDP_PORT
    assert bytes(pkt[UDP].payload) == b"hello fpisa"
    sent_checksum = pkt[IP].chksum
    del pkt[IP].chksum
    assert Ether(bytes(pkt))[IP].chksum == sent_checksum


def test_parse_reads_scapy_frames_and_rejects_others():
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether

    frame = bytes(Ether(src="02:00:00:00:00:09", dst="ff:ff:ff:ff:ff:ff") /
                  IP(src="10.0.0.9", dst="10.0.0.254", options=[b"\x01\x01\x01\x00"]) /
                  UDP(sport=123, dport=UDP_PORT) / b"xyz")
    assert parse_frame(frame) == ("02:00:00:00:00:09", "10.0.0.9", 123, "ff:ff:ff:ff:ff:ff",
                                  "10.0.0.254", UDP_PORT, b"xyz")
    assert parse_frame(bytes(Ether() / ARP())) is None
    assert parse_frame(bytes(Ether() / IP() / TCP())) is None
    assert parse_frame(frame[:30]) is None
    assert parse_frame(b"") is None


@pytest.mark.parametrize("gso", [None, False], ids=["gso-auto", "no-gso"])
def test_udp_round_trip_in_batches(gso):
    a, b = UdpTransport.bind(gso=gso), UdpTransport.bind()
    try:
        # 150 equally long datagrams (GSO trains of <= 64 on loopback) and a
        # few of other lengths; per destination and length the order is kept
        items = [(b.address, bytes([i % 256]) * 100) for i in range(150)]
        items += [(b.address, bytes([i]) * (10 + i)) for i in range(5)]
        a.send_batch(items)
        got = []
        while len(got) < len(items):
            batch = b.recv_batch(1.0, 16)
            assert batch, "datagrams lost on loopback"
            if gso is False:
                assert len(batch) <= 16
            got += batch
        assert sorted(d for d, _ in got) == sorted(d for _, d in items)
        long_ones = [d for d, _ in got if len(d) == 100]
        assert long_ones == [d for _, d in items[:150]]
        assert {src for _, src in got} == {a.address}
        assert b.recv_batch(0.01) == []
        assert a.send_errors == 0
    finally:
        a.close()
        b.close()


def test_parse_address():
    assert parse_address("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_address("127.0.0.1") == ("127.0.0.1", UDP_PORT)
    for bad in ("127.0.0.1:x", "127.0.0.1:70000", "no such host.invalid:1"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_raw_transport_needs_real_interfaces():
    with pytest.raises(ValueError):
        RawEthernetTransport(["fpisa-no-such-if0"], "10.0.0.254")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                    reason="needs root and iproute2 to create a veth pair")
def test_raw_ethernet_over_veth_pair():
    tag = uuid.uuid4().hex[:6]
    left, right = f"fpa{tag}", f"fpb{tag}"
    subprocess.run(["ip", "link", "add", left, "type", "veth", "peer", "name", right], check=True)
    try:
        for name in (left, right):
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        switch = RawEthernetTransport([left], "10.0.0.254")
        host = RawEthernetTransport([right], "10.0.0.1", listen_port=40000)
        try:
            to_switch = EthEndpoint(right, switch.macs[left], "10.0.0.254", UDP_PORT)
            host.send(to_switch, b"data")
            got = []
            for _ in range(20):
                got += switch.recv_batch(0.1)
                if got:
                    break
            assert [d for d, _ in got] == [b"data"]
            src = got[0][1]
            assert src == EthEndpoint(left, host.macs[right], "10.0.0.1", 40000)
            switch.send(src, b"result")
            back = []
            for _ in range(20):
                back += host.recv_batch(0.1)
                if back:
                    break
            assert [d for d, _ in back] == [b"result"]
            assert back[0][1].port == UDP_PORT
            assert switch.recv_batch(0.05) == []  # its own outgoing copy is ignored
        finally:
            switch.close()
            host.close()
    finally:
        subprocess.run(["ip", "link", "del", left], check=False)
