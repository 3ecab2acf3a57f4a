"""The data plane's arrival log, decoded without the tools.

A model of what ``p4/include/arrival_log.p4`` writes (one entry per packet
at the count, the count advanced by folds only) is driven by the
emulator's pipeline on lossy, duplicated and reordered traffic; the
decoded log must equal the emulator's recorded orders exactly, also when
the ring wraps between reads. Overflow and inconsistent logs are errors.
"""

import shutil
import threading
import time

import numpy as np
import pytest

from emulator.bmv2.arrival_log import (
    ArrivalLogDrainer,
    ArrivalLogError,
    ArrivalLogReader,
    OrderBuilder,
    compare_recorded,
    decode_entry,
    encode_entry,
    parse_read,
    read_commands,
)
from emulator.pipeline import SwitchConfig, SwitchPipeline
from fpisa.job import JobSpec
from fpisa.protocol import Header, MsgType, format_code, pack, sequence_pool_index, split_pool_index

K, E, WINDOW = 3, 4, 4
WORKERS = tuple(("10.0.0.1", 5000 + r) for r in range(K))
LOG, COUNT = "Ingress.slot_protocol.log.arrival_log", "Ingress.slot_protocol.log.arrival_count"


class ModelLog:
    """The P4 log's behaviour around an emulator pipeline (pool base 0)."""

    def __init__(self, pipeline: SwitchPipeline, size: int):
        self.pipeline, self.size = pipeline, size
        self.ring = [0] * size
        self.count = 0

    def process(self, data: bytes, source) -> None:
        p = self.pipeline
        folded_before = p.counters.aggregated
        p.process(data, source)
        folded = p.counters.aggregated > folded_before
        rank, pid = data[5], int.from_bytes(data[12:16], "big")
        slot, shadow = split_pool_index(int.from_bytes(data[8:10], "big"))
        first = folded and p.count[shadow * p.job.window + slot] == 1
        entry = encode_entry(pid, (slot << 1) | shadow, data[1], rank, first, folded)
        self.ring[self.count % self.size] = entry
        self.count = (self.count + folded) % (1 << 32)

    def cli_output(self) -> str:
        """What one read_commands() batch prints (nothing changes in between)."""
        return (f"RuntimeCmd: {COUNT}[0]= {self.count}\n"
                f"RuntimeCmd: {LOG}= {', '.join(map(str, self.ring))}\n"
                f"RuntimeCmd: {COUNT}[0]= {self.count}\nRuntimeCmd: \n")


def packet(rank: int, g: int, rng, job: JobSpec | None = None) -> bytes:
    job = job or JobSpec(mode="fpisa", num_workers=K, packet_elements=E, window=WINDOW)
    n = job.packet_elements
    # switchml: the first packet is the exponent exchange (int max), as a worker sends it
    wire_mode = job.info.wire_modes[0] if g == 0 else job.data_wire_mode
    h = Header(MsgType.DATA, wire_mode, format_code("fp32"), 0, job.job, rank, K, n,
               sequence_pool_index(g, job.window), 0, g)
    if job.info.is_float:
        return pack(h, rng.standard_normal(n).astype(np.float32).view(np.uint32))
    return pack(h, rng.integers(-2**20, 2**20, n).astype(np.int32))


def lossy_stream(packets: int, seed: int):
    """Every worker's packets 0..packets-1, reordered (jitter of a few packets),
    5% lost and sent again later, 10% duplicated: (rank, packet number) in arrival order."""
    rng = np.random.default_rng(seed)
    events = []
    for g in range(packets):
        for r in range(K):
            t = g + rng.uniform(0, 3)
            if rng.random() < 0.05:
                t += rng.uniform(2, 6)  # the first copy lost, the retransmission later
            events.append((t, r, g))
            if rng.random() < 0.1:
                events.append((t + rng.uniform(0, 4), r, g))
    events.sort()
    return [(r, g) for _, r, g in events], rng


def run_model(packets: int, seed: int, size: int, read_every: int | None = None):
    job = JobSpec(mode="fpisa", num_workers=K, packet_elements=E, window=WINDOW)
    pipeline = SwitchPipeline(SwitchConfig(job, WORKERS, record_orders=True))
    model = ModelLog(pipeline, size)
    reader = ArrivalLogReader(size, OrderBuilder(K, 0, WINDOW))
    stream, rng = lossy_stream(packets, seed)
    for i, (r, g) in enumerate(stream):
        model.process(packet(r, g, rng), WORKERS[r])
        if read_every and i % read_every == 0:
            reader.consume(model.count, model.ring, model.count)
    reader.consume(model.count, model.ring, model.count)
    return pipeline, model, reader


def test_entry_layout_is_the_p4_one():
    value = encode_entry(0xDEADBEEF, row=0x3FF, wire_mode=2, rank=31, first=True)
    assert value == 0xDEADBEEF | 0x3FF << 32 | 2 << 48 | 31 << 56 | 1 << 61 | 1 << 62
    assert value < 1 << 63  # thrift's signed 64-bit register values carry it unchanged
    e = decode_entry(value)
    assert (e.packet_id, e.row, e.wire_mode, e.rank, e.first, e.folded) == (0xDEADBEEF, 0x3FF, 2, 31, True, True)
    assert not decode_entry(encode_entry(1, 2, 0, 1, False, folded=False)).folded
    with pytest.raises(ArrivalLogError, match="outside"):
        decode_entry(-1)


@pytest.mark.parametrize("seed", range(4))
def test_decoded_log_equals_the_emulators_recorded_orders(seed):
    pipeline, model, reader = run_model(packets=60, seed=seed, size=1 << 12)
    want = pipeline.recorded_arrays()
    got = reader.builder.arrays()
    assert len(want["packet_id"]) > 30  # most rounds completed despite the faults
    assert pipeline.counters.dropped_total > 0  # duplicates and stale copies were not logged
    assert compare_recorded(got, want)["identical"], compare_recorded(got, want)
    for key in want:
        assert np.array_equal(got[key], want[key]) and got[key].dtype == want[key].dtype
    assert reader.builder.entries == pipeline.counters.aggregated == model.count


def test_a_small_ring_read_often_enough_wraps_and_stays_exact():
    # 16 entries, read after every 10 packets (< 16 folds in between)
    pipeline, model, reader = run_model(packets=80, seed=7, size=16, read_every=10)
    assert model.count > 10 * 16  # wrapped many times
    assert compare_recorded(reader.builder.arrays(), pipeline.recorded_arrays())["identical"]


def test_overflow_is_an_error_not_a_wrong_order():
    with pytest.raises(ArrivalLogError, match="overflowed"):
        run_model(packets=80, seed=7, size=16, read_every=None)
    # exactly at the limit: size - 1 entries written since the last read are intact
    reader = ArrivalLogReader(8, OrderBuilder(1))
    ring = [encode_entry(g, 0, 0, 0, True) for g in range(8)]
    assert reader.consume(7, ring, 7) == 7
    reader = ArrivalLogReader(8, OrderBuilder(1))
    with pytest.raises(ArrivalLogError, match="overflowed"):
        reader.consume(7, ring, 8)  # one more fold during the read could overwrite entry 0


def test_the_count_read_after_the_ring_bounds_what_was_overwritten():
    # entries 0..4 read while 3 more were folded: fine, and the next read goes on at 5
    reader = ArrivalLogReader(8, OrderBuilder(1))
    ring = [encode_entry(g, 0, 0, 0, True) for g in range(8)]
    assert reader.consume(5, ring, 7) == 5
    assert reader.consume(8, ring, 8) == 3
    assert list(reader.builder.arrays()["packet_id"]) == list(range(8))
    with pytest.raises(ArrivalLogError, match="went back"):
        reader.consume(9, ring, 3)


def test_the_32_bit_count_wraps():
    reader = ArrivalLogReader(8, OrderBuilder(1))
    reader.position = (1 << 32) - 2
    ring = [0] * 8
    for i, index in enumerate(((1 << 32) - 2, (1 << 32) - 1, 0, 1)):
        ring[index % 8] = encode_entry(100 + i, 0, 0, 0, True)
    assert reader.consume(2, ring, 2) == 4
    assert list(reader.builder.arrays()["packet_id"]) == [100, 101, 102, 103]


def test_inconsistent_logs_are_errors():
    b = OrderBuilder(2)
    with pytest.raises(ArrivalLogError, match="not a folded"):
        b.feed(decode_entry(encode_entry(1, 0, 0, 0, True, folded=False)))
    with pytest.raises(ArrivalLogError, match="without its round's first arrival"):
        b.feed(decode_entry(encode_entry(1, 0, 0, 1, False)))
    b.feed(decode_entry(encode_entry(1, 0, 0, 1, True)))
    with pytest.raises(ArrivalLogError, match="without its round's first arrival"):
        b.feed(decode_entry(encode_entry(2, 0, 0, 0, False)))  # another packet id
    with pytest.raises(ArrivalLogError, match="rank 5"):
        b.feed(decode_entry(encode_entry(1, 0, 0, 5, False)))
    b.feed(decode_entry(encode_entry(1, 0, 0, 0, False)))
    assert b.arrays()["order"].tolist() == [[1, 0]]
    with pytest.raises(ArrivalLogError, match="no open round"):
        b.feed(decode_entry(encode_entry(1, 0, 0, 0, False)))  # a completed round takes no more


def test_other_jobs_rows_are_skipped_and_abandoned_rounds_counted():
    b = OrderBuilder(2, pool_base=4, pool_size=2)  # rows 8..11
    b.feed(decode_entry(encode_entry(7, 3, 0, 0, True)))  # another job's row
    b.feed(decode_entry(encode_entry(7, 8, 0, 0, True)))
    b.feed(decode_entry(encode_entry(9, 8, 0, 1, True)))  # a newer round replaces 7
    b.feed(decode_entry(encode_entry(9, 8, 0, 0, False)))
    b.feed(decode_entry(encode_entry(3, 11, 2, 1, True)))
    assert b.stats() == {"entries": 5, "completed_rounds": 1, "incomplete_rounds": 1,
                         "abandoned_rounds": 1, "other_jobs_entries": 1}
    got = b.arrays()
    assert got["packet_id"].tolist() == [9] and got["order"].tolist() == [[1, 0]]


def test_cli_output_is_parsed_and_checked():
    names = read_commands(LOG, COUNT)
    assert names == [f"register_read {COUNT} 0", f"register_read {LOG}", f"register_read {COUNT} 0"]
    out = (f"Obtaining JSON from switch...\nDone\nRuntimeCmd: {COUNT}[0]= 3\n"
           f"RuntimeCmd: {LOG}= 1, 2, 3, 0\nregister index omitted, reading entire array\n"
           f"RuntimeCmd: {COUNT}[0]= 4\nRuntimeCmd: \n")
    assert parse_read(out, LOG, COUNT, 4) == (3, [1, 2, 3, 0], 4)
    with pytest.raises(ArrivalLogError, match="2 entries"):
        parse_read(out.replace("1, 2, 3, 0", "1, 2"), LOG, COUNT, 4)
    with pytest.raises(ArrivalLogError, match="could not parse"):
        parse_read("Error: no such register", LOG, COUNT, 4)
    with pytest.raises(ValueError, match="power of two"):
        ArrivalLogReader(12, OrderBuilder(1))


class FakeCLI:
    """simple_switch_CLI against a ModelLog that a test thread keeps feeding."""

    def __init__(self, model: ModelLog, fail_after: int | None = None):
        self.model, self.fail_after, self.calls = model, fail_after, 0
        self.lock = threading.Lock()

    def run(self, commands):
        assert commands == read_commands(LOG, COUNT)
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simple_switch_CLI failed: Could not connect")
        with self.lock:
            return self.model.cli_output()


def _drained(fail_after=None):
    job = JobSpec(mode="fpisa", num_workers=K, packet_elements=E, window=WINDOW)
    pipeline = SwitchPipeline(SwitchConfig(job, WORKERS, record_orders=True))
    model = ModelLog(pipeline, 1 << 10)
    cli = FakeCLI(model, fail_after)
    reader = ArrivalLogReader(model.size, OrderBuilder(K, 0, WINDOW), cli, LOG, COUNT)
    drainer = ArrivalLogDrainer(reader, min_interval=0.01, max_interval=0.02).start()
    stream, rng = lossy_stream(40, seed=3)
    for i, (r, g) in enumerate(stream):
        with cli.lock:
            model.process(packet(r, g, rng), WORKERS[r])
        if i == len(stream) // 2:  # a read in the middle of the job
            deadline = time.monotonic() + 10
            while cli.calls == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
    return pipeline, drainer, reader


def test_the_drainer_reads_while_the_job_runs_and_once_at_the_end():
    pipeline, drainer, reader = _drained()
    got = drainer.finish()
    assert reader.reads >= 2  # at least one while the job ran, and the last
    assert compare_recorded(got, pipeline.recorded_arrays())["identical"]


def test_a_failed_read_surfaces_in_finish():
    _, drainer, _ = _drained(fail_after=0)
    with pytest.raises(ArrivalLogError, match="Could not connect"):
        drainer.finish()


def test_compare_recorded_names_the_first_difference():
    a = {"packet_id": np.array([1, 2]), "wire_mode": np.array([0, 0], np.int8),
         "order": np.array([[0, 1], [1, 0]], np.int16)}
    b = {**a, "order": np.array([[0, 1], [0, 1]], np.int16)}
    assert compare_recorded(a, a)["identical"]
    assert compare_recorded(a, b) == {"rounds": 2, "other_rounds": 2, "identical": False, "first_difference": 1}
    short = {k: v[:1] for k, v in a.items()}
    assert compare_recorded(a, short)["first_difference"] == 1


_MISSING = [t for t in ("p4c-bm2-ss", "simple_switch", "simple_switch_CLI") if shutil.which(t) is None]


@pytest.mark.skipif(bool(_MISSING), reason=f"not on PATH: {', '.join(_MISSING)} (docs/p4.md)")
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a", "switchml"])
def test_bmv2_logs_the_emulators_orders_on_lossy_reordered_traffic(tmp_path, mode):
    """simple_switch (pcap files, no root) on the same lossy, duplicated,
    reordered stream as the emulator: its log gives the emulator's orders."""
    from emulator.bmv2.build import ensure_built
    from emulator.bmv2.control_plane import (Bmv2Job, ProgramInfo, SwitchCLI, WorkerPort,
                                             configure_job, read_counters)
    from emulator.bmv2.pcap import write_pcap
    from emulator.bmv2.switch import SimpleSwitch
    from fpisa.net import build_frame
    from fpisa.protocol import UDP_PORT
    from p4 import N_ELEMENTS

    job = JobSpec(mode=mode, num_workers=K, packet_elements=N_ELEMENTS, window=WINDOW, job=2)
    stream, rng = lossy_stream(60, seed=11)
    data = [(r, packet(r, g, rng, job)) for r, g in stream]
    workers = [WorkerPort(r, f"02:00:00:00:00:{r + 1:02x}", f"10.0.0.{r + 1}", 40000 + r, r + 1)
               for r in range(K)]
    pipeline = SwitchPipeline(SwitchConfig(job, tuple((w.ip, w.udp_port) for w in workers),
                                           record_orders=True))
    for r, d in data:
        pipeline.process(d, (workers[r].ip, workers[r].udp_port))
    want = pipeline.recorded_arrays()

    json_path = ensure_built(job.info.p4_program)
    info = ProgramInfo(json_path)
    ports = {0: "uplink", **{w.switch_port: f"worker{w.rank}" for w in workers}}
    write_pcap(tmp_path / "uplink_in.pcap",
               [build_frame(d, src_mac=workers[r].mac, dst_mac="02:00:00:00:ff:00", src_ip=workers[r].ip,
                            dst_ip="10.0.0.254", src_port=workers[r].udp_port, dst_port=UDP_PORT)
                for r, d in data])
    for w in workers:
        write_pcap(tmp_path / f"worker{w.rank}_in.pcap", [])
    # fpisa_a's JSON takes simple_switch and its CLI a while to load
    with SimpleSwitch(json_path, ports, tmp_path, pcap_wait_seconds=15) as switch:
        cli = SwitchCLI(switch.thrift_port)
        bmv2_job = Bmv2Job(job=job.job, workers=tuple(workers), pool_size=WINDOW, pool_base=8)
        configure_job(cli, info, bmv2_job)
        assert switch.seconds_until_processing() > 0, "configuring took longer than the pcap wait"
        reader = ArrivalLogReader.for_job(cli, info, bmv2_job)
        deadline = time.monotonic() + 300
        while read_counters(cli, info)["received"] < len(data):
            assert time.monotonic() < deadline and switch.running(), "simple_switch did not take every frame"
            time.sleep(1.0)
        reader.drain()
        counters = read_counters(cli, info)
    got = reader.builder.arrays()
    assert len(want["packet_id"]) > 40 and pipeline.counters.dropped_total > 0
    assert counters["aggregated"] == pipeline.counters.aggregated == reader.builder.entries
    diff = compare_recorded(got, want)
    assert diff["identical"], (diff, reader.builder.stats())
