"""Throughput of every aggregation mode against numpy's float32 sum.

Baseline, measured in the same run on the same data: ``values.sum(axis=0)``
on the (K, n) float32 array (numpy's pairwise SIMD sum over the worker
axis). Every timing is the best of --repeat rounds; the rounds interleave
the baseline and all modes, so a noisy neighbour slows them alike. Ratios
are baseline time / mode time (higher is faster). One core unless
--threads (then the whole-array kernels split the elements across threads).

``fpisa.aggregate`` returns only the result; ``aggregate_detailed`` also
stores the registers and flags (rows marked "detailed").

What each row does per element: numpy reads K values and adds them; fpisa,
fpisa-a and float32 run the switch's K accumulates and one read-out.
switchml runs what its K hosts and the switch do, once each: per block the
max |x| over the K rows (each host's block exponent and the switch's int
max of them), each host's quantize of its values, the switch's int32 add
of the K quantized values, and one dequantize of the sums (every host
dequantizes the same sums to the same bits, in parallel, as every FPISA
worker gets the one read-out); no wire byte order, as for the other modes.
Every row allocates its n-element result, as numpy's sum does.

--rows also times the switch's row kernels (``accumulate_row_*``,
``normalize_array``) called from a compiled loop, as ``emulator.fastpath``
calls them: K arrivals of E-element packets into one slot, then its read.

--vectorization prints, for every vector loop of ``fpisa._kernels`` and
SwitchML's kernels in ``fpisa._host_kernels``, whether LLVM vectorized it
(a ``vector.body`` in the IR), the vector types and the AVX2 instructions
in its machine code (compiled afresh: numba does not inspect cached code);
vpinsrd / vpextrd / vinsertps / vextractps there mean element-wise gathers
or scatters (a loop vectorized badly).

    python benchmarks/numerics.py [--workers 8] [--log2-elements 22] [--repeat 7]
           [--modes fpisa,fpisa-a,switchml,float32,exact] [--rows] [--threads 1,2]
           [--vectorization] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def interleaved_best(fns: dict, repeat: int) -> dict:
    """{name: best seconds}, the rounds interleaving all functions."""
    for fn in fns.values():
        fn()  # compile / warm up outside the timing
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def whole_arrays(args, fpisa) -> list[dict]:
    K, n = args.workers, 1 << args.log2_elements
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((K, n)) * np.exp2(rng.integers(-8, 8, (K, n)))).astype(np.float32)
    bits = values.view(np.uint32)
    threads = [int(t) for t in args.threads.split(",")]
    fns = {"numpy float32 sum (baseline)": lambda: values.sum(axis=0)}
    for mode in args.modes.split(","):
        for t in threads if mode in ("fpisa", "fpisa-a", "float32") else [1]:
            tag = "" if threads == [1] else f" threads={t}"
            kw = {} if t == 1 else {"threads": t}
            fns[mode + tag] = (lambda mode=mode, kw=kw: fpisa.aggregate(bits, mode, **kw))
            if args.detailed and mode in ("fpisa", "fpisa-a", "float32"):
                fns[f"{mode} detailed{tag}"] = (
                    lambda mode=mode, kw=kw: fpisa.aggregate_detailed(bits, mode, **kw))
    best = interleaved_best(fns, args.repeat)
    base = best["numpy float32 sum (baseline)"]
    print(f"K={K} workers, n=2^{args.log2_elements} elements, fp32, W=32, rz, one order; "
          f"best of {args.repeat} interleaved rounds")
    print(f"{'mode':34s} {'seconds':>9s} {'elements/s':>12s} {'x numpy sum':>12s}")
    rows = []
    for name, t in best.items():
        rows.append({"mode": name, "seconds": t, "elements_per_s": n / t, "ratio": base / t})
        print(f"{name:34s} {t:9.4f} {n / t:12.3e} {base / t:12.3f}")
    return rows


def row_kernels(args) -> list[dict]:
    from numba import njit

    from fpisa import _kernels as K

    @njit(nogil=True)
    def fpisa_rows(E, A, F, packets, reps, W):
        for _ in range(reps):
            for k in range(packets.shape[0]):
                K.accumulate_row_fpisa(E, A, F, packets[k], k == 0, 8, 23, W)

    @njit(nogil=True)
    def fpisa_a_rows(E, A, F, OW, packets, reps, W):
        for _ in range(reps):
            for k in range(packets.shape[0]):
                K.accumulate_row_fpisa_a(E, A, F, OW, packets[k], k == 0, 8, 23, W)

    @njit(nogil=True)
    def int_sum_rows(A, packets, reps):
        for _ in range(reps):
            for k in range(packets.shape[0]):
                K.accumulate_row_int_sum(A, packets[k], k == 0)

    @njit(nogil=True)
    def int_max_rows(A, packets, reps):
        for _ in range(reps):
            for k in range(packets.shape[0]):
                K.accumulate_row_int_max(A, packets[k], k == 0)

    @njit(nogil=True)
    def read_rows(E, A, F, out, reps, nearest):
        for _ in range(reps):
            K.normalize_array(E, A, F, 8, 23, nearest, out)

    rng = np.random.default_rng(2)
    workers = 4
    print(f"\nswitch row kernels from a compiled loop: K={workers} arrivals of E-element fp32 "
          f"packets per slot; best of {args.repeat}")
    print(f"{'kernel':34s} {'E':>4s} {'ns/elem':>8s} {'M elem-arrivals/s':>18s}")
    out_rows = []
    for E_len in (64, 255):
        packets = rng.standard_normal((workers, E_len)).astype(np.float32).view(np.uint32)
        ints = rng.integers(-2**20, 2**20, (workers, E_len)).astype(np.int32)
        E, A = np.zeros(E_len, np.int64), np.zeros(E_len, np.int64)
        F, OW = np.zeros(E_len, np.uint8), np.zeros(E_len, np.int64)
        out = np.empty(E_len, np.uint32)
        reps = max(1, 2_000_000 // (workers * E_len))
        cases = {
            "accumulate_row_fpisa W=32": (lambda r: fpisa_rows(E, A, F, packets, r, 32), workers),
            "accumulate_row_fpisa W=48": (lambda r: fpisa_rows(E, A, F, packets, r, 48), workers),
            "accumulate_row_fpisa_a W=32": (lambda r: fpisa_a_rows(E, A, F, OW, packets, r, 32),
                                            workers),
            "accumulate_row_fpisa_a W=48": (lambda r: fpisa_a_rows(E, A, F, OW, packets, r, 48),
                                            workers),
            "accumulate_row_int_sum": (lambda r: int_sum_rows(A, ints, r), workers),
            "accumulate_row_int_max": (lambda r: int_max_rows(A, ints, r), workers),
        }
        for name, (fn, arrivals) in cases.items():
            t = interleaved_best({name: lambda fn=fn: fn(reps)}, args.repeat)[name]
            ns = t / (reps * arrivals * E_len) * 1e9
            out_rows.append({"kernel": name, "elements": E_len, "ns_per_element": ns})
            print(f"{name:34s} {E_len:4d} {ns:8.3f} {1e3 / ns:18.1f}")
        fpisa_rows(E, A, F, packets, 1, 32)  # registers as a W = 32 slot holds them
        for nearest in (False, True):
            name = f"normalize_array {'rne' if nearest else 'rz'}"
            t = interleaved_best({name: lambda: read_rows(E, A, F, out, reps, nearest)},
                                 args.repeat)[name]
            ns = t / (reps * E_len) * 1e9
            out_rows.append({"kernel": name, "elements": E_len, "ns_per_element": ns})
            print(f"{name:34s} {E_len:4d} {ns:8.3f} {1e3 / ns:18.1f} (elements read/s)")
    return out_rows


#: the AVX2 instructions worth naming in the report
_INSTRUCTIONS = ("vpsravd", "vpsrlvd", "vpsllvd", "vpsrad", "vpsrld", "vpaddd", "vpsubd",
                 "vpmaxsd", "vpminsd", "vpminud", "vpcmpgtd", "vpcmpeqd", "vblendvps", "vpshufb",
                 "vcvtdq2ps", "vaddps", "vpsrlvq", "vpsllvq", "vpaddq", "vpcmpgtq", "vpmaskmovd",
                 "vpmaskmovq", "vpmaxud", "vcvtps2pd", "vmulpd", "vcvtpd2dq", "vcvtdq2pd",
                 "vdivpd", "vcvtpd2ps", "vpinsrd", "vpextrd", "vinsertps", "vextractps")

#: SwitchML's kernels (fpisa._host_kernels) in the report
_HOST_KERNELS = ("block_exponents", "max_block_exponents", "quantize", "dequantize", "sum_workers")


def vectorization_report() -> list[dict]:
    """Compile the kernels afresh (a temporary cache) and inspect them."""
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fpisa-inspect-")
    import fpisa
    import fpisa.codec
    from fpisa import _host_kernels as HK
    from fpisa import _kernels as K
    from fpisa import switchml as sml
    from fpisa.registers import SlotRegisters

    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, (8, 3000), dtype=np.uint32)
    for W in (26, 32, 48, 64):
        for mode in ("fpisa", "fpisa-a"):
            fpisa.aggregate_detailed(bits, mode, register_bits=W)
            fpisa.aggregate_detailed(np.concatenate([bits] * 20), mode, register_bits=W)  # K=160
    for fmt in ("fp32", "fp16"):
        b = bits if fmt == "fp32" else (bits >> 16).astype(np.uint16)
        fpisa.aggregate(b, "float32", fmt=fmt)
        fpisa.encode(b[0], fmt)
    fpisa.normalize(np.arange(100), np.arange(100) << 20)
    fpisa.codec.doubles_to_bits(rng.standard_normal(100), "fp32")
    for mode in ("fpisa", "fpisa-a"):
        for W in (32, 48):
            r = SlotRegisters(mode, 1, 255, "fp32", W)
            r.accumulate(0, bits[0, :255], True)
            r.accumulate(0, bits[1, :255], False)
            r.read(0)
    for mode in ("switchml", "int-max"):
        r = SlotRegisters(mode, 1, 255)
        r.accumulate(0, bits[0, :255].astype(np.int32), True)
        r.accumulate(0, bits[1, :255].astype(np.int32), False)
    for fmt in ("fp32", "fp16"):
        # finite values (the exponent field's lowest bit cleared) of both signs
        b = bits & np.uint32(0xFF7FFFFF) if fmt == "fp32" else \
            (bits >> 16).astype(np.uint16) & np.uint16(0xFBFF)
        fpisa.aggregate(b, "switchml", fmt=fmt)
        e = sml.block_exponents(b[0], fmt)
        q = sml.quantize(b[0], fmt, e, 8)
        sml.dequantize(q, fmt, e, 8)
        HK.max_block_exponents(b, HK.KIND_FP32 if fmt == "fp32" else HK.KIND_FP16, 64,
                               np.empty(-(-b.shape[1] // 64), np.int32))
    functions = [(K, n) for n in sorted(dir(K)) if n.startswith(("_loop_", "accumulate_row_"))
                 or n in ("normalize_array", "extract_array", "doubles_to_format")]
    functions += [(HK, n) for n in _HOST_KERNELS]
    report = []
    print(f"\nvectorization ({platform.machine()}, numba compiles for the host CPU): per "
          "compiled signature, 'vector.body' in the LLVM IR, vector types, AVX2 instructions")
    for module, name in functions:
        f = getattr(module, name)
        for sig in f.signatures:
            ir = f.inspect_llvm(sig)
            asm = f.inspect_asm(sig)
            bodies = len(re.findall(r"^vector\.body[\w.]*:", ir, re.M))
            kinds = sorted(set(re.findall(r"<(\d+) x (i\d+|float|double)>", ir)),
                           key=lambda t: (t[1], int(t[0])))
            kinds = [f"{a}x{b}" for a, b in kinds if b != "i1"]
            ins = {k: len(re.findall(rf"\b{k}\b", asm)) for k in _INSTRUCTIONS}
            ins = {k: v for k, v in ins.items() if v}
            argtypes = ", ".join(re.sub(r"array\((\w+), 1d, C\)", r"\1[:]", str(a)) for a in sig)
            report.append({"function": name, "signature": argtypes, "vector_loops": bodies,
                           "vector_types": kinds, "instructions": ins,
                           "ymm": len(re.findall(r"%ymm", asm))})
            print(f"{name}({argtypes})\n    vector loops {bodies}, types {' '.join(kinds) or '-'}, "
                  f"ymm operands {report[-1]['ymm']}\n    "
                  + (" ".join(f"{k}:{v}" for k, v in ins.items()) or "-"))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--log2-elements", type=int, default=22)
    ap.add_argument("--repeat", type=int, default=7, help="rounds (best of); at least 5")
    ap.add_argument("--modes", default="fpisa,fpisa-a,switchml,float32,exact")
    ap.add_argument("--no-detailed", dest="detailed", action="store_false",
                    help="skip the aggregate_detailed rows")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts to time")
    ap.add_argument("--rows", action="store_true", help="also time the switch row kernels")
    ap.add_argument("--vectorization", action="store_true",
                    help="only report which kernel loops vectorize")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.repeat < 5:
        ap.error("--repeat must be at least 5 (the machine is shared and noisy)")
    result = {"machine": platform.processor() or platform.machine()}
    if args.vectorization:
        result["vectorization"] = vectorization_report()
    else:
        import fpisa
        result.update(workers=args.workers, elements=1 << args.log2_elements,
                      rows=whole_arrays(args, fpisa))
        if args.rows:
            result["row_kernels"] = row_kernels(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
