"""BMv2 on veths: ``fpisa allreduce --switch bmv2`` end to end (root + p4c + BMv2).

The bridge compares every BMv2 result with the emulator's (same packets,
same order) and the allreduce checks the result bit for bit against the
numerics core with the arrival orders BMv2's program logged, which must
equal the emulator's when BMv2 took every frame.
"""

import os
import shutil

import pytest

from emulator.pipeline import SwitchConfig
from fpisa.job import JobSpec
from fpisa.netem import LinkFaults

from emulator.bmv2 import bridge
from p4 import N_ELEMENTS, job_program

_MISSING = [t for t in ("p4c-bm2-ss", "simple_switch", "simple_switch_CLI") if shutil.which(t) is None]
needs_bmv2_and_root = [
    pytest.mark.skipif(bool(_MISSING), reason=f"not on PATH: {', '.join(_MISSING)} (docs/p4.md)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (veth pair)"),
]


@needs_bmv2_and_root[0]
@needs_bmv2_and_root[1]
@pytest.mark.parametrize("mode,fmt,faults", [
    ("fpisa", "fp32", LinkFaults()), ("fpisa-a", "fp32", LinkFaults()), ("switchml", "fp32", LinkFaults()),
    ("fpisa", "fp16", LinkFaults()), ("fpisa-a", "bf16", LinkFaults()),
    # lost, duplicated and reordered packets both ways: the log holds the folds only
    ("fpisa", "fp32", LinkFaults(loss=0.03, duplicate=0.02, reorder=0.05)),
])
def test_allreduce_through_bmv2_is_bit_exact(mode, fmt, faults):
    from hosts.allreduce import AllreduceConfig, run_allreduce

    # BMv2 does a few hundred packets/s: a small window keeps
    # the workers from bursting retransmissions it would drop at its input
    job = JobSpec(mode=mode, fmt=fmt, num_workers=3, window=4, packet_elements=N_ELEMENTS)
    config = AllreduceConfig(job=job, elements=N_ELEMENTS * 40 + 5, timeout_ms=200.0, seed=3,
                             switch="bmv2", faults=faults)
    report = run_allreduce(config, progress=False)
    checks = report["checks"]
    # checked with BMv2's own orders, every packet's
    assert "arrival_log_error" not in checks and checks["packets_without_recorded_order"] == 0
    assert checks["bit_exact"], checks
    log = report["switch"]["arrival_log"]
    assert log["entries"] == report["switch"]["bmv2_counters"]["aggregated"]
    cross = report["switch"]["bmv2_vs_emulator"]
    assert cross["matched"] > 0, cross
    if cross["bmv2_input_lost"] == 0:
        # every packet went through both switches: identical outputs and orders
        assert cross["unexpected"] == 0 and cross["missing"] == 0, cross
        assert cross["arrival_orders"]["identical"], cross
    assert report["switch"]["bmv2_counters"]["results_multicast"] > 0
    # the job's format picked the build
    assert report["switch"]["switch"] == f"bmv2 ({job_program(job).json_path.name})"


def test_bridge_runs_each_format_on_its_build():
    for mode, fmt, name in (("fpisa", "fp32", "fpisa"), ("fpisa", "fp16", "fpisa_fp16"),
                            ("fpisa-a", "bf16", "fpisa_a_bf16"), ("switchml", "fp16", "switchml")):
        job = JobSpec(mode=mode, fmt=fmt, num_workers=2, packet_elements=N_ELEMENTS)
        assert job_program(job).name == name
        config = SwitchConfig(job, (("127.0.0.1", 1), ("127.0.0.1", 2)))
        if os.geteuid() == 0:
            assert bridge.check_config(config) is config
        else:
            with pytest.raises(ValueError, match="root"):
                bridge.check_config(config)


def test_bridge_refuses_jobs_the_p4_programs_cannot_run():
    job = JobSpec(mode="fpisa", num_workers=2, packet_elements=N_ELEMENTS)
    base = SwitchConfig(job, (("127.0.0.1", 1), ("127.0.0.1", 2)))
    with pytest.raises(ValueError, match="elements per packet"):
        bridge.check_config(base.replace(job=job.replace(packet_elements=N_ELEMENTS + 1)))
    with pytest.raises(ValueError, match="rz"):
        bridge.check_config(base.replace(rounding="rne"))
    with pytest.raises(ValueError, match="32-bit"):
        bridge.check_config(base.replace(job=job.replace(register_bits=40)))
