"""``fpisa mininet run --switch bmv2``: BMv2 simple_switch as the star's switch node.

The order-free check (:func:`hosts.mininet.bmv2.check_unordered`) is
tested everywhere; the real runs need root, Mininet, simple_switch and
the compiled programs (or p4c to compile them) and skip otherwise, with
the reason. They are small (BMv2 runs these programs at a few hundred
packets/s here): a K=3 FPISA star with 3% loss per link and direction,
and a K=2 SwitchML star (its two passes: exponent max, then int32 sum).
Besides the results, BMv2's own counters must show that it did the
aggregation (every worker's packet folded in once, one multicast per slot).
"""

import json
import os
import subprocess

import numpy as np
import pytest

import fpisa
from hosts.allreduce import gradient_like
from hosts.mininet.bmv2 import bmv2_missing, check_unordered
from hosts.mininet.config import ExperimentConfig
from hosts.mininet.network import mininet_missing


def _values(config: ExperimentConfig) -> np.ndarray:
    return np.stack([gradient_like(config.elements, k, config.seed, config.fmt)
                     for k in range(config.workers)])


def test_unordered_check_accepts_any_arrival_order_per_packet():
    config = ExperimentConfig(switch="bmv2", workers=3, elements=48 * 20 + 5)
    values = _values(config)
    orders = np.array([(0, 1, 2), (2, 1, 0), (1, 2, 0)])
    # each packet (48 elements) arrived in its own order, as at a switch
    per_packet = orders[np.arange(21) % 3]
    result = fpisa.aggregate(values, "fpisa", order=np.repeat(per_packet, 48, axis=0)[:config.elements],
                             block_size=48)
    checks = check_unordered(config, values, [result, result.copy(), result.copy()])
    assert checks["bit_exact"], checks
    assert checks["order_check"]["orders_tried"] == 6
    assert checks["order_check"]["packets"] == 21
    assert checks["order_check"]["packets_matching_some_order"] == 21


def test_unordered_check_catches_a_wrong_result_and_disagreeing_workers():
    config = ExperimentConfig(switch="bmv2", workers=3, elements=48 * 10)
    values = _values(config)
    result = fpisa.aggregate(values, "fpisa", block_size=48)
    bad = result.copy()
    bad[48 * 7 + 3] ^= 1  # one mantissa bit of one element of packet 7
    checks = check_unordered(config, values, [bad, bad, bad])
    assert not checks["bit_exact"]
    assert checks["mismatched_packets"] == [7]
    assert checks["order_check"]["packets_matching_some_order"] == 9
    checks = check_unordered(config, values, [result, result, bad])
    assert not checks["identical_across_workers"] and not checks["bit_exact"]


def test_unordered_check_switchml_uses_one_reference():
    config = ExperimentConfig(switch="bmv2", mode="switchml", workers=4, elements=48 * 5)
    values = _values(config)
    result = fpisa.aggregate(values, "switchml", block_size=48)
    checks = check_unordered(config, values, [result] * 4)
    assert checks["bit_exact"] and checks["order_check"]["orders_tried"] == 1
    bad = result.copy()
    bad[0] ^= 1 << 5
    assert check_unordered(config, values, [bad] * 4)["mismatched_packets"] == [0]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "Mininet experiments need root (network namespaces)"
    why = mininet_missing()
    if why:
        return f"Mininet unavailable: {why}"
    for mode in ("fpisa", "switchml"):
        why = bmv2_missing(ExperimentConfig(switch="bmv2", mode=mode))
        if why:
            return f"BMv2 unavailable: {why}"
    return None


_why = _why_not()


def leftovers() -> list[str]:
    """simple_switch processes of Mininet runs (their work directory is in the
    run's fpisa-mininet-* directory) and namespace names still around."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # exited meanwhile
        if b"simple_switch" in cmdline and b"fpisa-mininet-" in cmdline:
            found.append(f"process {pid}")
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line for line in names.splitlines() if line.startswith("fpisa-mn-")]
    return found


def run(**kwargs) -> dict:
    from hosts.mininet.experiment import run_experiment

    report = run_experiment(ExperimentConfig(switch="bmv2", bw_mbit=100.0, **kwargs))
    print(json.dumps({"summary": report["summary"], "links": report["links"], "runs": report["runs"],
                      "switches": report["switches"]}, indent=1, default=float))
    return report


@pytest.mark.root
@pytest.mark.mininet
@pytest.mark.skipif(_why is not None, reason=str(_why))
def test_bmv2_star_k3_with_loss_matches_the_model():
    config = {"workers": 3, "elements": 48 * 60, "loss": 0.03}
    report = run(**config)
    checks = report["runs"][0]["checks"]
    assert checks["identical_across_workers"]
    assert checks["order_check"]["packets_matching_some_order"] == 60
    assert checks["bit_exact"]
    counters = report["switches"][0]["bmv2_counters"]
    # BMv2 itself aggregated: each worker's packet folded in exactly once per
    # slot, one multicast per completed slot, nothing dropped as malformed
    assert counters["aggregated"] == 3 * 60
    assert counters["results_multicast"] == 60
    assert counters["drop_unknown_worker"] == counters["drop_bad_length"] == 0
    assert report["links"]["loss"] in ("netem", "nftables")
    # loss happened and was recovered (3% per direction over 180+ packets each way)
    assert report["runs"][0]["retransmitted"] > 0
    assert leftovers() == []


@pytest.mark.root
@pytest.mark.mininet
@pytest.mark.skipif(_why is not None, reason=str(_why))
def test_bmv2_star_switchml_two_passes_match_the_model():
    report = run(workers=2, mode="switchml", elements=48 * 30, loss=0.0)
    checks = report["runs"][0]["checks"]
    assert checks["bit_exact"], checks
    counters = report["switches"][0]["bmv2_counters"]
    # the exponent exchange (int max: 30 block exponents fit one packet) and
    # the data pass (30 packets), each slot completed once by both workers
    assert counters["results_multicast"] == 1 + 30
    assert counters["aggregated"] == 2 * (1 + 30)


@pytest.mark.root
@pytest.mark.mininet
@pytest.mark.skipif(_why is not None, reason=str(_why))
def test_bmv2_teardown_after_an_interrupt_leaves_nothing_behind():
    from hosts.mininet.experiment import run_experiment

    def interrupt(_repeat):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentConfig(switch="bmv2", workers=2, elements=48 * 10, repeat=2),
                       on_repeat=interrupt)
    assert leftovers() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "02:fa:" not in links


@pytest.mark.root
@pytest.mark.mininet
@pytest.mark.skipif(_why is not None, reason=str(_why))
@pytest.mark.parametrize("mode,fmt", [("fpisa", "fp16"), ("fpisa-a", "bf16")])
def test_bmv2_star_16_bit_formats_run_their_build(mode, fmt):
    report = run(workers=2, mode=mode, fmt=fmt, elements=48 * 20, loss=0.0)
    checks = report["runs"][0]["checks"]
    assert checks["bit_exact"], checks
    switch = report["switches"][0]
    assert f"({mode.replace('-', '_')}_{fmt}.json)" in switch["switch"]
    counters = switch["bmv2_counters"]
    assert counters["aggregated"] == 2 * 20 and counters["results_multicast"] == 20
    assert counters["drop_wrong_mode"] == counters["drop_bad_length"] == 0
