"""The CPU-constrained host-cost model: FPISA against SwitchML per worker.

FPISA's headline host-side claim (NSDI'22 abstract) is that in-switch floats
let training "use 25-75% fewer CPU cores and provide up to 85.9% better
throughput in a CPU-constrained environment than SwitchML". The reason is
host work per gradient element: SwitchML converts every float to a scaled
int32 and back (plus its per-block exponent), FPISA sends the float as it is.
This module turns that into an explicit, testable model.

**Goodput** (allreduced elements per second per worker, one direction; the
link is full duplex, so sending and receiving do not share bandwidth)::

    goodput = min(link_rate, cores * per_core_rate)

    link_rate     = link_bits_per_s / 8 / wire_bytes_per_element
    wire_bytes_per_element = line_bytes(E * w) / E          (x (1 + 1/E) with a separate exponent pass)
    line_bytes(P) = max(60, 14 + 20 + 8 + HEADER_BYTES + P) [+ 4 FCS + 8 preamble/SFD + 12 IFG]
    per_core_rate = 1 / sum over host ops of (count per element / op rate)

with E elements per packet, w bytes per element on the wire (the format's
size for FPISA, 4 for SwitchML's int32 whatever the format). Host work per
element (both directions: the worker encodes what it sends and decodes what
it gets back):

- ``fpisa``: the switch swaps byte order (FPISA's proposal), the host copies
  the value into the packet and the result out of it: 2 x ``copy``.
- ``fpisa-hostswap``: FPISA on a switch without byte-order conversion:
  2 x ``byteswap``.
- ``switchml``: SwitchML as published: ``block_exponents`` + ``quantize`` +
  2 x ``byteswap_int32`` (big-endian int32 on the wire) + ``dequantize``; the
  block exponent rides in the packet header (SwitchML pipelines it with the
  data, packet k carrying block k+W's exponent), so it costs no extra bytes.
- ``switchml-2pass``: this toolkit's SwitchML (hosts/worker.py): the same
  conversion, but the exponents go first in a separate int32-max pass, E per
  packet, so the wire carries 1/E more packets and the host swaps 2/E more
  int32. The pass's extra round trip is latency, amortized over a large
  tensor and not modelled.

Every mode also pays ``packet_io`` (the host's per-element share of driving
the NIC), the same for all modes; it is not measurable here (no DPDK) and is
"not modelled" (free) unless a rates file or :func:`calibrate_to_paper` sets it.

Rates are **single-core** rates (values per second) measured in the same
run (:func:`measure_rates`), read from a file, or the paper's byte-swap
figures (:func:`paper_rates`). Cores beyond this machine's are extrapolated
linearly from them: no shared memory-bandwidth limit is modelled.

**Training**: one allreduce of every gradient per iteration::

    comm   = params / goodput
    t_iter = max(compute, overlap * comm) + (1 - overlap) * comm

(overlap 0: compute + comm; overlap 1: max(compute, comm)), and FPISA's
speed-up over SwitchML is ``t_switchml / t_fpisa - 1`` (training throughput
is 1 / t_iter).

The API for one point, e.g. for a paced-link validation:
:func:`predict_goodput` ``(mode, link_gbps, cores, rates, elements_per_packet, fmt)``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from fpisa.protocol import HEADER_BYTES, MAX_ELEMENTS

__all__ = [
    "MODES",
    "MODE_DESCRIPTIONS",
    "OPS",
    "FORMAT_BYTES",
    "STUDY_FORMATS",
    "PACKET_OVERHEAD_BYTES",
    "LINE_OVERHEAD_BYTES",
    "MIN_FRAME_BYTES",
    "PAPER",
    "Rate",
    "HostRates",
    "GoodputPoint",
    "Figure",
    "ModelProfile",
    "host_ops",
    "frame_bytes",
    "line_bytes",
    "payload_efficiency",
    "wire_bytes_per_element",
    "link_rate",
    "per_core_rate",
    "cores_to_line_rate",
    "predict_goodput",
    "measure_rates",
    "paper_rates",
    "load_rates_file",
    "iteration_time",
    "training_speedup",
    "load_profiles",
    "calibrate_to_paper",
    "machine_cores",
    "DEFAULT_PROFILES",
]

# -- the wire ------------------------------------------------------------------------------

ETHERNET_HEADER_BYTES = 14
IPV4_HEADER_BYTES = 20
UDP_HEADER_BYTES = 8
#: Ethernet + IPv4 + UDP + the aggregation header (fpisa.protocol): every packet's non-payload bytes
PACKET_OVERHEAD_BYTES = ETHERNET_HEADER_BYTES + IPV4_HEADER_BYTES + UDP_HEADER_BYTES + HEADER_BYTES
#: what a physical Ethernet line spends per frame besides the frame itself:
#: FCS (4) + preamble and start delimiter (8) + inter-frame gap (12)
LINE_OVERHEAD_BYTES = 4 + 8 + 12
#: Ethernet's minimum frame, FCS included; shorter frames are padded
MIN_FRAME_BYTES = 64

#: bytes per element of each float format (fp64 only for the paper's byte-swap check:
#: the toolkit's switch formats are fp32, fp16, bf16)
FORMAT_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}
STUDY_FORMATS = ("fp32", "fp16", "bf16")
SWITCHML_WIRE_BYTES = 4  # int32, whatever the input format

MODES = ("fpisa", "fpisa-hostswap", "switchml", "switchml-2pass")
MODE_DESCRIPTIONS = {
    "fpisa": "FPISA, byte order converted in the switch: host copies only",
    "fpisa-hostswap": "FPISA on a switch without byte-order conversion: host byte-swaps",
    "switchml": "SwitchML as published: quantize/dequantize, exponent piggybacked in the header",
    "switchml-2pass": "SwitchML as this toolkit runs it: a separate int32-max exponent pass first",
}
#: host operations the model prices (values per second on one core)
OPS = ("copy", "byteswap", "byteswap_int32", "block_exponents", "quantize", "dequantize", "packet_io")
#: ops that are free unless a rate is given (cannot be measured here)
OPTIONAL_OPS = ("packet_io",)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def _check_fmt(fmt: str, allowed: Iterable[str] = FORMAT_BYTES) -> str:
    if fmt not in allowed:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(allowed)}")
    return fmt


def _check_elements(elements_per_packet) -> int:
    if isinstance(elements_per_packet, bool) or not isinstance(elements_per_packet, (int, np.integer)) \
            or elements_per_packet < 1:
        raise ValueError(f"elements per packet must be a positive integer, got {elements_per_packet!r}")
    return int(elements_per_packet)


def _check_cores(cores) -> int:
    if isinstance(cores, bool) or not isinstance(cores, (int, np.integer)) or cores < 1:
        raise ValueError(f"cores must be an integer >= 1, got {cores!r}")
    return int(cores)


def _check_link(link_gbps) -> float:
    try:
        value = float(link_gbps)
    except (TypeError, ValueError):
        raise ValueError(f"link rate must be a number of Gb/s, got {link_gbps!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"link rate must be a positive number of Gb/s, got {link_gbps!r}")
    return value


def wire_element_bytes(mode: str, fmt: str) -> int:
    """Bytes per element in a data packet's payload."""
    _check_mode(mode)
    return FORMAT_BYTES[_check_fmt(fmt)] if mode.startswith("fpisa") else SWITCHML_WIRE_BYTES


def frame_bytes(payload_bytes: int) -> int:
    """Ethernet frame without FCS: headers + payload, padded to Ethernet's minimum."""
    return max(MIN_FRAME_BYTES - 4, PACKET_OVERHEAD_BYTES + payload_bytes)


def line_bytes(payload_bytes: int, line_overhead: bool = True) -> int:
    """Bytes one packet occupies on the link. ``line_overhead=False`` counts the
    frame as a Linux shaper does (no FCS, preamble or gap: hosts/mininet)."""
    return frame_bytes(payload_bytes) + (LINE_OVERHEAD_BYTES if line_overhead else 0)


def payload_efficiency(mode: str, fmt: str = "fp32", elements_per_packet: int = 64,
                       line_overhead: bool = True) -> float:
    """Payload bytes / line bytes of one data packet."""
    payload = wire_element_bytes(mode, fmt) * _check_elements(elements_per_packet)
    return payload / line_bytes(payload, line_overhead)


def wire_bytes_per_element(mode: str, fmt: str = "fp32", elements_per_packet: int = 64,
                           line_overhead: bool = True) -> float:
    """Line bytes per allreduced element, one direction (exponent pass included)."""
    e = _check_elements(elements_per_packet)
    per_element = line_bytes(wire_element_bytes(mode, fmt) * e, line_overhead) / e
    if mode == "switchml-2pass":
        # one int32 exponent per block of E elements, E exponents per packet: the
        # pass has 1/E as many packets as the data pass, each as long as a data packet
        per_element *= 1 + 1 / e
    return per_element


def link_rate(mode: str, link_gbps: float, fmt: str = "fp32", elements_per_packet: int = 64,
              line_overhead: bool = True) -> float:
    """Elements per second one direction of the link carries for ``mode``."""
    return _check_link(link_gbps) * 1e9 / 8 / wire_bytes_per_element(mode, fmt, elements_per_packet,
                                                                    line_overhead)


# -- host work -----------------------------------------------------------------------------

def host_ops(mode: str, elements_per_packet: int = 64) -> dict[str, float]:
    """Host operations per allreduced element (send + receive) for ``mode``."""
    _check_mode(mode)
    e = _check_elements(elements_per_packet)
    if mode == "fpisa":
        ops = {"copy": 2.0}
    elif mode == "fpisa-hostswap":
        ops = {"byteswap": 2.0}
    else:
        ops = {"block_exponents": 1.0, "quantize": 1.0, "byteswap_int32": 2.0, "dequantize": 1.0}
    ops["packet_io"] = 1.0
    if mode == "switchml-2pass":
        ops["byteswap_int32"] += 2 / e  # the exponents out and the maxima back
        ops["packet_io"] += 1 / e
    return ops


@dataclass(frozen=True)
class Rate:
    """One host operation's single-core rate and where it came from."""

    values_per_s: float  #: math.inf = free (not modelled)
    source: str

    def __post_init__(self) -> None:
        v = self.values_per_s
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v <= 0:
            raise ValueError(f"a rate must be a positive number of values/s, got {v!r} ({self.source})")


@dataclass(frozen=True)
class HostRates:
    """Single-core rates of every host operation, for one format."""

    fmt: str
    rates: dict[str, Rate]
    #: short name of the rate set (``measured``, ``paper``, a file name)
    label: str = "custom"

    def __post_init__(self) -> None:
        _check_fmt(self.fmt)
        unknown = sorted(set(self.rates) - set(OPS))
        if unknown:
            raise ValueError(f"unknown host operations {unknown}; known: {', '.join(OPS)}")

    def get(self, op: str) -> Rate:
        if op in self.rates:
            return self.rates[op]
        if op in OPTIONAL_OPS:
            return Rate(math.inf, "not modelled (free)")
        raise ValueError(f"rates for {self.fmt} ({self.label}) have no {op!r} rate")

    def as_dict(self) -> dict:
        return {op: {"values_per_s": None if math.isinf(r.values_per_s) else r.values_per_s,
                     "source": r.source}
                for op, r in ((op, self.get(op)) for op in OPS)}

    def replace(self, label: str | None = None, **rates: Rate) -> "HostRates":
        return HostRates(self.fmt, {**self.rates, **rates}, label or self.label)


def _as_host_rates(rates, fmt: str) -> HostRates:
    if isinstance(rates, HostRates):
        if rates.fmt != fmt:
            raise ValueError(f"rates are for {rates.fmt}, the point asks for {fmt}")
        return rates
    if isinstance(rates, Mapping):
        return HostRates(fmt, {op: r if isinstance(r, Rate) else Rate(float(r), "given")
                               for op, r in rates.items()}, "given")
    raise ValueError(f"rates must be a HostRates or a mapping op -> values/s, got {type(rates).__name__}")


def per_core_rate(mode: str, rates, elements_per_packet: int = 64, fmt: str = "fp32") -> float:
    """Allreduced elements per second one core sustains: 1 / sum(count / rate)."""
    rates = _as_host_rates(rates, fmt)
    ops = host_ops(mode, elements_per_packet)
    missing = [op for op in ops if op not in rates.rates and op not in OPTIONAL_OPS]
    if missing:
        raise ValueError(f"mode {mode} needs rates for {', '.join(missing)}; rates {rates.label} for {fmt} "
                         f"have {', '.join(sorted(rates.rates)) or 'none'}")
    seconds = sum(count / rates.get(op).values_per_s for op, count in ops.items())
    return math.inf if seconds == 0 else 1 / seconds


def cores_to_line_rate(line_rate: float, core_rate: float) -> int:
    """ceil(line_rate / core_rate), at least 1 (some core runs the worker)."""
    if math.isinf(core_rate):
        return 1
    # a ratio that is an integer up to float noise needs exactly that many cores
    return max(1, math.ceil(line_rate / core_rate * (1 - 1e-12)))


@dataclass(frozen=True)
class GoodputPoint:
    """One model point; every field is per worker, one direction."""

    mode: str
    fmt: str
    link_gbps: float
    cores: int
    elements_per_packet: int
    line_overhead: bool
    payload_efficiency: float
    link_elements_per_s: float
    core_elements_per_s: float  #: one core
    cpu_elements_per_s: float  #: cores x one core
    goodput_elements_per_s: float
    #: goodput in Gb/s of the application's values (fmt bytes, not wire bytes)
    goodput_gbps: float
    bound: str  #: "link" or "cpu"
    cores_to_line_rate: int
    #: more cores than this machine has: extrapolated from single-core rates
    extrapolated: bool

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("core_elements_per_s", "cpu_elements_per_s"):
            if math.isinf(d[k]):
                d[k] = None
        return d


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def predict_goodput(mode: str, link_gbps: float, cores: int, rates, elements_per_packet: int = 64,
                    fmt: str = "fp32", *, line_overhead: bool = True) -> GoodputPoint:
    """goodput = min(link payload rate, cores x per-core conversion rate), for one point.

    ``rates``: a :class:`HostRates` or a plain mapping ``op -> values/s`` (one core).
    """
    _check_mode(mode)
    _check_fmt(fmt)
    link = link_rate(mode, link_gbps, fmt, elements_per_packet, line_overhead)
    core = per_core_rate(mode, rates, elements_per_packet, fmt)
    cpu = _check_cores(cores) * core
    goodput = min(link, cpu)
    return GoodputPoint(
        mode=mode, fmt=fmt, link_gbps=float(link_gbps), cores=int(cores),
        elements_per_packet=int(elements_per_packet), line_overhead=line_overhead,
        payload_efficiency=payload_efficiency(mode, fmt, elements_per_packet, line_overhead),
        link_elements_per_s=link, core_elements_per_s=core, cpu_elements_per_s=cpu,
        goodput_elements_per_s=goodput, goodput_gbps=goodput * FORMAT_BYTES[fmt] * 8 / 1e9,
        bound="link" if link <= cpu else "cpu", cores_to_line_rate=cores_to_line_rate(link, core),
        extrapolated=int(cores) > machine_cores())


# -- rates: the paper's, measured, or from a file -------------------------------------------

#: figures from the FPISA paper (NSDI'22) as the project's anchors restate them
#: (/work/shared/docs/anchors-fpisa.md, "Evaluation")
PAPER = {
    "byteswap_values_per_s": {"fp16": 0.52e9, "fp32": 0.6e9, "fp64": 1.07e9},
    "line_rate_100g_values_per_s": {"fp16": 5.8e9, "fp32": 2.9e9, "fp64": 1.45e9},
    "fewer_cores_percent": (25, 75),
    "best_throughput_gain_percent": 85.9,
    "source": "FPISA, Yuan et al., NSDI'22 (arXiv 2112.06095): abstract and evaluation, "
              "via docs anchors-fpisa.md",
}


def paper_rates(fmt: str, measured: HostRates) -> HostRates:
    """The paper's byte-swap rates; every other operation from ``measured``
    (the paper publishes no per-core copy, quantize or dequantize rate)."""
    _check_fmt(fmt, STUDY_FORMATS)
    swap = PAPER["byteswap_values_per_s"]
    # bf16 has the width of fp16: a byte swap does not look at the bits
    width_twin = {"fp32": "fp32", "fp16": "fp16", "bf16": "fp16"}[fmt]
    rates = {op: Rate(r.values_per_s, f"{r.source} [the paper gives none]")
             for op, r in measured.rates.items()}
    rates["byteswap"] = Rate(swap[width_twin], f"paper: one core byte-swaps {swap[width_twin]:.3g} "
                                               f"{width_twin} values/s")
    rates["byteswap_int32"] = Rate(swap["fp32"], f"paper: {swap['fp32']:.3g} fp32 values/s "
                                                 "(int32 has the same 4-byte width)")
    return HostRates(fmt, rates, "paper")


def _best_rate(fn: Callable[[], object], n: int, repeats: int) -> float:
    fn()  # warm-up: page faults, first-call costs
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / max(best, 1e-12)


def _own_measurements(fmt: str, elements: int, repeats: int, block_size: int, num_workers: int):
    """(op, description, thunk) for today's public functions, on one core."""
    from fpisa import switchml

    rng = np.random.default_rng(0)
    values = rng.standard_normal(elements).astype(np.float32)
    # gradient-like values as the format's bit patterns (bf16: the top half of fp32)
    bits = {"fp32": lambda: values.view(np.uint32),
            "fp16": lambda: values.astype(np.float16).view(np.uint16),
            "bf16": lambda: (values.view(np.uint32) >> 16).astype(np.uint16)}[fmt]()
    out_bits = np.empty_like(bits)
    swapped_bits = out_bits.view(bits.dtype.newbyteorder())
    q = rng.integers(-2**24, 2**24, elements, dtype=np.int32)
    out_q = np.empty(elements, np.dtype(">i4"))
    exponents = switchml.block_exponents(bits, fmt, block_size)
    sums = switchml.quantize(bits, fmt, exponents, num_workers, block_size)
    return [
        ("copy", "numpy copyto into a preallocated buffer",
         lambda: np.copyto(out_bits, bits)),
        ("byteswap", "numpy swapping copy into a preallocated buffer",
         lambda: np.copyto(swapped_bits, bits)),
        ("byteswap_int32", "numpy int32 -> big-endian int32 copy",
         lambda: np.copyto(out_q, q)),
        ("block_exponents", f"fpisa.switchml.block_exponents (block {block_size})",
         lambda: switchml.block_exponents(bits, fmt, block_size)),
        ("quantize", f"fpisa.switchml.quantize (K={num_workers})",
         lambda: switchml.quantize(bits, fmt, exponents, num_workers, block_size)),
        ("dequantize", f"fpisa.switchml.dequantize (K={num_workers})",
         lambda: switchml.dequantize(sums, fmt, exponents, num_workers, block_size)),
    ]


#: this model's operations <- the keys of ``fpisa._host_kernels.measure_host_rates``
_KERNEL_KEYS = {
    "copy": "fpisa_switch_swap",
    "byteswap": "fpisa_host_swap",
    "block_exponents": "switchml_exponents",
    "quantize": "switchml_quantize",
    "dequantize": "switchml_dequantize",
}


def _compiled_kernel_rates(fmt: str, notes: list[str], *, elements: int, repeats: int,
                           block_size: int, num_workers: int) -> dict[str, Rate]:
    """Rates of the compiled host kernels (``fpisa._host_kernels.measure_host_rates``,
    one thread): per operation, values/s of ``fmt``. The kernels quantize
    straight into the big-endian wire buffer and dequantize from it, so the
    int32 byte swap is part of ``quantize`` / ``dequantize`` and costs nothing
    extra (``byteswap_int32`` is free; the exponent words' swap, 2/E per
    value in ``switchml-2pass``, is not charged)."""
    from fpisa._host_kernels import measure_host_rates

    raw = measure_host_rates(n=elements, threads=1, repeats=repeats, num_workers=num_workers,
                             block_size=block_size, include_numpy=False)
    found = {}
    for op, key in _KERNEL_KEYS.items():
        rate = raw.get(key, {}).get(fmt)
        if rate:
            found[op] = Rate(float(rate), f"measured: fpisa._host_kernels.measure_host_rates {key}[{fmt}], "
                                          f"{elements:,} values, best of {repeats}")
    if {"quantize", "dequantize"} <= set(found):
        found["byteswap_int32"] = Rate(math.inf, "fused into the compiled quantize/dequantize kernels")
    missing = sorted(set(_KERNEL_KEYS) - set(found))
    if missing:
        notes.append(f"the compiled kernels have no {fmt} rate for {missing}: measured here instead")
    return found


def measure_rates(fmt: str = "fp32", *, elements: int = 1 << 22, repeats: int = 5, block_size: int = 64,
                  num_workers: int = 8, progress: Callable[[str, int, int], None] | None = None,
                  notes: list[str] | None = None) -> HostRates:
    """Single-core rates of every host operation, measured now (best of ``repeats``).

    Uses the compiled kernels' ``measure_host_rates()`` where it exists
    (:func:`_compiled_kernel_rates`), else today's public functions
    (``fpisa.switchml.block_exponents / quantize / dequantize``, numpy byte
    swaps and copies). Each rate says which. ``progress(op, done, total)`` is
    called before each measurement.
    """
    _check_fmt(fmt, STUDY_FORMATS)
    if elements < block_size or repeats < 1:
        raise ValueError(f"measurement needs elements >= block size and repeats >= 1, got {elements}, {repeats}")
    notes = notes if notes is not None else []
    rates = _compiled_kernel_rates(fmt, notes, elements=elements, repeats=repeats,
                                   block_size=block_size, num_workers=num_workers)
    todo = [m for m in _own_measurements(fmt, elements, repeats, block_size, num_workers) if m[0] not in rates]
    for i, (op, description, thunk) in enumerate(todo):
        if progress:
            progress(op, i, len(todo))
        rates[op] = Rate(_best_rate(thunk, elements, repeats),
                         f"measured: {description}, {elements:,} {fmt} values, best of {repeats}")
    if progress:
        progress("done", len(todo), len(todo))
    return HostRates(fmt, rates, "measured")


def load_rates_file(path: str | os.PathLike, fmt: str, fallback: Callable[[], HostRates] | None = None) -> HostRates:
    """Rates from JSON: ``{"fp32": {"copy": 5e9, ...}, ...}`` or, for one format,
    ``{"copy": 5e9, ...}``; a value may be ``{"values_per_s": x, "source": "..."}``.
    Operations the file leaves out come from ``fallback()`` (measured) if given."""
    _check_fmt(fmt, STUDY_FORMATS)
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read rates file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"rates file {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"rates file {path}: expected a JSON object of op -> values/s")
    if any(k in FORMAT_BYTES for k in doc):
        if fmt not in doc:
            raise ValueError(f"rates file {path} has rates for {sorted(doc)}, none for {fmt}")
        doc = doc[fmt]
        if not isinstance(doc, dict):
            raise ValueError(f"rates file {path}: {fmt} must map op -> values/s")
    name = os.path.basename(str(path))
    rates = {}
    for op, value in doc.items():
        if op not in OPS:
            raise ValueError(f"rates file {path}: unknown operation {op!r}; known: {', '.join(OPS)}")
        source = f"file {name}"
        if isinstance(value, dict):
            source = str(value.get("source") or source)
            value = value.get("values_per_s")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"rates file {path}: {op} must be a positive number of values/s, got {value!r}")
        rates[op] = Rate(float(value), source)
    missing = [op for op in OPS if op not in rates and op not in OPTIONAL_OPS]
    if missing:
        if fallback is None:
            raise ValueError(f"rates file {path} lacks {missing}")
        measured = fallback()
        rates.update({op: measured.get(op) for op in missing})
    return HostRates(fmt, rates, name)


# -- training ------------------------------------------------------------------------------

DEFAULT_PROFILES = Path(__file__).with_name("profiles.json")


@dataclass(frozen=True)
class Figure:
    """A number with the source it comes from ("none: ..." = assumed)."""

    value: float | None
    source: str

    @property
    def assumed(self) -> bool:
        return self.source.strip().lower().startswith("none")


@dataclass(frozen=True)
class ModelProfile:
    name: str
    params: Figure  #: gradient elements per iteration
    compute_s: Figure  #: forward + backward time per iteration, one worker
    overlap: Figure  #: fraction of communication that can overlap compute
    #: the FPISA paper's training speed-up (fraction) by host cores per worker
    paper_speedup: dict[int, Figure] = field(default_factory=dict)
    extra: dict[str, Figure] = field(default_factory=dict)

    def figures(self) -> dict[str, Figure]:
        return {"params": self.params, "compute_s": self.compute_s, "overlap": self.overlap,
                **{f"paper_speedup_{c}_cores": f for c, f in self.paper_speedup.items()}, **self.extra}


def _figure(model: str, key: str, raw) -> Figure:
    if not isinstance(raw, dict) or "value" not in raw or not isinstance(raw.get("source"), str) \
            or not raw["source"].strip():
        raise ValueError(f"profile {model}.{key}: every figure needs a value and a non-empty source, got {raw!r}")
    value = raw["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"profile {model}.{key}: value must be a number or null, got {value!r}")
    return Figure(None if value is None else float(value), raw["source"])


def load_profiles(path: str | os.PathLike | None = None) -> list[ModelProfile]:
    """The model profiles data file (default: hosts/study/profiles.json)."""
    path = Path(path) if path else DEFAULT_PROFILES
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read profiles {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"profiles {path} is not valid JSON: {e}") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict) or not models:
        raise ValueError(f"profiles {path}: expected {{\"models\": {{name: {{...}}}}}}")
    out = []
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ValueError(f"profile {name}: expected an object of figures")
        figs = {k: _figure(name, k, v) for k, v in entry.items() if k != "notes"}
        for key in ("params", "compute_s", "overlap"):
            if key not in figs or figs[key].value is None:
                raise ValueError(f"profile {name}: needs a numeric {key}")
        if figs["params"].value <= 0 or figs["compute_s"].value <= 0 or not 0 <= figs["overlap"].value <= 1:
            raise ValueError(f"profile {name}: params and compute_s must be > 0, overlap in [0, 1]")
        paper = {}
        for key in list(figs):
            if key.startswith("paper_speedup_") and key.endswith("_cores"):
                paper[int(key[len("paper_speedup_"):-len("_cores")])] = figs.pop(key)
        out.append(ModelProfile(name, figs.pop("params"), figs.pop("compute_s"), figs.pop("overlap"),
                                dict(sorted(paper.items())), figs))
    return out


def iteration_time(compute_s: float, comm_s: float, overlap: float) -> float:
    """t_iter = max(compute, overlap * comm) + (1 - overlap) * comm."""
    if not 0 <= overlap <= 1:
        raise ValueError(f"overlap must be in [0, 1], got {overlap}")
    return max(compute_s, overlap * comm_s) + (1 - overlap) * comm_s


def training_speedup(params: float, compute_s: float, overlap: float, goodput_fpisa: float,
                     goodput_switchml: float) -> float:
    """FPISA's training-throughput gain over SwitchML: t_switchml / t_fpisa - 1."""
    t_fpisa = iteration_time(compute_s, params / goodput_fpisa, overlap)
    t_switchml = iteration_time(compute_s, params / goodput_switchml, overlap)
    return t_switchml / t_fpisa - 1


# -- what the paper's training figures imply under this model -------------------------------

#: a calibration "fits" when its predictions are within this rms of the paper's figures
RMS_TOLERANCE = 0.01

def calibrate_to_paper(profiles: list[ModelProfile], *, link_gbps: float = 100.0, fmt: str = "fp32",
                       elements_per_packet: int = 64, low: int = 2, high: int = 8,
                       fpisa_mode: str = "fpisa", switchml_mode: str = "switchml",
                       pinned_fpisa_rates: Mapping[str, float] | None = None, grid: int = 161,
                       links_gbps: Iterable[float] = (10, 25, 40, 100)) -> dict:
    """Which per-core rates make the paper's speed-ups self-consistent under this model?

    Unknowns: FPISA's whole per-core rate ``r_f`` (values/s, everything its
    host does), the ratio ``rho = r_switchml / r_fpisa`` and each model's
    compute time C (overlap 0). A model's speed-up S at ``low`` cores fixes C
    in closed form: with a = params / goodput_switchml and b = params /
    goodput_fpisa, (C + a) / (C + b) = 1 + S gives C = (a - (1 + S) b) / S.
    That C *predicts* the speed-up at ``high`` cores; the (r_f, rho) whose
    predictions best match the paper's figures at ``high`` cores (sum of
    squared errors over every model with both figures) is the fit. Only rho
    and the models' communication-to-compute ratios are identifiable while
    both systems are CPU-bound (scaling every rate by k and every C by 1/k
    changes no speed-up), so the result gives the range of r_f that fits
    equally well, and the best fit with r_f pinned to each of
    ``pinned_fpisa_rates`` (label -> values/s, e.g. this run's own FPISA
    per-core rates) for comparison.
    """
    both = [p for p in profiles if p.paper_speedup.get(low) and p.paper_speedup.get(high)
            and p.paper_speedup[low].value and p.paper_speedup[high].value is not None]
    if not both:
        raise ValueError(f"no profile has paper speed-ups at both {low} and {high} cores")
    L_f = link_rate(fpisa_mode, link_gbps, fmt, elements_per_packet)
    L_s = link_rate(switchml_mode, link_gbps, fmt, elements_per_packet)

    def fit(rf: np.ndarray, rho: np.ndarray):
        RF, RHO = np.meshgrid(rf, rho, indexing="ij")
        sse = np.zeros_like(RF)
        g = {c: (np.minimum(L_f, c * RF), np.minimum(L_s, c * RHO * RF)) for c in (low, high)}
        for p in both:
            n, s_lo, s_hi = p.params.value, p.paper_speedup[low].value, p.paper_speedup[high].value
            c = (n / g[low][1] - (1 + s_lo) * n / g[low][0]) / s_lo
            pred = (c + n / g[high][1]) / (c + n / g[high][0]) - 1
            sse += np.where(c > 0, (pred - s_hi) ** 2, np.inf)
        return RF, RHO, sse

    def describe(rf: float, rho: float, sse: float) -> dict:
        g = {c: (min(L_f, c * rf), min(L_s, c * rho * rf)) for c in (low, high)}
        models = []
        for p in profiles:
            s_lo = p.paper_speedup.get(low)
            if not s_lo or not s_lo.value:
                continue
            n = p.params.value
            c = (n / g[low][1] - (1 + s_lo.value) * n / g[low][0]) / s_lo.value
            s_hi = p.paper_speedup.get(high)
            models.append({
                "model": p.name, "paper_low": s_lo.value, "paper_high": s_hi.value if s_hi else None,
                "predicted_high": ((c + n / g[high][1]) / (c + n / g[high][0]) - 1) if c > 0 else None,
                # FPISA's communication / compute at `low` cores: identifiable even where r_f is not
                "fpisa_comm_over_compute_low": (n / g[low][0]) / c if c > 0 else None,
                "implied_compute_s": c if c > 0 else None,
                "profile_compute_s": p.compute_s.value, "profile_compute_source": p.compute_s.source})
        lines = {}
        for link in links_gbps:
            need_f = cores_to_line_rate(link_rate(fpisa_mode, link, fmt, elements_per_packet), rf)
            need_s = cores_to_line_rate(link_rate(switchml_mode, link, fmt, elements_per_packet), rho * rf)
            lines[f"{float(link):g}"] = {"fpisa": need_f, "switchml": need_s,
                                         "fewer_cores_percent": 100 * (1 - need_f / need_s)}
        return {"fpisa_per_core": rf, "rho": rho, "switchml_per_core": rho * rf,
                "cores_to_line_rate": lines,
                "allreduce_gain_percent": {str(c): 100 * (g[c][0] / g[c][1] - 1) for c in (low, high)},
                "rms_error_high": math.sqrt(sse / len(both)) if math.isfinite(sse) else None,
                "fpisa_cpu_bound_at": [c for c in (low, high) if c * rf < L_f],
                "switchml_cpu_bound_at": [c for c in (low, high) if c * rho * rf < L_s], "models": models}

    rf_grid, rho_grid = np.logspace(7, 11, grid), np.logspace(-3, 0, grid)
    RF, RHO, sse = fit(rf_grid, rho_grid)
    i, j = np.unravel_index(np.argmin(sse), sse.shape)
    # "fits": predictions within 1 percentage point rms (the paper rounds to whole percents)
    tolerance = len(both) * RMS_TOLERANCE ** 2
    ok = np.flatnonzero(sse.min(axis=1) <= tolerance)
    result = {
        "link_gbps": link_gbps, "fmt": fmt, "elements_per_packet": elements_per_packet,
        "cores": [low, high], "fitted_to": [p.name for p in both],
        "fpisa_mode": fpisa_mode, "switchml_mode": switchml_mode,
        "line_rate_fpisa": L_f, "line_rate_switchml": L_s, "rms_tolerance": RMS_TOLERANCE,
        "grid": {"fpisa_per_core": [float(rf_grid[0]), float(rf_grid[-1])], "rho": [float(rho_grid[0]), 1.0],
                 "points": grid},
        "best": describe(float(RF[i, j]), float(RHO[i, j]), float(sse[i, j])),
        # r_f values (grid) whose best rho fits within the tolerance; the low end is the grid's
        # edge when everything is CPU-bound there (no lower limit)
        "fpisa_per_core_fitting": [float(rf_grid[ok].min()), float(rf_grid[ok].max())] if ok.size else None,
    }
    if ok.size:
        # at the largest r_f that still fits, compute times are smallest: a lower bound
        k = int(ok.max())
        result["at_largest_fitting_fpisa_rate"] = describe(float(rf_grid[k]), float(rho_grid[np.argmin(sse[k])]),
                                                           float(sse[k].min()))
    result["pinned"] = {}
    for label, rate in (pinned_fpisa_rates or {}).items():
        rf = min(float(rate), 1e15)  # an infinite rate (no host work) is "very fast"
        _, _, sse_pinned = fit(np.array([rf]), rho_grid)
        k = int(np.argmin(sse_pinned[0]))
        result["pinned"][label] = describe(rf, float(rho_grid[k]), float(sse_pinned[0, k]))
    return result
