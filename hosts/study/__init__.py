"""Model-based studies of the FPISA paper's claims.

- :mod:`hosts.study.host_cores`: the CPU-constrained host-cost model (goodput
  = min(link payload rate, cores x per-core rate), cores to line rate, training
  speed-up) and its single-core rate measurement; :func:`predict_goodput` is the
  one-point API a paced-link validation calls.
- :mod:`hosts.study.report`: the study over a grid, the comparison with the
  paper, the JSON / CSV / PNG report.
- ``profiles.json``: training profiles, a source on every figure.
- :mod:`hosts.study.cli`: ``fpisa study host-cores``.
"""

from .host_cores import (
    MODES,
    GoodputPoint,
    HostRates,
    Rate,
    cores_to_line_rate,
    link_rate,
    load_profiles,
    measure_rates,
    paper_rates,
    payload_efficiency,
    per_core_rate,
    predict_goodput,
    training_speedup,
)

__all__ = [
    "MODES",
    "GoodputPoint",
    "HostRates",
    "Rate",
    "cores_to_line_rate",
    "link_rate",
    "load_profiles",
    "measure_rates",
    "paper_rates",
    "payload_efficiency",
    "per_core_rate",
    "predict_goodput",
    "training_speedup",
]
