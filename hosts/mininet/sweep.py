"""Grids of Mininet experiments: a TOML config in, CSV + JSON rows and plots out.

Config (see docs/sweeps/example.toml)::

    [experiment]        # ExperimentConfig fields shared by every point
    topo = "star"
    elements = 50000
    [grid]              # lists; every combination is one experiment
    workers = [2, 3, 4]
    loss = [0.0, 0.05]
    mode = ["fpisa", "fpisa-a", "switchml"]
    bw_mbit = [100]
    [output]
    dir = "."           # relative to the config file
    name = "example"    # -> example.csv, example.json, example.png

One row per allreduce (points x repeats); every row carries the full
configuration it was made with. A point that fails is recorded with its
error and the sweep goes on; the exit status says whether all points ran
and were bit-exact.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import platform
import time
from dataclasses import dataclass, fields

import numpy as np
from tqdm import tqdm

from .config import ExperimentConfig

__all__ = ["SweepConfig", "load_sweep", "run_sweep", "plot_rows", "CSV_METRICS"]

#: measured columns of the CSV, after the configuration's columns
CSV_METRICS = ("repeat", "seconds", "goodput_mbit", "payload_line_rate_mbit", "goodput_ratio", "sent",
               "retransmitted", "bit_exact", "mismatched_elements", "bit_exact_fraction", "mean_ulp",
               "p99_ulp", "max_ulp", "mean_rel_error", "extra_mean_ulp_vs_star", "links", "error")
_CONFIG_COLUMNS = tuple(f.name for f in fields(ExperimentConfig))


@dataclass(frozen=True)
class SweepConfig:
    base: dict
    grid: dict
    out_dir: str
    name: str
    source: str

    def points(self) -> list[ExperimentConfig]:
        keys = list(self.grid)
        return [ExperimentConfig.from_dict({**self.base, **dict(zip(keys, combo))})
                for combo in itertools.product(*(self.grid[k] for k in keys))]

    def path(self, suffix: str) -> str:
        return os.path.join(self.out_dir, f"{self.name}.{suffix}")


def load_sweep(path: str) -> SweepConfig:
    """Read and validate a sweep config (ValueError with the reason)."""
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:
        raise ValueError("sweep configs are TOML, read with tomllib: needs Python >= 3.11") from None
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"cannot read sweep config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"sweep config {path} is not valid TOML: {e}") from None
    unknown = sorted(set(doc) - {"experiment", "grid", "output"})
    if unknown:
        raise ValueError(f"sweep config: unknown sections {unknown}; expected experiment, grid, output")
    base, grid, output = doc.get("experiment", {}), doc.get("grid", {}), doc.get("output", {})
    if not grid:
        raise ValueError("sweep config: [grid] is empty; give lists of values, e.g. workers = [2, 4]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep config: grid.{key} must be a non-empty list, got {values!r}")
        if key in base:
            raise ValueError(f"sweep config: {key} is both in [experiment] and [grid]")
    unknown = sorted(set(output) - {"dir", "name"})
    if unknown:
        raise ValueError(f"sweep config: unknown [output] keys {unknown}; expected dir, name")
    here = os.path.dirname(os.path.abspath(path))
    name = output.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"sweep config: output.name must be a plain file name, got {name!r}")
    config = SweepConfig(base, grid, os.path.normpath(os.path.join(here, output.get("dir", "."))),
                         name, os.path.abspath(path))
    config.points()  # every point validated before anything runs
    return config


def _label(c: ExperimentConfig) -> str:
    return f"{c.topo} K={c.workers} {c.mode} loss={c.loss:g} bw={c.bw_mbit:g}"


def _rows(config: ExperimentConfig, report: dict | None, error: str | None) -> list[dict]:
    base = config.as_dict()
    if report is None:
        return [{**base, "repeat": None, "error": error}]
    rows = []
    for run in report["runs"]:
        checks = run.get("checks", {})
        err = checks.get("error_vs_exact", {})
        rows.append({
            **base, **{k: run.get(k) for k in ("repeat", "seconds", "goodput_mbit", "payload_line_rate_mbit",
                                              "goodput_ratio", "sent", "retransmitted")},
            "bit_exact": checks.get("bit_exact"),
            "mismatched_elements": sum(checks["mismatched_elements"]) if "mismatched_elements" in checks else None,
            **{k: err.get(k) for k in ("bit_exact_fraction", "mean_ulp", "p99_ulp", "max_ulp", "mean_rel_error")},
            "extra_mean_ulp_vs_star": checks.get("extra_mean_ulp_vs_star"),
            "links": ",".join(f"{k}={v}" for k, v in report["links"].items()),
            "error": None,
        })
    return rows


def run_sweep(sweep: SweepConfig, run=None, *, command: str = "") -> tuple[list[dict], bool]:
    """Run every point; write CSV, JSON and the plot; return (rows, all ok)."""
    from .experiment import ExperimentError, run_experiment

    run = run or run_experiment
    points = sweep.points()
    os.makedirs(sweep.out_dir, exist_ok=True)
    progress = tqdm(total=len(points), unit="point", desc="sweep", dynamic_ncols=True)
    rows, reports, ok = [], [], True
    try:
        for config in points:
            progress.set_postfix_str(_label(config))
            try:
                report, error = run(config), None
            except ExperimentError as e:
                report, error = None, str(e)
            ok &= report is not None and (not config.check or report["summary"]["bit_exact"])
            rows += _rows(config, report, error)
            reports.append({"config": config.as_dict(), "error": error,
                            **({k: report[k] for k in ("runs", "summary", "links", "kernel")} if report else {})})
            progress.update(1)
            # written after every point: an interrupted sweep keeps what it measured
            _write(sweep, rows, reports, command)
    finally:
        progress.close()
    plot_rows(rows, sweep.path("png"), title=f"fpisa mininet sweep {os.path.basename(sweep.source)}")
    return rows, ok


def _write(sweep: SweepConfig, rows: list[dict], reports: list[dict], command: str) -> None:
    with open(sweep.path("csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CONFIG_COLUMNS + CSV_METRICS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in writer.fieldnames})
    meta = {"command": command, "config_file": os.path.basename(sweep.source),
            "grid": sweep.grid, "experiment": sweep.base, "python": platform.python_version(),
            "kernel": platform.release(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(sweep.path("json"), "w") as f:
        json.dump({"sweep": meta, "rows": rows, "points": reports}, f, indent=1, default=float)


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


# -- plots -----------------------------------------------------------------------------

def _median_by(rows: list[dict], x: str, y: str, where: dict,
               by_switch: bool = False) -> dict[str, tuple[list, list]]:
    """mode (and switch, if by_switch) -> (xs, median y over repeats) for rows matching ``where``."""
    out: dict[str, dict] = {}
    for r in rows:
        if r.get(y) is None or any(r.get(k) != v for k, v in where.items()):
            continue
        line = f"{r['mode']} ({r['switch']})" if by_switch else r["mode"]
        out.setdefault(line, {}).setdefault(r[x], []).append(float(r[y]))
    return {mode: (sorted(v), [float(np.median(v[k])) for k in sorted(v)]) for mode, v in out.items()}


def plot_rows(rows: list[dict], path: str, title: str = "") -> None:
    """Completion time and goodput vs workers and vs loss, error vs exact, per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if r.get("seconds") is not None]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    if not good:
        fig.text(0.5, 0.5, "no successful runs", ha="center")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    loss0 = min(r["loss"] for r in good)
    k_max = max(r["workers"] for r in good)
    bw = sorted({r["bw_mbit"] for r in good})[-1]
    topo = good[0]["topo"]
    # a sweep over switches (emulator vs BMv2) gets one line per mode and switch,
    # and log axes for time and goodput (they differ by orders of magnitude)
    by_switch = len({r["switch"] for r in good}) > 1
    panels = [
        (axes[0, 0], "workers", "seconds", {"loss": loss0, "bw_mbit": bw}, "completion time [s]"),
        (axes[0, 1], "loss", "seconds", {"workers": k_max, "bw_mbit": bw}, "completion time [s]"),
        (axes[0, 2], "workers", "mean_ulp", {"loss": loss0, "bw_mbit": bw}, "mean error vs exact [ulp]"),
        (axes[1, 0], "workers", "goodput_mbit", {"loss": loss0, "bw_mbit": bw}, "goodput per worker [Mbit/s]"),
        (axes[1, 1], "loss", "goodput_mbit", {"workers": k_max, "bw_mbit": bw}, "goodput per worker [Mbit/s]"),
        (axes[1, 2], "workers", "max_ulp", {"loss": loss0, "bw_mbit": bw}, "max error vs exact [ulp]"),
    ]
    if any(r.get("extra_mean_ulp_vs_star") is not None for r in good):
        # two-level: what the hierarchy costs (or saves) against a star with the same arrivals
        panels[-1] = (axes[1, 2], "workers", "extra_mean_ulp_vs_star", {"loss": loss0, "bw_mbit": bw},
                      "extra mean error vs star [ulp]")
    for ax, x, y, where, ylabel in panels:
        for line, (xs, ys) in sorted(_median_by(good, x, y, where, by_switch).items()):
            ax.plot(xs, ys, marker="o", label=line, ls="--" if "(bmv2)" in line else "-")
        if by_switch and y in ("seconds", "goodput_mbit"):
            ax.set_yscale("log")
        if y == "goodput_mbit":
            rates = [r["payload_line_rate_mbit"] for r in good
                     if r.get("payload_line_rate_mbit") and r["bw_mbit"] == bw and r["mode"] != "switchml"]
            if rates:
                ax.axhline(rates[0], color="grey", ls="--", lw=1, label="payload line rate")
        if y in ("mean_ulp", "max_ulp", "extra_mean_ulp_vs_star"):
            ax.set_yscale("symlog", linthresh=1)
        fixed = ", ".join(f"{k}={v:g}" for k, v in where.items())
        ax.set_title(f"{ylabel.split(' [')[0]} vs {x} ({fixed})", fontsize=10)
        ax.set_xlabel("workers" if x == "workers" else "loss probability per link and direction")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} ({topo}; medians over repeats)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
