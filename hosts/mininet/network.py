"""The emulated network: Mininet hosts for workers and switches, shaped links.

:class:`Testbed` builds a star (K workers on one switch) or a two-level
tree (workers on leaf switches, leaves on a spine) out of Mininet hosts:
every node is its own network namespace with veth links. There is no
OpenFlow switch at all (the kernel here has no openvswitch module): a
"switch" is a plain host whose ports carry no IP addresses, and the switch
*process* (the emulator on AF_PACKET sockets) does the forwarding.

Link properties, using what the kernel offers (:func:`probe_kernel`):
- bandwidth: htb on both ends of every link (Mininet's TCLink);
- delay and loss: netem when the kernel has it; otherwise loss is an
  nftables rule on the netdev egress hook of both ends
  (``numgen random mod 10000 < N drop``) and delay is left to the node
  processes (``Testbed.process_delay_ms``), which hold the packets they send.

Hygiene that makes a userspace switch work on veths: tx checksum offload
off (else the UDP checksum is left for a NIC that does not exist), IPv6
off in every namespace (no router solicitations etc. in the switch's
sockets), static ARP on the workers, no IPs on switch ports.

Teardown (:meth:`Testbed.close`, also on Ctrl-C): node processes are
terminated, the nft tables and namespace names (:meth:`Testbed.netns_name`)
this run created are deleted, ``net.stop()``
removes the namespaces and veths. Mininet's broad cleanup (``mn -c``) is
never used: it kills processes by name.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field

from .config import ExperimentConfig

__all__ = ["KernelFeatures", "probe_kernel", "Testbed", "NodeInfo", "mininet_missing", "WORKER_PORT",
           "NFT_TABLE"]

#: the workers' own UDP port (the switch's is fpisa.protocol.UDP_PORT)
WORKER_PORT = 47000
#: the nftables table this project creates in each namespace (and deletes)
NFT_TABLE = "fpisa_loss"


@dataclass(frozen=True)
class KernelFeatures:
    netem: bool
    nft_egress: bool

    def describe(self) -> str:
        return (f"netem {'yes' if self.netem else 'no (delay in the processes)'}, "
                f"nftables egress {'yes' if self.nft_egress else 'no'}")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@functools.lru_cache(maxsize=1)
def probe_kernel() -> KernelFeatures:
    """Try netem and an nft egress rule on a veth in a scratch namespace."""
    ns = f"fpisa-probe-{uuid.uuid4().hex[:8]}"
    if _run(["ip", "netns", "add", ns]).returncode != 0:
        return KernelFeatures(False, False)
    try:
        ok = _run(["ip", "-n", ns, "link", "add", "pa", "type", "veth", "peer", "name", "pb"]).returncode == 0
        _run(["ip", "-n", ns, "link", "set", "pa", "up"])
        netem = ok and _run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "pa", "root",
                             "netem", "delay", "1ms"]).returncode == 0
        nft = ok and shutil.which("nft") is not None and subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], capture_output=True, text=True, timeout=30,
            input='table netdev probe {\n chain c {\n type filter hook egress device "pa" priority 0;\n }\n}\n',
        ).returncode == 0
        return KernelFeatures(netem=netem, nft_egress=nft)
    finally:
        _run(["ip", "netns", "del", ns])


def mininet_missing() -> str | None:
    """Why Mininet cannot run here, or None."""
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "the mininet Python package is not installed (pip install 'fpisa[mininet]')"
    if shutil.which("mnexec") is None:
        return "mnexec is not on PATH (apt-get install mininet)"
    for tool in ("ip", "tc", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (apt-get install iproute2 ethtool)"
    return None


@dataclass
class NodeInfo:
    """One node as the node processes need to know it."""

    name: str
    role: str  # "worker", "switch" (star), "leaf", "spine"
    ip: str
    #: interface -> MAC, on this node
    interfaces: dict[str, str] = field(default_factory=dict)
    #: for workers: rank; for leaves: leaf index
    index: int = 0
    host: object = None  # the Mininet host


def _mac(kind: int, a: int, b: int) -> str:
    return f"02:fa:{kind:02x}:{a:02x}:{b:02x}:01"


class Testbed:
    """The network for one experiment; use as a context manager."""

    def __init__(self, config: ExperimentConfig, features: KernelFeatures | None = None):
        self.config = config
        self.features = features or probe_kernel()
        # a short tag keeps interface names (<= 15 chars) unique while Mininet
        # creates them in the root namespace, also across concurrent runs
        self.tag = "f" + uuid.uuid4().hex[:4]
        self.net = None
        self.workers: list[NodeInfo] = []
        self.switches: list[NodeInfo] = []  # star: [switch]; two-level: leaves then spine
        #: (worker rank or leaf index) -> (node the link ends at, its port name, port MAC)
        self.uplink_of: dict[tuple[str, int], tuple[NodeInfo, str, str]] = {}
        self.processes: list = []
        self._nft_nodes: list = []
        #: names this run gave to node namespaces (``ip netns attach``)
        self._netns_names: list[str] = []

    # -- what the experiment asks ---------------------------------------------

    @property
    def process_delay_ms(self) -> float:
        """Delay the node processes must add per link (0 when netem does it)."""
        return 0.0 if self.features.netem else self.config.delay_ms

    @property
    def process_loss(self) -> float:
        """Loss the processes must add themselves (only without netem and nftables)."""
        return 0.0 if (self.features.netem or self.features.nft_egress) else self.config.loss

    def link_mechanism(self) -> dict:
        c = self.config
        return {"bandwidth": "htb" if c.bw_mbit else "none",
                "delay": ("netem" if self.features.netem else "process") if c.delay_ms else "none",
                "loss": ("netem" if self.features.netem else "nftables" if self.features.nft_egress
                         else "process") if c.loss else "none",
                "duplicate": "process" if c.duplicate else "none",
                "reorder": "process" if c.reorder else "none"}

    # -- build ------------------------------------------------------------------------

    def __enter__(self) -> "Testbed":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _link_params(self) -> dict:
        c = self.config
        params: dict = {"txo": False, "rxo": False}
        if c.bw_mbit:
            params["bw"] = c.bw_mbit
        if self.features.netem:
            if c.delay_ms:
                params["delay"] = f"{c.delay_ms}ms"
            if c.loss:
                params["loss"] = 100.0 * c.loss
        return params

    def _build(self) -> None:
        from mininet.link import TCLink
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        # htb's "quantum is big" warnings arrive as Mininet errors; the
        # qdiscs are verified below instead
        setLogLevel("critical")
        c = self.config
        t = self.tag
        net = Mininet(topo=None, controller=None, link=TCLink, build=False, autoSetMacs=False,
                      autoStaticArp=False, waitConnected=False)
        self.net = net
        params = self._link_params()
        for rank in range(c.workers):
            self.workers.append(NodeInfo(f"{t}w{rank}", "worker", f"10.0.0.{rank + 1}", index=rank))
        if c.topo == "star":
            self.switches.append(NodeInfo(f"{t}s", "switch", "10.0.1.1"))
        else:
            for leaf in range(c.leaves):
                self.switches.append(NodeInfo(f"{t}l{leaf}", "leaf", f"10.0.1.{leaf + 1}", index=leaf))
            self.switches.append(NodeInfo(f"{t}sp", "spine", "10.0.2.1"))
        for node in self.workers:
            node.host = net.addHost(node.name, ip=f"{node.ip}/16", mac=_mac(1, node.index, 0))
        for node in self.switches:
            node.host = net.addHost(node.name, ip=None)
        # worker links: to the star switch or to their leaf
        for g, group in enumerate(c.groups):
            sw = self.switches[g]
            for port, rank in enumerate(group):
                w = self.workers[rank]
                w_intf, s_intf = f"{w.name}e0", f"{sw.name}p{port}"
                w_mac, s_mac = _mac(1, rank, 0), _mac(2, g, port)
                net.addLink(w.host, sw.host, intfName1=w_intf, intfName2=s_intf, addr1=w_mac,
                            addr2=s_mac, **params)
                w.interfaces[w_intf] = w_mac
                sw.interfaces[s_intf] = s_mac
                self.uplink_of[("worker", rank)] = (sw, s_intf, s_mac)
        if c.topo == "two-level":
            spine = self.switches[-1]
            for leaf in range(c.leaves):
                lf = self.switches[leaf]
                l_intf, s_intf = f"{lf.name}up", f"{spine.name}p{leaf}"
                l_mac, s_mac = _mac(3, leaf, 0), _mac(4, leaf, 0)
                net.addLink(lf.host, spine.host, intfName1=l_intf, intfName2=s_intf, addr1=l_mac,
                            addr2=s_mac, **params)
                lf.interfaces[l_intf] = l_mac
                spine.interfaces[s_intf] = s_mac
                self.uplink_of[("leaf", leaf)] = (spine, s_intf, s_mac)
        net.build()
        net.start()
        for node in self.workers + self.switches:
            self._prepare(node)
        if c.loss and not self.features.netem and self.features.nft_egress:
            for node in self.workers + self.switches:
                self._add_loss(node)
        if c.bw_mbit:
            self._verify_shaping()

    def _sh(self, node: NodeInfo, command: str) -> str:
        return node.host.cmd(command)

    def _prepare(self, node: NodeInfo) -> None:
        cmds = ["sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 "
                "net.ipv6.conf.lo.disable_ipv6=1"]
        for intf in node.interfaces:
            cmds.append(f"ethtool -K {intf} tx off >/dev/null 2>&1")
            if node.role != "worker":
                # the switch process answers; the namespace's own stack must not
                cmds.append(f"ip addr flush dev {intf}")
            cmds.append(f"ip link set {intf} up")
        if node.role == "worker":
            sw, _, s_mac = self.uplink_of[("worker", node.index)]
            intf = next(iter(node.interfaces))
            cmds.append(f"ip neigh replace {sw.ip} lladdr {s_mac} dev {intf} nud permanent")
        self._sh(node, " ; ".join(cmds))

    def _add_loss(self, node: NodeInfo) -> None:
        threshold = int(round(self.config.loss * 10000))
        chains = "".join(
            f'  chain drop_{i} {{\n    type filter hook egress device "{intf}" priority 0;\n'
            f"    numgen random mod 10000 < {threshold} drop\n  }}\n"
            for i, intf in enumerate(node.interfaces))
        rules = f"table netdev {NFT_TABLE} {{\n{chains}}}\n"
        out = node.host.popen(["nft", "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        text, _ = out.communicate(rules, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"nft on {node.name} failed: {text.strip()}")
        self._nft_nodes.append(node)

    def _verify_shaping(self) -> None:
        for node in self.workers + self.switches:
            for intf in node.interfaces:
                qdiscs = self._sh(node, f"tc qdisc show dev {intf}")
                if "htb" not in qdiscs and "tbf" not in qdiscs:
                    raise RuntimeError(f"bandwidth shaping did not apply on {node.name}:{intf}: {qdiscs.strip()}")

    # -- processes ------------------------------------------------------------------

    def popen(self, node: NodeInfo, args: list[str], log_path: str):
        """Start ``args`` inside ``node``'s namespace; stdin/stdout are pipes."""
        log = open(log_path, "w")
        try:
            proc = node.host.popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   text=True, bufsize=1, cwd=os.getcwd())
        finally:
            log.close()
        self.processes.append(proc)
        return proc

    def netns_name(self, node: NodeInfo) -> str:
        """A name for ``node``'s namespace under /run/netns (``ip netns attach``),
        so tools that take ``ip netns exec NAME`` (emulator.bmv2's SimpleSwitch
        and SwitchCLI) can run inside a Mininet host; removed by close()."""
        name = f"fpisa-mn-{self.tag}-{node.name}"
        if name not in self._netns_names:
            done = _run(["ip", "netns", "attach", name, str(node.host.pid)])
            if done.returncode != 0:
                raise RuntimeError(f"ip netns attach {name} {node.host.pid} failed: {done.stderr.strip()}")
            self._netns_names.append(name)
        return name

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.processes.clear()
        for node in self._nft_nodes:
            try:
                self._sh(node, f"nft delete table netdev {NFT_TABLE}")
            except Exception:
                pass  # the namespace goes away with net.stop() anyway
        self._nft_nodes.clear()
        for name in self._netns_names:
            # only the name goes; the namespace itself goes with its Mininet host
            _run(["ip", "netns", "del", name])
        self._netns_names.clear()
        if self.net is not None:
            net, self.net = self.net, None
            net.stop()
