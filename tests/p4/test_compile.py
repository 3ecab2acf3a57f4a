"""The programs compile with p4c-bm2-ss (skipped without it), and the control
plane finds in the result everything it configures or reads."""

import json
import re
import shutil

import pytest

import p4
from emulator.bmv2.build import ensure_built
from emulator.bmv2.control_plane import ProgramInfo

pytestmark = pytest.mark.skipif(shutil.which("p4c-bm2-ss") is None,
                                reason="p4c-bm2-ss not on PATH (docs/p4.md: P4 toolchain)")


@pytest.mark.parametrize("name", sorted(p4.PROGRAMS))
def test_program_compiles(name):
    # p4/build/<name>.json, compiled now unless it is newer than every P4 source
    # (fpisa_a takes minutes: 48 lanes of constant-shift tables)
    json_path = ensure_built(name)
    spec = json.loads(json_path.read_text())
    assert spec["pipelines"], "no pipelines in the compiled JSON"
    info = ProgramInfo(json_path)
    # the control plane finds everything it configures or reads
    for table in ("worker_check.job", "worker_check.worker", "worker_address"):
        info.table(table)
    info.counter("count_outcome.switch_counter")
    info.counter("egress_counter")
    # every element has registers of its own: lane_<i> (a lane control
    # instance) or lane_<i>_<what> (a register of the lanes control)
    lanes = {m.group(1) for n in info.registers for m in [re.search(r"\.lane_(\d+)", n)] if m}
    assert lanes == {str(i) for i in range(p4.N_ELEMENTS)}
    # the build parses elements of its format's width (switchml: int32), all
    # in one header
    payload = next(h for h in spec["header_types"] if h["name"] == "payload_t")
    bits = p4.P4_FORMATS[p4.PROGRAMS[name].fmt].element_bits
    assert [f[:2] for f in payload["fields"]] == [[f"value_{i}", bits] for i in range(p4.N_ELEMENTS)]


#: the most nodes (tables + conditionals) a packet may walk through the
#: compiled ingress, per source and so for every format's build
#: (p4.pipeline_nodes; measured: switchml 25, fpisa 32, fpisa_a 417 with its
#: per-lane alignment, leading-one and normalization tables; the same for fp16
#: and bf16). An `if` (or `?:`) per lane adds at least 48: docs/p4.md "Speed
#: on BMv2".
MAX_INGRESS_PATH_NODES = {"switchml": 30, "fpisa": 36, "fpisa_a": 440}
#: conditionals in the compiled ingress (measured 13, 15, 15: the lanes'
#: per-packet choice of a fold variant adds a few, none per lane)
MAX_INGRESS_CONDITIONALS = {"switchml": 16, "fpisa": 18, "fpisa_a": 18}


@pytest.mark.parametrize("name", sorted(p4.PROGRAMS))
def test_ingress_is_straight_line(name):
    from p4.pipeline_nodes import count_pipeline_nodes

    ingress = count_pipeline_nodes(ensure_built(name))["ingress"]
    source = p4.PROGRAMS[name].source_stem
    assert ingress.path_nodes <= MAX_INGRESS_PATH_NODES[source], ingress
    assert ingress.conditionals <= MAX_INGRESS_CONDITIONALS[source], ingress
