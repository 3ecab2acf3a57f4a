"""AllreduceClient against switches in this process: the slot/shadow-set
sequence, stale and duplicated results, re-sent packets, validation.

The recovery tests run on UDP (the Python loop of ``_run_pass``) and on
shared memory (its compiled loop, ``worker_step``), with the same faults."""

import dataclasses
import threading

import numpy as np
import pytest

import fpisa
from emulator.pipeline import SwitchConfig, SwitchPipeline
from emulator.server import serve, warm_up_rings
from fpisa.net import UdpTransport
from fpisa.shm import SWITCH_ADDRESS, ShmFabric
from fpisa.protocol import unpack
from fpisa.job import JobSpec
from fpisa.netem import LinkFaults
from hosts.worker import AllreduceClient, WorkerConfig


class Tampered:
    """A transport without trains whose sends pass through ``tamper``."""

    def __init__(self, transport, tamper):
        self.transport, self.tamper = transport, tamper

    def recv_batch(self, timeout, max_packets=256):
        return self.transport.recv_batch(timeout, max_packets)

    def send_batch(self, items):
        self.transport.send_batch(self.tamper(list(items)))


class Switch:
    """The emulator serving on loopback in a thread; ``tamper`` may rewrite
    what it sends (list of (address, bytes)) to play a misbehaving network."""

    def __init__(self, workers, job: JobSpec, tamper=None, transport=None):
        self.transport = UdpTransport.bind() if transport is None else transport
        config = SwitchConfig(job, workers, record_orders=True)
        if transport is not None:
            warm_up_rings(config)  # the shared-memory pass, compiled before the clients wait for it
        self.pipeline = SwitchPipeline(config)
        self.stop = False
        served = self.transport if tamper is None else Tampered(self.transport, tamper)
        self.thread = threading.Thread(target=serve, args=(self.pipeline, served),
                                       kwargs={"should_stop": lambda: self.stop}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(10)
        self.transport.close()


def run_workers(n, K=2, tamper=None, mode="fpisa", window=4, elements=2, worker=None, in_place=False,
                transport="udp", faults=None, **kw):
    """K clients and a switch, in threads; ``transport``: "udp" or "shm" (the
    switch's ``tamper`` then sees its sends to the workers' down rings)."""
    data = [np.random.default_rng(r).standard_normal(n).astype(np.float32).view(np.uint32) for r in range(K)]
    results = [None] * K
    job = JobSpec(mode=mode, num_workers=K, packet_elements=elements, window=window, **kw)
    fabric = None
    if transport == "shm":
        fabric = ShmFabric.create(K, job.max_data_packet_bytes, 4 * window + 64,
                                  result_slot_bytes=job.max_result_bytes)
        transports = [fabric.worker_transport(r) for r in range(K)]
        addresses, switch_transport, switch_address = fabric.worker_addresses, fabric.switch_transport(), SWITCH_ADDRESS
    else:
        transports = [UdpTransport.bind() for _ in range(K)]
        addresses, switch_transport = [t.address for t in transports], None
    with Switch(addresses, job, tamper=tamper, transport=switch_transport) as switch:
        if switch_transport is None:
            switch_address = switch.transport.address
        clients = [AllreduceClient(WorkerConfig(job, rank=r, **(worker or {"timeout_ms": 5})),
                                   transports[r], switch_address,
                                   faults=None if faults is None else dataclasses.replace(faults, seed=faults.seed + r))
                   for r in range(K)]
        for client in clients:
            client.warm_up()

        def work(r):
            bits = data[r].copy() if in_place else data[r]
            results[r] = clients[r].allreduce(bits, out=bits if in_place else None)
            assert not in_place or results[r] is bits

        threads = [threading.Thread(target=work, args=(r,)) for r in range(K)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for t in transports:
        t.close()
    if fabric is not None:
        fabric.close()
        fabric.unlink()
    return data, results, clients, switch.pipeline


both = pytest.mark.parametrize("transport", ["udp", "shm"])


def test_packet_sequence_alternates_shadow_sets_per_slot():
    # 11 packets over a window of 4: slot g % 4, set (g // 4) % 2
    sent = []

    def spy(items):
        sent.extend(unpack(d)[0] for _, d in items)
        return items

    data, results, clients, p = run_workers(22, tamper=spy)
    assert np.array_equal(results[0], results[1])
    multicast = {h.packet_id: (h.slot, h.shadow_set) for h in sent}
    assert multicast == {g: (g % 4, (g // 4) % 2) for g in range(11)}


@both
def test_duplicated_and_stale_results_are_ignored(transport):
    previous = []

    def duplicate_and_replay(items):
        out = items + items  # every result twice
        out += previous[-3:]  # and a few old ones again
        previous.extend(items)
        return out

    data, results, clients, p = run_workers(40, tamper=duplicate_and_replay, transport=transport)
    orders = p.recorded_orders()
    per_element = np.repeat(np.array([orders[g] for g in range(20)]), 2, axis=0)
    expected = fpisa.aggregate(np.stack(data), "fpisa", order=per_element)
    assert np.array_equal(results[0], expected) and np.array_equal(results[1], expected)
    assert sum(c.counters.duplicate_results for c in clients) >= 40


@both
def test_lost_results_are_recovered_by_re_sending(transport):
    dropped = []

    def drop_some_results(items):
        keep = []
        for address, data in items:
            header = unpack(data)[0]
            if header.packet_id % 3 == 0 and header.rank == 1 and header.packet_id not in dropped:
                dropped.append(header.packet_id)  # worker 1 loses this result once
                continue
            keep.append((address, data))
        return keep

    data, results, clients, p = run_workers(30, tamper=drop_some_results, transport=transport)
    assert np.array_equal(results[0], results[1])
    assert clients[1].counters.retransmitted >= len(dropped) > 0
    assert p.counters.retransmitted >= len(dropped)


@both
def test_a_lost_result_is_recovered_by_fast_retransmit_not_the_timer(transport):
    # the timers would fire only after a minute and the client gives up after
    # 20 s without progress: only a fast retransmit (a packet sent later has
    # its result back, and this one is overdue) can recover the lost result in time
    dropped = []

    def drop_one_result(items):
        keep = []
        for address, data in items:
            header = unpack(data)[0]
            if header.packet_id == 5 and header.rank == 1 and not dropped:
                dropped.append(header.packet_id)
                continue
            keep.append((address, data))
        return keep

    data, results, clients, p = run_workers(
        200, window=8, tamper=drop_one_result, transport=transport,
        worker={"timeout_ms": 60_000, "max_timeout_ms": 60_000, "stall_s": 20.0})
    assert dropped == [5]
    assert np.array_equal(results[0], results[1])
    assert clients[1].counters.fast_retransmitted >= 1
    assert p.counters.retransmitted >= 1  # the switch answered the re-sent packet (RESULT_RETX)


def run_with_minute_timers(n, lost, transport="udp"):
    """run_workers(n) on a window of 8 in which worker 1 loses the results of
    packet ids ``lost`` (id -> how many times; counted down) and whose timers
    fire only after a minute (the client gives up after 20 s without progress)."""

    def drop(items):
        keep = []
        for address, data in items:
            header = unpack(data)[0]
            if header.rank == 1 and lost.get(header.packet_id, 0) > 0:
                lost[header.packet_id] -= 1
                continue
            keep.append((address, data))
        return keep

    return run_workers(n, window=8, tamper=drop, transport=transport,
                       worker={"timeout_ms": 60_000, "max_timeout_ms": 60_000, "stall_s": 20.0})


@both
def test_repeated_losses_and_losses_far_ahead_are_recovered_without_timers(transport):
    # worker 1 loses packet 5's result three times (the result, then the
    # answers to two re-sent copies), and meanwhile the result of packet 30,
    # whose slot has run ahead of packet 5's by three rounds. Each copy counts
    # anew, and losses are looked for in every slot, not in ids 5..5+W: with
    # minute-long timers, both must come back through fast retransmits
    lost = {5: 3, 30: 1}
    data, results, clients, p = run_with_minute_timers(400, lost, transport)
    assert lost == {5: 0, 30: 0}
    assert np.array_equal(results[0], results[1])
    assert clients[1].counters.fast_retransmitted >= 4
    assert p.counters.retransmitted >= 4


@both
def test_losses_at_the_end_of_a_pass_are_recovered_by_a_tail_probe(transport):
    # worker 1 loses the results of the pass's last four packets (once each).
    # No packet is sent after them, so no later result can show them lost
    # (fast retransmit cannot fire), and the timers would fire only after a
    # minute while the client gives up after 20 s: only the tail loss probe
    # (every packet out, no result for two round trips) recovers them
    lost = {96: 1, 97: 1, 98: 1, 99: 1}
    data, results, clients, p = run_with_minute_timers(200, lost, transport)
    assert lost == {96: 0, 97: 0, 98: 0, 99: 0}
    assert np.array_equal(results[0], results[1])
    orders = p.recorded_orders()
    per_element = np.repeat(np.array([orders[g] for g in range(100)]), 2, axis=0)
    assert np.array_equal(results[1], fpisa.aggregate(np.stack(data), "fpisa", order=per_element))
    assert clients[1].counters.tail_probes >= 1
    assert clients[1].counters.retransmitted >= clients[1].counters.tail_probes
    assert p.counters.retransmitted >= 4  # the switch answered the probes (RESULT_RETX)


@both
def test_passes_continue_the_sequence(transport):
    # switchml: exponent exchange then data; packet ids (and so slots) run on
    data, results, clients, p = run_workers(10, mode="switchml", transport=transport)
    exchange, data_packets = JobSpec(mode="switchml", packet_elements=2).pass_packets(10)
    assert clients[0].packet_ids == exchange + data_packets == 3 + 5
    assert np.array_equal(results[0], fpisa.aggregate(np.stack(data), "switchml", block_size=2))


@both
def test_the_workers_link_loses_and_duplicates_what_it_is_told_to(transport):
    # loss and duplication on the way to the switch, applied by the client
    # (on shared memory inside its compiled loop, from the injector's draws)
    faults = LinkFaults(loss=0.2, duplicate=0.2, seed=7)
    data, results, clients, p = run_workers(400, K=3, window=8, faults=faults, transport=transport)
    orders = p.recorded_orders()
    per_element = np.repeat(np.array([orders[g] for g in range(200)]), 2, axis=0)
    expected = fpisa.aggregate(np.stack(data), "fpisa", order=per_element)
    for client, result in zip(clients, results):
        assert np.array_equal(result, expected)
        link = client._injector.counters
        copies = client.counters.sent + client.counters.retransmitted
        assert link.offered == copies
        # 20% of them each: far from 0 and from all
        assert 0.1 * copies < link.dropped < 0.3 * copies
        assert 0.1 * (copies - link.dropped) < link.duplicated < 0.3 * (copies - link.dropped)
    assert p.counters.dropped.get("duplicate_incomplete", 0) + p.counters.retransmitted > 0


@pytest.mark.parametrize("kw,match", [
    (dict(rank=2), "rank"), (dict(rank=-1), "rank"), (dict(rank=True), "rank"),
    (dict(timeout_ms=0), "timeout"), (dict(timeout_ms=300), "timeout"), (dict(stall_s=0), "stall_s"),
    (dict(job={"num_workers": 2}), "JobSpec"),
])
def test_worker_config_is_validated(kw, match):
    # the job's own fields are validated by JobSpec (tests/fpisa/test_job.py)
    with pytest.raises(ValueError, match=match):
        WorkerConfig(**{"job": JobSpec(num_workers=2), "rank": 0, **kw})


def test_worker_config_round_trips_through_a_dict():
    config = WorkerConfig(JobSpec(mode="switchml", num_workers=3, window=8), rank=2, timeout_ms=7.5)
    assert WorkerConfig.from_dict(config.as_dict()) == config


@both
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a", "switchml"])
def test_in_place_sums_are_bit_exact_under_loss(mode, transport):
    # 21 elements, 5 per packet: the last packet padded; the sums overwrite the inputs
    seen = [0]

    def drop_every_fifth_result(items):
        keep = []
        for item in items:
            seen[0] += 1
            if seen[0] % 5:
                keep.append(item)
        return keep

    data, results, clients, p = run_workers(21, mode=mode, elements=5, in_place=True,
                                            tamper=drop_every_fifth_result, transport=transport)
    assert sum(c.counters.retransmitted for c in clients) > 0
    if mode == "switchml":
        expected = fpisa.aggregate(np.stack(data), "switchml", block_size=5)
    else:
        orders = p.recorded_orders()
        per_element = np.repeat(np.array([orders[g] for g in range(5)]), 5, axis=0)[:21]
        expected = fpisa.aggregate(np.stack(data), mode, order=per_element)
    assert np.array_equal(results[0], expected) and np.array_equal(results[1], expected)


@pytest.mark.parametrize("out", [np.zeros(3, np.uint32), np.zeros(4, np.int32), np.zeros(8, np.uint32)[::2],
                                 np.zeros((2, 2), np.uint32)])
def test_a_bad_out_array_is_a_clear_error(out):
    client = AllreduceClient(WorkerConfig(JobSpec(num_workers=1), rank=0), None, None)
    with pytest.raises(ValueError, match="out must be"):
        client.allreduce(np.zeros(4, np.uint32), out=out)


def test_wrong_input_dtype_is_a_clear_error():
    client = AllreduceClient(WorkerConfig(JobSpec(num_workers=1), rank=0), None, None)
    with pytest.raises(ValueError, match="bit patterns"):
        client.allreduce(np.zeros(4, np.float64))
