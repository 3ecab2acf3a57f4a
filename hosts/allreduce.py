"""The main job: K worker processes allreduce an array through one switch process.

:func:`run_allreduce` binds the sockets (loopback UDP, no root), starts the
switch (the emulator, or the BMv2 bridge: ``AllreduceConfig.switch``) and K
workers (processes from a forkserver), generates seeded gradient-like data,
runs, and checks (:mod:`fpisa.verify`):

1. every worker received identical bits;
2. the result is bit-exact against ``fpisa.aggregate`` given the switch's
   recorded arrival order per packet (BMv2: the orders its program
   logged; SwitchML: the integer sum does not depend on order);
3. the error against the exact sum (``fpisa.error_report``).

It returns a JSON-ready report (config, seconds, elements/s, errors,
bit-exactness, switch and worker counters, host conversion cost).

This module is part of the testbed layer: it composes the switch
(``emulator``) with the worker client (``hosts.worker``).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from multiprocessing.connection import wait
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from fpisa.formats import get_format
from fpisa.job import JobSpec
from fpisa.netem import LinkFaults
from fpisa.net import transport_for
from fpisa.pacing import LinkPacer, PacedTransport
from fpisa.verify import check_allreduce, packet_orders, star_reference

from .pipelined import PipelinedClient, check_conversion_threads
from .worker import AllreduceClient, WorkerConfig

__all__ = ["AllreduceConfig", "AllreduceFailed", "run_allreduce", "gradient_like", "check_results",
           "SWITCHES", "FAULT_DIRECTIONS"]

#: --switch NAME -> the module whose ``launch(SwitchConfig, sock, faults, context)``
#: starts that switch as a process
SWITCHES = {"emulator": "emulator.server", "bmv2": "emulator.bmv2.bridge"}
FAULT_DIRECTIONS = ("both", "to-switch", "from-switch")
#: how the processes exchange packets: rings in shared memory (fpisa.shm), or
#: UDP on loopback (fpisa.net); the BMv2 bridge speaks UDP only
TRANSPORTS = ("shm", "udp")


class AllreduceFailed(RuntimeError):
    """A worker or the switch failed or died: the run has no result."""


@dataclass(frozen=True)
class AllreduceConfig:
    """Everything that determines one run (printed into its report)."""

    job: JobSpec = field(default_factory=JobSpec)
    #: elements each worker contributes
    elements: int = 1_000_000
    #: faults on the emulated links (each sender draws its own seeded stream)
    faults: LinkFaults = field(default_factory=LinkFaults)
    #: which links the faults act on: both, to-switch (workers' sends), from-switch
    fault_direction: str = "both"
    #: seeds the data and the faults
    seed: int = 0
    timeout_ms: float = 20.0
    switch: str = "emulator"
    #: "shm" or "udp"; None: shm for the emulator (udp where fpisa.shm does
    #: not run: not Linux x86-64), udp for BMv2
    transport: str | None = None
    #: bit-exact and error checks (costs a reference aggregation)
    check: bool = True
    #: None: the serial client (hosts.worker); N >= 1: hosts.pipelined with N
    #: conversion threads per worker, overlapping conversion with the network
    conversion_threads: int | None = None
    #: the pipelined client's unit of conversion (None: its default, 64 packets, >= 65536 elements)
    chunk_elements: int | None = None
    #: pace each worker's link to this many Gb/s (fpisa.pacing; None: unpaced)
    link_gbps: float | None = None

    def __post_init__(self) -> None:
        def bad(msg):
            raise ValueError(f"allreduce: {msg}")

        if not isinstance(self.job, JobSpec):
            bad(f"job must be a JobSpec, got {type(self.job).__name__}")
        if isinstance(self.elements, bool) or not isinstance(self.elements, int) or self.elements < 1:
            bad(f"elements must be an int >= 1, got {self.elements!r}")
        if self.fault_direction not in FAULT_DIRECTIONS:
            bad(f"fault_direction must be one of {FAULT_DIRECTIONS}, got {self.fault_direction!r}")
        if self.switch not in SWITCHES:
            bad(f"switch must be one of {tuple(SWITCHES)}, got {self.switch!r}")
        if self.transport is None:
            from fpisa import shm

            # shared memory where it runs (Linux x86-64), else loopback UDP
            default = "shm" if self.switch == "emulator" and shm.supported() else "udp"
            object.__setattr__(self, "transport", default)
        if self.transport not in TRANSPORTS:
            bad(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if self.switch == "bmv2" and self.transport != "udp":
            bad("the BMv2 bridge exchanges packets over UDP: use --transport udp")
        if not self.timeout_ms > 0:
            bad(f"timeout_ms must be > 0, got {self.timeout_ms!r}")
        if not isinstance(self.faults, LinkFaults):
            bad(f"faults must be a LinkFaults, got {type(self.faults).__name__}")
        try:
            if self.conversion_threads is not None:
                check_conversion_threads(self.conversion_threads)
            if self.chunk_elements is not None:
                if self.conversion_threads is None:
                    raise ValueError("chunk_elements needs conversion_threads (the pipelined client)")
                PipelinedClient.check_chunk(self.chunk_elements)
            if self.link_gbps is not None:
                LinkPacer(self.link_gbps)  # a ValueError for a bad rate
        except ValueError as e:
            bad(str(e))

    def as_dict(self) -> dict:
        """Flat: the job's fields, the faults' and the run's (the report's "config")."""
        faults = {k: getattr(self.faults, k) for k in ("loss", "duplicate", "reorder", "delay_ms")}
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("job", "faults")}
        return {**self.job.as_dict(), **faults, **run}

    def sender_faults(self, seed_offset: int = 0) -> LinkFaults:
        """The link faults of one sender: the switch is seed_offset 0
        (switch -> workers), worker r is 1 + r (worker -> switch)."""
        towards_switch = seed_offset > 0
        applies = self.fault_direction == "both" or (
            self.fault_direction == ("to-switch" if towards_switch else "from-switch"))
        seed = self.seed * 1000 + seed_offset
        return self.faults.with_seed(seed) if applies else LinkFaults(seed=seed)

    def worker_config(self, rank: int) -> WorkerConfig:
        # the timeout's cap is at least its floor
        return WorkerConfig(job=self.job, rank=rank, timeout_ms=self.timeout_ms,
                            max_timeout_ms=max(200.0, self.timeout_ms))


def gradient_like(elements: int, rank: int, seed: int, fmt: str = "fp32") -> np.ndarray:
    """Seeded gradient-like values (bit patterns of ``fmt``) for one worker.

    Per "layer" of 4096 elements a magnitude scale shared by all workers
    (log-uniform over five decades, as gradients of different layers differ)
    times a component common to all workers plus a worker's own noise.
    """
    fmt = get_format(fmt)
    layers = -(-elements // 4096)
    shared = np.random.default_rng([seed, 0xFEED])
    low = -6.0 if fmt.exponent_bits == 8 else -3.5  # stay out of fp16's subnormals
    scale = 10.0 ** shared.uniform(low, low + 5.0, layers)
    common = shared.standard_normal(elements)
    own = np.random.default_rng([seed, rank]).standard_normal(elements)
    x = (np.repeat(scale, 4096)[:elements] * (common + own)).astype(np.float32)
    if fmt.name == "fp32":
        return x.view(np.uint32)
    if fmt.name == "fp16":
        return x.astype(np.float16).view(np.uint16)
    return (x.view(np.uint32) >> 16).astype(np.uint16)  # bf16: truncate fp32


# -- worker processes -----------------------------------------------------------------

def _worker_main(config: AllreduceConfig, rank: int, endpoint, switch_address, conn, go, progress):
    try:
        bits = gradient_like(config.elements, rank, config.seed, config.job.fmt)
        transport = transport_for(endpoint, rank)
        if config.link_gbps is not None:
            transport = PacedTransport(transport, LinkPacer(config.link_gbps))
        faults = config.sender_faults(seed_offset=1 + rank)
        options = dict(faults=faults if faults.active else None, progress=progress)
        if config.conversion_threads is None:
            client = AllreduceClient(config.worker_config(rank), transport, switch_address, **options)
        else:
            client = PipelinedClient(config.worker_config(rank), transport, switch_address,
                                     conversion_threads=config.conversion_threads,
                                     chunk_elements=config.chunk_elements, **options)
        client.warm_up()
    except Exception as e:
        conn.send(("error", rank, f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", rank, None))
    go.wait()
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        result = client.allreduce(bits)
        if config.link_gbps is not None:
            transport.drain()  # done when the link has sent the last byte, not before
        end = time.perf_counter()
        cpu = time.process_time() - cpu
    except Exception as e:
        conn.send(("error", rank, f"{type(e).__name__}: {e}"))
        return
    conn.send(("done", rank, {"start": start, "end": end, "result": result,
                              "counters": {**client.counters.as_dict(), "cpu_seconds": cpu},
                              "conversion": client.conversion.as_dict(),
                              "packet_ids": client.packet_ids,
                              "pacing": transport.stats() if config.link_gbps is not None else None,
                              "pipeline": client.pipeline.as_dict() if config.conversion_threads else None}))
    transport.close()


def _context(switch_module: str | None):
    """A forkserver that has imported numpy, Numba and the project once:
    each run's K+1 processes then start in milliseconds instead of
    re-importing everything (seconds on a busy 2-core machine). Forking
    from a clean server (no threads, no sockets) is as safe as spawning."""
    ctx = mp.get_context("forkserver")
    modules = ["numpy", "fpisa", "fpisa.net", "fpisa.netem", "hosts.worker", "hosts.allreduce"]
    ctx.set_forkserver_preload(modules + ([switch_module] if switch_module else []))
    return ctx


def _bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _launcher(name: str):
    """The ``launch`` function of switch ``name`` (imported here: the testbed
    layer may name the switch; the worker client never does)."""
    import importlib

    return importlib.import_module(SWITCHES[name]).launch


def run_allreduce(config: AllreduceConfig, *, progress: bool | None = None,
                  start_timeout: float = 120.0, launch_switch=None, on_started=None) -> dict:
    """Run the job; return the report (see module docstring).

    ``progress``: a progress bar on stderr (None: when stderr is a terminal).
    ``launch_switch``: replaces ``config.switch``'s launcher (tests use it to
    play a failing switch); same signature as ``emulator.server.launch``.
    ``on_started(worker processes)``: called once all have been told to go
    (tests use it to kill one).
    """
    from tqdm import tqdm

    K = config.job.num_workers

    def bar():
        return tqdm(total=config.job.packets(config.elements) * K, unit="packet", desc="allreduce",
                    disable=(None if progress is None else not progress), leave=False, mininterval=0.2)

    reports, stats, recorded, _ = run_job(
        config, _context(SWITCHES[config.switch]), _worker_main, (config,), bar,
        start_timeout=start_timeout, launch_switch=launch_switch, on_started=on_started)
    return _report(config, reports, stats, recorded)


def run_job(config: AllreduceConfig, ctx, worker_main, worker_args: tuple, bar, *,
            start_timeout: float = 120.0, launch_switch=None, on_started=None, on_message=None,
            name: str = "fpisa-worker") -> tuple[dict[int, dict], dict, dict, float]:
    """Start ``config``'s switch and K worker processes on its transport, run
    them, collect and release everything (after success, failure and
    Ctrl-C alike). The machinery every testbed job shares (``fpisa
    allreduce``, ``fpisa query``).

    Worker ``rank`` runs ``worker_main(*worker_args, rank, endpoint,
    switch_address, conn, go, progress)``: it sends ``("ready", rank, None)``
    on ``conn``, waits for ``go``, counts packets in ``progress`` and sends
    ``("done", rank, report)``; any other message kind fails the job
    (:class:`AllreduceFailed`) unless ``on_message(kind, rank, detail)``
    raises something more specific first. ``bar()`` makes the progress bar
    once all are ready. Returns (reports by rank, the switch's statistics,
    its recorded arrival orders, seconds to start everything)."""
    from emulator.pipeline import SwitchConfig

    job = config.job
    K = job.num_workers
    fabric, sockets = None, []
    t_setup = time.perf_counter()
    if config.transport == "shm":
        from fpisa.shm import ShmFabric

        # every packet in flight holds at most one slot each way; retransmitted
        # and duplicated copies need room too
        fabric = ShmFabric.create(K, job.max_data_packet_bytes, slots_per_ring=max(1024, 4 * job.window),
                                  result_slot_bytes=job.max_result_bytes)
        switch_endpoint, worker_endpoints = fabric, [fabric] * K
        switch_address, worker_addresses = fabric.switch_address, tuple(fabric.worker_addresses)
    else:
        sockets = [_bind_loopback() for _ in range(K + 1)]
        switch_endpoint, worker_endpoints = sockets[0], sockets[1:]
        switch_address = sockets[0].getsockname()
        worker_addresses = tuple(s.getsockname() for s in sockets[1:])
    workers, conns, counters, switch = [], [], [], None
    try:
        # workers ask for raw registers per packet (FLAG_RAW): the switch itself
        # is configured as the P4 programs are, rz read-out
        switch_config = SwitchConfig(job, worker_addresses, record_orders=config.check)
        switch_faults = config.sender_faults(seed_offset=0)
        launch = launch_switch or _launcher(config.switch)
        switch = launch(switch_config, switch_endpoint, switch_faults if switch_faults.active else None,
                        context=ctx)
        go = ctx.Event()
        for rank in range(K):
            parent, child = ctx.Pipe()
            value = ctx.Value("q", 0, lock=False)
            p = ctx.Process(target=worker_main, name=f"{name}-{rank}",
                            args=(*worker_args, rank, worker_endpoints[rank], switch_address, child, go,
                                  value), daemon=True)
            p.start()
            child.close()
            workers.append(p)
            conns.append(parent)
            counters.append(value)
        for s in sockets:
            s.close()  # the children hold their own copies now
        switch.wait_ready(start_timeout)
        for conn in conns:
            if not conn.poll(start_timeout):
                raise AllreduceFailed("a worker did not start")
            kind, rank, detail = conn.recv()
            if kind != "ready":
                raise AllreduceFailed(f"worker {rank} failed to start: {detail}")
        setup_seconds = time.perf_counter() - t_setup
        progress_bar = bar()
        go.set()
        if on_started is not None:
            on_started(workers)
        reports: dict[int, dict] = {}
        pending = set(range(K))
        switch_process = getattr(switch, "process", None)
        while pending:
            for conn in wait([conns[r] for r in pending], timeout=0.1):
                rank = conns.index(conn)
                try:
                    kind, _, detail = conn.recv()
                except EOFError:
                    kind, detail = "error", f"exited (code {workers[rank].exitcode})"
                if kind != "done":
                    if on_message is not None:
                        on_message(kind, rank, detail)
                    raise AllreduceFailed(f"worker {rank} failed: {detail}")
                reports[rank] = detail
                pending.discard(rank)
            for rank in pending:
                if not workers[rank].is_alive() and not conns[rank].poll():
                    raise AllreduceFailed(f"worker {rank} died (exit code {workers[rank].exitcode})")
            if switch_process is not None and not switch_process.is_alive():
                raise AllreduceFailed(f"the switch died (exit code {switch_process.exitcode})")
            progress_bar.update(sum(v.value for v in counters) - progress_bar.n)
        if progress_bar.total:
            progress_bar.update(progress_bar.total - progress_bar.n)
        progress_bar.close()
        stats, recorded = switch.stop()
    finally:
        for p in workers:
            if p.is_alive():
                p.terminate()
            p.join(5)
        if switch is not None:
            switch.kill()
        for s in sockets:
            s.close()
        if fabric is not None:
            fabric.close()  # unlinks the segment: after success, failure and Ctrl-C alike
    return reports, stats, recorded, setup_seconds


def _report(config: AllreduceConfig, reports: dict[int, dict], stats: dict, recorded: dict) -> dict:
    K = config.job.num_workers
    seconds = max(r["end"] for r in reports.values()) - min(r["start"] for r in reports.values())
    results = [reports[r]["result"] for r in range(K)]
    conversion = [reports[r]["conversion"] for r in range(K)]
    report = {
        "config": config.as_dict(),
        "seconds": seconds,
        "elements_per_second": config.elements / seconds if seconds > 0 else float("inf"),
        "host_conversion_ns_per_element": float(np.mean([c["ns_per_element"] for c in conversion])),
        "host_conversion": conversion,
        "switch": stats,
        "workers": [reports[r]["counters"] for r in range(K)],
        # per worker: its elements over its own time (the host-cost model's goodput), and
        # over the time since the last worker started (without the workers' start skew)
        "goodput_elements_per_s": [config.elements / (reports[r]["end"] - reports[r]["start"])
                                   for r in range(K)],
        "goodput_since_all_started": [
            config.elements / max(1e-9, reports[r]["end"] - max(x["start"] for x in reports.values()))
            for r in range(K)],
    }
    if config.link_gbps is not None:
        report["pacing"] = [reports[r]["pacing"] for r in range(K)]
    if config.conversion_threads is not None:
        report["pipeline"] = [reports[r]["pipeline"] for r in range(K)]
    if config.check:
        report["checks"] = check_results(config, results, recorded)
        if "arrival_log_error" in stats:  # BMv2's log gave no exact orders
            report["checks"]["arrival_log_error"] = stats["arrival_log_error"]
    else:
        report["checks"] = {"identical_across_workers": all(np.array_equal(results[0], r) for r in results)}
    return report


def check_results(config: AllreduceConfig, results: list[np.ndarray], recorded: dict) -> dict:
    """Checks 1-3 of the module docstring; ``recorded`` as the switch reports it."""
    job = config.job
    K, n = job.num_workers, config.elements
    values = np.stack([gradient_like(n, r, config.seed, job.fmt) for r in range(K)])
    # the data pass's packet ids: SwitchML's exponent exchange used the first ones
    base, num_packets = job.pass_packets(n)
    orders, missing = packet_orders(recorded, job.data_wire_mode, base, num_packets, K)
    return check_allreduce(values, results, job, missing, lambda: star_reference(values, job, orders))
