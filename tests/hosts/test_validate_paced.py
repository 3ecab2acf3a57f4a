"""The paced-link validation of the host-cost model (``fpisa study validate``):
the real allreduce, links paced well below the emulated system's capacity,
1 and 2 conversion threads per worker, measured goodput within a stated
tolerance of ``predict_goodput``."""

import math

import pytest

from hosts.study import host_cores as hc
from hosts.study.validate import MODEL_MODES, ValidateConfig, elements_for, run_validation

#: |measured / model - 1| allowed at a link-bound point, best of 3 runs. Measured on the
#: shared 2-core machine: 0.9-0.99 of the model at 0.05 Gb/s (the rest: one-time round
#: trips, and the link idling while a process is descheduled); with the 1-minute load
#: average near 20 (other users' jobs) a best of 2 once came out at 0.80. Without pacing a point
#: would be ~5x the model; a worker that drained its window between chunks, or re-sent
#: spuriously, or SwitchML's exponent pass over the shared-memory rings (0.1-0.2 s
#: round trip here), gave 0.6-0.8.
TOLERANCE = 0.2


@pytest.mark.slow
def test_paced_allreduce_goodput_matches_the_model():
    config = ValidateConfig(links_gbps=(0.05,), threads=(1, 2), modes=("fpisa", "switchml"), seconds=0.3,
                            unpaced_elements=3_000_000, repeats=3, tolerance=TOLERANCE,
                            measure_elements=1 << 20, measure_repeats=3)
    report = run_validation(config)
    points = report["points"]
    assert len(points) == 2 * 2 * 2  # modes x threads x (paced, unpaced)
    assert report["checks"]["bit_exact"]
    paced = [p for p in points if p["link_gbps"] is not None]
    assert len(paced) == 4
    for p in paced:
        link = hc.link_rate(MODEL_MODES[p["mode"]], 0.05, "fp32", 255)
        # the two bounds of the model, with rates measured in this run: the link binds
        assert p["model"] == pytest.approx(link) and p["model_bound"] == "link"
        assert p["cpu_rate"] > 10 * link
        # far below what the emulated system does unpaced: the model's bounds are what binds
        assert p["link_bound"], (p["capacity"], link)
        # never faster than the link (drained before the clock stops), and close to it
        assert p["measured"] <= link * 1.001
        assert abs(p["ratio_to_model"] - 1) <= TOLERANCE, (
            p["mode"], p["conversion_threads"], [r["goodput"] / p["model"] for r in p["runs"]],
            "link idle s", [r["link_idle_s"] for r in p["runs"]], "retransmitted", p["retransmitted"])
        assert p["elements"] == elements_for(config, p["mode"], 0.05)
    assert report["checks"]["ok"]
    # unpaced: the model (no link bound) predicts the conversion rate; the emulated system caps far below
    for p in points:
        if p["link_gbps"] is None:
            assert p["binding"] == "capacity" and p["capacity"] < p["cpu_rate"]
            assert math.isclose(p["measured"], p["capacity"])


@pytest.mark.parametrize("kw,match", [
    (dict(threads=(0,)), "conversion threads"),
    (dict(links_gbps=(-1.0,)), "link rate"),
    (dict(modes=("exact",)), "mode"),
    (dict(links_gbps=(), unpaced=False), "nothing to run"),
    (dict(tolerance=0), "tolerance"),
    (dict(repeats=0), "repeats"),
])
def test_validate_config_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        ValidateConfig(**kw)
