"""aggregate_gradients and the K-worker simulator against fpisa.aggregate, bit for bit."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
pytestmark = pytest.mark.torch
from torch import nn  # noqa: E402

import fpisa  # noqa: E402
from fpisa.torch.aggregation import AggregationStats, aggregate_gradients, arrival_order  # noqa: E402
from fpisa.torch.simulator import KWorkerSimulator, SimulatorConfig  # noqa: E402

MODES = ("float32", "fpisa", "fpisa-a", "switchml", "exact")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gradient_stack(K, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # magnitudes over several decades, so alignment truncation and overwrites happen
    scale = torch.logspace(-4, 1, shape[-1])
    return (torch.randn(K, *shape, generator=g) * scale).to(dtype)


def as_bits(t):
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy()


def reference(stack, mode, fmt, order):
    """fpisa.aggregate on the stack's bit patterns, independently of the torch glue."""
    bits = as_bits(stack.reshape(stack.shape[0], -1)).view(np.uint16 if fmt != "fp32" else np.uint32)
    return fpisa.aggregate(bits, mode, fmt=fmt, order=order, block_size=64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", list(DTYPES))
@pytest.mark.parametrize("arrival", ["rank", "step", "packet"])
def test_aggregate_gradients_is_fpisa_aggregate(mode, fmt, arrival):
    stack = gradient_stack(5, (3, 70), DTYPES[fmt])
    order = arrival_order(arrival, 5, 210, seed=1, step=2, packet_elements=64)
    out, stats = aggregate_gradients(stack, mode, order=order, packet_elements=64)
    assert out.shape == (3, 70) and out.dtype == stack.dtype
    expected = reference(stack, mode, fmt, order)
    assert np.array_equal(as_bits(out).reshape(-1).view(expected.dtype), expected)
    detail = fpisa.aggregate_detailed(as_bits(stack.reshape(5, -1)).view(expected.dtype), mode, fmt=fmt,
                                      order=order, block_size=64)
    assert stats.overflow_elements == detail.overflow_count
    assert stats.overwrite_events == detail.overwrite_count
    assert stats.calls == 1 and stats.elements == 210


def test_float32_cpu_stack_is_not_copied():
    from fpisa.torch.aggregation import _to_numpy

    stack = gradient_stack(4, (100,), torch.float32)
    view = _to_numpy(stack, "fp32")
    assert np.shares_memory(view, stack.numpy())


def test_error_measurement_matches_error_report():
    stack = gradient_stack(8, (500,), torch.float32, seed=4)
    out, stats = aggregate_gradients(stack, "fpisa-a", measure_error=True)
    exact = fpisa.aggregate(stack.numpy(), "exact")
    report = fpisa.error_report(out.numpy(), exact)
    assert stats.measured_elements == 500
    assert stats.bit_exact_fraction == pytest.approx(report["bit_exact_fraction"])
    assert stats.max_ulp == report["max_ulp"]
    assert stats.mean_ulp == pytest.approx(report["mean_ulp"])
    # the exact sum against itself: no error at all
    _, exact_stats = aggregate_gradients(stack, "exact", measure_error=True)
    assert exact_stats.bit_exact_fraction == 1.0 and exact_stats.relative_l2_error == 0.0


def test_stats_merge_adds_counts_and_keeps_maxima():
    a = AggregationStats(calls=1, elements=10, overwrite_events=2, max_ulp=5, measured_elements=10,
                         bit_exact_elements=5)
    b = AggregationStats(calls=1, elements=6, overwrite_events=1, max_ulp=3, measured_elements=6,
                         bit_exact_elements=6)
    a.merge(b)
    assert (a.calls, a.elements, a.overwrite_events, a.max_ulp) == (2, 16, 3, 5)
    assert a.bit_exact_fraction == 11 / 16


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(4, 3, dtype=torch.int32), "float32, float16 and bfloat16"),
    (torch.zeros(5), "stack"),
    (np.zeros((4, 3), np.float32), "torch.Tensor"),
])
def test_bad_input_is_a_clear_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        aggregate_gradients(bad, "fpisa")


def test_unknown_mode_and_arrival_are_value_errors():
    with pytest.raises(ValueError, match="unknown mode"):
        aggregate_gradients(torch.zeros(2, 3), "int8")
    with pytest.raises(ValueError, match="arrival"):
        arrival_order("random", 2, 3, seed=0, step=0)


def test_arrival_orders_are_seeded_permutations_per_packet():
    a = arrival_order("packet", 6, 300, seed=7, step=3, packet_elements=64)
    b = arrival_order("packet", 6, 300, seed=7, step=3, packet_elements=64)
    assert np.array_equal(a, b)
    assert a.shape == (300, 6)
    assert all(sorted(row) == list(range(6)) for row in a)
    # one order per packet: constant within a packet
    for start in range(0, 300, 64):
        assert (a[start:start + 64] == a[start]).all()
    assert not np.array_equal(a, arrival_order("packet", 6, 300, seed=7, step=4, packet_elements=64))
    assert arrival_order("rank", 6, 300, seed=7, step=3) is None
    assert sorted(arrival_order("step", 6, 300, seed=7, step=3)) == list(range(6))


# -- the simulator ------------------------------------------------------------------------

def small_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def batch(seed=1, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g) * torch.logspace(-2, 1, 10), torch.randint(0, 3, (n,), generator=g)


def independent_worker_gradients(model, x, y, K):
    """Per-shard gradients through the ordinary .backward() path, for comparison."""
    rows = []
    for xs, ys in zip(torch.tensor_split(x, K), torch.tensor_split(y, K)):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(xs), ys).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["float32", "fpisa", "fpisa-a", "switchml"])
@pytest.mark.parametrize("arrival", ["rank", "packet"])
def test_simulator_aggregate_is_bit_identical_to_fpisa_aggregate(mode, arrival):
    K = 4
    model = small_model()
    x, y = batch()
    expected_stack = independent_worker_gradients(model, x, y, K)
    sim = KWorkerSimulator(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1),
                           SimulatorConfig(workers=K, mode=mode, arrival=arrival, seed=5))
    for step in range(3):
        stack, _ = sim.worker_gradients(x, y)
        assert torch.equal(stack.view(torch.int32), expected_stack.view(torch.int32))
        order = arrival_order(arrival, K, stack.shape[1], seed=5, step=step, packet_elements=64)
        expected = fpisa.aggregate(stack.numpy(), mode, order=order, block_size=64) / np.float32(K)
        before = [p.detach().clone() for p in model.parameters()]
        sim.step(x, y)
        # plain SGD without momentum: p - lr * (the aggregated gradient), as SGD computes it
        manual = torch.cat([b.reshape(-1) for b in before]).add(torch.from_numpy(expected), alpha=-0.1)
        now = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        assert torch.equal(now.view(torch.int32), manual.view(torch.int32)), f"step {step}"
        assert not torch.equal(now, torch.cat([b.reshape(-1) for b in before]))
        expected_stack = independent_worker_gradients(model, x, y, K)


def test_simulator_is_deterministic_and_modes_differ():
    def final(mode, seed):
        model = small_model(seed)
        sim = KWorkerSimulator(model, nn.functional.cross_entropy,
                               torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                               SimulatorConfig(workers=8, mode=mode, arrival="packet", seed=seed))
        for s in range(4):
            sim.step(*batch(seed=s))
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    a, b = final("fpisa-a", 0), final("fpisa-a", 0)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert not torch.equal(a, final("float32", 0))


def test_simulator_rejects_bad_configuration():
    with pytest.raises(ValueError, match="workers"):
        SimulatorConfig(workers=0)
    with pytest.raises(ValueError, match="arrival"):
        SimulatorConfig(arrival="chaos")
    model = small_model()
    sim = KWorkerSimulator(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1),
                           SimulatorConfig(workers=8))
    with pytest.raises(ValueError, match="cannot be split"):
        sim.step(*batch(n=4))


# -- torch stays optional -----------------------------------------------------------------

def _python(code):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_import_fpisa_and_the_cli_do_not_import_torch():
    r = _python("import sys, argparse, fpisa, fpisa.torch, fpisa.torch.cli\n"
                "fpisa.torch.cli.add_parser(argparse.ArgumentParser().add_subparsers())\n"
                "assert 'torch' not in sys.modules, 'torch was imported'\n")
    assert r.returncode == 0, r.stderr


def test_missing_torch_is_a_clear_import_error_and_exit_3():
    blocked = "import sys; sys.modules['torch'] = None\n"
    r = _python(blocked + "from fpisa.torch import aggregate_gradients\n")
    assert r.returncode != 0 and "torch==2.13.0" in r.stderr, r.stderr
    r = _python(blocked + "import argparse, fpisa.torch.cli as c\n"
                "p = argparse.ArgumentParser(); s = p.add_subparsers(); c.add_parser(s)\n"
                "a = p.parse_args(['train', '--epochs', '1'])\n"
                "raise SystemExit(a.func(a))\n")
    assert r.returncode == 3 and "torch==2.13.0" in r.stderr, r.stderr
