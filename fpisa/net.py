"""Packet transports: UDP sockets and raw Ethernet (AF_PACKET).

Wire-level plumbing shared by the switch emulator (``emulator``) and the
worker hosts (``hosts``), which may not import each other. A transport
moves opaque UDP payloads (the bytes :mod:`fpisa.protocol` defines) to and
from *addresses*; what an address is depends on the transport:

- :class:`UdpTransport` (default; loopback, no root): ``(ip, port)``.
- :class:`RawEthernetTransport` (inside Mininet, root): an
  :class:`EthEndpoint` ``(interface, mac, ip, udp_port)``; it builds and
  parses Ethernet/IPv4/UDP itself with :mod:`struct` on the fast path
  (scapy is only for inspection) and ignores the copies of its own outgoing
  frames that an AF_PACKET socket also sees.

Both offer the same small interface, which is all the switch loop and the
worker use: ``recv_batch(timeout)``, ``send_batch(items)``, ``send``,
``close``. Per-packet Python (one syscall per packet) is the limit here,
not the kernel: see environment.md for measured packet rates.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Hashable, Iterable, Protocol

from .protocol import UDP_PORT

__all__ = [
    "Transport",
    "UdpTransport",
    "EthEndpoint",
    "RawEthernetTransport",
    "build_frame",
    "parse_frame",
    "parse_address",
    "transport_for",
    "split_trains",
    "SOCKET_BUFFER_BYTES",
]

#: socket buffers big enough for a full window of every worker in flight
#: (256 slots x 8 workers x ~1 KiB kernel accounting per small datagram)
SOCKET_BUFFER_BYTES = 8 << 20
_MAX_DATAGRAM = 65535


class Transport(Protocol):
    def recv_batch(self, timeout: float | None, max_packets: int = 256) -> list[tuple[bytes, Hashable]]: ...
    def send(self, address: Hashable, data: bytes) -> None: ...
    def send_batch(self, items: Iterable[tuple[Hashable, bytes]]) -> None: ...
    def send_train(self, address: Hashable, datagrams: bytes, size: int) -> None: ...
    def close(self) -> None: ...


def split_trains(trains) -> list[tuple[bytes, Hashable]]:
    """``(datagrams back to back, size, source)`` trains -> ``(datagram, source)``."""
    out: list[tuple[bytes, Hashable]] = []
    for data, size, source in trains:
        if size == len(data) or size == 0:
            out.append((data, source))
        else:
            out += [(data[at:at + size], source) for at in range(0, len(data), size)]
    return out


def _grow_buffers(sock: socket.socket, size: int) -> None:
    # SO_*BUFFORCE passes net.core.[rw]mem_max (root only); else take what we get
    for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF),
                         (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass


def parse_address(text: str, default_port: int = UDP_PORT) -> tuple[str, int]:
    """'host:port' or 'host' -> (ip, port); ValueError with a clear message."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    try:
        port_number = int(port)
        if not 0 <= port_number <= 65535:
            raise ValueError
        ip = socket.gethostbyname(host)
    except (ValueError, OSError):
        raise ValueError(f"bad address {text!r}; expected HOST[:PORT]") from None
    return ip, port_number


SOL_UDP = 17
UDP_SEGMENT = 103  #: linux/udp.h: send one buffer as many datagrams (GSO)
UDP_GRO = 104  #: linux/udp.h: receive coalesced datagrams, cmsg gives the size
#: the kernel's UDP_MAX_SEGMENTS
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_ERRORS_TO_COUNT = (errno.EAGAIN, errno.ECONNREFUSED, errno.ENOBUFS, errno.EPERM)


class UdpTransport:
    """A non-blocking UDP socket; addresses are ``(ip, port)``.

    On loopback it uses UDP segmentation offload (``UDP_SEGMENT``: one
    ``sendmsg`` carries up to 64 equally long datagrams to one destination)
    and generic receive offload (``UDP_GRO``: one ``recvmsg`` returns such a
    train, split here). The datagrams on the wire are exactly the same; what
    changes is the number of trips through the kernel's network stack,
    which is what limits a Python host (measured: ~0.2 us instead of ~3.8 us
    per datagram). Elsewhere (veth, Mininet: an AF_PACKET switch would see
    the unsegmented train) it sends datagram by datagram unless ``gso=True``.
    """

    def __init__(self, sock: socket.socket, gso: bool | None = None):
        self.sock = sock
        sock.setblocking(False)
        _grow_buffers(sock, SOCKET_BUFFER_BYTES)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        #: datagrams the kernel refused (full buffer); UDP may lose them anyway
        self.send_errors = 0
        #: None: GSO to loopback destinations only
        self._gso = gso
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self._gro = True
        except OSError:
            self._gro = False
        self._cmsg_space = socket.CMSG_SPACE(4)

    @classmethod
    def bind(cls, host: str = "127.0.0.1", port: int = 0, gso: bool | None = None) -> "UdpTransport":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise ValueError(f"cannot bind UDP {host}:{port}: {e.strerror}") from None
        return cls(sock, gso)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def wait(self, timeout: float | None) -> bool:
        ms = None if timeout is None else max(0, int(timeout * 1e3 + 0.999))
        return bool(self._poll.poll(ms))

    def recv_trains(self, timeout: float | None, max_packets: int = 256) -> list[tuple[bytes, int, tuple]]:
        """Received datagrams as ``(buffer, size, source)`` trains: ``buffer``
        holds ``len(buffer) // size`` datagrams of ``size`` bytes back to back
        (one GRO train, or one datagram with ``size == len(buffer)``). Up to
        about ``max_packets`` datagrams; waits at most ``timeout`` s for the first."""
        out: list[tuple[bytes, int, tuple]] = []
        got = 0
        recvmsg, space = self.sock.recvmsg, self._cmsg_space
        while got < max_packets:
            try:
                data, ancillary, _, source = recvmsg(_MAX_DATAGRAM, space)
            except BlockingIOError:
                if out or not self.wait(timeout):
                    break
                timeout = 0
                continue
            except ConnectionRefusedError:
                # an earlier datagram hit a closed port (ICMP); not ours to handle
                continue
            size = len(data)
            if ancillary:
                level, kind, value = ancillary[0]
                if level == SOL_UDP and kind == UDP_GRO:
                    gso = int.from_bytes(value[:2] if len(value) == 2 else value[:4], sys.byteorder)
                    if 0 < gso < size:
                        tail = size % gso
                        if tail:  # only the last segment of a train may be shorter
                            out.append((data[size - tail:], tail, source))
                            data = data[:size - tail]
                        size = gso
            out.append((data, size, source))
            got += len(data) // size if size else 1
        return out

    def recv_batch(self, timeout: float | None, max_packets: int = 256) -> list[tuple[bytes, tuple]]:
        """Up to about ``max_packets`` datagrams (a coalesced train is never
        split across calls); waits at most ``timeout`` s for the first."""
        return split_trains(self.recv_trains(timeout, max_packets))

    def send(self, address: tuple, data: bytes) -> None:
        try:
            self.sock.sendto(data, address)
        except OSError as e:
            if e.errno not in _ERRORS_TO_COUNT:
                raise
            self.send_errors += 1

    def _use_gso(self, address) -> bool:
        if self._gso is None:
            return address[0].startswith("127.")
        return self._gso

    def send_batch(self, items: Iterable[tuple[tuple, bytes]]) -> None:
        """Send datagrams; equally long ones to the same destination go as
        GSO trains (order is kept per destination and length)."""
        groups: dict[tuple, list] = {}
        for address, data in items:
            key = (address, len(data))
            group = groups.get(key)
            if group is None:
                groups[key] = [data]
            else:
                group.append(data)
        sendto, sendmsg = self.sock.sendto, self.sock.sendmsg
        for (address, size), datagrams in groups.items():
            try:
                if len(datagrams) == 1 or size == 0 or not self._use_gso(address):
                    for data in datagrams:
                        sendto(data, address)
                    continue
                per_train = max(1, min(_GSO_MAX_SEGMENTS, _GSO_MAX_BYTES // size))
                cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
                for at in range(0, len(datagrams), per_train):
                    train = datagrams[at:at + per_train]
                    if len(train) == 1:
                        sendto(train[0], address)
                    else:
                        sendmsg([b"".join(train)], cmsg, 0, address)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP) and self._gso is not False:
                    self._gso = False  # no GSO here: fall back for good, resend this group
                    self.send_batch([(address, d) for d in datagrams])
                    continue
                if e.errno not in _ERRORS_TO_COUNT:
                    raise
                self.send_errors += 1

    def send_train(self, address: tuple, datagrams: bytes, size: int) -> None:
        """Send ``len(datagrams) // size`` datagrams of ``size`` bytes, stored
        back to back (the worker's window refill: no per-datagram Python)."""
        view = memoryview(datagrams)
        if not self._use_gso(address):
            self.send_batch((address, view[at:at + size]) for at in range(0, len(view), size))
            return
        per_train = max(1, min(_GSO_MAX_SEGMENTS, _GSO_MAX_BYTES // size)) * size
        cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        for at in range(0, len(view), per_train):
            chunk = view[at:at + per_train]
            try:
                if len(chunk) == size:
                    self.sock.sendto(chunk, address)
                else:
                    self.sock.sendmsg([chunk], cmsg, 0, address)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP) and self._gso is not False:
                    self._gso = False
                    self.send_train(address, bytes(view[at:]), size)
                    return
                if e.errno not in _ERRORS_TO_COUNT:
                    raise
                self.send_errors += len(chunk) // size

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


# --- raw Ethernet -----------------------------------------------------------

ETH_P_IP = 0x0800
_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_HEADERS = _ETH.size + _IPV4.size + _UDP.size  # 42 bytes, no IP options
_PACKET_OUTGOING = getattr(socket, "PACKET_OUTGOING", 4)


@dataclass(frozen=True)
class EthEndpoint:
    """Where a raw Ethernet frame comes from / goes to."""

    interface: str
    mac: str
    ip: str
    port: int


def _mac_bytes(mac: str) -> bytes:
    try:
        out = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        out = b""
    if len(out) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return out


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_frame(payload: bytes, *, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str,
                src_port: int, dst_port: int, ttl: int = 64, ident: int = 0) -> bytes:
    """Ethernet/IPv4/UDP around ``payload``; UDP checksum 0 (allowed for IPv4)."""
    ip_len = _IPV4.size + _UDP.size + len(payload)
    if ip_len > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit an IPv4 packet")
    ip = _IPV4.pack(0x45, 0, ip_len, ident & 0xFFFF, 0x4000, ttl, socket.IPPROTO_UDP, 0,
                    socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
    return b"".join((_ETH.pack(_mac_bytes(dst_mac), _mac_bytes(src_mac), ETH_P_IP), ip,
                     _UDP.pack(src_port, dst_port, _UDP.size + len(payload), 0), payload))


def parse_frame(frame: bytes) -> tuple[str, str, int, str, str, int, bytes] | None:
    """Frame -> (src_mac, src_ip, src_port, dst_mac, dst_ip, dst_port, payload),
    or None if it is not an IPv4/UDP frame we can read (options allowed)."""
    if len(frame) < _HEADERS:
        return None
    dst_mac, src_mac, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IP:
        return None
    ver_ihl, _, ip_len, _, frag, _, proto, _, src_ip, dst_ip = _IPV4.unpack_from(frame, _ETH.size)
    ihl = (ver_ihl & 0xF) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or proto != socket.IPPROTO_UDP or frag & 0x3FFF:
        return None  # not IPv4/UDP, or a fragment
    udp_at = _ETH.size + ihl
    if len(frame) < udp_at + _UDP.size or len(frame) < _ETH.size + ip_len:
        return None
    src_port, dst_port, udp_len, _ = _UDP.unpack_from(frame, udp_at)
    end = udp_at + udp_len
    if udp_len < _UDP.size or end > _ETH.size + ip_len:
        return None
    return (_mac_text(src_mac), socket.inet_ntoa(src_ip), src_port, _mac_text(dst_mac),
            socket.inet_ntoa(dst_ip), dst_port, bytes(frame[udp_at + _UDP.size:end]))


class RawEthernetTransport:
    """AF_PACKET sockets on named interfaces (needs root / CAP_NET_RAW).

    Receives IPv4/UDP frames addressed to ``listen_port`` on any of the
    interfaces; sends to an :class:`EthEndpoint` out of its interface, from
    ``(interface MAC, local_ip, listen_port)``. A software switch's ports
    should have no IP addresses (else its kernel answers, e.g. with ICMP).
    """

    def __init__(self, interfaces: Iterable[str], local_ip: str, listen_port: int = UDP_PORT,
                 mtu: int = 1500):
        self.local_ip = socket.inet_ntoa(socket.inet_aton(local_ip))
        self.listen_port = listen_port
        self.mtu = mtu
        self.socks: dict[str, socket.socket] = {}
        self.macs: dict[str, str] = {}
        self._by_fd: dict[int, str] = {}
        self._poll = select.poll()
        self._ident = 0
        self.send_errors = 0
        self.ignored = 0  # frames that are not IPv4/UDP to our port
        self.oversize = 0  # datagrams larger than the MTU, not sent
        try:
            for name in interfaces:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
                self.socks[name] = sock
                sock.bind((name, 0))
                sock.setblocking(False)
                _grow_buffers(sock, SOCKET_BUFFER_BYTES)
                self.macs[name] = _mac_text(sock.getsockname()[4][:6])
                self._by_fd[sock.fileno()] = name
                self._poll.register(sock.fileno(), select.POLLIN)
        except OSError as e:
            self.close()
            raise ValueError(f"cannot open AF_PACKET on {list(interfaces)}: {e.strerror} "
                             "(needs root and existing interfaces)") from None
        if not self.socks:
            raise ValueError("RawEthernetTransport needs at least one interface")

    @property
    def max_payload(self) -> int:
        """Largest UDP payload that fits the MTU (no IP options)."""
        return self.mtu - _IPV4.size - _UDP.size

    def recv_batch(self, timeout: float | None, max_packets: int = 256) -> list[tuple[bytes, EthEndpoint]]:
        ms = None if timeout is None else max(0, int(timeout * 1e3 + 0.999))
        out: list[tuple[bytes, EthEndpoint]] = []
        ready = self._poll.poll(ms)
        for fd, _ in ready:
            name = self._by_fd[fd]
            sock = self.socks[name]
            while len(out) < max_packets:
                try:
                    frame, addr = sock.recvfrom(_MAX_DATAGRAM)
                except BlockingIOError:
                    break
                if addr[2] == _PACKET_OUTGOING:
                    continue  # our own transmissions, seen again
                parsed = parse_frame(frame)
                if parsed is None or parsed[5] != self.listen_port:
                    self.ignored += 1
                    continue
                src_mac, src_ip, src_port, _, _, _, payload = parsed
                out.append((payload, EthEndpoint(name, src_mac, src_ip, src_port)))
        return out

    def send(self, address: EthEndpoint, data: bytes) -> None:
        self._ident += 1
        frame = build_frame(data, src_mac=self.macs[address.interface], dst_mac=address.mac,
                            src_ip=self.local_ip, dst_ip=address.ip, src_port=self.listen_port,
                            dst_port=address.port, ident=self._ident)
        if len(frame) - _ETH.size > self.mtu:
            # the kernel would refuse it; callers check sizes against the MTU
            # up front (see max_payload), so this is a counted drop, not a crash
            self.oversize += 1
            return
        try:
            self.socks[address.interface].send(frame)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EPERM):
                raise
            self.send_errors += 1

    def send_batch(self, items: Iterable[tuple[EthEndpoint, bytes]]) -> None:
        for address, data in items:
            self.send(address, data)

    def send_train(self, address: EthEndpoint, datagrams: bytes, size: int) -> None:
        view = memoryview(datagrams)
        for at in range(0, len(view), size):
            self.send(address, bytes(view[at:at + size]))

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


def transport_for(endpoint, who):
    """The transport a process of a job opens on what its parent handed it:
    a bound UDP socket -> :class:`UdpTransport`; the job's
    :class:`fpisa.shm.ShmFabric` -> its switch side (``who == "switch"``) or
    worker ``who``'s side (an int rank)."""
    if isinstance(endpoint, socket.socket):
        return UdpTransport(endpoint)
    from .shm import ShmFabric

    if isinstance(endpoint, ShmFabric):
        return endpoint.switch_transport() if who == "switch" else endpoint.worker_transport(int(who))
    raise ValueError(f"no transport for an endpoint of type {type(endpoint).__name__}")
