"""The switch's main loop, and the switch as a process the orchestrator can start.

:func:`serve` moves packets between a transport (:mod:`fpisa.net`) and a
:class:`~emulator.pipeline.SwitchPipeline`, passing what the switch sends
through a :class:`fpisa.netem.FaultInjector` (switch -> worker faults), and
reports statistics periodically and on exit.

:func:`launch` starts the switch in its own process for ``fpisa allreduce``
(hosts/allreduce.py gets it injected by the CLI, so ``hosts`` never imports
``emulator``): the parent hands over a bound UDP socket, and at the end asks
for the statistics and the recorded arrival orders over a pipe.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Callable

import numpy as np

from fpisa.netem import FaultInjector, LinkFaults
from fpisa.net import transport_for

from fpisa.protocol import FIELD_OFFSETS, Header, MsgType, element_dtype, pack

from .fastpath import BatchProcessor, RingStep
from .pipeline import SwitchConfig, SwitchPipeline

__all__ = ["serve", "launch", "SwitchProcess", "SwitchStartError", "warm_up"]

#: how often the loop looks at its stop condition / stats timer
_CHECK_INTERVAL_S = 0.02
#: shared memory: results are held back (copied out of the kernel's buffer)
#: while more packets wait in the rings, up to this many rows, and sent when
#: the rings are drained (see relay)
HOLD_ROWS = 256


def warm_up(config: SwitchConfig) -> None:
    """Run the register kernels once on scratch state, so the first real
    packet does not pay Numba's (cached) compile/load time."""
    job = config.job.replace(window=1)
    probe = SwitchPipeline(config.replace(job=job))
    for regs in probe.registers.values():
        values = np.zeros(job.packet_elements, regs.fmt.bits_dtype if regs.takes_bits else np.int32)
        regs.accumulate(0, values, True)
        regs.accumulate(0, values, False)
        regs.read(0)
        regs.raw(0)
        regs.row_flags(0)
    # the batch kernel: one complete slot per mode of the job
    batch = BatchProcessor(probe)
    for mode in job.wire_modes:
        dtype = element_dtype(mode, job.fmt_code)
        packets = [(pack(Header(MsgType.DATA, mode, job.fmt_code, 0, job.job, r,
                                job.num_workers, job.packet_elements, 0, 0, 0),
                         np.zeros(job.packet_elements, dtype)), address)
                   for r, address in enumerate(config.workers)]
        batch.process(packets + packets[:1])
        # the shared-memory path hands the kernel writable rows (views of the
        # rings), another compiled specialization than bytes' read-only ones:
        # the next round of the same slot, from writable copies
        again = [(bytearray(d[:FIELD_OFFSETS["packet_id"]]) + (1).to_bytes(4, "big")
                  + bytearray(d[FIELD_OFFSETS["packet_id"] + 4:]), a) for d, a in packets]
        if len({len(d) for d, _ in again}) == 1 and len(again[0][0]) == batch.data_length:
            for r, (d, _) in enumerate(again):
                batch.process_arrays([(r, np.frombuffer(d, np.uint8).reshape(1, -1))])


def warm_up_rings(config: SwitchConfig, batch: int = 256) -> None:
    """Load :class:`RingStep`'s compiled pass for ``config``'s worker count
    (its rings are a tuple per worker, so the count is part of the compiled
    types): one pass on the empty rings of a small fabric of its own."""
    from fpisa.shm import ShmFabric

    job = config.job
    probe = SwitchPipeline(config.replace(job=job.replace(window=1)))
    with ShmFabric.create(job.num_workers, job.max_data_packet_bytes, 4,
                          result_slot_bytes=job.max_result_bytes) as fabric:
        try:
            with fabric.switch_transport() as transport:
                step = RingStep(BatchProcessor(probe, max_batch=batch), transport)
                step.step()
                step.close()
        finally:
            fabric.unlink()


def _send_multicast(send, rows: np.ndarray, injector: FaultInjector | None, num_workers: int) -> None:
    """One copy of ``rows`` for every worker; with faults, what each worker's
    link loses or duplicates (``FaultInjector.filter_masks``: drawn per
    worker, with the probabilities of a unicast copy) becomes the slot's
    rank mask, and a duplicate a second slot for the ranks that get one."""
    if injector is None:
        send(rows)
        return
    masks, again = injector.filter_masks(rows.shape[0], num_workers)
    keep = np.flatnonzero(masks)
    if keep.size:
        send(rows, keep, masks[keep])
    twice = np.flatnonzero(again)
    if twice.size:
        send(rows, twice, again[twice])


def _grouped(held: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    """Held ``(rank, rows)`` blocks as one block per destination and row
    length, in order within each (the kernel's own output keeps that order
    too: rows of one length per destination in order)."""
    groups: dict = {}
    for rank, rows in held:
        groups.setdefault((rank, rows.shape[1]), []).append(rows)
    return [(rank, blocks[0] if len(blocks) == 1 else np.concatenate(blocks))
            for (rank, _), blocks in groups.items()]


def relay(transport, process_batch: Callable, *, injector: FaultInjector | None = None,
          process_trains: Callable | None = None, process_arrays: Callable | None = None,
          addresses: list | None = None, should_stop: Callable[[], bool] = lambda: False,
          on_check: Callable[[float], None] | None = None, batch: int = 256,
          hold_rows: int = HOLD_ROWS, ring_step: RingStep | None = None) -> None:
    """A switch node's loop: receive a batch, process it, inject faults, send.

    ``process_batch`` maps received (bytes, source) packets to (destination,
    bytes) sends: a SwitchPipeline's batch processor, or a Mininet leaf.
    ``process_trains`` (no fault injection) moves whole GSO/GRO trains;
    ``process_arrays`` (shared memory; loss and duplication only) runs the
    packets where they lie in the rings (``recv_arrays``) and sends rows to
    ``addresses[rank]``, and results for every worker once into the
    transport's multicast ring if it has one (``send_multicast``).
    There, while more packets wait in the rings (``transport.waiting()``),
    the results are held back, up to ``hold_rows`` of them (0: never), and
    go out when the rings are drained: transmit batching, as a NIC's
    interrupt moderation. Under loss the workers fall out of step, each
    batch completes a few slots, and sending each batch's few results wakes
    every worker for them; held, they go as one batch per backlog (at K = 4,
    1% loss, in alternating A/B runs: 12-20% less worker CPU, 2-10% less
    wall time; no change without loss, where a batch completes its slots
    together anyway). They wait at most for the backlog the switch is
    working through.
    ``ring_step`` (shared memory, loss and duplication only): each pass is
    one compiled call of it instead (:class:`~emulator.fastpath.RingStep`:
    the same kernel, drops, faults and batching, no Python per pass); rows
    only the reference path takes go through ``process_arrays`` as above.
    Every _CHECK_INTERVAL_S: ``on_check(now)``, then stop if ``should_stop()``.
    """
    clock = time.monotonic
    next_check = clock() + _CHECK_INTERVAL_S
    # shared memory: a result for every worker is written once, into the
    # multicast ring (what the kernel returns as destination K)
    send_multicast = getattr(transport, "send_multicast", None) if process_arrays is not None else None
    everyone = len(addresses) if addresses is not None else -1

    def send_rows(outputs: list[tuple[int, np.ndarray]]) -> None:
        for rank, rows in outputs:
            if rank == everyone:
                _send_multicast(send_multicast, rows, injector, everyone)
            elif injector is not None:  # loss/duplication only (injector.vectorizable)
                # the survivors gathered straight into the ring
                index = injector.filter_index(rows.shape[0])
                if index.size:
                    transport.send_rows(addresses[rank], rows, index)
            elif rows.shape[0]:
                transport.send_train(addresses[rank], rows, rows.shape[1])

    if ring_step is not None:
        _relay_rings(transport, ring_step, process_arrays, send_rows, should_stop, on_check, batch)
        return
    holding = process_arrays is not None and hold_rows > 0 and hasattr(transport, "waiting")
    held: list = []  # results held back: (rank, rows) copies
    held_rows = 0
    while True:
        timeout = _CHECK_INTERVAL_S
        if injector is not None:
            deadline = injector.next_deadline()
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - clock()))
        if process_arrays is not None:
            # with results held, only take what is there now, then send them
            received = transport.recv_arrays(0.0 if held else timeout, batch)
            outputs = None
            if received:
                outputs = (process_arrays(received, multicast=True) if send_multicast is not None
                           else process_arrays(received))
                if holding:
                    # the outputs are in the kernel's buffer, not the rings
                    transport.release_arrays()
                    more = transport.waiting()
                    if held or more:  # hold them (copies: the buffer is reused)
                        held += [(rank, rows.copy()) for rank, rows in outputs if rows.shape[0]]
                        held_rows += sum(rows.shape[0] for _, rows in outputs)
                        outputs = None
                        if held_rows >= hold_rows or not more:
                            outputs = _grouped(held)
                            held, held_rows = [], 0
            elif held:  # the rings ran dry meanwhile
                outputs = _grouped(held)
                held, held_rows = [], 0
            if outputs is not None:
                send_rows(outputs)
                transport.release_arrays()
            out = []
        elif process_trains is not None:
            received = transport.recv_trains(timeout, batch)
            if received:
                for destination, datagrams, size in process_trains(received):
                    if injector is not None:
                        rows = injector.filter_rows(np.frombuffer(datagrams, np.uint8).reshape(-1, size))
                        datagrams = rows.tobytes()
                    if datagrams:
                        transport.send_train(destination, datagrams, size)
            out = []
        else:
            packets = transport.recv_batch(timeout, batch)
            out = process_batch(packets) if packets else []
        if injector is not None:
            out = injector.submit_all(out, clock())
        if out:
            transport.send_batch(out)
        now = clock()
        if now >= next_check:
            next_check = now + _CHECK_INTERVAL_S
            if on_check is not None:
                on_check(now)
            if should_stop():
                break
    if held:
        send_rows(_grouped(held))
    if injector is not None:
        transport.send_batch(injector.flush())


def _relay_rings(transport, ring_step: RingStep, process_arrays, send_rows, should_stop, on_check,
                 batch: int) -> None:
    """relay's loop with a RingStep: a pass is one call; the loop waits on
    the doorbell when the rings are empty. A pass processes everything
    waiting (up to the step's budget) before it writes, so results are
    batched per backlog as relay's holding does."""
    clock = time.monotonic
    next_check = clock() + _CHECK_INTERVAL_S
    try:
        while True:
            n, odd = ring_step.step()
            if odd:  # a row only the reference path takes: the Python path, once
                ring_step.release()
                try:
                    received = transport.recv_arrays(0.0, batch)
                    if received:
                        send_rows(process_arrays(received, multicast=True))
                    transport.release_arrays()
                finally:
                    ring_step.resume()
            elif n == 0:
                transport.wait(max(0.0, next_check - clock()))
            now = clock()
            if now >= next_check:
                next_check = now + _CHECK_INTERVAL_S
                ring_step.count_links()
                if on_check is not None:
                    on_check(now)
                if should_stop():
                    break
    finally:
        ring_step.close()


def serve(pipeline: SwitchPipeline, transport, *, faults: LinkFaults | None = None,
          should_stop: Callable[[], bool] = lambda: False,
          on_stats: Callable[[dict], None] | None = None, stats_interval_s: float | None = None,
          batch: int = 256) -> dict:
    """Run until ``should_stop()`` is true; return the final statistics."""
    injector = FaultInjector(faults) if faults is not None and faults.active else None
    processor = BatchProcessor(pipeline, max_batch=batch)
    # without faults to inject packet by packet (loss and duplication are
    # drawn for a whole batch), whole GSO/GRO trains or ring runs go in and out
    per_packet = injector is not None and not injector.vectorizable
    trains = not per_packet and hasattr(transport, "recv_trains") and hasattr(transport, "send_train")
    next_stats = [time.monotonic() + stats_interval_s] if stats_interval_s else None

    def on_check(now: float) -> None:
        if next_stats is not None and now >= next_stats[0]:
            next_stats[0] = now + stats_interval_s
            on_stats(statistics(pipeline, transport, injector))

    arrays = not per_packet and hasattr(transport, "recv_arrays")
    # shared memory with a multicast ring: each pass one compiled call
    ring_step = (RingStep(processor, transport, injector)
                 if arrays and hasattr(transport, "step_rings") and hasattr(transport, "send_multicast") else None)
    relay(transport, processor.process, injector=injector,
          process_trains=processor.process_trains if trains and not arrays else None,
          process_arrays=processor.process_arrays if arrays else None,
          addresses=list(pipeline.config.workers), should_stop=should_stop, on_check=on_check,
          batch=batch, ring_step=ring_step)
    return statistics(pipeline, transport, injector)


def statistics(pipeline: SwitchPipeline, transport, injector: FaultInjector | None) -> dict:
    stats = pipeline.stats()
    stats["send_errors"] = getattr(transport, "send_errors", 0)
    if injector is not None:
        stats["faults"] = injector.counters.as_dict()
    return stats


# -- the switch as a child process of the orchestrator ---------------------------

def _process_main(config: SwitchConfig, endpoint, faults: LinkFaults | None, conn) -> None:
    try:
        warm_up(config)
        if getattr(endpoint, "switch_transport", None) is not None:  # shared memory
            warm_up_rings(config)
        pipeline = SwitchPipeline(config)
        transport = transport_for(endpoint, "switch")
    except Exception as e:  # report, don't hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    cpu0 = time.process_time()
    stats = serve(pipeline, transport, faults=faults, should_stop=conn.poll)
    stats["cpu_seconds"] = time.process_time() - cpu0
    conn.recv()
    conn.send(("stats", stats, pipeline.recorded_arrays()))
    transport.close()


class SwitchStartError(RuntimeError):
    """The switch process reported an error instead of being ready.
    ``tool_missing``: an external tool (p4c, BMv2) is not installed."""

    def __init__(self, message: str, tool_missing: bool = False):
        super().__init__(message)
        self.tool_missing = tool_missing


class SwitchProcess:
    """Handle on a switch child process (what :func:`launch` returns)."""

    def __init__(self, process: mp.Process, conn):
        self.process = process
        self._conn = conn

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self._conn.poll(timeout):
            self.kill()
            raise RuntimeError(f"the switch did not start within {timeout:.0f} s")
        try:
            kind, detail = self._conn.recv()
        except EOFError:
            kind, detail = "error", f"the process exited (code {self.process.exitcode})"
        if kind != "ready":
            self.kill()
            raise SwitchStartError(f"the switch failed to start: {detail}",
                                   tool_missing=str(detail).startswith("ToolMissing"))

    def stop(self, timeout: float = 60.0) -> tuple[dict, dict]:
        """Stop the switch; return (statistics, recorded orders as arrays)."""
        self._conn.send("stop")
        if not self._conn.poll(timeout):
            self.kill()
            raise RuntimeError("the switch did not report its statistics")
        _, stats, recorded = self._conn.recv()
        self.process.join(timeout)
        return stats, recorded

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(5)


def start_switch_process(target, name: str, config: SwitchConfig, sock, faults: LinkFaults | None,
                         context=None) -> SwitchProcess:
    """Run ``target(config, sock, faults, conn)`` in a child process; ``conn``
    is the child's end of the pipe a :class:`SwitchProcess` talks over."""
    ctx = context or mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(config, sock, faults, child), name=name, daemon=True)
    process.start()
    child.close()
    return SwitchProcess(process, parent)


def launch(config: SwitchConfig, endpoint, faults: LinkFaults | None = None, context=None) -> SwitchProcess:
    """Start the emulator switch for ``config`` on ``endpoint``: a bound UDP
    socket, or the job's :class:`fpisa.shm.ShmFabric` (shared memory)."""
    return start_switch_process(_process_main, "fpisa-switch", config, endpoint, faults, context)
