"""Configure a running simple_switch for an aggregation job, and read it back.

Everything goes through ``simple_switch_CLI`` (thrift). Table, action,
counter and register names are looked up in the program's compiled JSON by
their suffix (the part the P4 source names, e.g. ``worker_check.job``), so
the same code serves all three programs whatever p4c prefixes them with.

A job needs (docs/p4.md):
- ``worker_check.job``: job -> (num_workers, pool_base, pool_size, mcast_grp, raw_registers)
- ``worker_check.worker``: (job, source IP, source UDP port) -> rank
- ``worker_address`` (egress): (job, rank) -> destination MAC, IP, UDP port
- a multicast group with one node per worker: rid = rank, port = the
  worker's switch port.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fpisa.protocol import MAX_WORKERS
from p4 import MAX_JOBS, POOL_SLOTS, SWITCH_COUNTERS

from .tools import SIMPLE_SWITCH_CLI, require_tools, tool_path

__all__ = ["ControlPlaneError", "ProgramInfo", "SwitchCLI", "WorkerPort", "Bmv2Job",
           "configure_job", "read_counters", "read_register", "row_index", "MAX_WORKERS"]

_MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


class ControlPlaneError(RuntimeError):
    pass


class ProgramInfo:
    """Names of tables, actions, counters and registers in a compiled program."""

    def __init__(self, json_path: Path):
        self.json_path = Path(json_path)
        spec = json.loads(self.json_path.read_text())
        self.tables: dict[str, list[str]] = {}
        for pipeline in spec.get("pipelines", []):
            for table in pipeline.get("tables", []):
                self.tables[table["name"]] = list(table.get("actions", []))
        self.counters = [c["name"] for c in spec.get("counter_arrays", [])]
        self.registers = {r["name"]: r["size"] for r in spec.get("register_arrays", [])}

    @staticmethod
    def _unique(names, suffix: str, kind: str) -> str:
        hits = [n for n in names if n == suffix or n.endswith("." + suffix)]
        if len(hits) != 1:
            raise ControlPlaneError(f"{kind} *{suffix}: {len(hits)} matches in the program "
                                    f"({hits[:5]})")
        return hits[0]

    def table(self, suffix: str) -> str:
        return self._unique(self.tables, suffix, "table")

    def action(self, table: str, suffix: str) -> str:
        return self._unique(self.tables[table], suffix, f"action of {table}")

    def counter(self, suffix: str) -> str:
        return self._unique(self.counters, suffix, "counter")

    def register(self, suffix: str) -> str:
        return self._unique(self.registers, suffix, "register")


class SwitchCLI:
    """Runs batches of simple_switch_CLI commands against one switch."""

    def __init__(self, thrift_port: int, netns: str | None = None, timeout: float = 120.0):
        require_tools(SIMPLE_SWITCH_CLI)
        self.thrift_port = thrift_port
        self.netns = netns
        self.timeout = timeout

    def run(self, commands: list[str]) -> str:
        """Output of the batch; ControlPlaneError if any command failed."""
        cmd = [tool_path(SIMPLE_SWITCH_CLI), "--thrift-port", str(self.thrift_port)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        proc = subprocess.run(cmd, input="\n".join(commands) + "\n", capture_output=True,
                              text=True, timeout=self.timeout)
        out = proc.stdout + proc.stderr
        bad = [line for line in out.splitlines()
               if re.search(r"\b(Error|Invalid|error|Could not connect|Traceback)\b", line)]
        if proc.returncode != 0 or bad:
            raise ControlPlaneError(f"simple_switch_CLI failed: {bad[:5] or out[-1000:]}")
        return out


@dataclass(frozen=True)
class WorkerPort:
    """A worker as the switch sees it: rank, addresses, and its switch port."""

    rank: int
    mac: str
    ip: str
    udp_port: int
    switch_port: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < MAX_WORKERS:
            raise ValueError(f"rank {self.rank} outside 0..{MAX_WORKERS - 1}")
        if not _MAC.match(self.mac):
            raise ValueError(f"bad MAC address {self.mac!r}")
        ipaddress.IPv4Address(self.ip)  # raises ValueError
        if not 0 < self.udp_port < 65536:
            raise ValueError(f"bad UDP port {self.udp_port}")
        if not 0 <= self.switch_port < 512:
            raise ValueError(f"bad switch port {self.switch_port}")


@dataclass(frozen=True)
class Bmv2Job:
    """One aggregation job as installed in a P4 switch."""

    job: int
    workers: tuple[WorkerPort, ...]
    pool_size: int
    pool_base: int = 0
    #: multicast group; default job + 1 (group 0 means "no multicast" in v1model)
    mcast_grp: int = 0
    raw_registers: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "workers", tuple(self.workers))
        if not 0 <= self.job < MAX_JOBS:
            raise ValueError(f"job {self.job} outside 0..{MAX_JOBS - 1}")
        ranks = sorted(w.rank for w in self.workers)
        if ranks != list(range(len(self.workers))) or not 1 <= len(ranks) <= MAX_WORKERS:
            raise ValueError(f"worker ranks must be 0..K-1 with 1 <= K <= {MAX_WORKERS}, got {ranks}")
        if len({(w.ip, w.udp_port) for w in self.workers}) != len(self.workers):
            raise ValueError("worker (IP, UDP port) addresses must be distinct")
        if not (0 <= self.pool_base and 1 <= self.pool_size
                and self.pool_base + self.pool_size <= POOL_SLOTS):
            raise ValueError(f"pool [{self.pool_base}, {self.pool_base + self.pool_size}) does "
                             f"not fit the switch's {POOL_SLOTS} slots")
        if self.mcast_grp == 0:
            object.__setattr__(self, "mcast_grp", self.job + 1)
        if not 1 <= self.mcast_grp < 65536:
            raise ValueError(f"bad multicast group {self.mcast_grp}")

    @property
    def num_workers(self) -> int:
        return len(self.workers)

    def table_commands(self, info: ProgramInfo) -> list[str]:
        job_table = info.table("worker_check.job")
        worker_table = info.table("worker_check.worker")
        address_table = info.table("worker_address")
        set_job = info.action(job_table, "set_job")
        set_rank = info.action(worker_table, "set_rank")
        set_address = info.action(address_table, "set_worker_address")
        cmds = [f"table_add {job_table} {set_job} {self.job} => {self.num_workers} "
                f"{self.pool_base} {self.pool_size} {self.mcast_grp} {int(self.raw_registers)}"]
        for w in self.workers:
            cmds.append(f"table_add {worker_table} {set_rank} {self.job} {w.ip} {w.udp_port} "
                        f"=> {w.rank}")
            cmds.append(f"table_add {address_table} {set_address} {self.job} {w.rank} => "
                        f"{w.mac} {w.ip} {w.udp_port}")
        return cmds


def configure_job(cli: SwitchCLI, info: ProgramInfo, job: Bmv2Job) -> None:
    """Install the job's tables and its multicast group (one replica per worker)."""
    cli.run(job.table_commands(info))
    out = cli.run([f"mc_mgrp_create {job.mcast_grp}"]
                  + [f"mc_node_create {w.rank} {w.switch_port}" for w in job.workers])
    handles = [int(h) for h in re.findall(r"node was created with handle (\d+)", out)]
    if len(handles) != job.num_workers:
        raise ControlPlaneError(f"expected {job.num_workers} multicast nodes, CLI said: {out[-500:]}")
    cli.run([f"mc_node_associate {job.mcast_grp} {h}" for h in handles])


def read_counters(cli: SwitchCLI, info: ProgramInfo) -> dict[str, int]:
    """Packet counts by name (p4.SWITCH_COUNTERS), ingress and egress summed."""
    names = [info.counter("count_outcome.switch_counter"), info.counter("egress_counter")]
    cmds = [f"counter_read {n} {i}" for n in names for i in range(len(SWITCH_COUNTERS))]
    out = cli.run(cmds)
    packets = [int(p) for p in re.findall(r"(\d+) packets\)", out)]
    if len(packets) != len(cmds):
        raise ControlPlaneError(f"could not parse counter_read output: {out[-500:]}")
    n = len(SWITCH_COUNTERS)
    return {name: packets[i] + packets[n + i] for i, name in enumerate(SWITCH_COUNTERS)}


def row_index(pool_base: int, slot: int, shadow_set: int) -> int:
    """Index of (slot, shadow set) in every per-row register (worker_check.p4)."""
    return ((pool_base + slot) << 1) | shadow_set


def read_register(cli: SwitchCLI, info: ProgramInfo, suffix: str, index: int) -> int:
    name = info.register(suffix)
    out = cli.run([f"register_read {name} {index}"])
    match = re.search(re.escape(name) + r"\[\d+\]\s*=\s*(-?\d+)", out)
    if not match:
        raise ControlPlaneError(f"could not parse register_read output: {out[-500:]}")
    return int(match.group(1))
