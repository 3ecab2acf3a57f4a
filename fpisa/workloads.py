"""Synthetic per-worker data for experiments: what K workers would send.

Every generator takes (workers, elements, seed) and returns a (K, n)
float32 array; the same seed gives the same data on every machine.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WORKLOADS", "generate"]


def _normal(rng, K, n):
    return rng.standard_normal((K, n))


def _heavy_tailed(rng, K, n):
    # Student-t with 2 degrees of freedom: infinite variance, wide exponent range
    return rng.standard_t(2.0, (K, n))


def _cancelling(rng, K, n):
    # worker values of large magnitude whose sum is small: the hard case for
    # any scheme that aligns to the largest exponent
    base = rng.standard_normal((1, n)) * 1e3
    signs = np.where(np.arange(K)[:, None] % 2 == 0, 1.0, -1.0)
    return base * signs + rng.standard_normal((K, n))


def _gradient_like(rng, K, n):
    # a shared signal plus per-worker noise, with per-layer scales spanning
    # several binades (gradients of different layers differ by orders of magnitude)
    layers = max(1, n // 4096)
    scale = np.repeat(np.exp2(rng.uniform(-14, -2, layers)), -(-n // layers))[:n]
    signal = rng.standard_normal(n)
    noise = rng.standard_normal((K, n))
    return (signal + 2.0 * noise) * scale


WORKLOADS = {
    "normal": _normal,
    "heavy-tailed": _heavy_tailed,
    "cancelling": _cancelling,
    "gradient-like": _gradient_like,
}


def generate(workload: str, workers: int, elements: int, seed: int = 0) -> np.ndarray:
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; expected one of {sorted(WORKLOADS)}")
    if workers < 1 or elements < 1:
        raise ValueError(f"need workers >= 1 and elements >= 1, got {workers}, {elements}")
    rng = np.random.default_rng(seed)
    return WORKLOADS[workload](rng, workers, elements).astype(np.float32)
