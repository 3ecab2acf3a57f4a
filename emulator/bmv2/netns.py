"""veth pairs (and network namespaces) for simple_switch's interface mode; root only.

Everything created here is named with this process's id and deleted by the
object that created it; nothing else is touched.
"""

from __future__ import annotations

import os
import subprocess

__all__ = ["VethPair", "Namespace", "NetworkError"]


class NetworkError(RuntimeError):
    pass


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")


def _no_ipv6(name: str, netns: str | None = None) -> None:
    # IPv6 router solicitations etc. would be noise on the switch's ports
    cmd = ["sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1"]
    subprocess.run((["ip", "netns", "exec", netns] if netns else []) + cmd, capture_output=True)


class Namespace:
    """A network namespace of our own (``ip netns add``), deleted on close."""

    def __init__(self, tag: str = "sw"):
        if os.geteuid() != 0:
            raise NetworkError("network namespaces need root")
        self.name = f"fpisa-{tag}-{os.getpid()}"
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"])

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self) -> "Namespace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VethPair:
    """``host`` <-> ``switch`` veth pair, up, IPv6 off; the switch end may
    live in a namespace (simple_switch then runs there: SimpleSwitch(netns=...))."""

    _count = 0

    def __init__(self, switch_netns: str | None = None):
        if os.geteuid() != 0:
            raise NetworkError("veth pairs need root")
        VethPair._count += 1
        tag = f"{os.getpid() % 100000}{VethPair._count}"[-9:]
        # interface names are at most 15 characters
        self.host, self.switch = f"fph{tag}", f"fps{tag}"
        self.netns = switch_netns
        _run(["ip", "link", "add", self.host, "type", "veth", "peer", "name", self.switch])
        try:
            if switch_netns:
                _run(["ip", "link", "set", self.switch, "netns", switch_netns])
            _no_ipv6(self.host)
            _no_ipv6(self.switch, switch_netns)
            _run(["ip", "link", "set", self.host, "up"])
            prefix = ["ip", "netns", "exec", switch_netns] if switch_netns else []
            _run(prefix + ["ip", "link", "set", self.switch, "up"])
        except NetworkError:
            self.close()
            raise

    def close(self) -> None:
        # deleting one end deletes the pair (also when the other is in a namespace)
        subprocess.run(["ip", "link", "del", self.host], capture_output=True)

    def __enter__(self) -> "VethPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
