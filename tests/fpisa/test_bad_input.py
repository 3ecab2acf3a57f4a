"""Bad input gets a ValueError that names the problem, never a crash or a
silently wrong answer."""

import numpy as np
import pytest

import fpisa
from fpisa import switchml as sml

GOOD = np.ones((3, 4), np.float32)


@pytest.mark.parametrize("values, match", [
    (np.ones(4, np.float32), "shape|workers|2"),
    (np.ones((2, 3, 4), np.float32), "shape|workers|2"),
    (np.ones((0, 4), np.float32), "worker"),
])
def test_wrong_shapes(values, match):
    with pytest.raises(ValueError, match=f"(?i){match}"):
        fpisa.aggregate(values, "fpisa")


@pytest.mark.parametrize("values, fmt", [
    (np.ones((2, 4), np.float16), "fp32"),
    (np.ones((2, 4), np.float32), "fp16"),
    (np.ones((2, 4), np.float32), "bf16"),
    (np.ones((2, 4), np.uint16), "fp32"),
    (np.ones((2, 4), np.uint32), "fp16"),
    (np.ones((2, 4), np.uint32), "bf16"),
    (np.ones((2, 4), np.float64), "fp32"),
    (np.ones((2, 4), np.int32), "fp32"),
    (np.ones((2, 4), np.int64), "fp32"),
    (np.ones((2, 4), bool), "fp32"),
])
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a", "switchml", "float32", "exact"])
def test_dtype_must_match_the_format(values, fmt, mode):
    with pytest.raises(ValueError, match="(?i)dtype|fp32|fp16|bf16"):
        fpisa.aggregate(values, mode, fmt=fmt)


@pytest.mark.parametrize("order", [
    [0, 0, 1], [0, 1, 3], [0, 1], [0, 1, 2, 3], [-1, 0, 1],
    np.array([0.0, 1.0, 2.0]),              # floats are not worker indices
    np.tile([0, 1, 2], (3, 1)),             # (n, K) with the wrong n
    np.tile([0, 1, 1], (4, 1)),             # a row that is not a permutation
    np.zeros((4, 3, 1), np.int64),
])
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a", "float32", "exact", "switchml"])
def test_orders_must_be_permutations(order, mode):
    with pytest.raises(ValueError, match="(?i)order|permutation"):
        fpisa.aggregate(GOOD, mode, order=order)


def test_unknown_names():
    with pytest.raises(ValueError, match="(?i)mode"):
        fpisa.aggregate(GOOD, "fpisa-b")
    with pytest.raises(ValueError, match="(?i)format"):
        fpisa.aggregate(GOOD, "fpisa", fmt="fp8")
    with pytest.raises(ValueError, match="(?i)rounding"):
        fpisa.aggregate(GOOD, "fpisa", rounding="ru")
    with pytest.raises(ValueError, match="(?i)rounding"):
        fpisa.normalize(np.ones(1, np.int64), np.ones(1, np.int64), "fp32", "nearest")
    with pytest.raises(ValueError, match="(?i)format"):
        fpisa.encode(np.ones(1, np.uint32), "fp64")


@pytest.mark.parametrize("fmt, register_bits", [
    ("fp32", 25), ("fp16", 12), ("bf16", 9), ("fp32", 65), ("fp32", 0), ("fp32", 32.0), ("fp32", True),
])
def test_register_width_must_fit_the_format(fmt, register_bits):
    values = np.ones((2, 3), np.uint32 if fmt == "fp32" else np.uint16)
    with pytest.raises(ValueError, match="register_bits"):
        fpisa.aggregate(values, "fpisa", fmt=fmt, register_bits=register_bits)
    with pytest.raises(ValueError, match="register_bits"):
        fpisa.SlotRegisters("fpisa", 1, 3, fmt=fmt, register_bits=register_bits)


@pytest.mark.parametrize("block_size", [0, -1, 2.5])
def test_switchml_block_size(block_size):
    with pytest.raises(ValueError, match="block_size"):
        fpisa.aggregate(GOOD, "switchml", block_size=block_size)


def test_switchml_worker_limit():
    """Beyond 256 workers the int32 sum could overflow (test_switchml)."""
    with pytest.raises(ValueError, match="(?i)workers"):
        fpisa.aggregate(np.ones((257, 2), np.float32), "switchml")
    with pytest.raises(ValueError, match="(?i)workers"):
        sml.quantize(np.ones(2, np.float32).view(np.uint32), "fp32", np.zeros(1, np.int32), 257, 64)


def test_normalize_shapes_must_agree():
    with pytest.raises(ValueError, match="(?i)shape|length"):
        fpisa.normalize(np.ones(3, np.int64), np.ones(4, np.int64), "fp32")


def test_slot_registers_reject_bad_packets():
    regs = fpisa.SlotRegisters("fpisa", 2, 4)
    bits = np.ones(4, np.uint32)
    with pytest.raises(ValueError, match="row"):
        regs.accumulate(2, bits, first=True)
    with pytest.raises(ValueError, match="(?i)element|shape"):
        regs.accumulate(0, np.ones(5, np.uint32), first=True)
    with pytest.raises(ValueError, match="(?i)mode"):
        fpisa.SlotRegisters("float32", 1, 4)
    # float values are not bit patterns: a silent value cast would corrupt them
    with pytest.raises(ValueError, match="(?i)dtype|bits"):
        regs.accumulate(0, np.full(4, 1.5, np.float32), first=True)
    with pytest.raises(ValueError, match="(?i)dtype|bits"):
        regs.accumulate(0, np.ones(4, np.uint16), first=True)
