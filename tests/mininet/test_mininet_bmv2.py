"""``fpisa mininet run --switch bmv2``: BMv2 simple_switch as the star's switch node.

BMv2's results are checked against the numerics core with the arrival
orders its program logged (p4/include/arrival_log.p4, read by
:class:`hosts.mininet.bmv2.Bmv2SwitchNode`). What the experiment does when
that log cannot be read is tested everywhere; the real runs need root,
Mininet, simple_switch and the compiled programs (or p4c to compile them)
and skip otherwise, with the reason. They are small (BMv2 runs these
programs at a few hundred packets/s here): a K=3 FPISA star with 3% loss
per link and direction, and a K=2 SwitchML star (its two passes: exponent
max, then int32 sum). Besides the results, BMv2's own counters must show
that it did the aggregation (every worker's packet folded in once, one
multicast per slot), and its log must hold exactly those folds.
"""

import json
import os
import subprocess

import numpy as np
import pytest

import fpisa
from emulator.bmv2.arrival_log import ArrivalLogError
from hosts.allreduce import gradient_like
from hosts.mininet import experiment
from hosts.mininet.bmv2 import bmv2_missing
from hosts.mininet.config import ExperimentConfig
from hosts.mininet.network import mininet_missing


def test_an_unreadable_arrival_log_fails_the_check_and_says_why():
    config = ExperimentConfig(switch="bmv2", workers=3, elements=48 * 10)

    class Node:
        def recorded(self):
            raise ArrivalLogError("the arrival log overflowed: ...")

    recorded, error = experiment._bmv2_recorded(Node(), config)
    assert error == "the arrival log overflowed: ..."
    values = np.stack([gradient_like(config.elements, k, config.seed, config.fmt) for k in range(3)])
    result = fpisa.aggregate(values, "fpisa", block_size=48)  # right for the identity order
    replies = [{"packet_id_base": 0, "packet_ids": 10}] * 3
    checks = experiment._check(config, 0, replies, [result] * 3, recorded)
    assert checks["packets_without_recorded_order"] == 10
    assert not checks["bit_exact"] and "mismatched_elements" not in checks


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
    # checked against the orders BMv2 logged, every packet's
    assert checks["packets_without_recorded_order"] == 0 and "arrival_log_error" not in checks
    assert checks["bit_exact"], checks
    assert sum(checks["mismatched_elements"]) == 0
    counters = report["switches"][0]["bmv2_counters"]
    # BMv2 itself aggregated: each worker's packet folded in exactly once per
    # slot, one multicast per completed slot, nothing dropped as malformed
    assert counters["aggregated"] == 3 * 60
    assert counters["results_multicast"] == 60
    # its log holds exactly those folds: 60 rounds of 3, none left open
    log = report["switches"][0]["arrival_log"]
    assert log["entries"] == counters["aggregated"]
    assert log["completed_rounds"] == 60 and log["incomplete_rounds"] == 0
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
    assert checks["packets_without_recorded_order"] == 0
    counters = report["switches"][0]["bmv2_counters"]
    # the exponent exchange (int max: 30 block exponents fit one packet) and
    # the data pass (30 packets), each slot completed once by both workers
    assert counters["results_multicast"] == 1 + 30
    assert counters["aggregated"] == 2 * (1 + 30)
    assert report["switches"][0]["arrival_log"]["completed_rounds"] == 1 + 30


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
