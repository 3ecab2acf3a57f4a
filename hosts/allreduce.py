"""The main job: K worker processes allreduce an array through one switch process.

:func:`run_allreduce` binds the sockets (loopback UDP, no root), starts the
switch (any launcher with the ``emulator.server.launch`` signature, injected
by the CLI so that ``hosts`` does not import ``emulator``) and K workers
(spawned processes), generates seeded gradient-like data, runs, and checks:

1. every worker received identical bits;
2. the result is bit-exact against ``fpisa.aggregate`` given the switch's
   recorded arrival order per packet (SwitchML: the integer sum does not
   depend on order);
3. the error against the exact sum (``fpisa.error_report``).

It returns a JSON-ready report (config, seconds, elements/s, errors,
bit-exactness, switch and worker counters, host conversion cost).
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import wait
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

import fpisa
from fpisa.formats import get_format, get_rounding
from fpisa.netem import LinkFaults
from fpisa.net import UdpTransport
from fpisa.protocol import MAX_ELEMENTS, MAX_SLOTS, WireMode

from .worker import AllreduceClient, WorkerConfig, pass_packets

__all__ = ["AllreduceConfig", "AllreduceFailed", "run_allreduce", "gradient_like", "check_results"]

MODES = ("fpisa", "fpisa-a", "switchml")


class AllreduceFailed(RuntimeError):
    """A worker or the switch failed or died: the run has no result."""
FAULT_DIRECTIONS = ("both", "to-switch", "from-switch")


@dataclass(frozen=True)
class AllreduceConfig:
    """Everything that determines one run (printed into its report)."""

    workers: int = 4
    elements: int = 1_000_000
    mode: str = "fpisa"
    fmt: str = "fp32"
    #: elements per packet
    num_elements: int = 64
    #: outstanding packets per worker = switch slots per shadow set
    window: int = 256
    register_bits: int = 32
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    #: which links the faults act on: both, to-switch (workers' sends), from-switch
    fault_direction: str = "both"
    seed: int = 0
    #: results carry the raw registers; workers normalize with ``rounding``
    raw_registers: bool = False
    rounding: str = "rne"
    timeout_ms: float = 20.0
    switch: str = "emulator"
    #: bit-exact and error checks (costs a reference aggregation)
    check: bool = True

    def __post_init__(self) -> None:
        def bad(msg):
            raise ValueError(f"allreduce: {msg}")

        if self.mode not in MODES:
            bad(f"mode must be one of {MODES}, got {self.mode!r}")
        get_format(self.fmt)
        get_rounding(self.rounding)
        if not 1 <= self.workers <= 32:
            bad(f"workers must be 1..32, got {self.workers}")
        if self.elements < 1:
            bad(f"elements must be >= 1, got {self.elements}")
        if not 1 <= self.num_elements <= MAX_ELEMENTS:
            bad(f"elements per packet must be 1..{MAX_ELEMENTS}, got {self.num_elements}")
        if not 1 <= self.window <= MAX_SLOTS:
            bad(f"window must be 1..{MAX_SLOTS}, got {self.window}")
        if self.fault_direction not in FAULT_DIRECTIONS:
            bad(f"fault_direction must be one of {FAULT_DIRECTIONS}, got {self.fault_direction!r}")
        if self.raw_registers and self.mode == "switchml":
            bad("--raw-registers applies to the FPISA modes only")
        # LinkFaults validates the probabilities
        self.faults()

    def faults(self, seed_offset: int = 0) -> LinkFaults:
        """The link faults of one sender: the switch is seed_offset 0
        (switch -> workers), worker r is 1 + r (worker -> switch)."""
        towards_switch = seed_offset > 0
        applies = self.fault_direction == "both" or (
            self.fault_direction == ("to-switch" if towards_switch else "from-switch"))
        if not applies:
            return LinkFaults(seed=self.seed * 1000 + seed_offset)
        return LinkFaults(loss=self.loss, duplicate=self.duplicate, reorder=self.reorder,
                          delay_ms=self.delay_ms, seed=self.seed * 1000 + seed_offset)

    def worker_config(self, rank: int) -> WorkerConfig:
        return WorkerConfig(rank=rank, num_workers=self.workers, mode=self.mode, fmt=self.fmt,
                            num_elements=self.num_elements, window=self.window,
                            timeout_ms=self.timeout_ms, raw_registers=self.raw_registers,
                            rounding=self.rounding)


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

def _worker_main(config: AllreduceConfig, rank: int, sock, switch_address, conn, go, progress):
    try:
        bits = gradient_like(config.elements, rank, config.seed, config.fmt)
        transport = UdpTransport(sock)
        faults = config.faults(seed_offset=1 + rank)
        client = AllreduceClient(config.worker_config(rank), transport, switch_address,
                                 faults=faults if faults.active else None, progress=progress)
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
        end = time.perf_counter()
        cpu = time.process_time() - cpu
    except Exception as e:
        conn.send(("error", rank, f"{type(e).__name__}: {e}"))
        return
    conn.send(("done", rank, {"start": start, "end": end, "result": result,
                              "counters": {**client.counters.as_dict(), "cpu_seconds": cpu},
                              "conversion": client.conversion.as_dict(),
                              "packet_ids": client.packet_ids}))
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


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal or forced)."""

    def __init__(self, total: int, enabled: bool):
        self.total = max(1, total)
        self.enabled = enabled
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rallreduce [{bar:<30}] {100 * frac:5.1f}%")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def run_allreduce(config: AllreduceConfig, launch_switch: Callable, *,
                  progress: bool | None = None, start_timeout: float = 120.0) -> dict:
    """Run the job; return the report (see module docstring)."""
    ctx = _context(getattr(launch_switch, "__module__", None))
    K = config.workers
    switch_sock = _bind_loopback()
    worker_socks = [_bind_loopback() for _ in range(K)]
    switch_address = switch_sock.getsockname()
    spec = {
        "num_workers": K, "workers": tuple(s.getsockname() for s in worker_socks),
        "mode": config.mode, "fmt": config.fmt, "job": 0, "num_elements": config.num_elements,
        "register_bits": config.register_bits, "pool_size": config.window,
        "raw_registers": False, "rounding": "rz", "record_orders": config.check,
    }
    switch_faults = config.faults(seed_offset=0)
    switch = launch_switch(spec, switch_sock, switch_faults if switch_faults.active else None,
                           context=ctx)
    go = ctx.Event()
    workers, conns, counters = [], [], []
    try:
        for rank in range(K):
            parent, child = ctx.Pipe()
            value = ctx.Value("q", 0, lock=False)
            p = ctx.Process(target=_worker_main, name=f"fpisa-worker-{rank}",
                            args=(config, rank, worker_socks[rank], switch_address, child, go, value),
                            daemon=True)
            p.start()
            child.close()
            workers.append(p)
            conns.append(parent)
            counters.append(value)
        for s in [switch_sock, *worker_socks]:
            s.close()  # the children hold their own copies now
        switch.wait_ready(start_timeout)
        for conn in conns:
            if not conn.poll(start_timeout):
                raise AllreduceFailed("a worker did not start")
            kind, rank, detail = conn.recv()
            if kind != "ready":
                raise AllreduceFailed(f"worker {rank} failed to start: {detail}")
        packets_per_worker = sum(pass_packets(config.mode, config.elements, config.num_elements))
        bar = _Progress(packets_per_worker * K, sys.stderr.isatty() if progress is None else progress)
        go.set()
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
                    raise AllreduceFailed(f"worker {rank} failed: {detail}")
                reports[rank] = detail
                pending.discard(rank)
            for rank in pending:
                if not workers[rank].is_alive() and not conns[rank].poll():
                    raise AllreduceFailed(f"worker {rank} died (exit code {workers[rank].exitcode})")
            if switch_process is not None and not switch_process.is_alive():
                raise AllreduceFailed(f"the switch died (exit code {switch_process.exitcode})")
            bar.update(sum(v.value for v in counters))
        bar.update(packets_per_worker * K, force=True)
        bar.close()
        stats, recorded = switch.stop()
    finally:
        for p in workers:
            if p.is_alive():
                p.terminate()
            p.join(5)
        switch.kill()
    return _report(config, reports, stats, recorded)


def _report(config: AllreduceConfig, reports: dict[int, dict], stats: dict, recorded: dict) -> dict:
    K = config.workers
    seconds = max(r["end"] for r in reports.values()) - min(r["start"] for r in reports.values())
    results = [reports[r]["result"] for r in range(K)]
    conversion = [reports[r]["conversion"] for r in range(K)]
    report = {
        "config": asdict(config),
        "seconds": seconds,
        "elements_per_second": config.elements / seconds if seconds > 0 else float("inf"),
        "host_conversion_ns_per_element": float(np.mean([c["ns_per_element"] for c in conversion])),
        "host_conversion": conversion,
        "switch": stats,
        "workers": [reports[r]["counters"] for r in range(K)],
    }
    if config.check:
        report["checks"] = check_results(config, results, recorded)
    else:
        report["checks"] = {"identical_across_workers": all(np.array_equal(results[0], r) for r in results)}
    return report


def check_results(config: AllreduceConfig, results: list[np.ndarray], recorded: dict) -> dict:
    """Checks 1-3 of the module docstring; ``recorded`` as the switch reports it."""
    K, n, E = config.workers, config.elements, config.num_elements
    values = np.stack([gradient_like(n, r, config.seed, config.fmt) for r in range(K)])
    identical = all(np.array_equal(results[0], r) for r in results)
    # the data pass's packet ids: SwitchML's exponent exchange used the first ones
    base, num_packets = pass_packets(config.mode, n, E)
    data_mode = int(WireMode.of(config.mode))
    mask = recorded["wire_mode"] == data_mode
    ids = recorded["packet_id"][mask] - base
    orders = np.full((num_packets, K), -1, np.int64)
    ok = (ids >= 0) & (ids < num_packets)
    orders[ids[ok]] = recorded["order"][mask][ok]
    missing = int(np.count_nonzero(orders[:, 0] < 0))
    checks: dict = {"identical_across_workers": identical, "packets_without_recorded_order": missing}
    rounding = config.rounding if config.raw_registers else "rz"
    if missing == 0:
        per_element = np.repeat(orders, E, axis=0)[:n]
        reference = fpisa.aggregate(values, config.mode, fmt=config.fmt, order=per_element,
                                    rounding=rounding, register_bits=config.register_bits,
                                    block_size=E)
        mismatches = [int(np.count_nonzero(r != reference)) for r in results]
        checks["bit_exact"] = identical and not any(mismatches)
        checks["mismatched_elements"] = mismatches
    else:
        checks["bit_exact"] = False
    exact = fpisa.aggregate(values, "exact", fmt=config.fmt)
    checks["error_vs_exact"] = fpisa.error_report(results[0], exact, config.fmt)
    return checks
