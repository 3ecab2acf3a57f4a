"""One Mininet experiment: build the network, run the nodes, check and time the results.

:func:`run_experiment` builds a :class:`~hosts.mininet.network.Testbed`,
starts the switch processes (emulator on AF_PACKET, or for ``--switch
bmv2`` simple_switch in the star's switch host: :mod:`.bmv2`) and one worker process
per rank (the hosts allreduce client), runs ``repeat`` allreduces of seeded
gradient-like data, stops everything, and checks each allreduce:

1. every worker received identical bits;
2. bit-exact against the numerics core given the arrival orders the
   switches recorded (the emulator's ``ArrivalLog``; BMv2's arrival log
   in its registers, read by :class:`.bmv2.Bmv2SwitchNode`): ``fpisa.aggregate`` (star) or
   ``fpisa.hierarchy.aggregate_hierarchical`` (two-level, leaves sending
   normalized partials) with each leaf's and the spine's orders;
3. the error against the correctly rounded sum, and for two-level the
   *extra* error against a one-switch star fed the same arrivals
   (the leaves' orders concatenated in the spine's order);
4. completion time (first worker's start to last worker's end, all on the
   shared CLOCK_MONOTONIC), goodput per worker and its ratio to the
   payload line rate (the link's bandwidth times the payload's share of
   each frame: Ethernet+IPv4+UDP+aggregation headers are overhead).

It returns a JSON-ready report. Root is required (namespaces, veths, tc).
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

import numpy as np

import fpisa
from fpisa.formats import get_format
from fpisa.hierarchy import aggregate_hierarchical
from fpisa.protocol import UDP_PORT
from fpisa.verify import check_allreduce, packet_orders, star_reference
from hosts.allreduce import gradient_like
from hosts.worker import WorkerConfig

from .bmv2 import Bmv2SwitchNode, bmv2_missing, program_json
from .config import ExperimentConfig
from .network import WORKER_PORT, Testbed, mininet_missing, probe_kernel

__all__ = ["run_experiment", "preflight", "NotRoot", "ToolMissing", "ExperimentError", "summarize"]

#: seconds a node gets to load its kernels and say "ready"
START_TIMEOUT_S = 120.0


class NotRoot(RuntimeError):
    """Mininet needs root: exit code 2 (usage)."""


class ToolMissing(RuntimeError):
    """Mininet / BMv2 not installed: exit code 3."""


class ExperimentError(RuntimeError):
    """A node failed or timed out; the message carries its log's tail."""


def preflight(config: ExperimentConfig) -> None:
    if os.geteuid() != 0:
        raise NotRoot("fpisa mininet needs root (network namespaces, veth links, tc, nftables): "
                      "run it with sudo")
    why = mininet_missing()
    if why:
        raise ToolMissing(why)
    if config.switch == "bmv2":
        why = bmv2_missing(config)
        if why:
            raise ToolMissing(f"--switch bmv2: {why}")
        features = probe_kernel()
        if config.delay_ms and not features.netem:
            # without netem the sending processes hold packets; simple_switch cannot
            raise ValueError("--switch bmv2 --delay needs netem (this kernel has none: the delay "
                             "would be added by the workers only, one direction); use --switch emulator")
        if config.loss and not (features.netem or features.nft_egress):
            raise ValueError("--switch bmv2 --loss needs netem or nftables egress (the processes "
                             "would drop, and simple_switch cannot)")


class _Node:
    """A node process: lines from its stdout arrive through a reader thread."""

    def __init__(self, name: str, proc, log_path: str):
        self.name, self.proc, self.log_path = name, proc, log_path
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ExperimentError(f"{self.name} is gone: {self.log_tail()}") from None

    def expect(self, deadline: float, what: str, watch: list["_Node"] = ()) -> str:
        """The next line; fails at the deadline or as soon as a watched node dies."""
        while True:
            try:
                line = self.lines.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                break
            except queue.Empty:
                for other in watch:
                    if other.proc.poll() is not None:
                        raise ExperimentError(f"{other.name} exited (code {other.proc.poll()}) while "
                                              f"{self.name} waited for {what}; log: {other.log_tail()}") from None
                if time.monotonic() >= deadline:
                    raise ExperimentError(f"{self.name}: no {what} in time; log: {self.log_tail()}") from None
        if line is None:
            raise ExperimentError(f"{self.name} exited (code {self.proc.poll()}) waiting for {what}; "
                                  f"log: {self.log_tail()}")
        if line.startswith("{"):
            message = json.loads(line)
            if "error" in message:
                raise ExperimentError(f"{self.name}: {message['error']}; log: {self.log_tail()}")
        return line

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:]).strip() or "(empty)"
        except OSError:
            return "(no log)"


_warmed: set = set()


def _warm_kernels(config: ExperimentConfig, run_dir: str) -> None:
    """Compile the switch's Numba kernels once, here, so the node processes
    (started together on few cores) load them from the cache instead of
    each compiling them (~15 s each on a cold cache)."""
    key = (config.mode, config.fmt, config.packet_elements)
    if key in _warmed:
        return
    path = os.path.join(run_dir, "warm.spec.json")
    with open(path, "w") as f:
        json.dump({"role": "warm", "job": config.job.as_dict()}, f)
    done = subprocess.run([sys.executable, "-m", "hosts.mininet.nodes", path], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise ExperimentError(f"compiling the switch kernels failed: {done.stderr.strip()[-2000:]}")
    _warmed.add(key)


def _specs(bed: Testbed, config: ExperimentConfig, run_dir: str) -> tuple[list[dict], list[dict]]:
    """What each switch and worker process is told (JSON-ready)."""
    common = {"job": config.job.as_dict(), "seed": config.seed, "process_delay_ms": bed.process_delay_ms,
              "process_loss": bed.process_loss, "duplicate": config.duplicate, "reorder": config.reorder}
    switch_specs = []
    groups = config.groups
    for i, sw in enumerate(bed.switches):
        spec = {**common, "role": sw.role, "name": sw.name, "ip": sw.ip,
                "out": os.path.join(run_dir, sw.name), "seed_offset": 100 + i}
        if sw.role in ("switch", "leaf"):
            ports, workers = [], []
            for rank in groups[i]:
                _, port, _ = bed.uplink_of[("worker", rank)]
                w = bed.workers[rank]
                ports.append(port)
                workers.append([port, next(iter(w.interfaces.values())), w.ip, WORKER_PORT])
            spec.update(ports=ports, workers=workers)
            if sw.role == "leaf":
                spine, spine_port, spine_mac = bed.uplink_of[("leaf", i)]
                spec.update(uplink=f"{sw.name}up", spine=[spine_mac, spine.ip, UDP_PORT], leaf_index=i,
                            num_leaves=config.leaves, global_ranks=list(groups[i]),
                            total_workers=config.workers)
        else:  # spine: its "workers" are the leaves
            ports, workers = [], []
            for leaf in range(config.leaves):
                _, port, _ = bed.uplink_of[("leaf", leaf)]
                lf = bed.switches[leaf]
                ports.append(port)
                workers.append([port, lf.interfaces[f"{lf.name}up"], lf.ip, UDP_PORT])
            spec.update(ports=ports, workers=workers)
        switch_specs.append(spec)
    worker_specs = []
    for w in bed.workers:
        sw, _, _ = bed.uplink_of[("worker", w.index)]
        worker_specs.append({
            **common, "role": "worker", "name": w.name, "rank": w.index, "ip": w.ip, "port": WORKER_PORT,
            "switch_ip": sw.ip, "elements": config.elements, "out": run_dir,
            "worker_config": WorkerConfig(job=config.job, rank=w.index, timeout_ms=config.timeout_ms,
                                          max_timeout_ms=_max_timeout_ms(config), stall_s=30.0).as_dict(),
        })
    return switch_specs, worker_specs


def _max_timeout_ms(config: ExperimentConfig) -> float:
    """The cap of the workers' adaptive retransmission timeout: the client's
    default 200 ms for the emulator; BMv2 (a few hundred packets/s here) queues
    a window for longer than that, so its estimate must be free to follow."""
    return max(200.0, config.timeout_ms) if config.switch == "emulator" else max(2000.0, config.timeout_ms)


def _start(bed: Testbed, node, spec: dict, run_dir: str) -> _Node:
    path = os.path.join(run_dir, f"{spec['name']}.spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    log = os.path.join(run_dir, f"{spec['name']}.log")
    proc = bed.popen(node, [sys.executable, "-m", "hosts.mininet.nodes", path], log)
    return _Node(spec["name"], proc, log)


def _repeat_deadline(config: ExperimentConfig) -> float:
    """Generous: three times the line-rate time plus loss/timeout slack."""
    wire_bits = config.elements * config.element_bytes * 8 / config.payload_fraction
    line_s = wire_bits / (config.bw_mbit * 1e6) if config.bw_mbit else 0.0
    passes = 2 if config.job.info.exponent_pass else 1
    bmv2_s = 0.0
    if config.switch == "bmv2":
        # simple_switch runs this program at ~150 packets/s on 2 shared cores:
        # allow 20/s for every worker's packets and the results, per pass
        bmv2_s = 2 * config.workers * -(-config.elements // config.packet_elements) / 20.0
    return 60.0 + passes * (3 * line_s + bmv2_s) + 200 * config.delay_ms / 1e3


def run_experiment(config: ExperimentConfig, *, on_repeat: Callable[[int], None] | None = None,
                   keep_dir: bool = False) -> dict:
    """Run ``config`` in Mininet; returns the report (see module docstring)."""
    preflight(config)
    features = probe_kernel()
    run_dir = tempfile.mkdtemp(prefix="fpisa-mininet-")
    ok = False
    try:
        if config.switch == "bmv2":
            try:
                json_path = program_json(config)
            except RuntimeError as e:  # p4c-bm2-ss failed on the program
                raise ExperimentError(str(e)) from None
        else:
            _warm_kernels(config, run_dir)
        with Testbed(config, features) as bed:
            switch_specs, worker_specs = _specs(bed, config, run_dir)
            if config.switch == "bmv2":
                with Bmv2SwitchNode(bed, config, json_path, run_dir) as bmv2:
                    try:
                        replies, results = _run_workers(bed, config, worker_specs, [], run_dir,
                                                        on_repeat)
                    except ExperimentError as e:
                        try:
                            counters = bmv2.counters()
                        except Exception as why:  # the switch may be the thing that failed
                            counters = f"unreadable ({why})"
                        raise ExperimentError(f"{e}; simple_switch: {bmv2.stderr_tail(500) or '(quiet)'}; "
                                              f"counters: {counters}") from None
                    recorded, log_error = _bmv2_recorded(bmv2, config)
                    switch_stats = [bmv2.stats()]
            else:
                log_error = None
                switches = [_start(bed, sw, spec, run_dir) for sw, spec in zip(bed.switches, switch_specs)]
                replies, results = _run_workers(bed, config, worker_specs, switches, run_dir, on_repeat)
                deadline = time.monotonic() + 60
                for node in switches:
                    node.send("stop")
                for node in switches:
                    node.expect(deadline, "stopped")
                recorded, switch_stats = [], []
                for spec in switch_specs:
                    with np.load(spec["out"] + ".npz") as z:
                        recorded.append({k: z[k] for k in z.files})
                    with open(spec["out"] + ".json") as f:
                        switch_stats.append(json.load(f))
            links = bed.link_mechanism()
        report = _report(config, replies, results, recorded, switch_stats, log_error)
        report["kernel"] = {"netem": features.netem, "nft_egress": features.nft_egress}
        report["links"] = links
        ok = True
        return report
    finally:
        if ok and not keep_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"fpisa mininet: node logs and specs kept in {run_dir}", file=sys.stderr)


def _bmv2_recorded(bmv2: Bmv2SwitchNode, config: ExperimentConfig) -> tuple[list[dict], str | None]:
    """BMv2's recorded orders (one switch), or none and why: the checks then
    find every packet without its order and the run is not bit-exact."""
    from emulator.bmv2.arrival_log import ArrivalLogError, OrderBuilder

    try:
        return [bmv2.recorded()], None
    except ArrivalLogError as e:
        return [OrderBuilder(config.workers).arrays()], str(e)


def _run_workers(bed: Testbed, config: ExperimentConfig, worker_specs: list[dict], switches: list[_Node],
                 run_dir: str, on_repeat) -> tuple[list, list]:
    """Start the workers, run the repeats, end the workers: (replies, results) per repeat."""
    workers = [_start(bed, w, spec, run_dir) for w, spec in zip(bed.workers, worker_specs)]
    deadline = time.monotonic() + START_TIMEOUT_S
    for node in switches + workers:
        node.expect(deadline, "ready", watch=switches + workers)
    replies, results = [], []
    for r in range(config.repeat):
        for w in workers:
            w.send(f"go {r}")
        deadline = time.monotonic() + _repeat_deadline(config)
        replies.append([json.loads(w.expect(deadline, f"result of allreduce {r}", watch=switches))
                        for w in workers])
        results.append([np.load(os.path.join(run_dir, f"result_w{k}_r{r}.npy"))
                        for k in range(config.workers)])
        if on_repeat:
            on_repeat(r)
    for w in workers:
        w.send("exit")
    return replies, results


# -- checks --------------------------------------------------------------------------

def _check(config: ExperimentConfig, repeat: int, replies: list[dict], results: list[np.ndarray],
           recorded: list[dict]) -> dict:
    job = config.job
    K, n, E = job.num_workers, config.elements, job.packet_elements
    values = np.stack([gradient_like(n, k, config.seed + repeat, job.fmt) for k in range(K)])
    num_packets = job.pass_packets(n)[1]
    # the data pass is the worker's last pass (switchml: the exponent exchange came first)
    base = replies[0]["packet_id_base"] + replies[0]["packet_ids"] - num_packets
    per_switch = [packet_orders(rec, job.data_wire_mode, base, num_packets, rec["order"].shape[1])
                  for rec in recorded]
    missing = sum(m for _, m in per_switch)
    if config.topo == "star":
        return check_allreduce(values, results, job, missing,
                               lambda: star_reference(values, job, per_switch[0][0]))
    expand = [np.repeat(o, E, axis=0)[:n] for o, _ in per_switch]
    out = check_allreduce(values, results, job, missing, lambda: aggregate_hierarchical(
        values, job.mode, config.groups, fmt=job.fmt, leaf_orders=expand[:-1],
        spine_order=expand[-1], block_size=E))
    if missing:
        return out
    # the same arrivals through one switch: leaves' orders in the spine's order
    groups = [np.asarray(g) for g in config.groups]
    leaf_orders, spine_order = [o for o, _ in per_switch[:-1]], per_switch[-1][0]
    composed = np.stack([np.concatenate([groups[l][leaf_orders[l][p]] for l in spine_order[p]])
                         for p in range(num_packets)])
    star_error = fpisa.error_report(star_reference(values, job, composed),
                                    fpisa.aggregate(values, "exact", fmt=job.fmt), job.fmt)
    out["star_model_error_vs_exact"] = star_error
    out["extra_mean_ulp_vs_star"] = out["error_vs_exact"]["mean_ulp"] - star_error["mean_ulp"]
    out["extra_max_ulp_vs_star"] = out["error_vs_exact"]["max_ulp"] - star_error["max_ulp"]
    return out


def _report(config: ExperimentConfig, replies: list, results: list, recorded: list,
            switch_stats: list, log_error: str | None = None) -> dict:
    fmt = get_format(config.fmt)
    line_rate = config.bw_mbit * config.payload_fraction * fmt.storage_bytes / config.element_bytes
    runs = []
    for r in range(config.repeat):
        # the clients' counters add up over the repeats: this repeat's share
        def delta(name: str) -> int:
            now = sum(x["counters"][name] for x in replies[r])
            return now - (sum(x["counters"][name] for x in replies[r - 1]) if r else 0)

        seconds = max(x["end"] for x in replies[r]) - min(x["start"] for x in replies[r])
        goodput = config.elements * fmt.storage_bytes * 8 / seconds / 1e6 if seconds > 0 else math.inf
        run = {"repeat": r, "seconds": seconds, "goodput_mbit": goodput,
               "payload_line_rate_mbit": line_rate if config.bw_mbit else None,
               "goodput_ratio": goodput / line_rate if config.bw_mbit else None,
               "retransmitted": delta("retransmitted"), "sent": delta("sent")}
        if config.check:
            run["checks"] = _check(config, r, replies[r], results[r], recorded)
            if log_error is not None:
                run["checks"]["arrival_log_error"] = log_error
        runs.append(run)
    return {"config": config.as_dict(), "runs": runs, "summary": summarize(config, runs),
            "switches": switch_stats,
            "workers": [{"counters": x["counters"], "conversion": x["conversion"],
                         "send_errors": x["send_errors"]} for x in replies[-1]]}


def summarize(config: ExperimentConfig, runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    out = {"median_seconds": float(np.median(seconds)),
           "median_goodput_mbit": float(np.median([r["goodput_mbit"] for r in runs])),
           "median_goodput_ratio": (float(np.median([r["goodput_ratio"] for r in runs]))
                                    if config.bw_mbit else None)}
    if config.check:
        out["bit_exact"] = all(r["checks"]["bit_exact"] for r in runs)
        out["mean_ulp"] = float(np.mean([r["checks"]["error_vs_exact"]["mean_ulp"] for r in runs]))
        out["max_ulp"] = max(r["checks"]["error_vs_exact"]["max_ulp"] for r in runs)
        if config.topo == "two-level":
            out["extra_mean_ulp_vs_star"] = float(np.mean(
                [r["checks"].get("extra_mean_ulp_vs_star", math.nan) for r in runs]))
    return out
