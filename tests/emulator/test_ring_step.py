"""The switch's compiled pass on shared memory (emulator.fastpath.RingStep,
run by emulator.server.serve): same results, drops and counters as the
Python path, rows only the reference path takes still go there, and the
links' loss and duplication land in the multicast ring's rank masks."""

import threading

import numpy as np
import pytest

from emulator.pipeline import SwitchConfig, SwitchPipeline
from emulator.server import serve, warm_up_rings
from fpisa.job import JobSpec
from fpisa.netem import LinkFaults
from fpisa.protocol import Header, MsgType, WireMode, element_dtype, pack, unpack
from fpisa.shm import SWITCH_ADDRESS, ShmFabric

K, E = 3, 8
PATIENCE_S = 10.0


def data_packet(rank, packet_id, values, job=0, num_elements=E):
    slot = packet_id % 4
    pool_index = ((packet_id // 4) % 2) << 15 | slot
    return pack(Header(MsgType.DATA, WireMode.FPISA, 0, 0, job, rank, K, num_elements, pool_index, 0, packet_id),
                values.view(element_dtype(WireMode.FPISA, 0)))


class Served:
    """serve() on a fabric's switch end, in a thread, until the block ends."""

    def __init__(self, faults=None):
        job = JobSpec(num_workers=K, packet_elements=E, window=4)
        self.fabric = ShmFabric.create(K, job.max_data_packet_bytes, 64, result_slot_bytes=job.max_result_bytes)
        config = SwitchConfig(job, self.fabric.worker_addresses, record_orders=True)
        warm_up_rings(config)  # compiled (the first time: ~10 s) before anything waits for it
        self.pipeline = SwitchPipeline(config)
        self.switch = self.fabric.switch_transport()
        self.workers = [self.fabric.worker_transport(r) for r in range(K)]
        self.stop = False
        self.stats = None
        self.thread = threading.Thread(target=self._serve, args=(faults,), daemon=True)

    def _serve(self, faults):
        self.stats = serve(self.pipeline, self.switch, faults=faults, should_stop=lambda: self.stop)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(PATIENCE_S)
        for t in (*self.workers, self.switch):
            t.close()
        self.fabric.close()
        self.fabric.unlink()

    def results(self, rank, count):
        """``count`` datagrams for worker ``rank`` (or what came within the patience)."""
        got = []
        w = self.workers[rank]
        while len(got) < count:
            batch = w.recv_batch(PATIENCE_S, 64)
            if not batch:
                break
            got += [unpack(d) for d, _ in batch]
        return got


def test_results_drops_and_odd_rows_as_the_python_path():
    values = np.arange(K * 2 * E, dtype=np.float32).reshape(2, K, E)
    with Served() as s:
        for r, w in enumerate(s.workers):
            # malformed (too short), another job, a DATA packet of another
            # shape (the reference path's config check), then two good ones
            w.send(SWITCH_ADDRESS, b"\x01\x02\x03")
            w.send(SWITCH_ADDRESS, data_packet(r, 0, values[0, r], job=9))
            w.send(SWITCH_ADDRESS, data_packet(r, 0, np.zeros(4, np.float32), num_elements=4))
            for g in range(2):
                w.send(SWITCH_ADDRESS, data_packet(r, g, values[g, r]))
        for r in range(K):
            got = s.results(r, 2)
            assert sorted(h.packet_id for h, _, _ in got) == [0, 1]
            for header, payload, _ in got:
                assert header.msg_type == MsgType.RESULT
                np.testing.assert_array_equal(payload.view(np.float32), values[header.packet_id].sum(axis=0))
        # the odd rows went to the reference path and were counted there
        c = s.pipeline.counters
    assert c.completed == 2 and c.aggregated == 2 * K
    assert sum(c.dropped.values()) == 3 * K
    assert c.dropped.get("wrong_job") == K


def test_a_re_sent_packet_of_a_complete_slot_is_answered_to_its_sender_only():
    values = np.ones((K, E), np.float32)
    with Served() as s:
        for r, w in enumerate(s.workers):
            w.send(SWITCH_ADDRESS, data_packet(r, 0, values[r]))
        for r in range(K):
            assert len(s.results(r, 1)) == 1
        s.workers[1].send(SWITCH_ADDRESS, data_packet(1, 0, values[1]))
        [(header, payload, _)] = s.results(1, 1)
        assert header.msg_type == MsgType.RESULT_RETX and header.rank == 1
        np.testing.assert_array_equal(payload.view(np.float32), np.full(E, K, np.float32))
        assert s.workers[0].recv_batch(0.05) == [] and s.workers[2].recv_batch(0.05) == []
    assert s.pipeline.counters.retransmitted == 1


@pytest.mark.parametrize("loss,duplicate", [(0.3, 0.0), (0.0, 0.3), (0.2, 0.2)])
def test_the_links_to_the_workers_lose_and_duplicate_results(loss, duplicate):
    n = 40  # packets per worker: one per slot round, each completed
    values = np.ones((K, E), np.float32)
    faults = LinkFaults(loss=loss, duplicate=duplicate, seed=3)
    received = 0

    def take(w, timeout):
        nonlocal received
        for d, _ in w.recv_batch(timeout, 64):
            header, payload, _ = unpack(d)
            assert header.msg_type == MsgType.RESULT and header.packet_id < n
            np.testing.assert_array_equal(payload.view(np.float32), np.full(E, K, np.float32))
            received += 1

    with Served(faults) as s:
        for g in range(n):
            for r, w in enumerate(s.workers):
                w.send(SWITCH_ADDRESS, data_packet(r, g, values[r]))
            # this round's result is out before the slot is used again
            while s.pipeline.counters.completed < g + 1:
                s.workers[0].wait(0.01)
            for w in s.workers:
                take(w, 0.0)
        for w in s.workers:
            take(w, 0.2)
    assert s.stats["send_errors"] == 0
    link = s.stats["faults"]
    assert link["offered"] == K * n  # one copy per worker and result
    assert received == K * n - link["dropped"] + link["duplicated"]
    if loss:
        assert 0.1 * K * n < link["dropped"] < 0.5 * K * n
    else:
        assert link["dropped"] == 0
    if duplicate:
        assert 0.1 * K * n < link["duplicated"] < 0.5 * K * n
    else:
        assert link["duplicated"] == 0
