"""JobSpec (one validated job description) and the mode table."""

import pytest

from fpisa.formats import Mode
from fpisa.job import MODE_TABLE, SWITCH_MODES, JobSpec, mode_info
from fpisa.protocol import MAX_ELEMENTS, MAX_SLOTS, MAX_WORKERS, WireMode


def test_mode_strings_are_parsed_once_into_the_enum():
    job = JobSpec(mode="fpisa-a")
    assert job.mode is Mode.FPISA_A and job.data_wire_mode is WireMode.FPISA_A
    assert JobSpec(mode=Mode.SWITCHML).mode is Mode.SWITCHML


def test_the_mode_table_covers_every_mode():
    assert set(MODE_TABLE) == set(Mode)
    assert SWITCH_MODES == ("fpisa", "fpisa-a", "switchml")
    sml = mode_info("switchml")
    assert sml.exponent_pass and not sml.is_float and sml.p4_program == "switchml"
    assert sml.wire_modes == (WireMode.SWITCHML, WireMode.INT_MAX)
    assert mode_info("fpisa").p4_program == "fpisa" and mode_info("fpisa-a").p4_program == "fpisa_a"
    assert not mode_info("exact").in_switch and not mode_info("float32").in_switch
    with pytest.raises(ValueError, match="does not run in the switch"):
        mode_info("exact").data_wire_mode
    # the wire modes' register kernels are named by the protocol, once
    assert [m.register_mode for m in WireMode] == ["fpisa", "fpisa-a", "switchml", "int-max",
                                                   "float-min", "float-max", "key-claim"]
    assert all(m.is_float == (m in (WireMode.FPISA, WireMode.FPISA_A)) for m in WireMode)
    assert [m for m in WireMode if m.float_payload] == [WireMode.FPISA, WireMode.FPISA_A,
                                                        WireMode.FLOAT_MIN, WireMode.FLOAT_MAX]


def test_extra_wire_modes_of_a_query_job():
    job = JobSpec(mode="fpisa", fmt="fp16", extra_wire_modes=(6, WireMode.SWITCHML, 4, 4))
    assert job.wire_modes == (WireMode.FPISA, WireMode.KEY_CLAIM, WireMode.SWITCHML,
                              WireMode.FLOAT_MIN)
    assert job.max_data_packet_bytes == 16 + job.packet_elements * 4  # int32 COUNT in fp16
    assert JobSpec.from_dict(job.as_dict()) == job
    assert "extra_wire_modes" not in JobSpec().as_dict()
    with pytest.raises(ValueError, match="extra_wire_modes"):
        JobSpec(extra_wire_modes=(99,))


@pytest.mark.parametrize("kw,match", [
    (dict(mode="exact"), "does not run in a switch"),
    (dict(mode="fpisa-b"), "unknown mode"),
    (dict(fmt="fp64"), "unknown format"),
    (dict(num_workers=0), "workers must be 1..32"),
    (dict(num_workers=MAX_WORKERS + 1), "workers must be 1..32"),
    (dict(num_workers=True), "workers"),
    (dict(num_workers=2.0), "workers"),
    (dict(packet_elements=0), "elements per packet"),
    (dict(packet_elements=MAX_ELEMENTS + 1), "elements per packet"),
    (dict(window=0), "window"),
    (dict(window=MAX_SLOTS + 1), "window"),
    (dict(job=256), "job"),
    (dict(job=-1), "job"),
    (dict(register_bits=20), "register_bits"),
    (dict(register_bits=65), "register_bits"),
    (dict(rounding="up"), "rounding"),
    (dict(rounding="rne"), "needs raw registers"),
    (dict(mode="switchml", raw_registers=True), "raw registers exist only"),
    (dict(raw_registers=1), "raw_registers must be a bool"),
])
def test_every_limit_is_checked_with_a_clear_message(kw, match):
    with pytest.raises(ValueError, match=match):
        JobSpec(**kw)


def test_limits_at_their_edges_are_accepted():
    JobSpec(num_workers=MAX_WORKERS, packet_elements=MAX_ELEMENTS, window=MAX_SLOTS, job=255,
            register_bits=64)
    JobSpec(fmt="fp16", register_bits=13)  # 11-bit significand + sign + 1 headroom bit
    JobSpec(raw_registers=True, rounding="rne")


@pytest.mark.parametrize("mode,elements,packet_elements,passes", [
    ("fpisa", 2000, 64, (0, 32)),
    ("fpisa-a", 64, 64, (0, 1)),
    ("switchml", 2000, 64, (1, 32)),  # 32 block exponents fit one packet
    ("switchml", 10, 2, (3, 5)),
    ("switchml", 64 * 64 + 1, 64, (2, 65)),
])
def test_packets_per_pass(mode, elements, packet_elements, passes):
    job = JobSpec(mode=mode, packet_elements=packet_elements)
    assert job.pass_packets(elements) == passes
    assert job.packets(elements) == sum(passes)
    with pytest.raises(ValueError, match="elements"):
        job.pass_packets(0)


def test_wire_sizes_follow_the_mode_and_format():
    assert JobSpec(fmt="fp16").element_bytes == 2
    assert JobSpec(mode="switchml", fmt="fp16").element_bytes == 4  # int32 on the wire
    job = JobSpec(packet_elements=48)
    assert job.data_packet_bytes == 16 + 48 * 4
    assert job.max_result_bytes == 16 + 48 * 4 + 48 * 10  # raw int64 mantissas + uint16 exponents
    assert JobSpec(mode="switchml", packet_elements=48).max_result_bytes == 16 + 48 * 4


def test_round_trip_through_a_dict():
    job = JobSpec(mode="fpisa-a", fmt="bf16", num_workers=7, packet_elements=100, window=9,
                  register_bits=40, raw_registers=True, rounding="rne", job=3)
    d = job.as_dict()
    assert d["mode"] == "fpisa-a" and JobSpec.from_dict(d) == job
    with pytest.raises(ValueError, match="unknown keys"):
        JobSpec.from_dict({**d, "pool_size": 4})
