"""ExperimentConfig: validation at the boundary, leaf groups, payload share."""

import pytest

from hosts.mininet.config import FRAME_OVERHEAD_BYTES, ExperimentConfig


def test_two_level_groups_partition_the_workers_contiguously():
    assert ExperimentConfig(topo="two-level", workers=5, leaves=2).groups == ((0, 1), (2, 3, 4))
    assert ExperimentConfig(topo="two-level", workers=6, leaves=3).groups == ((0, 1), (2, 3), (4, 5))
    assert ExperimentConfig(topo="star", workers=3).groups == ((0, 1, 2),)


def test_payload_share_of_a_frame():
    # 64 fp32 per packet: 256 payload bytes in a 256 + 58 byte frame
    assert FRAME_OVERHEAD_BYTES == 58
    assert ExperimentConfig(packet_elements=64).payload_fraction == pytest.approx(256 / 314)
    assert ExperimentConfig(packet_elements=255).payload_fraction == pytest.approx(1020 / 1078)
    # fp16 travels as 2 bytes in the FPISA modes, as int32 in SwitchML
    assert ExperimentConfig(fmt="fp16", packet_elements=64).payload_fraction == pytest.approx(128 / 186)
    assert ExperimentConfig(fmt="fp16", mode="switchml", packet_elements=64).element_bytes == 4


@pytest.mark.parametrize("kwargs,message", [
    ({"topo": "ring"}, "topo"),
    ({"switch": "ovs"}, "switch"),
    ({"mode": "exact"}, "mode"),
    ({"workers": 33}, "workers"),
    ({"workers": True}, "workers"),
    ({"topo": "two-level", "workers": 4, "leaves": 1}, "leaves"),
    ({"topo": "two-level", "workers": 4, "switch": "bmv2"}, "emulator only"),
    ({"bw_mbit": -1}, "bw_mbit"),
    ({"delay_ms": float("nan")}, "delay_ms"),
    ({"loss": 0.5}, "loss"),
    ({"elements": 0}, "elements"),
    ({"packet_elements": 256}, "elements per packet"),
    ({"window": 0}, "window"),
    ({"repeat": 0}, "repeat"),
    ({"timeout_ms": 0}, "timeout_ms"),
    ({"fmt": "fp8"}, "format"),
])
def test_bad_values_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**kwargs)


def test_defaults_depend_on_the_switch():
    emulator, bmv2 = ExperimentConfig(), ExperimentConfig(switch="bmv2")
    assert (emulator.packet_elements, emulator.window, emulator.timeout_ms) == (64, 128, 50.0)
    # the P4 programs' packet size; a window BMv2's packet rate can serve
    assert (bmv2.packet_elements, bmv2.window, bmv2.timeout_ms) == (48, 4, 100.0)
    assert bmv2.as_dict()["packet_elements"] == 48
    assert ExperimentConfig(switch="bmv2", window=16, timeout_ms=300).window == 16


@pytest.mark.parametrize("kwargs,message", [
    ({"packet_elements": 64}, "48 elements per packet"),
    ({"window": 513}, "512 slots"),
    ({"reorder": 0.1}, "reorder"),
])
def test_bmv2_rejects_what_its_programs_cannot_run(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(switch="bmv2", **kwargs)
    # switchml takes any format's int32; any K is checked (BMv2 logs the
    # arrival orders), up to the programs' 32 workers
    ExperimentConfig(switch="bmv2", mode="switchml", workers=7, fmt="fp16")
    ExperimentConfig(switch="bmv2", workers=32)
    # the float programs have a build per format
    ExperimentConfig(switch="bmv2", fmt="bf16")
    ExperimentConfig(switch="bmv2", mode="fpisa-a", fmt="fp16")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        ExperimentConfig.from_dict({"workers": 2, "wokers": 3})
    assert ExperimentConfig.from_dict({"workers": 2}).as_dict()["workers"] == 2
