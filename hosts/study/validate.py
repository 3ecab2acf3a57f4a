"""The host-cost model against a real allreduce on this machine: ``fpisa study validate``.

For each mode (FPISA, SwitchML), worker (the pipelined one with 1, 2, ...
conversion threads; optionally the serial one) and link rate (paced with
:mod:`fpisa.pacing`, and unpaced), :func:`run_validation` runs the real
allreduce (:func:`hosts.allreduce.run_allreduce`: K worker processes, the
emulated switch process, loopback UDP by default, every run checked bit-exact)
and puts the measured goodput per worker (its elements over its own time,
best of N runs) beside :func:`hosts.study.host_cores.predict_goodput` with
the single-core rates measured in the same run
(:func:`hosts.study.host_cores.measure_rates`):

    model     = min(link rate, threads x per-core conversion rate)
    with cap  = min(model, the emulated system's capacity)

The model's modes: ``fpisa`` for FPISA (the host copies; the wire is the
array's little-endian bytes) and ``switchml-2pass`` for SwitchML (this
toolkit's worker sends the exponents in a separate pass). ``threads`` is the
model's host cores. The emulated system's capacity is a third bound the
model does not have: the switch emulator, the transport and the workers' Python
per received batch, all on this machine's 2 shared cores. It is *measured*
here, as the best unpaced goodput of the same mode and worker; a point is
"link-bound" when the link rate is at most ``cap_fraction`` of that
capacity, and only those points are held to the tolerance (``checks``).

Also reported: the conversion threads' CPU time per element in each run
(``in_run_ns_per_element``), the per-core rate it implies under this run's
contention, and each run's retransmissions and late datagrams (the pacer
handing on datagrams more than 1 ms after their departure because the
worker process was not running).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fpisa.job import JobSpec
from fpisa.pacing import LinkPacer

from . import host_cores as hc

__all__ = ["ValidateConfig", "run_validation", "write_validation", "validation_lines", "MODEL_MODES",
           "VALIDATION_FILES", "elements_for"]

VALIDATION_FILES = ("validation.json", "validation.csv", "validation.md", "validation.png")
#: allreduce mode -> the model's mode for the same host work and wire bytes
MODEL_MODES = {"fpisa": "fpisa", "fpisa-a": "fpisa", "switchml": "switchml-2pass"}
SERIAL = "serial"


@dataclass(frozen=True)
class ValidateConfig:
    """Everything a validation run is made from (printed into its report)."""

    links_gbps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    #: also run unpaced (measures the emulated system's capacity, the third bound)
    unpaced: bool = True
    threads: tuple[int, ...] = (1, 2)
    #: also run the serial worker (hosts.worker: converts before and after sending)
    serial: bool = False
    modes: tuple[str, ...] = ("fpisa", "switchml")
    workers: int = 2
    fmt: str = "fp32"
    packet_elements: int = 255
    #: packets in flight per worker: deep enough to keep a paced link busy while
    #: a process of this shared 2-core machine is descheduled (tens of ms)
    window: int = 1024
    #: a paced run moves about this many seconds of line time (long enough that
    #: one-time latencies, e.g. SwitchML's exponent round trip, are a few percent)
    seconds: float = 1.0
    #: loopback UDP, as the committed validation ran (the rings' first round
    #: trip was 0.1-0.2 s then, a lazy-loading cost since fixed: docs/host_cost.md)
    transport: str = "udp"
    min_elements: int = 200_000
    max_elements: int = 12_000_000
    #: elements of an unpaced run
    unpaced_elements: int = 4_000_000
    repeats: int = 3
    seed: int = 0
    #: |measured / model - 1| allowed at link-bound points
    tolerance: float = 0.15
    #: a point is link-bound when link rate <= cap_fraction x the measured capacity
    cap_fraction: float = 0.5
    #: the bit-exact check of every run (a reference aggregation per run)
    check: bool = True
    measure_elements: int = 1 << 22
    measure_repeats: int = 5

    def __post_init__(self) -> None:
        def bad(msg):
            raise ValueError(f"validate: {msg}")

        if not self.links_gbps and not self.unpaced:
            bad("nothing to run: give link rates or keep the unpaced runs")
        for g in self.links_gbps:
            LinkPacer(g)  # a ValueError for a bad rate
        if not self.threads and not self.serial:
            bad("nothing to run: give conversion threads or ask for the serial worker")
        for t in self.threads:
            if isinstance(t, bool) or not isinstance(t, int) or t < 1:
                bad(f"conversion threads must be integers >= 1, got {t!r}")
        for m in self.modes:
            if m not in MODEL_MODES:
                bad(f"mode {m!r}: expected one of {', '.join(MODEL_MODES)}")
        if not self.modes:
            bad("no modes")
        JobSpec(mode=self.modes[0], fmt=self.fmt, num_workers=self.workers,
                packet_elements=self.packet_elements, window=self.window)  # the job's own checks
        hc._check_fmt(self.fmt, hc.STUDY_FORMATS)
        for name in ("min_elements", "max_elements", "unpaced_elements", "repeats", "measure_elements",
                     "measure_repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{name} must be an integer >= 1, got {v!r}")
        if self.min_elements > self.max_elements:
            bad(f"min_elements {self.min_elements} > max_elements {self.max_elements}")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            bad(f"seconds must be > 0, got {self.seconds!r}")
        if not 0 < self.tolerance < 1:
            bad(f"tolerance must be in (0, 1), got {self.tolerance!r}")
        if self.transport not in ("udp", "shm"):
            bad(f"transport must be udp or shm, got {self.transport!r}")
        if not 0 < self.cap_fraction <= 1:
            bad(f"cap_fraction must be in (0, 1], got {self.cap_fraction!r}")

    def job(self, mode: str) -> JobSpec:
        return JobSpec(mode=mode, fmt=self.fmt, num_workers=self.workers,
                       packet_elements=self.packet_elements, window=self.window)

    def workers_to_run(self) -> list:
        return ([SERIAL] if self.serial else []) + list(self.threads)


def elements_for(config: ValidateConfig, mode: str, link_gbps: float | None) -> int:
    """Elements of one run: ``seconds`` of line time at the link rate, whole packets."""
    if link_gbps is None:
        n = config.unpaced_elements
    else:
        rate = hc.link_rate(MODEL_MODES[mode], link_gbps, config.fmt, config.packet_elements)
        n = min(config.max_elements, max(config.min_elements, int(rate * config.seconds)))
    E = config.packet_elements
    return max(E, n // E * E)


def retransmit_floor_ms(config: ValidateConfig, link_gbps: float | None) -> float:
    """The workers' retransmission timeout floor: twice the line time of a full
    window (which a paced link queues) plus 50 ms, at least the default 20 ms;
    a shorter floor makes a slow link's queueing look like loss."""
    if link_gbps is None:
        return 20.0
    pacer = LinkPacer(link_gbps)
    window_s = config.window * pacer.line_bytes(config.job("switchml").data_packet_bytes) / pacer.bytes_per_s
    return max(20.0, 2e3 * window_s + 50.0)


def _one_run(config: ValidateConfig, mode: str, worker, link_gbps: float | None, seed: int) -> dict:
    from hosts.allreduce import AllreduceConfig, run_allreduce

    elements = elements_for(config, mode, link_gbps)
    run = AllreduceConfig(job=config.job(mode), elements=elements, seed=seed, check=config.check,
                          conversion_threads=None if worker == SERIAL else worker, link_gbps=link_gbps,
                          timeout_ms=retransmit_floor_ms(config, link_gbps), transport=config.transport)
    report = run_allreduce(run, progress=False)
    checks = report["checks"]
    ok = bool(checks.get("bit_exact", checks["identical_across_workers"]))
    pacing = report.get("pacing") or [{}] * config.workers
    return {
        "elements": elements,
        "goodput_per_worker": report["goodput_elements_per_s"],
        "goodput": float(np.mean(report["goodput_elements_per_s"])),
        "goodput_since_all_started": float(np.mean(report["goodput_since_all_started"])),
        "link_idle_s": [p.get("idle_s") for p in pacing],
        "seconds": report["seconds"],
        "bit_exact": ok,
        "in_run_ns_per_element": report["host_conversion_ns_per_element"],
        "retransmitted": sum(w["retransmitted"] for w in report["workers"]),
        "sent": sum(w["sent"] for w in report["workers"]),
        "late_datagrams": sum(p.get("late_datagrams", 0) for p in pacing),
        "line_bytes_per_worker": [p.get("line_bytes") for p in pacing],
        "pipeline_stall_s": [p["stall_s"] for p in report.get("pipeline", [])] or None,
        "exponent_pass_s": [p["exponent_pass_s"] for p in report.get("pipeline", [])] or None,
        "link_longest_idle": [p.get("longest_idle") for p in pacing],
    }


def run_validation(config: ValidateConfig, *, command: str = "",
                   progress: Callable[[str], None] | None = None) -> dict:
    """Measure rates, run every point ``repeats`` times, compare; a JSON-ready dict."""
    started = time.time()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    notes: list[str] = []
    rates = hc.measure_rates(config.fmt, elements=config.measure_elements, repeats=config.measure_repeats,
                             block_size=config.packet_elements, num_workers=config.workers, notes=notes)
    links: list = list(config.links_gbps) + ([None] if config.unpaced else [])
    plan = [(m, w, g) for m in config.modes for w in config.workers_to_run() for g in links]
    runs: dict = {}
    for rep in range(config.repeats):  # interleaved: a noisy minute hurts every point a little
        for i, (mode, worker, link) in enumerate(plan):
            if progress:
                progress(f"run {rep + 1}/{config.repeats}, point {i + 1}/{len(plan)}: {mode}, "
                         f"{'serial' if worker == SERIAL else f'{worker} thread(s)'}, "
                         f"{'unpaced' if link is None else f'{link:g} Gb/s'}")
            runs.setdefault((mode, worker, link), []).append(
                _one_run(config, mode, worker, link, config.seed + rep))
    capacity = {(m, w): max(r["goodput"] for r in runs[(m, w, None)])
                for m in config.modes for w in config.workers_to_run() if (m, w, None) in runs}
    points = []
    for (mode, worker, link), reps in runs.items():
        model_mode = MODEL_MODES[mode]
        cores = 1 if worker == SERIAL else worker
        core = hc.per_core_rate(model_mode, rates, config.packet_elements, config.fmt)
        cpu = cores * core
        link_rate = (hc.link_rate(model_mode, link, config.fmt, config.packet_elements)
                     if link is not None else math.inf)
        model = min(link_rate, cpu)
        if worker == SERIAL:  # converts, then sends: the times add
            model = 1 / (1 / link_rate + 1 / core) if math.isfinite(link_rate) else core
        best = max(reps, key=lambda r: r["goodput"])
        cap = capacity.get((mode, worker))
        with_cap = min(model, cap) if cap is not None else model
        in_run = [r["in_run_ns_per_element"] for r in reps]
        link_bound = link is not None and cap is not None and link_rate <= config.cap_fraction * cap
        points.append({
            "mode": mode, "model_mode": model_mode, "worker": "serial" if worker == SERIAL else "pipelined",
            "conversion_threads": None if worker == SERIAL else worker,
            "link_gbps": link, "elements": best["elements"],
            "measured": best["goodput"], "measured_runs": [r["goodput"] for r in reps],
            "link_rate": None if math.isinf(link_rate) else link_rate,
            "cpu_rate": cpu, "model": model, "model_bound": ("link" if link_rate <= cpu else "cpu"),
            "capacity": cap, "model_with_capacity": with_cap,
            "binding": ("capacity" if cap is not None and cap < model else
                        ("link" if link_rate <= cpu else "cpu")),
            "link_bound": link_bound,
            "ratio_to_model": best["goodput"] / model,
            "ratio_to_model_with_capacity": best["goodput"] / with_cap,
            "within_tolerance": abs(best["goodput"] / model - 1) <= config.tolerance if link_bound else None,
            "bit_exact": all(r["bit_exact"] for r in reps),
            "in_run_ns_per_element": min(in_run),
            "in_run_core_rate": 1e9 / min(in_run) if min(in_run) > 0 else None,
            "retransmitted": best["retransmitted"], "sent": best["sent"],
            "late_datagrams": best["late_datagrams"], "pipeline_stall_s": best["pipeline_stall_s"],
            "link_idle_s": best["link_idle_s"], "seconds": best["seconds"],
            "exponent_pass_s": best["exponent_pass_s"], "link_longest_idle": best["link_longest_idle"],
            "runs": reps,
        })
    order = {(m, w, g): i for i, (m, w, g) in enumerate(plan)}
    points.sort(key=lambda p: order[(p["mode"], SERIAL if p["worker"] == "serial" else p["conversion_threads"],
                                      p["link_gbps"])])
    held = [p for p in points if p["link_bound"]]
    checks = {
        "bit_exact": all(p["bit_exact"] for p in points),
        "link_bound_points": len(held),
        "link_bound_within_tolerance": all(p["within_tolerance"] for p in held),
        "tolerance": config.tolerance,
    }
    if not held:
        notes.append("no link-bound point: every paced rate is above cap_fraction x the measured capacity")
    checks["ok"] = checks["bit_exact"] and checks["link_bound_within_tolerance"] and bool(held)
    return {
        "command": command,
        "config": asdict(config),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cores": hc.machine_cores(), "load_average_1min_at_start": load},
        "started_unix": started, "seconds": time.time() - started,
        "rates": {"label": rates.label, "fmt": rates.fmt, "ops": rates.as_dict(),
                  "per_core": {m: hc.per_core_rate(MODEL_MODES[m], rates, config.packet_elements, config.fmt)
                               for m in config.modes}},
        "capacity": [{"mode": m, "worker": "serial" if w == SERIAL else f"{w} thread(s)", "goodput": c}
                     for (m, w), c in capacity.items()],
        "points": points,
        "checks": checks,
        "notes": notes,
    }


# -- output -------------------------------------------------------------------------

_CSV_FIELDS = ("mode", "model_mode", "worker", "conversion_threads", "link_gbps", "elements", "measured",
               "link_rate", "cpu_rate", "model", "model_bound", "capacity", "model_with_capacity", "binding",
               "link_bound", "ratio_to_model", "ratio_to_model_with_capacity", "within_tolerance",
               "bit_exact", "in_run_ns_per_element", "retransmitted", "sent", "late_datagrams", "seconds",
               "link_idle_s")


def _e(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x / 1e6:.2f}"


def _load(report: dict) -> str:
    load = report["machine"].get("load_average_1min_at_start")
    return "unknown" if load is None else f"{load:.2f}"


def _idle(p: dict) -> str:
    """The paced link's idle time as a share of the run (mean over workers)."""
    idle = [x for x in (p.get("link_idle_s") or []) if x is not None]
    if not idle or not p.get("seconds"):
        return "-"
    return f"{100 * float(np.mean(idle)) / p['seconds']:.0f}%"


def _worker_label(p: dict) -> str:
    return "serial" if p["worker"] == "serial" else f"{p['conversion_threads']} thr"


def validation_lines(report: dict, markdown: bool = False) -> list[str]:
    """The table: measured beside the model, per point (M elements/s per worker)."""
    c = report["config"]
    head = ["mode", "worker", "link Gb/s", "link bound", "cpu bound", "model", "capacity", "measured",
            "measured/model", "binds", "link idle", "bit-exact", "retx/sent"]
    rows = []
    for p in report["points"]:
        rows.append([p["mode"], _worker_label(p), "unpaced" if p["link_gbps"] is None else f"{p['link_gbps']:g}",
                     _e(p["link_rate"]), _e(p["cpu_rate"]), _e(p["model"]), _e(p["capacity"]),
                     _e(p["measured"]), f"{p['ratio_to_model']:.3f}" + ("" if p["link_bound"] else "*"),
                     p["binding"], _idle(p), "yes" if p["bit_exact"] else "NO",
                     f"{p['retransmitted']}/{p['sent']}"])
    lines = [f"Host-cost model vs real allreduce: {c['workers']} workers, {c['transport']} transport, {c['fmt']}, "
             f"{c['packet_elements']} elements/packet, window {c['window']}, best of {c['repeats']}; "
             f"M elements/s per worker",
             "rates measured in this run, one core: " + ", ".join(
                 f"{m} {v / 1e9:.2f}e9/s" for m, v in report["rates"]["per_core"].items())
             + f"; 1-minute load average at start {_load(report)}", ""]
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        for r in [head] + rows:
            lines.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    ch = report["checks"]
    lines += ["", f"* not link-bound (link > {c['cap_fraction']:g} x the measured capacity, or unpaced): "
                  "shown, not held to the tolerance",
              f"checks: bit-exact {'yes' if ch['bit_exact'] else 'NO'}; {ch['link_bound_points']} link-bound "
              f"points within {100 * ch['tolerance']:.0f}% of the model: "
              f"{'yes' if ch['link_bound_within_tolerance'] else 'NO'}"]
    lines += [f"note: {n}" for n in report["notes"]]
    return lines


def write_validation(report: dict, out_dir) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in VALIDATION_FILES]
    paths[0].write_text(json.dumps(report, indent=1, default=float) + "\n")
    with open(paths[1], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        w.writeheader()
        for p in report["points"]:
            w.writerow({k: ("" if p[k] is None else
                            " ".join(f"{x:.4g}" for x in p[k] if x is not None) if isinstance(p[k], list)
                            else p[k]) for k in _CSV_FIELDS})
    paths[2].write_text("\n".join(validation_lines(report, markdown=True)) + "\n")
    plot_validation(report, paths[3])
    return paths


def plot_validation(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = report["config"]["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        pts = [p for p in report["points"] if p["mode"] == mode and p["link_gbps"] is not None]
        links = sorted({p["link_gbps"] for p in pts})
        model = {p["link_gbps"]: p["model"] for p in pts}
        ax.plot(links, [model[g] / 1e6 for g in links], "k-", lw=2, label="model: min(link, threads x core)")
        for cap in report["capacity"]:
            if cap["mode"] == mode:
                ax.axhline(cap["goodput"] / 1e6, ls=":", lw=1, color="gray")
        for label in sorted({_worker_label(p) for p in pts}):
            sel = sorted((p for p in pts if _worker_label(p) == label), key=lambda p: p["link_gbps"])
            ax.plot([p["link_gbps"] for p in sel], [p["measured"] / 1e6 for p in sel], "o--", label=f"measured, {label}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("paced link per worker [Gb/s]")
        ax.set_ylabel("goodput per worker [M elements/s]")
        ax.set_title(f"{mode} (dotted: measured unpaced capacity)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
