"""fpisa.shm: shared-memory rings between the switch and its workers.

Real processes (spawn) where it matters: round trips, the switch waiting on
every worker ring at once, a killed peer, no /dev/shm leftovers. No timed
assertions: bounds on waits are generous limits that only a lost wake-up
or a busy loop would hit.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from fpisa import shm
from fpisa.protocol import HEADER_BYTES, MAX_WORKERS
from fpisa.shm import (SWITCH_ADDRESS, ShmDescriptor, ShmFabric, ShmSwitchTransport,
                       ShmWorkerTransport, worker_address)

ROOT = Path(__file__).resolve().parents[2]
CTX = mp.get_context("spawn")
#: a generous limit for things that should take milliseconds
PATIENCE_S = 30.0


def _segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(shm.NAME_PREFIX)}


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join("/dev/shm", name))


@pytest.fixture(autouse=True)
def no_leftovers_of_this_process():
    mine = f"{shm.NAME_PREFIX}{os.getpid()}-"
    before = {n for n in _segments() if n.startswith(mine)}
    yield
    left = {n for n in _segments() if n.startswith(mine)} - before
    assert not left, f"segments left in /dev/shm: {left}"


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_until(predicate, limit: float = PATIENCE_S) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- arguments ------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ((0, 64), "num_workers must be 1..32"),
    ((MAX_WORKERS + 1, 64), "num_workers must be 1..32"),
    ((True, 64), "num_workers must be an integer"),
    ((2.0, 64), "num_workers must be an integer"),
    ((2, HEADER_BYTES - 1), "at least the 16-byte aggregation header"),
    ((2, 0), "slot_bytes must be 1..65535"),
    ((2, -64), "slot_bytes must be 1..65535"),
    ((2, 70000), "slot_bytes must be 1..65535"),
    ((2, 64, 0), "slots_per_ring must be"),
    ((2, 64, -8), "slots_per_ring must be"),
    ((2, 64, "8"), "slots_per_ring must be an integer"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        ShmFabric.create(*args)


def test_bad_result_slot_bytes_and_ranks():
    with pytest.raises(ValueError, match="result_slot_bytes must hold at least the 16-byte"):
        ShmFabric.create(2, 64, 8, result_slot_bytes=8)
    with ShmFabric.create(2, 64, 8) as fabric:
        for rank in (-1, 2, "0"):
            with pytest.raises(ValueError, match="rank"):
                fabric.worker_transport(rank)
        with pytest.raises(ValueError, match="spin_s must be >= 0"):
            fabric.switch_transport(spin_s=-1)


def test_misuse_is_a_clear_value_error():
    with ShmFabric.create(1, 32, 4) as fabric:
        switch, worker = fabric.switch_transport(), fabric.worker_transport(0)
        with pytest.raises(ValueError, match="does not fit"):
            worker.send(SWITCH_ADDRESS, bytes(33))
        with pytest.raises(ValueError, match="not a destination"):
            worker.send(worker_address(0), b"x" * 16)
        with pytest.raises(ValueError, match="not a destination"):
            switch.send(worker_address(1), b"x" * 16)
        with pytest.raises(ValueError, match="size must be > 0"):
            worker.send_train(SWITCH_ADDRESS, b"x" * 16, 0)
        with pytest.raises(ValueError, match="already attached"):
            fabric.switch_transport()
        producer, consumer = fabric.up_ring(0), fabric.up_ring(0)
        producer.reserve(2)
        with pytest.raises(ValueError, match="commit: 3 slots, but 2 are reserved"):
            producer.commit(3, 16)
        with pytest.raises(ValueError, match="does not fit"):
            producer.commit(1, 33)
        with pytest.raises(ValueError, match="lengths has shape"):
            producer.commit(2, [16])
        producer.commit(2, [16, 17])
        consumer.peek(8)
        with pytest.raises(ValueError, match="release: 3 slots"):
            consumer.release(3)
        assert switch.send_errors == worker.send_errors == 0


def test_refuses_other_architectures(monkeypatch):
    monkeypatch.setattr(shm.platform, "machine", lambda: "riscv64")
    with pytest.raises(RuntimeError, match="x86-64 memory ordering"):
        ShmFabric.create(1, 64, 4)


# -- one ring, in process ------------------------------------------------------------------

def test_batch_api_and_wrap_around():
    with ShmFabric.create(1, 32, 5) as fabric:
        producer, consumer = fabric.up_ring(0), fabric.up_ring(0)
        view = producer.reserve(3)
        assert view.shape == (3, 32) and view.dtype == np.uint8
        view[:] = np.arange(3, dtype=np.uint8)[:, None]
        producer.commit(3, [16, 20, 32])
        slots, lengths = consumer.peek(10)
        assert slots.shape == (3, 32) and lengths.tolist() == [16, 20, 32]
        assert (slots[:, 0] == [0, 1, 2]).all()
        consumer.release(2)
        # 4 free, but only 2 contiguous before the end: the caller loops
        view = producer.reserve(10)
        assert view.shape[0] == 2
        view[:] = 7
        producer.commit(2, 17)
        view = producer.reserve(10)
        assert view.shape[0] == 2  # slots 0 and 1 (slot 2 is still unread)
        view[0] = 9
        producer.commit(1, 18)
        assert producer.free() == 1
        slots, lengths = consumer.peek(10)
        assert lengths.tolist() == [32, 17, 17] and slots[1, 0] == 7  # up to the ring's end
        consumer.release(3)
        slots, lengths = consumer.peek(10)
        assert lengths.tolist() == [18] and slots[0, 0] == 9
        skipped, _ = consumer.peek(10, skip=1)
        assert skipped.shape[0] == 0
        consumer.release(1)
        assert consumer.pending() == 0 and producer.free() == 5


def test_many_laps_keep_fifo_order():
    rng = random.Random(7)
    with ShmFabric.create(1, 40, 7) as fabric:
        producer, consumer = fabric.up_ring(0), fabric.up_ring(0)
        model: deque = deque()
        serial = 0
        for _ in range(3000):
            if rng.random() < 0.5:
                view = producer.reserve(rng.randint(0, 9))
                k = rng.randint(0, view.shape[0])
                lengths = [rng.randint(4, 40) for _ in range(k)]
                for i, n in enumerate(lengths):
                    view[i, :4] = np.frombuffer(serial.to_bytes(4, "little"), np.uint8)
                    view[i, 4:n] = serial % 251
                    model.append((serial, n))
                    serial += 1
                producer.commit(k, lengths)
            else:
                slots, lengths = consumer.peek(rng.randint(0, 9))
                for row, n in zip(slots, lengths.tolist()):
                    want, want_n = model.popleft()
                    assert n == want_n and int.from_bytes(row[:4].tobytes(), "little") == want
                    assert (row[4:n] == want % 251).all()
                consumer.release(len(lengths))
            assert consumer.pending() == len(model) <= 7
        assert serial > 1000  # many laps around 7 slots


def test_full_ring_drops_and_counts():
    with ShmFabric.create(2, 64, 4) as fabric:
        switch, worker = fabric.switch_transport(), fabric.worker_transport(1)
        sent = [bytes([i]) * 20 for i in range(10)]
        worker.send_batch([(SWITCH_ADDRESS, d) for d in sent])
        assert worker.send_errors == 6
        assert worker.ring_stats()["up[1]"] == {"pending": 4, "dropped": 6}
        assert switch.ring_stats()["up[1]"]["dropped"] == 6  # visible from the other end too
        assert [d for d, _ in switch.recv_batch(0)] == sent[:4]
        worker.send_train(SWITCH_ADDRESS, b"a" * 20 * 6, 20)
        assert worker.send_errors == 8
        worker.send(SWITCH_ADDRESS, b"b" * 20)
        assert worker.send_errors == 9
        assert [d for d, _ in switch.recv_batch(0)] == [b"a" * 20] * 4
        # the switch never blocks on a slow worker either
        for _ in range(3):
            switch.send_train(worker_address(0), b"r" * 64 * 3, 64)
        assert switch.send_errors == 5 and worker.send_errors == 9


def test_send_rows_gathers_the_indexed_rows_into_the_ring():
    rows = np.arange(7 * 24, dtype=np.uint8).reshape(7, 24)
    index = np.array([5, 0, 5, 3, 6, 1], np.int64)  # any order, repeats allowed
    with ShmFabric.create(1, 32, 4) as fabric:
        switch, worker = fabric.switch_transport(), fabric.worker_transport(0)
        worker.send_rows(SWITCH_ADDRESS, rows, index)
        # four fit: the first four of the index, byte for byte; the rest are counted drops
        assert [d for d, _ in switch.recv_batch(0)] == [rows[k].tobytes() for k in index[:4]]
        assert worker.send_errors == 2
        worker.send_rows(SWITCH_ADDRESS, rows[:, :20], np.array([2], np.int64))  # a column view
        assert [d for d, _ in switch.recv_batch(0)] == [rows[2, :20].tobytes()]
        worker.send_rows(SWITCH_ADDRESS, rows, np.array([], np.int64))
        assert switch.recv_batch(0) == [] and worker.send_errors == 2
        for bad in ([7], [-1]):
            with pytest.raises(IndexError, match="out of range"):
                worker.send_rows(SWITCH_ADDRESS, rows, np.array(bad, np.int64))
        with pytest.raises(ValueError, match="2-D uint8"):
            worker.send_rows(SWITCH_ADDRESS, rows.astype(np.int16), index)
        assert switch.recv_batch(0) == []


def test_multicast_ring_one_copy_for_every_worker():
    rows = np.arange(6 * 24, dtype=np.uint8).reshape(6, 24)
    with ShmFabric.create(3, 32, 4) as fabric:
        switch = fabric.switch_transport()
        workers = [fabric.worker_transport(r) for r in range(3)]
        switch.send_multicast(rows[:4])
        for w in workers[:2]:  # two read all four
            assert [d for d, _ in w.recv_batch(0)] == [r.tobytes() for r in rows[:4]]
        # a slot is free only once every worker has read it: worker 2 holds all four
        switch.send_multicast(rows[4:])
        assert switch.send_errors == 2 and switch.ring_stats()["mcast"] == {"pending": 4, "dropped": 2}
        got = workers[2].recv_arrays(0)
        assert [(rank, v.tobytes()) for rank, v in got] == [(2, rows[:4].tobytes())]
        workers[2].release_arrays()
        switch.send_multicast(rows, index=np.array([5, 4], np.int64))
        for w in workers:
            assert [d for d, _ in w.recv_batch(0)] == [rows[5].tobytes(), rows[4].tobytes()]
        # unicast (down) rings still work beside it
        switch.send(worker_address(1), b"u" * 20)
        assert [d for d, _ in workers[1].recv_batch(0)] == [b"u" * 20]
        assert workers[0].recv_batch(0) == []


def test_multicast_masks_hide_slots_from_the_other_workers():
    rows = np.arange(5 * 16, dtype=np.uint8).reshape(5, 16)
    masks = np.array([0b111, 0b001, 0b110, 0b000, 0b010], np.uint64)
    with ShmFabric.create(3, 32, 8) as fabric:
        switch = fabric.switch_transport()
        workers = [fabric.worker_transport(r) for r in range(3)]
        switch.send_multicast(rows, masks=masks)
        for r, w in enumerate(workers):
            mine = [i for i in range(5) if int(masks[i]) >> r & 1]
            if r == 1:
                got = b"".join(v.tobytes() for _, v in w.recv_arrays(0))
                w.release_arrays()
                assert got == rows[mine].tobytes()
            else:
                assert [d for d, _ in w.recv_batch(0)] == [rows[i].tobytes() for i in mine]
        # hidden slots were released with the others: the ring is empty for everyone
        assert switch.multicast.pending() == 0 and switch.multicast.free() == 8
        with pytest.raises(ValueError, match="masks has shape"):
            switch.send_multicast(rows, masks=masks[:2])
        with pytest.raises(ValueError, match="2-D uint8"):
            switch.send_multicast(rows.tobytes())


def test_a_sleeping_worker_wakes_for_a_multicast():
    import threading

    with ShmFabric.create(2, 32, 8) as fabric:
        switch, worker = fabric.switch_transport(spin_s=0), fabric.worker_transport(1, spin_s=0)
        woke = []
        t = threading.Thread(target=lambda: woke.append(worker.wait(PATIENCE_S)))
        t.start()
        time.sleep(0.2)  # let it go to sleep on its doorbell
        switch.send_multicast(np.ones((1, 20), np.uint8))
        t.join(PATIENCE_S / 3)  # without its doorbell it would sleep the whole PATIENCE_S
        assert not t.is_alive() and woke == [True]
        assert [d for d, _ in worker.recv_batch(0)] == [b"\x01" * 20]


def test_recv_trains_groups_runs_of_equal_length():
    with ShmFabric.create(2, 100, 8) as fabric:
        switch, worker = fabric.switch_transport(), fabric.worker_transport(0)
        lengths = [100, 100, 100, 50, 50, 100]
        datagrams = [bytes([i]) * n for i, n in enumerate(lengths)]
        worker.send_batch([(SWITCH_ADDRESS, d) for d in datagrams])
        trains = switch.recv_trains(0)
        source = worker_address(0)
        assert trains == [(b"".join(datagrams[:3]), 100, source), (b"".join(datagrams[3:5]), 50, source),
                          (datagrams[5], 100, source)]
        # a run that crosses the ring's end comes as two trains; max_packets is exact
        worker.send_train(SWITCH_ADDRESS, bytes(range(100)) * 5, 100)
        first = switch.recv_trains(0, max_packets=1)
        assert [(len(d), s) for d, s, _ in first] == [(100, 100)]
        rest = switch.recv_trains(0)
        assert [(len(d), s) for d, s, _ in rest] == [(100, 100), (300, 100)]
        assert switch.recv_trains(0) == []
        # recv_batch splits trains; zero-length datagrams and a short tail survive
        worker.send_train(SWITCH_ADDRESS, b"x" * 250, 100)
        worker.send(SWITCH_ADDRESS, b"")
        assert switch.recv_batch(0) == [(b"x" * 100, source), (b"x" * 100, source), (b"x" * 50, source),
                                        (b"", source)]
        # a 2-D array goes in as rows, with any row stride
        rows = np.arange(3 * 120, dtype=np.uint8).reshape(3, 120)
        worker.send_train(SWITCH_ADDRESS, rows[:, :60], 60)
        assert switch.recv_batch(0) == [(row.tobytes(), source) for row in rows[:, :60]]


def test_recv_arrays_are_views_into_the_ring_until_released():
    with ShmFabric.create(2, 64, 8, result_slot_bytes=96) as fabric:
        switch, w0, w1 = fabric.switch_transport(), fabric.worker_transport(0), fabric.worker_transport(1)
        w0.send_train(SWITCH_ADDRESS, b"a" * 64 * 3, 64)
        w1.send_batch([(SWITCH_ADDRESS, b"b" * 64), (SWITCH_ADDRESS, b"c" * 40), (SWITCH_ADDRESS, b"c" * 40)])
        got = switch.recv_arrays(0)
        assert sorted((rank, view.shape) for rank, view in got) == [(0, (3, 64)), (1, (1, 64)), (1, (2, 40))]
        by_shape = {(rank, view.shape[1]): view for rank, view in got}
        full = by_shape[(0, 64)]
        assert full.flags.c_contiguous and (full == ord("a")).all()
        assert np.shares_memory(full, fabric.up_ring(0).slots)
        assert not by_shape[(1, 40)].flags.c_contiguous  # row stride: the slot
        assert w0.free_slots(SWITCH_ADDRESS) == 5  # not released yet
        switch.release_arrays()
        assert w0.free_slots(SWITCH_ADDRESS) == 8
        # the next recv releases the previous batch itself
        w0.send(SWITCH_ADDRESS, b"d" * 64)
        assert [v.shape for _, v in switch.recv_arrays(0)] == [(1, 64)]
        assert switch.recv_arrays(0) == [] and w0.free_slots(SWITCH_ADDRESS) == 8
        # results: the down rings have their own slot size; a worker's views carry its rank
        switch.send_train(worker_address(1), b"r" * 96 * 2, 96)
        [(rank, view)] = w1.recv_arrays(0)
        assert rank == 1 and view.shape == (2, 96) and (view == ord("r")).all()


def test_transport_interface_matches_udp():
    from fpisa.net import UdpTransport

    names = ("recv_batch", "recv_trains", "send", "send_batch", "send_train", "close", "fileno", "wait")
    for cls in (ShmSwitchTransport, ShmWorkerTransport):
        for name in names:
            assert callable(getattr(cls, name)) and callable(getattr(UdpTransport, name))
    with ShmFabric.create(3, 64, 4) as fabric:
        addresses = [fabric.switch_address, *fabric.worker_addresses]
        assert len(set(addresses)) == 4 and all(hash(a) is not None for a in addresses)
        assert fabric.worker_transport(2).address == worker_address(2) == ("shm", 2)
        assert fabric.switch_transport().address == SWITCH_ADDRESS == ("shm", "switch")


@pytest.mark.parametrize("path", ["trains", "arrays"])
def test_through_the_switch_pipeline(path):
    """The emulator's batch processor takes the switch transport's trains, or
    its ring views in place (``recv_arrays``: what ``emulator.server.serve``
    runs on shared memory), and its output goes back to each worker."""
    from emulator.fastpath import BatchProcessor
    from emulator.pipeline import SwitchConfig, SwitchPipeline
    from fpisa.job import JobSpec
    from fpisa.protocol import Header, MsgType, WireMode, element_dtype, pack, unpack

    K, E = 3, 8
    length = HEADER_BYTES + 4 * E
    with ShmFabric.create(K, length, 16) as fabric:
        config = SwitchConfig(JobSpec(num_workers=K, packet_elements=E, window=4), fabric.worker_addresses)
        processor = BatchProcessor(SwitchPipeline(config))
        switch = fabric.switch_transport()
        workers = [fabric.worker_transport(r) for r in range(K)]
        values = np.arange(K * E, dtype=np.float32).reshape(K, E)
        for r, w in enumerate(workers):
            packet = pack(Header(MsgType.DATA, WireMode.FPISA, 0, 0, 0, r, K, E, 0, 0, 0),
                          values[r].view(element_dtype(WireMode.FPISA, 0)))
            w.send(SWITCH_ADDRESS, packet)
        if path == "trains":
            trains = []
            while sum(len(d) // s for d, s, _ in trains) < K:
                trains += switch.recv_trains(PATIENCE_S)
            for destination, datagrams, size in processor.process_trains(trains):
                switch.send_train(destination, datagrams, size)
        else:
            got = 0
            while got < K:
                received = switch.recv_arrays(PATIENCE_S)
                got += sum(view.shape[0] for _, view in received)
                for rank, rows in processor.process_arrays(received):
                    switch.send_train(fabric.worker_addresses[rank], rows, rows.shape[1])
                switch.release_arrays()
        for r, w in enumerate(workers):
            [(data, source)] = w.recv_batch(PATIENCE_S)
            header, payload, _ = unpack(data)
            assert source == SWITCH_ADDRESS and header.msg_type == MsgType.RESULT and header.rank == r
            np.testing.assert_array_equal(payload.view(np.float32), values.sum(axis=0))


# -- waiting --------------------------------------------------------------------------------

def test_idle_wait_uses_almost_no_cpu():
    with ShmFabric.create(2, 64, 8) as fabric:
        for transport in (fabric.switch_transport(), fabric.worker_transport(1)):
            assert transport.recv_trains(0.02) == []  # warm up (Numba's cache)
            wall, cpu = time.monotonic(), time.process_time()
            assert transport.recv_batch(0.5) == []
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
            assert wall >= 0.49  # it did wait
            assert cpu < 0.1, f"a waiting consumer used {cpu:.3f} s of CPU in {wall:.2f} s"
            assert transport.wait(0) is False


def test_spinning_only_with_a_cpu_per_process(monkeypatch):
    monkeypatch.setattr(shm.os, "sched_getaffinity", lambda pid: {0, 1})
    assert shm.default_spin_s(2) == shm.DEFAULT_SPIN_S and shm.default_spin_s(3) == 0.0
    with ShmFabric.create(1, 64, 8) as fabric:
        assert fabric.switch_transport().spin_s == shm.DEFAULT_SPIN_S
    with ShmFabric.create(4, 64, 8) as fabric:
        switch = fabric.switch_transport()
        assert switch.spin_s == 0.0 and fabric.worker_transport(0, spin_s=1e-4).spin_s == 1e-4
        assert switch.recv_trains(0.02) == []  # no spin: straight to sleep
    # spins that end in sleep anyway (an idle job) stop; one that pays goes on
    with ShmFabric.create(1, 64, 8) as fabric:
        switch, worker = fabric.switch_transport(spin_s=1e-4), fabric.worker_transport(0)
        for _ in range(shm._SPIN_CREDIT_MAX):
            switch.recv_trains(0.001)
        assert switch._spin_credit <= 0
        for _ in range(shm._SPIN_PROBE_EVERY):
            switch.recv_trains(0.001)
            if switch._spin_credit > 0:
                break
        assert switch._spin_credit == 1  # probing again
        worker.send(SWITCH_ADDRESS, b"x" * 16)
        assert switch.recv_batch(0.001) == [(b"x" * 16, worker_address(0))]


def _sender(descriptor, rank, delay, ready, go, count):
    worker = ShmWorkerTransport.attach(descriptor, rank)
    ready.release()
    go.wait()
    time.sleep(delay)
    for i in range(count):
        worker.send(SWITCH_ADDRESS, bytes([rank, i]) * 10)
    worker.close()


def test_the_switch_waits_on_every_worker_ring_at_once():
    K = 3
    with ShmFabric.create(K, 64, 8) as fabric:
        switch = fabric.switch_transport()
        ready, go = CTX.Semaphore(0), CTX.Event()
        children = [CTX.Process(target=_sender, args=(fabric.descriptor, r, 0.3 * (K - r), ready, go, 2))
                    for r in range(K)]
        for c in children:
            c.start()
        for _ in children:
            assert ready.acquire(timeout=PATIENCE_S)
        assert switch.recv_trains(0.02) == []  # warm up
        go.set()
        got, wakes = [], 0
        cpu = time.process_time()
        while len(got) < 2 * K:
            start = time.monotonic()
            batch = switch.recv_batch(PATIENCE_S)
            # a lost wake-up would sit out the whole timeout
            assert batch and time.monotonic() - start < PATIENCE_S
            got += batch
            wakes += 1
        cpu = time.process_time() - cpu
        for c in children:
            c.join(PATIENCE_S)
            assert c.exitcode == 0
        for r in range(K):
            mine = [d for d, source in got if source == worker_address(r)]
            assert mine == [bytes([r, 0]) * 10, bytes([r, 1]) * 10]
        # the workers sent 0.3 s apart: the switch mostly slept
        assert cpu < 0.3 * (K - 1), f"the waiting switch used {cpu:.3f} s of CPU"


# -- two processes ---------------------------------------------------------------------

def _echo(descriptor, rank, count):
    """Worker: return every datagram to the switch, in order, mixing send
    calls; wait for room instead of dropping."""
    worker = ShmWorkerTransport.attach(descriptor, rank)
    echoed, turn = 0, 0
    while echoed < count:
        batch = worker.recv_batch(PATIENCE_S, 64)
        if not batch:
            raise SystemExit("no datagrams from the switch")
        items = [d for d, _ in batch]
        while items:
            room = worker.free_slots(SWITCH_ADDRESS)
            if not room:
                time.sleep(0.0002)
                continue
            chunk, items = items[:room], items[room:]
            turn += 1
            if turn % 3 == 0:
                for d in chunk:
                    worker.send(SWITCH_ADDRESS, d)
            elif turn % 3 == 1 and len({len(d) for d in chunk}) == 1:
                worker.send_train(SWITCH_ADDRESS, b"".join(chunk), len(chunk[0]))
            else:
                worker.send_batch([(SWITCH_ADDRESS, d) for d in chunk])
            echoed += len(chunk)
    assert worker.send_errors == 0
    worker.close()


def test_round_trip_between_two_processes():
    rng = np.random.default_rng(3)
    slot = 200
    count = 4000
    # runs of equal lengths (trains) and single odd ones, random bytes
    lengths = np.where(rng.random(count) < 0.7, slot, rng.integers(HEADER_BYTES, slot + 1, count))
    datagrams = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    with ShmFabric.create(2, slot, 16) as fabric:
        switch = fabric.switch_transport()
        child = CTX.Process(target=_echo, args=(fabric.descriptor, 1, count))
        child.start()
        dest = worker_address(1)
        sent, back = 0, []
        deadline = time.monotonic() + 4 * PATIENCE_S
        while len(back) < count:
            assert time.monotonic() < deadline and child.exitcode in (None, 0)
            room = min(switch.free_slots(dest), count - sent, int(rng.integers(1, 12)))
            if room:
                chunk = datagrams[sent:sent + room]
                if len({len(d) for d in chunk}) == 1 and room > 1:
                    switch.send_train(dest, b"".join(chunk), len(chunk[0]))
                else:
                    switch.send_batch([(dest, d) for d in chunk])
                sent += room
            back += switch.recv_batch(0.01 if sent < count else PATIENCE_S)
        child.join(PATIENCE_S)
        assert child.exitcode == 0
        assert switch.send_errors == 0
        assert all(source == dest for _, source in back)
        assert [d for d, _ in back] == datagrams  # in order, byte-identical, wrapped ~250 times


# -- lifecycle ---------------------------------------------------------------------------

def test_no_leftovers_after_success_and_after_an_exception():
    with ShmFabric.create(2, 64, 8) as fabric:
        name = fabric.name
        assert name.startswith(f"fpisa-{os.getpid()}-") and _exists(name)
        fabric.worker_transport(0).send(SWITCH_ADDRESS, b"x" * 16)
    assert not _exists(name)
    with pytest.raises(ZeroDivisionError):
        with ShmFabric.create(2, 64, 8) as fabric:
            name = fabric.name
            fabric.switch_transport()
            1 / 0
    assert not _exists(name)
    fabric = ShmFabric.create(1, 64, 8)  # no with, no close: garbage collection
    name = fabric.name
    del fabric
    assert not _exists(name)


def test_pickled_fabric_attaches_and_does_not_unlink():
    with ShmFabric.create(2, 64, 8) as fabric:
        copy = pickle.loads(pickle.dumps(fabric))
        assert copy.descriptor == fabric.descriptor and not copy.owner and fabric.owner
        copy.worker_transport(1).send(SWITCH_ADDRESS, b"y" * 16)
        copy.close()
        assert _exists(fabric.name)
        assert fabric.switch_transport().recv_batch(0) == [(b"y" * 16, worker_address(1))]
        wrong = ShmDescriptor(**{**fabric.descriptor.__dict__, "slots_per_ring": 16})
        with pytest.raises(ValueError, match="does not match its descriptor"):
            ShmFabric.attach(wrong)
    with pytest.raises(ValueError, match="no shared memory segment"):
        ShmFabric.attach(fabric.descriptor)


def test_forked_child_does_not_unlink():
    with ShmFabric.create(1, 64, 8) as fabric:
        child = mp.get_context("fork").Process(target=fabric.close)
        child.start()
        child.join(PATIENCE_S)
        assert child.exitcode == 0 and _exists(fabric.name)


def _attached_then_wait(descriptor, rank, ready):
    worker = ShmWorkerTransport.attach(descriptor, rank)
    worker.send(SWITCH_ADDRESS, b"alive" * 4)
    ready.set()
    worker.recv_batch(3600)


def test_killed_child_is_noticed_and_leaves_nothing():
    with ShmFabric.create(2, 64, 8) as fabric:
        name = fabric.name
        switch = fabric.switch_transport()
        assert not switch.peer_alive(worker_address(0))  # not attached yet
        ready = CTX.Event()
        child = CTX.Process(target=_attached_then_wait, args=(fabric.descriptor, 0, ready))
        child.start()
        assert ready.wait(PATIENCE_S)
        assert switch.peer_alive(worker_address(0))
        assert switch.recv_batch(PATIENCE_S) == [(b"alive" * 4, worker_address(0))]
        os.kill(child.pid, signal.SIGKILL)
        child.join(PATIENCE_S)
        assert _wait_until(lambda: not switch.peer_alive(worker_address(0)))
        # the switch goes on: sends to the dead worker's ring fill it, then count
        for _ in range(10):
            switch.send(worker_address(0), b"z" * 16)
        assert switch.send_errors == 2
        # and another process can take the rank over
        replacement = fabric.worker_transport(0)
        assert len(replacement.recv_batch(0)) == 8
    assert not _exists(name)


_ORCHESTRATOR = """
import os, signal, sys, time
from fpisa.shm import ShmFabric
fabric = ShmFabric.create(2, 64, 8)
print(fabric.name, flush=True)
how = sys.argv[-1] if len(sys.argv) > 1 else "{how}"
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
elif how == "interrupt":
    with fabric:
        fabric.switch_transport().recv_batch(None)  # until Ctrl-C
elif how == "exit":
    pass  # no close: the interpreter's exit unlinks
"""


@pytest.mark.parametrize("how", ["interrupt", "exit", "kill"])
def test_orchestrator_exits_without_leftovers(how):
    proc = _python(_ORCHESTRATOR.format(how=how))
    name = proc.stdout.readline().strip()
    assert name.startswith(shm.NAME_PREFIX), proc.stderr.read()
    if how == "interrupt":
        assert _wait_until(lambda: _exists(name))
        time.sleep(0.2)  # let it reach its wait (a Ctrl-C before that is fine too)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=PATIENCE_S)
    if how == "interrupt":
        assert "KeyboardInterrupt" in err
    if how == "kill":
        # nobody ran Python's exit handlers: the resource tracker process
        # (which outlives it) unlinks the segment and warns about the leak
        assert proc.returncode == -signal.SIGKILL
        assert _wait_until(lambda: not _exists(name)), "the resource tracker did not clean up"
    else:
        assert not _exists(name)
        assert "leaked" not in err and "resource_tracker" not in err, err


_INDEPENDENT_WORKER = """
import json, sys
from fpisa.shm import SWITCH_ADDRESS, ShmWorkerTransport
worker = ShmWorkerTransport.attach(json.loads(sys.argv[1]), 1)
worker.send(SWITCH_ADDRESS, b"from an independent process")
# exits without closing: its own resource tracker must not unlink our segment
"""


def test_an_independently_started_process_attaches_and_leaves_the_segment():
    with ShmFabric.create(2, 64, 8) as fabric:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", _INDEPENDENT_WORKER,
                               json.dumps(fabric.descriptor.__dict__)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=PATIENCE_S)
        assert done.returncode == 0, done.stderr
        assert "leaked" not in done.stderr and "resource_tracker" not in done.stderr, done.stderr
        assert _exists(fabric.name)
        switch = fabric.switch_transport()
        assert switch.recv_batch(0) == [(b"from an independent process", worker_address(1))]
