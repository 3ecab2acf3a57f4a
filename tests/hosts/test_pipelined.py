"""hosts.pipelined: the pipelined worker sends the serial worker's packets and
gets its results bit for bit (every mode, with loss), its conversion really
runs in the threads and the network waits for it; paced allreduce through
the orchestrator never beats its link; bad settings are clear errors."""

import threading

import numpy as np
import pytest

import hosts.pipelined as pipelined
from emulator.pipeline import SwitchConfig, SwitchPipeline
from emulator.server import serve
from fpisa.job import JobSpec
from fpisa.net import UdpTransport
from fpisa.netem import LinkFaults
from fpisa.pacing import line_bytes_of_datagram
from fpisa.protocol import HEADER_BYTES
from hosts.allreduce import AllreduceConfig, gradient_like, run_allreduce
from hosts.pipelined import PipelinedClient, check_conversion_threads
from hosts.study import host_cores as hc
from hosts.worker import AllreduceClient, WorkerConfig


class Spy:
    """Records every datagram a worker sends (first copies and re-sent ones)."""

    def __init__(self, transport):
        self.transport, self.sent = transport, []

    def recv_batch(self, timeout, max_packets=256):
        return self.transport.recv_batch(timeout, max_packets)

    def send_batch(self, items):
        items = list(items)
        self.sent += [bytes(d) for _, d in items]
        self.transport.send_batch(items)

    def send_train(self, address, datagrams, size):
        data = bytes(datagrams)
        self.sent += [data[i:i + size] for i in range(0, len(data), size)]
        self.transport.send_train(address, data, size)


def run_clients(make_client, mode="switchml", K=2, n=50_000, E=64, W=32, fmt="fp32", seed=0):
    """K clients in threads against the emulator serving loopback UDP in a thread."""
    transports = [UdpTransport.bind() for _ in range(K)]
    spies = [Spy(t) for t in transports]
    data = [gradient_like(n, r, seed, fmt) for r in range(K)]
    job = JobSpec(mode=mode, fmt=fmt, num_workers=K, packet_elements=E, window=W)
    server = UdpTransport.bind()
    pipeline = SwitchPipeline(SwitchConfig(job, [t.address for t in transports]))
    stop = []
    thread = threading.Thread(target=serve, args=(pipeline, server), kwargs={"should_stop": lambda: bool(stop)},
                              daemon=True)
    thread.start()
    results, errors = [None] * K, []
    try:
        clients = [make_client(WorkerConfig(job, rank=r, timeout_ms=20), spies[r], server.address)
                   for r in range(K)]

        def work(r):
            try:
                results[r] = clients[r].allreduce(data[r])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(r,)) for r in range(K)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        stop.append(True)
        thread.join(10)
        server.close()
        for t in transports:
            t.close()
    assert not errors, errors
    return results, clients, [set(s.sent) for s in spies]


def serial(config, transport, address):
    return AllreduceClient(config, transport, address)


def piped(threads, chunk=None):
    return lambda config, transport, address: PipelinedClient(config, transport, address,
                                                             conversion_threads=threads, chunk_elements=chunk)


@pytest.mark.parametrize("fmt", ["fp32", "fp16"])
@pytest.mark.parametrize("threads,chunk", [(1, None), (2, 1000), (3, 64)])
def test_switchml_same_packets_and_same_bits_as_the_serial_worker(threads, chunk, fmt):
    # SwitchML's integer sums do not depend on arrival order: results must be identical
    expected, _, expected_packets = run_clients(serial, fmt=fmt)
    got, clients, packets = run_clients(piped(threads, chunk), fmt=fmt)
    for e, g in zip(expected, got):
        assert np.array_equal(e, g)
    assert packets == expected_packets  # the very same datagrams (re-sent copies are the same bytes)
    for c in clients:
        assert c.pipeline.conversion_threads == threads
        # the exponents, every chunk's quantize, the dequantize: real CPU time in the threads
        assert c.conversion.encode_ns > 0 and c.conversion.decode_ns > 0
        assert c.conversion.elements == 50_000
        assert c.pipeline.chunks == -(-50_000 // c.pipeline.chunk_elements)


def test_the_network_waits_for_a_chunk_that_is_not_converted_yet(monkeypatch):
    # a slow quantizer: if any packet left before its chunk was converted it
    # would carry zeros and the sums (hence the results) would differ
    real = pipelined.switchml.quantize_to_wire
    calls = []

    def slow(*args, **kw):
        calls.append(threading.current_thread().name)
        threading.Event().wait(0.01)
        return real(*args, **kw)

    expected, _, expected_packets = run_clients(serial, n=20_000)
    monkeypatch.setattr(pipelined.switchml, "quantize_to_wire", slow)
    got, clients, packets = run_clients(piped(2, 640), n=20_000)
    for e, g in zip(expected, got):
        assert np.array_equal(e, g)
    assert packets == expected_packets
    assert calls and all(name.startswith("fpisa-convert") for name in calls)  # in the threads
    assert all(c.pipeline.stall_ns > 0 for c in clients)  # and the network thread did wait


@pytest.mark.parametrize("faults", [{}, dict(loss=0.1, duplicate=0.05, reorder=0.1)], ids=["clean", "lossy"])
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a", "switchml"])
def test_bit_exact_through_the_orchestrator_in_every_mode(mode, faults):
    # processes, shared memory, the switch's recorded arrival orders (fpisa.verify)
    config = AllreduceConfig(job=JobSpec(mode=mode, num_workers=2, window=16), elements=20_000, seed=3,
                             faults=LinkFaults(**faults), conversion_threads=2, chunk_elements=2000)
    report = run_allreduce(config, progress=False)
    checks = report["checks"]
    assert checks["packets_without_recorded_order"] == 0
    assert checks["bit_exact"] and checks["identical_across_workers"], checks
    assert [p["conversion_threads"] for p in report["pipeline"]] == [2, 2]
    if faults:
        assert sum(w["retransmitted"] for w in report["workers"]) > 0


@pytest.mark.parametrize("mode", ["fpisa", "switchml"])
def test_a_paced_allreduce_is_never_faster_than_its_link(mode):
    gbps = 0.1
    job = JobSpec(mode=mode, num_workers=2, packet_elements=255, window=256)
    config = AllreduceConfig(job=job, elements=255 * 400, conversion_threads=1, link_gbps=gbps, timeout_ms=200)
    report = run_allreduce(config, progress=False)
    assert report["checks"]["bit_exact"]
    model_mode = "switchml-2pass" if mode == "switchml" else "fpisa"
    link = hc.link_rate(model_mode, gbps, "fp32", 255)
    for goodput, pacing in zip(report["goodput_elements_per_s"], report["pacing"]):
        assert goodput <= link * 1.001  # drained before the clock stops: cannot beat the line
        assert pacing["packets"] >= job.packets(config.elements)
    # the pacer counts the bytes the model counts
    assert line_bytes_of_datagram(job.data_packet_bytes) == hc.line_bytes(job.data_packet_bytes - HEADER_BYTES)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_conversion_threads_are_clear_errors(bad):
    with pytest.raises(ValueError, match="conversion threads"):
        check_conversion_threads(bad)
    with pytest.raises(ValueError, match="conversion threads"):
        AllreduceConfig(conversion_threads=bad)


def test_bad_pacing_and_chunk_settings_are_clear_errors():
    with pytest.raises(ValueError, match="link rate"):
        AllreduceConfig(link_gbps=-1.0)
    with pytest.raises(ValueError, match="link rate"):
        AllreduceConfig(link_gbps=0)
    with pytest.raises(ValueError, match="chunk_elements needs conversion_threads"):
        AllreduceConfig(chunk_elements=1000)
    with pytest.raises(ValueError, match="chunk elements"):
        AllreduceConfig(conversion_threads=1, chunk_elements=0)


def test_cli_bad_threads_or_rate_exit_two(capsys):
    from fpisa.cli import main

    assert main(["allreduce", "--workers", "2", "--conversion-threads", "0"]) == 2
    assert "conversion threads" in capsys.readouterr().err
    assert main(["allreduce", "--workers", "2", "--link-gbps", "-2"]) == 2
    assert "link rate" in capsys.readouterr().err
    assert main(["allreduce", "--workers", "2", "--chunk-elements", "100"]) == 2
    assert main(["study", "validate", "--threads", "0"]) == 2
    assert main(["study", "validate", "--links", "0"]) == 2


def test_cli_pipelined_paced_allreduce_reports_it(tmp_path, capsys):
    from fpisa.cli import main

    out = tmp_path / "r.json"
    code = main(["allreduce", "--workers", "2", "--elements", "3000", "--mode", "switchml", "--window", "8",
                 "--conversion-threads", "2", "--link-gbps", "0.5", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "bit-exact   yes" in text and "0.5 Gb/s per worker; worker pipelined, 2 conversion thread(s)" in text
    import json

    report = json.loads(out.read_text())
    assert report["config"]["link_gbps"] == 0.5 and report["config"]["conversion_threads"] == 2
    assert [p["link_gbps"] for p in report["pacing"]] == [0.5, 0.5]
