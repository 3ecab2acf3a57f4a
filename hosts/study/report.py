"""The host-cost study: run the model over a grid, compare with the paper, write the report.

:func:`run_study` evaluates :mod:`hosts.study.host_cores` for every rate set
(measured here, the paper's, a file), mode, link rate and core count, adds
the training speed-ups, their sensitivity to the unsourced figures and the
calibration against the paper, and checks the model's byte accounting
against ``fpisa.protocol``. :func:`write_report` writes it as
``host_cores.json`` (everything), ``host_cores.csv`` (the goodput grid),
``training.csv``, ``summary.md`` and two plots.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fpisa.protocol import HEADER_BYTES, MAX_ELEMENTS

from . import host_cores as hc

__all__ = ["StudyConfig", "run_study", "write_report", "summary_lines", "check_wire_format",
           "REPORT_FILES"]

REPORT_FILES = ("host_cores.json", "host_cores.csv", "training.csv", "summary.md", "host_cores.png",
                "training.png")
RATE_PRESETS = ("measured", "paper")
#: the two modes the headline compares, and FPISA's fallback without in-switch byte swap
FPISA, FPISA_HOSTSWAP, SWITCHML = "fpisa", "fpisa-hostswap", "switchml"


@dataclass(frozen=True)
class StudyConfig:
    """Everything a report is made from; printed into the report."""

    links_gbps: tuple[float, ...] = (10.0, 25.0, 40.0, 100.0)
    max_cores: int = 16
    modes: tuple[str, ...] = hc.MODES
    fmt: str = "fp32"
    elements_per_packet: int = 64
    line_overhead: bool = True
    #: rate sets: "measured", "paper" or paths of JSON rate files
    rates: tuple[str, ...] = RATE_PRESETS
    profiles: str | None = None
    #: host cores per worker and link rate of the paper's training comparison
    compare_cores: tuple[int, ...] = (2, 8)
    compare_link_gbps: float = 100.0
    measure_elements: int = 1 << 22
    measure_repeats: int = 5
    compute_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    overlaps: tuple[float, ...] = (0.0, 0.5, 1.0)

    def __post_init__(self) -> None:
        if not self.links_gbps:
            raise ValueError("give at least one link rate")
        for link in self.links_gbps:
            hc._check_link(link)
        hc._check_cores(self.max_cores)
        for c in self.compare_cores:
            hc._check_cores(c)
        hc._check_link(self.compare_link_gbps)
        if not self.modes:
            raise ValueError("give at least one mode")
        for mode in self.modes:
            hc._check_mode(mode)
        hc._check_fmt(self.fmt, hc.STUDY_FORMATS)
        e = hc._check_elements(self.elements_per_packet)
        if e > MAX_ELEMENTS:
            raise ValueError(f"this toolkit's wire format carries at most {MAX_ELEMENTS} elements per packet, "
                             f"got {e}")
        if not self.rates:
            raise ValueError("give at least one rate set: measured, paper or a FILE.json")
        for r in self.rates:
            if r not in RATE_PRESETS and not str(r).endswith(".json"):
                raise ValueError(f"unknown rate set {r!r}: expected measured, paper or a path ending in .json")
        if self.measure_elements < 1024 or self.measure_repeats < 1:
            raise ValueError("measurement needs at least 1024 elements and 1 repeat")
        if any(m <= 0 for m in self.compute_multipliers) or any(not 0 <= o <= 1 for o in self.overlaps):
            raise ValueError("compute multipliers must be > 0 and overlaps in [0, 1]")

    @property
    def cores(self) -> list[int]:
        return list(range(1, self.max_cores + 1))

    def as_dict(self) -> dict:
        return asdict(self)


def check_wire_format(elements=(1, 64, MAX_ELEMENTS)) -> dict:
    """The model's per-packet byte counts against packets ``fpisa.protocol`` builds."""
    from fpisa.protocol import Header, MsgType, WireMode, format_code, pack

    wire_mode = {FPISA: WireMode.FPISA, FPISA_HOSTSWAP: WireMode.FPISA, SWITCHML: WireMode.SWITCHML,
                 "switchml-2pass": WireMode.SWITCHML}
    failures, checked = [], 0
    for mode in hc.MODES:
        for fmt in hc.STUDY_FORMATS:
            for n in elements:
                wm = wire_mode[mode]
                code = format_code(fmt) if wm.is_float else 0
                header = Header(MsgType.DATA, wm, code, 0, 0, 0, 2, n, 0, 0, 0)
                udp_payload = len(pack(header, np.zeros(n, np.uint32 if not wm.is_float else
                                                         {2: np.uint16, 4: np.uint32}[hc.FORMAT_BYTES[fmt]])))
                model = hc.frame_bytes(hc.wire_element_bytes(mode, fmt) * n)
                built = max(hc.MIN_FRAME_BYTES - 4, 14 + 20 + 8 + udp_payload)
                checked += 1
                if model != built:
                    failures.append(f"{mode} {fmt} n={n}: model {model} B, protocol {built} B")
    return {"header_bytes": HEADER_BYTES, "packets_checked": checked, "failures": failures,
            "ok": not failures}


def _measure_byteswap_widths(elements: int, repeats: int) -> dict[str, hc.Rate]:
    """One core's swapping copy of 2-, 4- and 8-byte values (the paper's fp16/fp32/fp64 figure)."""
    out = {}
    for fmt, dtype in (("fp16", np.uint16), ("fp32", np.uint32), ("fp64", np.uint64)):
        src = np.arange(elements, dtype=dtype)
        dst = np.empty_like(src).view(np.dtype(dtype).newbyteorder())
        rate = hc._best_rate(lambda: np.copyto(dst, src), elements, repeats)
        out[fmt] = hc.Rate(rate, f"measured: numpy swapping copy of {elements:,} {fmt}-sized values, "
                                 f"best of {repeats}")
    return out


def _paper_line_rate_check(measured_swaps: dict[str, hc.Rate], elements_per_packet: int) -> list[dict]:
    """The paper's 'values/s 100 Gb/s needs' and 'one core byte-swaps' against our formulas."""
    rows = []
    for fmt in ("fp16", "fp32", "fp64"):
        size = hc.FORMAT_BYTES[fmt]
        kb_elements = 1024 // size  # SwitchML's largest payload, 1 KB, in this format
        raw = 100e9 / 8 / size
        ours_e = 100e9 / 8 / (hc.line_bytes(size * elements_per_packet) / elements_per_packet)
        ours_kb = 100e9 / 8 / (hc.line_bytes(1024) / kb_elements)
        paper_need = hc.PAPER["line_rate_100g_values_per_s"][fmt]
        paper_swap = hc.PAPER["byteswap_values_per_s"][fmt]
        ours_swap = measured_swaps[fmt].values_per_s
        rows.append({
            "fmt": fmt, "paper_values_per_s_100g": paper_need, "raw_values_per_s_100g": raw,
            "paper_implied_efficiency": paper_need / raw,
            "ours_values_per_s_100g_at_elements_per_packet": ours_e,
            "ours_efficiency_at_elements_per_packet": ours_e / raw,
            "ours_values_per_s_100g_1kb_payload": ours_kb, "ours_efficiency_1kb_payload": ours_kb / raw,
            "paper_byteswap_per_core": paper_swap, "ours_byteswap_per_core": ours_swap,
            "ours_byteswap_source": measured_swaps[fmt].source,
            # cores to byte-swap one direction at line rate, as the paper's two figures imply
            "paper_swap_cores_one_direction": paper_need / paper_swap,
            "ours_swap_cores_one_direction_1kb": ours_kb / ours_swap,
        })
    return rows


def _rate_sets(config: StudyConfig, progress, notes: list[str]) -> tuple[dict[str, hc.HostRates], dict]:
    cache: dict = {}

    def measured() -> hc.HostRates:
        if "m" not in cache:
            cache["m"] = hc.measure_rates(config.fmt, elements=config.measure_elements,
                                          repeats=config.measure_repeats,
                                          block_size=config.elements_per_packet, progress=progress, notes=notes)
        return cache["m"]

    sets = {}
    for name in config.rates:
        if name == "measured":
            rates = measured()
        elif name == "paper":
            rates = hc.paper_rates(config.fmt, measured())
        else:
            rates = hc.load_rates_file(name, config.fmt, fallback=measured)
        if rates.label in sets:
            raise ValueError(f"rate set {rates.label!r} given twice")
        sets[rates.label] = rates
    return sets, cache


def _speedups(profile: hc.ModelProfile, point, compute_s: float, overlap: float) -> float:
    return hc.training_speedup(profile.params.value, compute_s, overlap,
                               point[FPISA].goodput_elements_per_s, point[SWITCHML].goodput_elements_per_s)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def run_study(config: StudyConfig, *, command: str = "",
              progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Every number of the report (a JSON-ready dict)."""
    started = time.monotonic()
    # other processes on the machine slow the measurement down: say how busy it was
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    notes: list[str] = []
    profiles = hc.load_profiles(config.profiles)
    rate_sets, cache = _rate_sets(config, progress, notes)
    swaps = _measure_byteswap_widths(min(config.measure_elements, 1 << 22), config.measure_repeats)
    machine = hc.machine_cores()
    e, fmt, lo = config.elements_per_packet, config.fmt, config.line_overhead
    needed_modes = sorted(set(config.modes) | {FPISA, FPISA_HOSTSWAP, SWITCHML}, key=hc.MODES.index)

    wire = {}
    for mode in needed_modes:
        payload = hc.wire_element_bytes(mode, fmt) * e
        wire[mode] = {"payload_bytes": payload, "line_bytes": hc.line_bytes(payload, lo),
                      "payload_efficiency": hc.payload_efficiency(mode, fmt, e, lo),
                      "wire_bytes_per_element": hc.wire_bytes_per_element(mode, fmt, e, lo),
                      "link_elements_per_s": {str(link): hc.link_rate(mode, link, fmt, e, lo)
                                              for link in config.links_gbps},
                      "description": hc.MODE_DESCRIPTIONS[mode], "host_ops_per_element": hc.host_ops(mode, e)}

    grid, sets_out, cores_needed, comparison, training = [], {}, {}, {}, {}
    for label, rates in rate_sets.items():
        per_core = {m: hc.per_core_rate(m, rates, e, fmt) for m in needed_modes}
        sets_out[label] = {"ops": rates.as_dict(),
                           "per_core_elements_per_s": {m: None if math.isinf(v) else v
                                                       for m, v in per_core.items()}}
        for mode in config.modes:
            for link in config.links_gbps:
                for cores in config.cores:
                    grid.append({"rates": label, **hc.predict_goodput(mode, link, cores, rates, e, fmt,
                                                                      line_overhead=lo).as_dict()})
        links = sorted(set(config.links_gbps) | {config.compare_link_gbps})
        need = {m: {str(link): hc.predict_goodput(m, link, 1, rates, e, fmt, line_overhead=lo).cores_to_line_rate
                    for link in links} for m in needed_modes}
        cores_needed[label] = need
        comp = {"fewer_cores_percent": {}, "fewer_cores_percent_hostswap": {}, "throughput_gain": {}}
        for link in links:
            k = str(link)
            comp["fewer_cores_percent"][k] = 100 * (1 - need[FPISA][k] / need[SWITCHML][k])
            comp["fewer_cores_percent_hostswap"][k] = 100 * (1 - need[FPISA_HOSTSWAP][k] / need[SWITCHML][k])
        for cores in config.compare_cores:
            pts = {m: hc.predict_goodput(m, config.compare_link_gbps, cores, rates, e, fmt, line_overhead=lo)
                   for m in needed_modes}
            comp["throughput_gain"][str(cores)] = {
                "fpisa_over_switchml_percent": 100 * (pts[FPISA].goodput_elements_per_s
                                                      / pts[SWITCHML].goodput_elements_per_s - 1),
                "fpisa_hostswap_over_switchml_percent": 100 * (pts[FPISA_HOSTSWAP].goodput_elements_per_s
                                                               / pts[SWITCHML].goodput_elements_per_s - 1),
                "goodput_gbps": {m: p.goodput_gbps for m, p in pts.items()},
                "bound": {m: p.bound for m, p in pts.items()}}
        comparison[label] = comp

        models, sensitivity = [], []
        points = {c: {m: hc.predict_goodput(m, config.compare_link_gbps, c, rates, e, fmt, line_overhead=lo)
                      for m in (FPISA, FPISA_HOSTSWAP, SWITCHML)} for c in config.compare_cores}
        for p in profiles:
            row = {"model": p.name, "params": p.params.value, "compute_s": p.compute_s.value,
                   "overlap": p.overlap.value,
                   "assumed": sorted(k for k, f in p.figures().items() if f.assumed), "cores": {}}
            for c, pts in points.items():
                hostswap = hc.training_speedup(p.params.value, p.compute_s.value, p.overlap.value,
                                               pts[FPISA_HOSTSWAP].goodput_elements_per_s,
                                               pts[SWITCHML].goodput_elements_per_s)
                paper = p.paper_speedup.get(c)
                row["cores"][str(c)] = {
                    "speedup": _speedups(p, pts, p.compute_s.value, p.overlap.value),
                    "speedup_hostswap": hostswap,
                    "paper": paper.value if paper else None, "paper_source": paper.source if paper else None,
                    "comm_s_fpisa": p.params.value / pts[FPISA].goodput_elements_per_s,
                    "comm_s_switchml": p.params.value / pts[SWITCHML].goodput_elements_per_s}
                for mult in config.compute_multipliers:
                    for ov in config.overlaps:
                        sensitivity.append({"model": p.name, "cores": c, "compute_multiplier": mult,
                                            "compute_s": p.compute_s.value * mult, "overlap": ov,
                                            "speedup": _speedups(p, pts, p.compute_s.value * mult, ov)})
            models.append(row)
        training[label] = {"models": models, "sensitivity": sensitivity}

    pinned = {}
    for label, rates in rate_sets.items():
        for mode in (FPISA, FPISA_HOSTSWAP):
            pinned[f"{label}: {mode}"] = hc.per_core_rate(mode, rates, e, fmt)
    calibration = hc.calibrate_to_paper(profiles, link_gbps=config.compare_link_gbps, fmt=fmt,
                                        elements_per_packet=e, low=min(config.compare_cores),
                                        high=max(config.compare_cores), pinned_fpisa_rates=pinned,
                                        links_gbps=sorted(set(config.links_gbps) | {config.compare_link_gbps}))

    checks = {"wire_format": check_wire_format()}
    bad = [r for r in grid if r["goodput_elements_per_s"] > r["link_elements_per_s"] * (1 + 1e-12)]
    mono = []
    for label in rate_sets:
        for mode in config.modes:
            for link in config.links_gbps:
                g = [r["goodput_elements_per_s"] for r in grid
                     if r["rates"] == label and r["mode"] == mode and r["link_gbps"] == link]
                if any(b < a * (1 - 1e-12) for a, b in zip(g, g[1:])):
                    mono.append(f"{label} {mode} {link}")
    checks["goodput_within_link"] = {"ok": not bad, "violations": len(bad)}
    checks["goodput_monotone_in_cores"] = {"ok": not mono, "violations": mono}
    checks["ok"] = all(c["ok"] for c in checks.values() if isinstance(c, dict))

    return {
        "study": {
            "command": command, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "kernel": platform.release(), "machine_cores": machine, "load_average_1m_at_start": load_before,
            "seconds": time.monotonic() - started,
            "extrapolation": (f"rates are measured on one core; points with more than {machine} cores (this "
                              "machine's) are extrapolated linearly from them (no shared memory-bandwidth limit)"),
            "model": "goodput = min(link payload rate, cores x per-core rate); t_iter = max(compute, "
                     "overlap*comm) + (1-overlap)*comm; speed-up = t_switchml / t_fpisa - 1",
        },
        "config": config.as_dict(),
        "notes": notes,
        "paper": {k: v for k, v in hc.PAPER.items()},
        "wire": wire,
        "rate_sets": sets_out,
        "byteswap_by_width": {k: {"values_per_s": r.values_per_s, "source": r.source} for k, r in swaps.items()},
        "paper_check": _paper_line_rate_check(swaps, e),
        "grid": grid,
        "cores_to_line_rate": cores_needed,
        "comparison": comparison,
        "training": training,
        "calibration": calibration,
        "profiles": {p.name: {k: {"value": f.value, "source": f.source} for k, f in p.figures().items()}
                     for p in profiles},
        "checks": checks,
    }


# -- writing --------------------------------------------------------------------------------

GRID_COLUMNS = ("rates", "mode", "fmt", "link_gbps", "cores", "elements_per_packet", "line_overhead",
                "payload_efficiency", "link_elements_per_s", "core_elements_per_s", "cpu_elements_per_s",
                "goodput_elements_per_s", "goodput_gbps", "bound", "cores_to_line_rate", "extrapolated")
TRAINING_COLUMNS = ("rates", "model", "cores", "compute_multiplier", "compute_s", "overlap", "speedup",
                    "speedup_hostswap", "paper")


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _training_rows(report: dict) -> list[dict]:
    rows = []
    for label, t in report["training"].items():
        for m in t["models"]:
            for c, r in m["cores"].items():
                rows.append({"rates": label, "model": m["model"], "cores": int(c), "compute_multiplier": 1.0,
                             "compute_s": m["compute_s"], "overlap": m["overlap"], "speedup": r["speedup"],
                             "speedup_hostswap": r["speedup_hostswap"], "paper": r["paper"]})
        for s in t["sensitivity"]:
            if s["compute_multiplier"] == 1.0 and s["overlap"] == next(
                    m["overlap"] for m in t["models"] if m["model"] == s["model"]):
                continue  # that is the profile's own point, above
            rows.append({"rates": label, **s})
    return rows


def write_report(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    """host_cores.json, host_cores.csv, training.csv, summary.md, host_cores.png, training.png."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in REPORT_FILES]
    paths[0].write_text(json.dumps(report, indent=1, default=float) + "\n")
    with open(paths[1], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=GRID_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in report["grid"]:
            w.writerow({k: _csv_value(row.get(k)) for k in GRID_COLUMNS})
    with open(paths[2], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TRAINING_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in _training_rows(report):
            w.writerow({k: _csv_value(row.get(k)) for k in TRAINING_COLUMNS})
    paths[3].write_text("\n".join(summary_lines(report, markdown=True)) + "\n")
    plot_goodput(report, paths[4])
    plot_training(report, paths[5])
    return paths


# -- tables (terminal and summary.md) -------------------------------------------------------

def _table(header: list[str], rows: list[list], markdown: bool) -> list[str]:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(r) + " |" for r in cells[1:]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]


def _g(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def summary_lines(report: dict, markdown: bool = False) -> list[str]:
    """The key tables: our figures beside the paper's."""
    cfg, study = report["config"], report["study"]
    labels = list(report["rate_sets"])
    link = cfg["compare_link_gbps"]
    h = (lambda s: f"### {s}") if markdown else (lambda s: f"{s}:")
    out = []
    if study.get("command"):
        out.append(f"`{study['command']}`" if markdown else study["command"])
    if study.get("load_average_1m_at_start") is not None:
        out.append(f"machine: {study['machine_cores']} cores, 1-minute load average {study['load_average_1m_at_start']:.2f} "
                   "when the measurement started (other processes slow measured rates down)")
    out.append(f"{cfg['fmt']}, {cfg['elements_per_packet']} elements/packet, "
               f"{'with' if cfg['line_overhead'] else 'without'} Ethernet preamble/IFG/FCS; rate sets: "
               f"{', '.join(labels)}. {study['extrapolation']}.")
    out += [f"note: {n}" for n in report["notes"]]
    out.append("")

    out.append(h("Per-packet wire cost"))
    out += _table(["mode", "payload B", "line B", "payload efficiency",
                   f"elements/s at {cfg['links_gbps'][-1]:g} Gb/s"],
                  [[m, w["payload_bytes"], w["line_bytes"], f"{100 * w['payload_efficiency']:.1f}%",
                    _g(w["link_elements_per_s"][str(cfg["links_gbps"][-1])])]
                   for m, w in report["wire"].items()], markdown)
    out.append("")

    out.append(h("Single-core rates [values/s] per rate set"))
    ops = [op for op in hc.OPS]
    rows = []
    for op in ops:
        row = [op]
        for label in labels:
            r = report["rate_sets"][label]["ops"][op]
            row.append(_g(r["values_per_s"]) if r["values_per_s"] else "free")
        rows.append(row)
    out += _table(["op"] + labels, rows, markdown)
    srcs = report["rate_sets"][labels[0]]["ops"]
    out.append(("sources (" + labels[0] + "): ") + "; ".join(f"{op}: {srcs[op]['source']}" for op in ops))
    out.append("")

    out.append(h("Byte swap and the line rate at 100 Gb/s: ours beside the paper's"))
    rows = [[r["fmt"], _g(r["paper_byteswap_per_core"]), _g(r["ours_byteswap_per_core"]),
             _g(r["paper_values_per_s_100g"]), _g(r["ours_values_per_s_100g_1kb_payload"]),
             _g(r["ours_values_per_s_100g_at_elements_per_packet"]),
             f"{r['paper_swap_cores_one_direction']:.1f}", f"{r['ours_swap_cores_one_direction_1kb']:.2f}"]
            for r in report["paper_check"]]
    out += _table(["fmt", "swap/core paper", "swap/core ours", "100G needs (paper)", "ours, 1 KB payload",
                   f"ours, {cfg['elements_per_packet']}/packet", "swap cores paper", "swap cores ours"],
                  rows, markdown)
    out.append("")

    out.append(h(f"Cores per worker to reach line rate (rate sets: {' / '.join(labels)})"))
    links = list(report["cores_to_line_rate"][labels[0]][FPISA])
    rows = []
    for k in links:
        row = [f"{float(k):g} Gb/s"]
        for mode in report["wire"]:
            row.append(" / ".join(str(report["cores_to_line_rate"][lab][mode][k]) for lab in labels))
        row.append(" / ".join(f"{report['comparison'][lab]['fewer_cores_percent'][k]:.0f}%" for lab in labels))
        rows.append(row)
    out += _table(["link"] + list(report["wire"]) + ["FPISA fewer cores"], rows, markdown)
    out.append("paper: 25-75% fewer cores (the KAUST repository's abstract: 'one to three fewer CPU cores')")
    out.append("")

    out.append(h(f"Allreduce goodput gain of FPISA over SwitchML at {link:g} Gb/s"))
    rows = []
    for c in cfg["compare_cores"]:
        row = [f"{c} cores"]
        for lab in labels:
            t = report["comparison"][lab]["throughput_gain"][str(c)]
            row.append(f"{t['fpisa_over_switchml_percent']:.0f}% ({t['fpisa_hostswap_over_switchml_percent']:.0f}%)")
        rows.append(row)
    out += _table(["host cores"] + [f"{lab} rates: fpisa (fpisa-hostswap)" for lab in labels], rows, markdown)
    out.append("paper: up to 85.9% better training throughput (DeepLight, 2 cores)")
    out.append("")

    cal = report["calibration"]
    best = cal["best"]
    by_model = {m["model"]: m for m in best["models"]}
    out.append(h(f"Training speed-up of FPISA over SwitchML at {link:g} Gb/s (fpisa vs switchml)"))
    rows = []
    for m in report["training"][labels[0]]["models"]:
        row = [m["model"] + (" *" if m["assumed"] else "")]
        for c in cfg["compare_cores"]:
            k = str(c)
            row += [_pct(report["training"][lab]["models"][i]["cores"][k]["speedup"])
                    for lab in labels for i, mm in enumerate(report["training"][lab]["models"])
                    if mm["model"] == m["model"]]
            fit = by_model.get(m["model"])
            row.append(_pct(None if fit is None else (fit["paper_low"] if c == min(cfg["compare_cores"])
                                                      else fit["predicted_high"])))
            row.append(_pct(m["cores"][k]["paper"]))
        rows.append(row)
    header = ["model"]
    for c in cfg["compare_cores"]:
        header += [f"{c}c ours, {lab} rates" for lab in labels] + [f"{c}c fit", f"{c}c paper's figure"]
    out += _table(header, rows, markdown)
    out.append("* some of this model's figures have no public source (see profiles.json; the sensitivity "
               "sweep in training.csv shows how the speed-up moves with them). 'fit': the paper's "
               f"{min(cfg['compare_cores'])}-core figure is an input, the {max(cfg['compare_cores'])}-core "
               "figure a prediction of the calibration below.")
    out.append("")

    out.append(h("What the paper's speed-ups imply under this model (calibration)"))
    rng = cal["fpisa_per_core_fitting"]
    out.append(f"best fit: FPISA {best['fpisa_per_core']:.3g} values/s per core, SwitchML {best['rho']:.2f} x that "
               f"({best['switchml_per_core']:.3g}); rms error of the {cal['cores'][1]}-core predictions "
               f"{100 * best['rms_error_high']:.1f} points over {', '.join(cal['fitted_to'])}.")
    if rng:
        out.append(f"fits within {100 * cal['rms_tolerance']:.0f} point rms for any FPISA per-core rate up to "
                   f"{rng[1]:.3g} values/s (the {cal['link_gbps']:g} Gb/s line is {cal['line_rate_fpisa']:.3g} "
                   f"values/s: FPISA itself must be CPU-bound at {cal['cores'][0]} cores).")
    gains = ", ".join(f"{c} cores +{g:.0f}%" for c, g in best["allreduce_gain_percent"].items())
    out.append(f"with the best fit's rates: allreduce goodput gain at {link:g} Gb/s {gains}; cores to line rate:")
    out += _table(["link", "fpisa", "switchml", "FPISA fewer cores"],
                  [[f"{float(k):g} Gb/s", v["fpisa"], v["switchml"], f"{v['fewer_cores_percent']:.0f}%"]
                   for k, v in best["cores_to_line_rate"].items()], markdown)
    seen = set()
    for label, p in cal["pinned"].items():
        if round(p["fpisa_per_core"], -3) in seen:
            continue
        seen.add(round(p["fpisa_per_core"], -3))
        out.append(f"with FPISA at {label}'s {p['fpisa_per_core']:.3g}/core: best SwitchML ratio {p['rho']:.3g}, "
                   f"rms error {100 * p['rms_error_high']:.1f} points "
                   + ("(fits)" if p["rms_error_high"] <= cal["rms_tolerance"] else "(does not fit)"))
    out.append("")
    checks = report["checks"]
    out.append("checks: " + ", ".join(f"{k} {'ok' if v['ok'] else 'FAILED'}" for k, v in checks.items()
                                      if isinstance(v, dict)))
    return out


# -- plots ----------------------------------------------------------------------------------

_MODE_COLORS = {"fpisa": "tab:blue", "fpisa-hostswap": "tab:green", "switchml": "tab:red",
                "switchml-2pass": "tab:orange"}
_MODE_WIDTHS = {"fpisa": 3.0, "fpisa-hostswap": 1.2, "switchml": 3.0, "switchml-2pass": 1.2}
_STYLES = ("-", "--", ":", "-.")
_STYLE_NAMES = ("solid", "dashed", "dotted", "dash-dot")


def plot_goodput(report: dict, path) -> None:
    """Goodput vs host cores per worker, one panel per link rate, a line per mode and rate set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = report["config"]
    links = cfg["links_gbps"]
    labels = list(report["rate_sets"])
    cols = 2 if len(links) > 1 else 1
    rows = math.ceil(len(links) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    machine = report["study"]["machine_cores"]
    for ax, link in zip(axes.flat, links):
        for li, label in enumerate(labels):
            for mode in cfg["modes"]:
                pts = [r for r in report["grid"] if r["rates"] == label and r["mode"] == mode
                       and r["link_gbps"] == link]
                # the pairs that coincide (fpisa / fpisa-hostswap, the two switchml) stay visible
                ax.plot([r["cores"] for r in pts], [r["goodput_gbps"] for r in pts],
                        color=_MODE_COLORS.get(mode), ls=_STYLES[li % len(_STYLES)], marker=".",
                        lw=_MODE_WIDTHS.get(mode, 1.5), label=f"{mode} ({label})")
        line = max(r["link_elements_per_s"] for r in report["grid"] if r["link_gbps"] == link
                   and r["mode"].startswith("fpisa")) * hc.FORMAT_BYTES[cfg["fmt"]] * 8 / 1e9
        ax.axhline(line, color="grey", lw=1, ls="--")
        ax.text(1, line * 0.97, "FPISA payload line rate", fontsize=7, color="grey", va="top")
        ax.set_ylim(0, line * 1.08)
        if cfg["max_cores"] > machine:
            ax.axvspan(machine + 0.5, cfg["max_cores"] + 0.5, color="grey", alpha=0.08)
            ax.text(machine + 0.7, 0.02, f"> {machine} cores (this machine's): extrapolated from "
                    "single-core rates", fontsize=7, color="grey", transform=ax.get_xaxis_transform())
        ax.set_title(f"{link:g} Gb/s", fontsize=10)
        ax.set_xlabel("host cores per worker")
        ax.set_ylabel(f"allreduce goodput per worker [Gb/s of {cfg['fmt']}]")
        ax.grid(alpha=0.3, which="both")
    for ax in axes.flat[len(links):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8)
    styles = ", ".join(f"{lab} rates {_STYLE_NAMES[i % len(_STYLES)]}" for i, lab in enumerate(labels))
    fig.suptitle(f"FPISA vs SwitchML host cost: goodput = min(link, cores x per-core rate); "
                 f"{cfg['fmt']}, {cfg['elements_per_packet']} elements/packet; {styles}", fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(names) / 4), 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_training(report: dict, path) -> None:
    """Speed-ups at the compared core counts beside the paper's, and their sensitivity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = report["config"]
    labels = list(report["rate_sets"])
    cores = cfg["compare_cores"]
    fig, axes = plt.subplots(1, 1 + len(cores), figsize=(7 + 5 * len(cores), 5.2))
    ax = axes[0]
    models = [m["model"] for m in report["training"][labels[0]]["models"]]
    fit = {m["model"]: m for m in report["calibration"]["best"]["models"]}

    def ours(lab, m, c):
        return next(mm for mm in report["training"][lab]["models"] if mm["model"] == m)["cores"][str(c)]

    series = []
    for c in cores:
        series += [(f"ours, {lab} rates, {c} cores", [ours(lab, m, c)["speedup"] for m in models], None)
                   for lab in labels]
        series.append((f"paper's figure, {c} cores", [ours(labels[0], m, c)["paper"] for m in models], "//"))
    hi = max(cores)
    series.append((f"calibrated fit, {hi} cores (prediction)",
                   [fit[m]["predicted_high"] if m in fit else None for m in models], ".."))
    width = 0.8 / len(series)
    x = np.arange(len(models))
    for k, (name, vals, hatch) in enumerate(series):
        v = np.array([np.nan if a is None else 100 * a for a in vals])
        ax.bar(x + (k - len(series) / 2 + 0.5) * width, v, width, label=name, hatch=hatch)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xticks(x, models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("FPISA training speed-up over SwitchML [%]")
    ax.set_title(f"fpisa vs switchml at {cfg['compare_link_gbps']:g} Gb/s", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, c in zip(axes[1:], cores):
        for li, lab in enumerate(labels):
            sens = report["training"][lab]["sensitivity"]
            for mi, m in enumerate(models):
                ov = next(mm for mm in report["training"][lab]["models"] if mm["model"] == m)["overlap"]
                pts = [s for s in sens if s["model"] == m and s["cores"] == c and s["overlap"] == ov]
                ax.plot([s["compute_multiplier"] for s in pts], [100 * s["speedup"] for s in pts],
                        color=colors[mi % len(colors)], ls=_STYLES[li % len(_STYLES)], marker=".",
                        label=m if li == 0 else None)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("compute time / profile's (x k here = params / k)")
        ax.set_ylabel("speed-up [%]")
        styles = ", ".join(f"{lab} rates {_STYLE_NAMES[i % len(_STYLES)]}" for i, lab in enumerate(labels))
        ax.set_title(f"sensitivity to the compute time, {c} cores ({styles})", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
