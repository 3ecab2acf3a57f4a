"""SwitchML end to end in one pass (``fpisa._host_kernels.sum_workers``, what
``aggregate(..., "switchml")`` runs) against the paths it replaced, bit for bit:

- the numpy formulas of :mod:`fpisa.switchml` (``_reference_*``): each
  worker's block exponents, their max, each worker's q summed in int64,
  dequantized once;
- the hosts' and the switch's own kernels: per worker ``block_exponents``
  and ``quantize``, the switch's wrapping int32 ``accumulate_row_int_sum``
  and int32 ``accumulate_row_int_max``, then ``dequantize``.

Random data and the edges: all-zero and -0.0 blocks, blocks only one worker
fills, the largest finite value of each format (the worst case for the int32
bound), subnormals, negative values, K = 1..16 and 256, n not a multiple of
the block, the vector width or the tile, tiles of one block, Inf/NaN in the
first, a middle and the last (partial) tile; and the kernels' machine code
(vector instructions, no element gathers). No timings here
(benchmarks/numerics.py measures)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fpisa
from fpisa import _host_kernels as HK
from fpisa import _kernels as K
from fpisa import switchml as sml
from fpisa.formats import get_format
from oracle_helpers import FORMAT_NAMES, assert_bits_equal, clustered_bits, make_bits, oracle_aggregate
from test_host_kernels import _has_avx2

KIND = {"fp32": HK.KIND_FP32, "fp16": HK.KIND_FP16, "bf16": HK.KIND_BF16}


def reference_sum(values, fmt, block_size):
    """The numpy formulas, worker by worker (the implementation before the kernels)."""
    workers = values.shape[0]
    e_max = np.max([sml._reference_block_exponents(v, fmt, block_size) for v in values], axis=0)
    sums = np.zeros(values.shape[1], np.int64)
    for v in values:
        sums += sml._reference_quantize(v, fmt, e_max, workers, block_size)
    assert np.all(np.abs(sums) <= sml.INT32_MAX)
    return sml._reference_dequantize(sums.astype(np.int32), fmt, e_max, workers, block_size)


def hosts_and_switch(values, fmt, block_size):
    """What the hosts and the switch run: the per-worker kernels, the switch's
    int32 max of the exponents and its wrapping int32 add of the q."""
    workers, n = values.shape
    exps = np.zeros(-(-n // block_size), np.int64)
    for k, v in enumerate(values):
        K.accumulate_row_int_max(exps, sml.block_exponents(v, fmt, block_size), k == 0)
    sums = np.zeros(n, np.int64)
    for k, v in enumerate(values):
        K.accumulate_row_int_sum(sums, sml.quantize(v, fmt, exps, workers, block_size), k == 0)
    return sml.dequantize(sums.astype(np.int32), fmt, exps, workers, block_size)


def fused(values, fmt, block_size, tile_blocks):
    """The kernel with a given tile (sum_workers picks one from the cache size)."""
    out = np.empty(values.shape[1], get_format(fmt).bits_dtype)
    status = HK.sum_workers(np.ascontiguousarray(values), KIND[fmt], block_size, tile_blocks, out)
    return status, out


def edge_values(rng, fmt, workers, n, block_size):
    """Clustered random values with the edge blocks written in."""
    f = get_format(fmt)
    values = clustered_bits(rng, fmt, (workers, n), spread=int(rng.integers(0, 60)),
                            subnormals=0.05)
    sign = 1 << (f.storage_bits - 1)
    largest = make_bits(0, f.exponent_all_ones - 1, (1 << f.fraction_bits) - 1, fmt)
    blocks = [slice(s, min(s + block_size, n)) for s in range(0, n, block_size)]
    rng.shuffle(blocks)
    for i, b in enumerate(blocks[:6]):
        if i == 0:
            values[:, b] = 0  # all zero
        elif i == 1:
            values[:, b] = sign  # all -0.0
        elif i == 2:
            values[:, b] = 0
            values[rng.integers(0, workers), b] = largest  # one worker fills it
        elif i == 3:
            values[:, b] = largest | (rng.integers(0, 2, (workers, 1)) * sign)  # the worst case
        elif i == 4:
            values[:, b] |= sign  # all negative
        else:
            values[:, b] &= (1 << f.fraction_bits) - 1  # subnormals and zeros only
    return values


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_random_and_edge_blocks_every_k(fmt):
    rng = np.random.default_rng(41)
    for workers in range(1, 17):
        for n, block_size in [(1, 64), (7, 3), (31, 64), (33, 16), (65, 64), (200, 1),
                              (1000, 64), (1003, 100)]:
            values = edge_values(rng, fmt, workers, n, block_size)
            expected = reference_sum(values, fmt, block_size)
            what = f"K={workers} n={n} block={block_size}"
            assert_bits_equal(sml.sum_workers(values, fmt, block_size), expected, fmt, values, what)
            if workers in (1, 5, 16):
                assert_bits_equal(hosts_and_switch(values, fmt, block_size), expected, fmt,
                                  values, what + " (hosts and switch)")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_tiles_of_every_size(fmt):
    """Tiles of 1, 2, 3 and many blocks, n cutting the last tile and block short."""
    rng = np.random.default_rng(43)
    for workers, n, block_size in [(3, 1001, 64), (8, 4099, 32), (16, 517, 7), (2, 64 * 9, 64)]:
        values = edge_values(rng, fmt, workers, n, block_size)
        expected = reference_sum(values, fmt, block_size)
        for tile_blocks in (1, 2, 3, 5, 64, 10_000):
            status, got = fused(values, fmt, block_size, tile_blocks)
            assert status == 0
            assert_bits_equal(got, expected, fmt, values, f"K={workers} tile={tile_blocks} blocks")


def test_several_default_tiles():
    """n over several tiles of the size sum_workers chooses, for K = 1, 8, 16."""
    rng = np.random.default_rng(47)
    for workers in (1, 8, 16):
        tile = HK.sum_tile_blocks(workers, 64, 4) * 64
        n = 2 * tile + 100
        values = (rng.standard_normal((workers, n))
                  * np.exp2(rng.integers(-30, 30, (workers, n)))).astype(np.float32).view(np.uint32)
        values[:, tile - 64: tile + 64] = 0  # zero blocks either side of a tile boundary
        assert_bits_equal(sml.sum_workers(values, "fp32", 64), reference_sum(values, "fp32", 64),
                          "fp32", values, f"K={workers}")


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_every_16bit_pattern(fmt):
    """Every finite pattern, next to random partners and next to itself."""
    f = get_format(fmt)
    bits = np.arange(1 << 16, dtype=np.uint16)
    bits = bits[(bits.astype(np.int64) >> f.fraction_bits & f.exponent_all_ones) != f.exponent_all_ones]
    rng = np.random.default_rng(53)
    for block_size in (1, 64):
        for values in (np.stack([bits, rng.permutation(bits), rng.permutation(bits)]),
                       np.stack([bits, bits])):
            assert_bits_equal(sml.sum_workers(values, fmt, block_size),
                              reference_sum(values, fmt, block_size), fmt, values,
                              f"block={block_size} K={values.shape[0]}")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_largest_values_with_256_workers(fmt):
    """The bound's worst case: every worker at the largest value below 2^e,
    every binade, both signs, 256 workers (the sum reaches -+K floor(c))."""
    f = get_format(fmt)
    binades = np.arange(f.exponent_all_ones)
    worst = make_bits(binades % 2, binades, (1 << f.fraction_bits) - 1, fmt)
    values = np.tile(worst, (256, 1))
    assert_bits_equal(sml.sum_workers(values, fmt, 1), reference_sum(values, fmt, 1), fmt,
                      what="256 workers, block of 1")
    assert_bits_equal(sml.sum_workers(values, fmt, 7), reference_sum(values, fmt, 7), fmt,
                      what="256 workers, block of 7")


def test_matches_the_oracle():
    rng = np.random.default_rng(59)
    for fmt in FORMAT_NAMES:
        values = edge_values(rng, fmt, 4, 70, 8)
        expected = oracle_aggregate(values, "switchml", fmt=fmt, block_size=8).result
        assert_bits_equal(fpisa.aggregate(values, "switchml", fmt=fmt, block_size=8), expected,
                          fmt, values)


def test_the_no_overflow_premise_is_checked():
    """More workers than the bound allows (the kernel is called directly:
    sum_workers refuses K > 256): fp32 values just below 2^e make
    K * |q| exceed INT32_MAX for some K (298 is the first, as the oracle
    computes in test_switchml.py), and the kernel says so (status 2)."""
    x = make_bits(0, 200, (1 << 23) - 1, "fp32")
    for workers, overflows in ((256, False), (297, False), (298, True), (304, True)):
        values = np.full((workers, 5), x, np.uint32)
        status, _ = fused(values, "fp32", 64, 1)
        assert status == (2 if overflows else 0), workers
    with pytest.raises(ValueError, match="at most 256 workers"):
        sml.sum_workers(np.full((257, 5), x, np.uint32), "fp32", 64)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_non_finite_values_anywhere(fmt):
    """Inf and NaN in the first tile, a middle one and the last partial one:
    ValueError with the count (the kernel stops at the first bad tile)."""
    f = get_format(fmt)
    inf = f.exponent_all_ones << f.fraction_bits
    rng = np.random.default_rng(61)
    workers, block_size = 3, 16
    n = 5 * 64 + 9  # tiles of 4 blocks (64 values) below
    for special in (inf, inf | 1, inf | (1 << (f.storage_bits - 1)), inf | (1 << (f.fraction_bits - 1))):
        for position in (0, 70, 200, n - 1):
            values = clustered_bits(rng, fmt, (workers, n), spread=10, subnormals=0.0)
            values[rng.integers(0, workers), position] = special
            values[0, 3] = special  # a second one, in the first tile
            status, _ = fused(values, fmt, block_size, 4)
            assert status == 1
            with pytest.raises(ValueError, match=r"Inf/NaN \(2 non-finite values\)"):
                sml.sum_workers(values, fmt, block_size)
            with pytest.raises(ValueError, match=r"Inf/NaN"):
                fpisa.aggregate(values, "switchml", fmt=fmt, block_size=block_size)


# ------------------------------------------------------------ vectorization
_ASM_SCRIPT = textwrap.dedent("""
    import json, re
    import numpy as np
    from fpisa import _host_kernels as HK
    from fpisa import switchml as sml
    for fmt, u in (("fp32", np.uint32), ("fp16", np.uint16)):
        bits = np.ones((3, 300), u)
        sml.sum_workers(bits, fmt, 64)
        e = sml.block_exponents(bits[0], fmt, 64)
        sml.dequantize_from_wire(sml.quantize_to_wire(bits[0], fmt, e, 3, 64), fmt, e, 3, 64)
        sml.dequantize(sml.quantize(bits[0], fmt, e, 3, 64), fmt, e, 3, 64)
    found = {}
    for name in ("sum_workers", "block_exponents", "quantize", "dequantize"):
        disp = getattr(HK, name)
        for sig in disp.signatures:
            asm = disp.inspect_asm(sig)
            values = {"sum_workers": 4, "dequantize": 4}.get(name, 0)  # the fmt bits argument
            key = name + str(sig[values].dtype)
            found[key] = sorted(set(re.findall(r"^\\s+(v[a-z0-9]+)\\s[^\\n]*[yz]mm", asm, re.M)))
            found[key + " gathers"] = len(re.findall(r"\\b(vpinsr[bwdq]|vpextr[bwdq]|vinsertps|vextractps)\\b", asm))
    print(json.dumps(found))
""")


@pytest.mark.skipif(not _has_avx2(), reason="the instruction check is for AVX2 machines")
def test_sum_workers_is_vectorized(tmp_path):
    """256-bit (or, where LLVM picks AVX-512, 512-bit) code for every step
    of the fused kernel (vpmaxud: the block max; vcvtps2pd / vmulpd /
    vcvtpd2dq: quantize; vpaddd: the int32 sum;
    vdivpd / vcvtpd2ps: dequantize), and no element-wise gathers or scatters
    in any of SwitchML's kernels (what a loop whose signed index numba
    cannot prove non-negative turns into). Compiled afresh in a subprocess:
    numba does not disassemble code loaded from its cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd()] + sys.path)
    out = subprocess.run([sys.executable, "-c", _ASM_SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=900)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"vpmaxud", "vcvtps2pd", "vmulpd", "vcvtpd2dq", "vpaddd", "vdivpd",
            "vcvtpd2ps"} <= set(found["sum_workersuint32"]), found
    assert {"vpmaxud", "vmulpd", "vcvtpd2dq", "vpaddd", "vdivpd"} <= set(found["sum_workersuint16"]), found
    gathers = {k: v for k, v in found.items() if k.endswith(" gathers") and v}
    assert not gathers, gathers
