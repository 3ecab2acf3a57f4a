"""The ``fpisa train`` experiment: does training converge the same when the
gradients are summed by FPISA, FPISA-A or SwitchML instead of float32?

One *run* is (mode, seed): a model initialized from the seed, trained for
some epochs by :class:`~fpisa.torch.simulator.KWorkerSimulator` with K
workers, the batch order also drawn from the seed. For one seed every mode
starts from the same weights and sees the same batches in the same order,
so the modes differ only in how gradients are summed (paired comparison).
The data sets need no download: scikit-learn's bundled 8x8 digits, or a
generated Gaussian-mixture problem; their train/test split is fixed (not
seed dependent).

Results: ``results.json`` (configuration, environment, every run's
per-epoch record, the summary per mode), ``epochs.csv`` (one row per run
and epoch), ``summary.csv`` and ``summary.md`` (one row per mode) and
``accuracy.png`` (test accuracy per epoch per mode, mean over seeds with a
min-max band, and the aggregation error against the exact sum).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

import fpisa

from . import require_torch
from .aggregation import ARRIVALS, AggregationStats
from .simulator import KWorkerSimulator, SimulatorConfig

torch = require_torch()
from torch import nn  # noqa: E402

__all__ = ["TrainConfig", "run_training", "write_results", "load_dataset", "build_model",
           "DATASETS", "MODELS", "TRAIN_MODES"]

DATASETS = ("digits", "synthetic")
MODELS = ("mlp", "cnn")
#: the modes a run can train with ("exact" is the yardstick, not a switch)
TRAIN_MODES = ("float32", "fpisa", "fpisa-a", "switchml")
#: the fixed train/test split and the synthetic data set do not depend on the run seed
DATA_SEED = 20220404
NUM_CLASSES = 10
NUM_FEATURES = 64  # both data sets: 8x8 images (digits) or 64 features (synthetic)


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "digits"
    model: str = "mlp"
    workers: int = 8
    modes: tuple = TRAIN_MODES
    seeds: tuple = (0,)
    epochs: int = 5
    #: global batch per step, split into ``workers`` equal shards
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    arrival: str = "packet"
    packet_elements: int = 64
    rounding: str = "rz"
    register_bits: int = 32
    #: compute the exact sum every step (error statistics); costs one more aggregation
    measure_error: bool = True
    test_fraction: float = 0.25
    #: torch intra-op threads; 1 keeps runs reproducible and the machine shareable
    threads: int = 1
    #: synthetic data set size
    synthetic_samples: int = 3000

    def __post_init__(self) -> None:
        def bad(msg):
            raise ValueError(f"train: {msg}")

        if self.dataset not in DATASETS:
            bad(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.model not in MODELS:
            bad(f"model must be one of {MODELS}, got {self.model!r}")
        if not self.modes:
            bad("at least one mode is needed")
        for m in self.modes:
            if m not in TRAIN_MODES:
                bad(f"mode must be one of {TRAIN_MODES}, got {m!r}")
        if len(set(self.modes)) != len(self.modes) or len(set(self.seeds)) != len(self.seeds):
            bad("modes and seeds must not repeat")
        if not self.seeds:
            bad("at least one seed is needed")
        if self.arrival not in ARRIVALS:
            bad(f"arrival must be one of {ARRIVALS}, got {self.arrival!r}")
        if not 1 <= self.workers <= 256:
            bad(f"workers must be 1..256, got {self.workers}")
        if self.epochs < 1:
            bad(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < self.workers:
            bad(f"batch size {self.batch_size} is smaller than the {self.workers} workers")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not 0 <= self.momentum < 1:
            bad(f"need lr > 0 and 0 <= momentum < 1, got {self.lr}, {self.momentum}")
        if not 0 < self.test_fraction < 1:
            bad(f"test fraction must be in (0, 1), got {self.test_fraction}")
        if self.threads < 1:
            bad(f"threads must be >= 1, got {self.threads}")
        if self.synthetic_samples < 100:
            bad(f"synthetic data set needs >= 100 samples, got {self.synthetic_samples}")
        # the simulator validates packet_elements, rounding, register_bits
        SimulatorConfig(workers=self.workers, mode=self.modes[0], arrival=self.arrival,
                        packet_elements=self.packet_elements, rounding=self.rounding,
                        register_bits=self.register_bits)


    def command(self, out: str | None = None) -> str:
        """An ``fpisa train`` command line that reproduces this configuration."""
        d = TrainConfig()
        parts = ["fpisa train", f"--dataset {self.dataset}", f"--model {self.model}",
                 f"--workers {self.workers}", "--mode " + " ".join(self.modes),
                 f"--epochs {self.epochs}", "--seed " + " ".join(map(str, self.seeds))]
        for flag, name in (("--batch-size", "batch_size"), ("--lr", "lr"), ("--momentum", "momentum"),
                           ("--arrival", "arrival"), ("--packet-elements", "packet_elements"),
                           ("--rounding", "rounding"), ("--register-bits", "register_bits"),
                           ("--threads", "threads")):
            if getattr(self, name) != getattr(d, name):
                parts.append(f"{flag} {getattr(self, name)}")
        if not self.measure_error:
            parts.append("--no-error")
        if out:
            parts.append(f"--out {out}")
        return " ".join(parts)


# -- data and models -------------------------------------------------------------------

def load_dataset(name: str, *, test_fraction: float = 0.25, synthetic_samples: int = 3000):
    """(x_train, y_train, x_test, y_test): float32 (N, 64) features, int64 labels."""
    rng = np.random.default_rng(DATA_SEED)
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise ImportError("the digits data set comes with scikit-learn: "
                              "pip install scikit-learn", name="sklearn") from exc
        digits = load_digits()  # bundled with scikit-learn: no download
        x = (digits.data / 16.0).astype(np.float32)
        y = digits.target.astype(np.int64)
    elif name == "synthetic":
        # a Gaussian mixture, two clusters per class (so a class is not one
        # convex blob): learnable to roughly 90%, with overlap left to make mistakes on
        centers = 0.5 * rng.standard_normal((NUM_CLASSES * 2, NUM_FEATURES))
        cluster = rng.integers(0, NUM_CLASSES * 2, synthetic_samples)
        x = (centers[cluster] + rng.standard_normal((synthetic_samples, NUM_FEATURES))).astype(np.float32)
        y = (cluster % NUM_CLASSES).astype(np.int64)
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    perm = rng.permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    t = torch.from_numpy
    return t(x[train]), t(y[train]), t(x[test]), t(y[test])


class _Image(nn.Module):
    """(N, 64) -> (N, 1, 8, 8) so the CNN takes the same inputs as the MLP."""

    def forward(self, x):
        return x.view(-1, 1, 8, 8)


def build_model(name: str, seed: int) -> nn.Module:
    """A small model for 64 inputs and 10 classes, initialized from ``seed``."""
    torch.manual_seed(seed)
    if name == "mlp":
        return nn.Sequential(nn.Linear(NUM_FEATURES, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                             nn.Linear(64, NUM_CLASSES))
    if name == "cnn":
        return nn.Sequential(_Image(), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * 2 * 2, NUM_CLASSES))
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


# -- progress --------------------------------------------------------------------------

class Progress:
    """Progress on stderr: a live bar (tqdm) on a terminal, and one line per epoch."""

    def __init__(self, total_steps: int, enabled: bool = True, stream=None):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._bar = tqdm(total=max(1, total_steps), unit="step", desc="train", file=self.stream,
                         disable=not (enabled and self.stream.isatty()), leave=False,
                         dynamic_ncols=True, mininterval=0.1)

    def step(self, label: str) -> None:
        self._bar.set_postfix_str(label, refresh=False)
        self._bar.update(1)

    def epoch(self, line: str) -> None:
        if self.enabled:
            self._bar.write(line, file=self.stream)

    def close(self) -> None:
        self._bar.close()


# -- training ----------------------------------------------------------------------------

def _evaluate(model, x, y) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return loss, accuracy


def _batches(n: int, batch_size: int, seed: int, epoch: int):
    # the order depends on (seed, epoch) only: every mode of a seed sees the same batches
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    # drop the last partial batch: every step has equal shards, as DDP ranks would
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _stats_fields(stats: AggregationStats) -> dict:
    d = stats.as_dict()
    return {k: d[k] for k in ("elements", "overflow_elements", "overwrite_events", "nonfinite_results",
                              "bit_exact_fraction", "mean_ulp", "max_ulp", "relative_l2_error",
                              "max_rel_error")}


def train_one(config: TrainConfig, mode: str, seed: int, data, progress: Progress | None = None) -> dict:
    """One (mode, seed) run; its per-epoch record (JSON-ready)."""
    x_train, y_train, x_test, y_test = data
    model = build_model(config.model, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    sim = KWorkerSimulator(model, nn.functional.cross_entropy, optimizer, SimulatorConfig(
        workers=config.workers, mode=mode, arrival=config.arrival, seed=seed,
        packet_elements=config.packet_elements, rounding=config.rounding,
        register_bits=config.register_bits, measure_error=config.measure_error))
    run = {"mode": mode, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
           "epochs": [], "failed": None}
    start = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.monotonic()
        stats = AggregationStats()
        losses = []
        try:
            for index in _batches(len(x_train), config.batch_size, seed, epoch):
                result = sim.step(x_train[index], y_train[index])
                losses.append(result.loss)
                stats.merge(result.stats)
                if progress is not None:
                    progress.step(f"{mode} seed {seed} epoch {epoch}/{config.epochs} loss {result.loss:.4f}")
        except ValueError as exc:
            # e.g. switchml refusing Inf/NaN gradients: the run diverged; record it, go on
            run["failed"] = f"epoch {epoch}: {exc}"
            break
        test_loss, test_accuracy = _evaluate(model, x_test, y_test)
        _, train_accuracy = _evaluate(model, x_train, y_train)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_accuracy": train_accuracy,
                  "test_loss": test_loss, "test_accuracy": test_accuracy, "steps": sim.steps,
                  "seconds": time.monotonic() - epoch_start, **_stats_fields(stats)}
        run["epochs"].append(record)
        if progress is not None:
            err = record["relative_l2_error"]
            progress.epoch(f"{mode:>8} seed {seed} epoch {epoch}/{config.epochs}: loss "
                           f"{record['train_loss']:.4f} test acc {test_accuracy:.4f}"
                           + (f" rel-L2 err {err:.2e}" if err is not None else ""))
    run["seconds"] = time.monotonic() - start
    run["final_test_accuracy"] = run["epochs"][-1]["test_accuracy"] if run["epochs"] and not run["failed"] else None
    run["aggregation"] = _stats_fields(sim.stats)
    return run


def _summary(config: TrainConfig, runs: list[dict]) -> list[dict]:
    rows = []
    for mode in config.modes:
        mine = [r for r in runs if r["mode"] == mode]
        acc = np.array([r["final_test_accuracy"] for r in mine if r["final_test_accuracy"] is not None])
        stats = [r["aggregation"] for r in mine]
        l2 = [s["relative_l2_error"] for s in stats if s["relative_l2_error"] is not None]
        rows.append({
            "mode": mode,
            "runs": len(mine),
            "failed_runs": sum(r["failed"] is not None for r in mine),
            "final_test_accuracy_mean": float(acc.mean()) if acc.size else None,
            "final_test_accuracy_std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0 if acc.size else None,
            "final_test_accuracy_min": float(acc.min()) if acc.size else None,
            "final_test_accuracy_max": float(acc.max()) if acc.size else None,
            "relative_l2_error_mean": float(np.mean(l2)) if l2 else None,
            "bit_exact_fraction_mean": (float(np.mean([s["bit_exact_fraction"] for s in stats]))
                                        if l2 else None),
            "overflow_elements": sum(s["overflow_elements"] for s in stats),
            "overwrite_events": sum(s["overwrite_events"] for s in stats),
            "nonfinite_results": sum(s["nonfinite_results"] for s in stats),
            "aggregated_elements": sum(s["elements"] for s in stats),
        })
    return rows


def run_training(config: TrainConfig, *, progress: bool = True, out: str | None = None) -> dict:
    """Every (mode, seed) run of ``config``; the report (JSON-ready)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        data = load_dataset(config.dataset, test_fraction=config.test_fraction,
                            synthetic_samples=config.synthetic_samples)
        steps = len(_batches(len(data[0]), config.batch_size, 0, 1))
        bar = Progress(steps * config.epochs * len(config.modes) * len(config.seeds), enabled=progress)
        try:
            runs = [train_one(config, mode, seed, data, bar) for seed in config.seeds for mode in config.modes]
        finally:
            bar.close()
    finally:
        torch.set_num_threads(threads)
    return {
        "config": {**asdict(config), "modes": list(config.modes), "seeds": list(config.seeds)},
        "command": config.command(out),
        "data": {"train_samples": len(data[0]), "test_samples": len(data[2]), "steps_per_epoch": steps,
                 "shard_size": config.batch_size // config.workers},
        "environment": {"fpisa": fpisa.__version__, "torch": torch.__version__, "numpy": np.__version__,
                        "python": platform.python_version(), "machine": platform.machine()},
        "runs": runs,
        "summary": _summary(config, runs),
    }


# -- results -----------------------------------------------------------------------------

EPOCH_COLUMNS = ("mode", "seed", "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                 "steps", "elements", "overflow_elements", "overwrite_events", "nonfinite_results",
                 "bit_exact_fraction", "mean_ulp", "max_ulp", "relative_l2_error", "max_rel_error",
                 "seconds")


def summary_markdown(report: dict) -> str:
    """The README table: final test accuracy per mode, mean ± std over seeds, and the errors."""
    c = report["config"]
    lines = [
        f"`{report['command']}`",
        "",
        f"{c['dataset']} / {c['model']}, K={c['workers']} workers, {c['epochs']} epochs, "
        f"seeds {', '.join(map(str, c['seeds']))}, arrival order `{c['arrival']}`",
        "",
        "| mode | final test accuracy (mean ± std) | min – max | gradient rel. L2 error vs exact "
        "| bit-exact elements | overflowed elements | FPISA-A overwrites |",
        "|---|---|---|---|---|---|---|",
    ]

    def pct(x):
        return "–" if x is None else f"{100 * x:.2f}%"

    for row in report["summary"]:
        mean, std = row["final_test_accuracy_mean"], row["final_test_accuracy_std"]
        acc = "–" if mean is None else f"{100 * mean:.2f}% ± {100 * std:.2f}"
        span = f"{pct(row['final_test_accuracy_min'])} – {pct(row['final_test_accuracy_max'])}"
        l2 = row["relative_l2_error_mean"]
        failed = f" ({row['failed_runs']} of {row['runs']} runs failed)" if row["failed_runs"] else ""
        lines.append(f"| {row['mode']}{failed} | {acc} | {span} | "
                     f"{'–' if l2 is None else f'{l2:.2e}'} | {pct(row['bit_exact_fraction_mean'])} | "
                     f"{row['overflow_elements']} | {row['overwrite_events']} |")
    return "\n".join(lines) + "\n"


def write_results(report: dict, out_dir: str) -> dict:
    """results.json, epochs.csv, summary.csv, summary.md, accuracy.png; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in
             ("results.json", "epochs.csv", "summary.csv", "summary.md", "accuracy.png")}
    with open(paths["results.json"], "w") as f:
        json.dump(report, f, indent=1, allow_nan=True)
        f.write("\n")
    with open(paths["epochs.csv"], "w", newline="") as f:
        w = csv.DictWriter(f, EPOCH_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for run in report["runs"]:
            for record in run["epochs"]:
                w.writerow({"mode": run["mode"], "seed": run["seed"], **record})
    with open(paths["summary.csv"], "w", newline="") as f:
        w = csv.DictWriter(f, list(report["summary"][0]))
        w.writeheader()
        w.writerows(report["summary"])
    with open(paths["summary.md"], "w") as f:
        f.write(summary_markdown(report))
    plot_accuracy(report, paths["accuracy.png"])
    return paths


def plot_accuracy(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    c = report["config"]
    fig, (ax_acc, ax_err) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in c["modes"]:
        runs = [r for r in report["runs"] if r["mode"] == mode and r["epochs"]]
        if not runs:
            continue
        epochs = min(len(r["epochs"]) for r in runs)
        x = np.arange(1, epochs + 1)
        acc = np.array([[e["test_accuracy"] for e in r["epochs"][:epochs]] for r in runs])
        (line,) = ax_acc.plot(x, 100 * acc.mean(axis=0), marker="o", ms=3, label=mode)
        ax_acc.fill_between(x, 100 * acc.min(axis=0), 100 * acc.max(axis=0), color=line.get_color(),
                            alpha=0.15, lw=0)
        err = [[e["relative_l2_error"] for e in r["epochs"][:epochs]] for r in runs]
        if all(v is not None for row in err for v in row):
            err = np.array(err, dtype=float)
            # float32 can be exactly right for a whole epoch: keep it on a log axis
            ax_err.plot(x, np.maximum(err.mean(axis=0), 1e-12), marker="o", ms=3, label=mode,
                        color=line.get_color())
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)",
               title=f"{c['dataset']} / {c['model']}, K={c['workers']}, {len(c['seeds'])} seeds "
                     "(mean, min-max band)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    for ax in (ax_acc, ax_err):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_err.set(xlabel="epoch", ylabel="||sum - exact|| / ||exact||", yscale="log",
               title="aggregated gradient error vs exact sum (mean over seeds)")
    ax_err.grid(alpha=0.3, which="both")
    if ax_err.lines:
        ax_err.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
