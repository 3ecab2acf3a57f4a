"""The conformance vectors: the emulator always, BMv2 when the tools are here.

Both must produce exactly the vector's bytes (generated from the numerics
core by generate_vectors.py).
"""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

import p4

HERE = Path(__file__).resolve().parent


def _load(name):
    spec = importlib.util.spec_from_file_location(f"conformance_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runner = _load("runner")
generate_vectors = _load("generate_vectors")
VECTORS = runner.load_vectors()
IDS = [v.name for v in VECTORS]

_TOOLS = ("p4c-bm2-ss", "simple_switch", "simple_switch_CLI")
_MISSING = [t for t in _TOOLS if shutil.which(t) is None]
needs_bmv2 = pytest.mark.skipif(bool(_MISSING), reason=f"not on PATH: {', '.join(_MISSING)} "
                                "(BMv2 conformance needs p4c and BMv2; docs/p4.md)")


def test_vectors_are_generated_and_up_to_date(capsys):
    assert generate_vectors.main(["--check"]) == 0, capsys.readouterr().out


def test_vectors_cover_every_program_and_case():
    programs = {v.program for v in VECTORS}
    assert programs == set(p4.PROGRAMS)
    kinds: dict[str, set[str]] = {}
    for v in VECTORS:
        assert v.name.startswith(v.program + "_"), v.name
        kinds.setdefault(v.program, set()).add(v.name[len(v.program) + 1:])
        assert v.job["num_elements"] == p4.N_ELEMENTS
        assert v.expected_packets > 0
    for program, found in kinds.items():
        assert {"normal", "duplicates", "rejections"} <= found, program
    # every format's build of a float source has the fp32 build's cases
    for source in ("fpisa", "fpisa_a"):
        for fmt in p4.P4_FORMATS:
            assert kinds[p4.program_for(source, fmt).name] == kinds[source], (source, fmt)
    assert {"specials", "alignment", "alignment_chains", "shadow_sets", "raw_registers"} <= kinds["fpisa"]


def test_vectors_carry_their_build_s_format():
    from fpisa.protocol import format_code

    for v in VECTORS:
        program = p4.PROGRAMS[v.program]
        if not program.modes[0].is_float:
            continue
        assert v.job["fmt"] == program.fmt, v.name
        element_bytes = p4.P4_FORMATS[program.fmt].fmt.storage_bytes
        for step in v.steps:
            for e in step["expect"]:
                data = bytes.fromhex(e["packet"])
                assert data[2] == format_code(program.fmt), (v.name, step["comment"])
                raw = 10 * p4.N_ELEMENTS if data[3] & 1 else 0
                assert len(data) == 16 + element_bytes * p4.N_ELEMENTS + raw, (v.name, step["comment"])


@pytest.mark.parametrize("fmt", list(p4.P4_FORMATS))
def test_vectors_exercise_retransmission_specials_and_overwrite(fmt):
    types, flags = set(), set()
    for v in VECTORS:
        if p4.PROGRAMS[v.program].fmt != fmt:
            continue
        for step in v.steps:
            for e in step["expect"]:
                data = bytes.fromhex(e["packet"])
                types.add(data[0] & 0xF)
                flags |= {data[3] & bit for bit in (1, 2, 4, 8)}
    assert types == {1, 2}  # RESULT and RESULT_RETX
    assert flags >= {1, 2, 4, 8}  # raw, overflow, overwrite, special


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_emulator_conforms(vector):
    problems = runner.run_emulator(vector)
    assert not problems, "\n".join(problems)


def test_runner_detects_a_wrong_byte(tmp_path):
    vector = next(v for v in VECTORS if v.name == "fpisa_normal")
    data = json.loads(vector.path.read_text())
    step = next(s for s in data["steps"] if s["expect"])
    packet = bytearray.fromhex(step["expect"][0]["packet"])
    packet[40] ^= 1
    step["expect"][0]["packet"] = packet.hex()
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    problems = runner.run_emulator(runner.load_vector(path))
    assert len(problems) == 1 and "first differing byte 40" in problems[0]


def _frames_as_bmv2_would_send(vector):
    from fpisa.net import build_frame
    from fpisa.protocol import UDP_PORT

    out = {runner.UPLINK_PORT: []}
    for w in vector.workers:
        out[w["switch_port"]] = []
    workers = {(w["ip"], w["udp_port"]): w for w in vector.workers}
    for step in vector.steps:
        for e in step["expect"]:
            data = bytes.fromhex(e["packet"])
            w = workers[(e["ip"], e["udp_port"])]
            port = runner.UPLINK_PORT if data[0] & 0xF == 2 else w["switch_port"]
            out[port].append(build_frame(data, src_mac=vector.switch["mac"], dst_mac=w["mac"],
                                         src_ip=vector.switch["ip"], dst_ip=w["ip"],
                                         src_port=UDP_PORT, dst_port=w["udp_port"]))
    return out


def test_bmv2_comparison_accepts_the_expected_frames_and_rejects_others():
    vector = next(v for v in VECTORS if v.name == "fpisa_duplicates")
    frames = _frames_as_bmv2_would_send(vector)
    assert runner.compare_bmv2(vector, frames) == []
    # a RESULT on the wrong port
    moved = {p: list(f) for p, f in frames.items()}
    moved[2].append(moved[1].pop())
    assert runner.compare_bmv2(vector, moved)
    # a flipped payload byte
    flipped = {p: list(f) for p, f in frames.items()}
    frame = bytearray(flipped[1][0])
    frame[-1] ^= 0x80
    flipped[1][0] = bytes(frame)
    assert runner.compare_bmv2(vector, flipped)
    # a broken IPv4 checksum
    broken = {p: list(f) for p, f in frames.items()}
    frame = bytearray(broken[1][0])
    frame[24] ^= 0xFF
    broken[1][0] = bytes(frame)
    assert any("checksum" in p for p in runner.compare_bmv2(vector, broken))
    # a missing packet
    assert runner.compare_bmv2(vector, {**frames, 1: frames[1][1:]})


@needs_bmv2
@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_bmv2_conforms(vector, bmv2_programs):
    problems = runner.run_bmv2(vector, bmv2_programs(vector.program))
    assert not problems, "\n".join(problems)


@needs_bmv2
@pytest.mark.parametrize("name", ["fpisa_fp16_rejections", "fpisa_bf16_rejections"])
def test_bmv2_counts_packets_of_another_format_as_dropped(name, bmv2_programs):
    vector = next(v for v in VECTORS if v.name == name)
    counters = {}
    problems = runner.run_bmv2(vector, bmv2_programs(vector.program), counters=counters)
    assert not problems, "\n".join(problems)
    # the other formats (fp32, and the other 16-bit one: same length, only the
    # header's fmt differs) and the other mode: counted wrong-mode drops
    other = [s for s in vector.steps if " format (payload " in s["comment"] or "is not this job's" in s["comment"]]
    assert len(other) == 3
    assert counters["drop_wrong_mode"] == len(other), counters
    assert counters["received"] == len(vector.steps)


@pytest.fixture(scope="session")
def bmv2_programs():
    """program name -> its compiled JSON, each built for its format when a
    vector first needs it (p4/build, recompiled when a P4 source is newer)."""
    from emulator.bmv2.build import ensure_built

    built: dict[str, object] = {}

    def json_path(name: str):
        if name not in built:
            built[name] = ensure_built(name)
        return built[name]

    return json_path
