"""The host-cost model (hosts/study): its formula, its wire accounting against
fpisa.protocol, the profiles data file, and `fpisa study host-cores`.

No timed assertions: measured rates are only checked to exist and be labelled."""

import json
import math

import pytest

from fpisa.cli import main
from fpisa.protocol import HEADER_BYTES
from hosts.study import host_cores as hc
from hosts.study.report import check_wire_format

#: hand-picked single-core rates (values/s) so expected numbers are exact
RATES = {"copy": 4e9, "byteswap": 2e9, "byteswap_int32": 2e9, "block_exponents": 1e9,
         "quantize": 1e9, "dequantize": 0.5e9}


def rates(**over):
    return hc.HostRates("fp32", {op: hc.Rate(v, "test") for op, v in {**RATES, **over}.items()}, "test")


# -- the wire -------------------------------------------------------------------------------

def test_packet_overhead_is_ethernet_ipv4_udp_and_the_protocol_header():
    assert HEADER_BYTES == 16
    assert hc.PACKET_OVERHEAD_BYTES == 14 + 20 + 8 + HEADER_BYTES
    assert hc.LINE_OVERHEAD_BYTES == 4 + 8 + 12  # FCS, preamble + SFD, inter-frame gap


@pytest.mark.parametrize("fmt", hc.STUDY_FORMATS)
@pytest.mark.parametrize("e", [16, 64, 255])
@pytest.mark.parametrize("line_overhead", [True, False])
def test_payload_efficiency_from_header_sizes(fmt, e, line_overhead):
    for mode in hc.MODES:
        w = hc.FORMAT_BYTES[fmt] if mode.startswith("fpisa") else 4  # SwitchML sends int32
        payload = w * e
        line = max(60, 14 + 20 + 8 + HEADER_BYTES + payload) + (24 if line_overhead else 0)
        assert hc.payload_efficiency(mode, fmt, e, line_overhead) == pytest.approx(payload / line, rel=1e-15)


def test_short_frames_are_padded_to_ethernets_minimum():
    # one fp16 element: 58 + 2 = 60 bytes: exactly the minimum frame without FCS
    assert hc.frame_bytes(2) == 60 and hc.frame_bytes(1) == 60 and hc.frame_bytes(3) == 61
    assert hc.line_bytes(2) == 84  # 64-byte minimum frame + 20 bytes preamble and gap


def test_link_rate_counts_the_separate_exponent_pass():
    one = hc.link_rate("switchml", 100, "fp32", 64)
    assert one == pytest.approx(100e9 / 8 / ((58 + 256 + 24) / 64))
    assert hc.link_rate("switchml-2pass", 100, "fp32", 64) == pytest.approx(one / (1 + 1 / 64))
    # FPISA sends fp16 as 2 bytes, SwitchML as a 4-byte int32
    assert hc.link_rate("fpisa", 100, "fp16", 64) > 1.5 * hc.link_rate("switchml", 100, "fp16", 64)


def test_model_byte_counts_match_packets_the_protocol_builds():
    result = check_wire_format()
    assert result["ok"], result["failures"]
    assert result["packets_checked"] == len(hc.MODES) * len(hc.STUDY_FORMATS) * 3


def test_paper_line_rate_figures_match_1kb_payloads():
    # the paper: 100 Gb/s needs ~5.8 / 2.9 / 1.45 e9 values/s for fp16 / fp32 / fp64;
    # with 1 KB payloads and this header on an Ethernet line the formula gives the same
    for fmt, paper in hc.PAPER["line_rate_100g_values_per_s"].items():
        size = hc.FORMAT_BYTES[fmt]
        ours = 100e9 / 8 / (hc.line_bytes(1024) / (1024 // size))
        assert ours == pytest.approx(paper, rel=0.01)


# -- the formula ----------------------------------------------------------------------------

def test_per_core_rate_sums_the_host_work_per_element():
    r = rates()
    assert hc.per_core_rate("fpisa", r) == pytest.approx(1 / (2 / 4e9))
    assert hc.per_core_rate("fpisa-hostswap", r) == pytest.approx(1 / (2 / 2e9))
    sml = 1 / (1 / 1e9 + 1 / 1e9 + 2 / 2e9 + 1 / 0.5e9)
    assert hc.per_core_rate("switchml", r) == pytest.approx(sml)
    two_pass = 1 / (1 / 1e9 + 1 / 1e9 + (2 + 2 / 64) / 2e9 + 1 / 0.5e9)
    assert hc.per_core_rate("switchml-2pass", r, 64) == pytest.approx(two_pass)
    # a common per-element I/O cost, when given, is paid by every mode
    assert hc.per_core_rate("fpisa", rates(packet_io=1e9)) == pytest.approx(1 / (2 / 4e9 + 1 / 1e9))


@pytest.mark.parametrize("mode", hc.MODES)
@pytest.mark.parametrize("link", [10, 25, 40, 100])
def test_goodput_is_min_of_link_and_cores_times_rate(mode, link):
    r = rates()
    line = hc.link_rate(mode, link, "fp32", 64)
    core = hc.per_core_rate(mode, r, 64)
    for cores in range(1, 17):
        p = hc.predict_goodput(mode, link, cores, r, 64, "fp32")
        assert p.goodput_elements_per_s == min(line, cores * core)
        assert p.bound == ("link" if line <= cores * core else "cpu")
        assert p.goodput_gbps == pytest.approx(p.goodput_elements_per_s * 32 / 1e9)
        assert p.cores_to_line_rate == math.ceil(line / core - 1e-9)
        assert (p.bound == "link") == (cores >= p.cores_to_line_rate)


def test_cores_to_line_rate_is_ceil_of_link_over_rate():
    assert hc.cores_to_line_rate(10.0, 3.0) == 4
    assert hc.cores_to_line_rate(9.0, 3.0) == 3  # exact: no extra core
    assert hc.cores_to_line_rate(9.0 * (1 + 1e-15), 3.0) == 3  # float noise
    assert hc.cores_to_line_rate(1.0, 5.0) == 1
    assert hc.cores_to_line_rate(1.0, math.inf) == 1  # no host work: the worker still needs a core


def test_predict_goodput_takes_a_plain_mapping_of_rates():
    p = hc.predict_goodput("fpisa-hostswap", 5, 1, {"byteswap": 1e8}, 64, "fp32")
    assert p.goodput_elements_per_s == pytest.approx(0.5e8) and p.bound == "cpu"
    with pytest.raises(ValueError, match="quantize"):
        hc.predict_goodput("switchml", 5, 1, {"byteswap": 1e8}, 64, "fp32")


@pytest.mark.parametrize("bad", [dict(mode="int8"), dict(cores=0), dict(cores=1.5), dict(link_gbps=-1),
                                 dict(elements_per_packet=0), dict(fmt="fp8")])
def test_predict_goodput_refuses_bad_input(bad):
    args = dict(mode="fpisa", link_gbps=100, cores=2, rates=rates(), elements_per_packet=64, fmt="fp32")
    with pytest.raises(ValueError):
        hc.predict_goodput(**{**args, **bad})


def test_iteration_time_and_speedup():
    assert hc.iteration_time(1.0, 0.5, 0.0) == 1.5  # compute + comm
    assert hc.iteration_time(1.0, 0.5, 1.0) == 1.0  # max(compute, comm)
    assert hc.iteration_time(1.0, 3.0, 1.0) == 3.0
    assert hc.iteration_time(1.0, 1.0, 0.5) == pytest.approx(1.5)
    # 1e9 params, 1 s compute, FPISA 1e9/s vs SwitchML 0.5e9/s: (1 + 2) / (1 + 1) - 1
    assert hc.training_speedup(1e9, 1.0, 0.0, 1e9, 0.5e9) == pytest.approx(0.5)


def test_calibration_closed_form_reproduces_the_low_core_input():
    cal = hc.calibrate_to_paper(hc.load_profiles(), grid=41)
    for m in cal["best"]["models"]:
        if m["implied_compute_s"] is None:
            continue
        # with the implied compute time the model gives back the paper's 2-core figure
        n, c, best = None, m["implied_compute_s"], cal["best"]
        prof = next(p for p in hc.load_profiles() if p.name == m["model"])
        n = prof.params.value
        gf = min(cal["line_rate_fpisa"], 2 * best["fpisa_per_core"])
        gs = min(cal["line_rate_switchml"], 2 * best["switchml_per_core"])
        assert hc.training_speedup(n, c, 0.0, gf, gs) == pytest.approx(m["paper_low"], rel=1e-9)


# -- rates ----------------------------------------------------------------------------------

def test_measured_rates_are_positive_and_say_where_they_come_from():
    notes = []
    r = hc.measure_rates("fp16", elements=4096, repeats=1, notes=notes)
    for op in hc.OPS:
        rate = r.get(op)
        assert rate.values_per_s > 0 and rate.source
    assert r.get("packet_io").values_per_s == math.inf  # not measurable here
    assert any("_host_kernels" in n for n in notes) or any("_host_kernels" in r.get(op).source for op in hc.OPS)


def test_paper_rates_take_the_papers_byte_swap_and_label_the_rest():
    measured = hc.HostRates("fp32", {op: hc.Rate(v, "measured: x") for op, v in RATES.items()}, "measured")
    p = hc.paper_rates("fp32", measured)
    assert p.get("byteswap").values_per_s == 0.6e9 and p.get("byteswap").source.startswith("paper")
    assert p.get("byteswap_int32").values_per_s == 0.6e9
    assert p.get("quantize").values_per_s == 1e9 and "paper gives none" in p.get("quantize").source
    assert hc.paper_rates("fp16", measured.replace(label="m")).get("byteswap").values_per_s == 0.52e9


def test_rates_file_per_format_flat_and_with_sources(tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"fp32": {**RATES, "quantize": {"values_per_s": 3e9, "source": "my bench"}}}))
    r = hc.load_rates_file(f, "fp32")
    assert r.get("quantize") == hc.Rate(3e9, "my bench") and r.get("copy").source == "file r.json"
    f.write_text(json.dumps({"copy": 1e9}))
    r = hc.load_rates_file(f, "fp32", fallback=lambda: rates())
    assert r.get("copy").values_per_s == 1e9 and r.get("quantize").source == "test"
    with pytest.raises(ValueError, match="lacks"):
        hc.load_rates_file(f, "fp32")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"copy": -1}', '{"copy": "fast"}',
                                     '{"warp": 1e9}', '{"fp16": {"copy": 1e9}}'])
def test_bad_rates_files_are_value_errors(tmp_path, content):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(ValueError):
        hc.load_rates_file(f, "fp32", fallback=lambda: rates())


# -- profiles -------------------------------------------------------------------------------

def test_profiles_load_and_every_figure_has_a_source():
    profiles = hc.load_profiles()
    names = {p.name for p in profiles}
    assert {"DeepLight", "LSTM", "BERT", "VGG19", "ResNet-50"} <= names
    doc = json.loads(hc.DEFAULT_PROFILES.read_text())
    for name, entry in doc["models"].items():
        for key, fig in entry.items():
            assert isinstance(fig, dict) and set(fig) == {"value", "source"}, (name, key)
            assert isinstance(fig["source"], str) and len(fig["source"]) > 10, (name, key)
    for p in profiles:
        assert p.params.value > 0 and p.compute_s.value > 0 and 0 <= p.overlap.value <= 1
        for fig in p.figures().values():
            # an unsourced figure says so in the one agreed way
            assert fig.assumed == fig.source.lower().startswith("none")
    deeplight = next(p for p in profiles if p.name == "DeepLight")
    assert deeplight.paper_speedup[2].value == 0.86 and deeplight.paper_speedup[8].value == 0.32


def test_a_profile_without_a_source_is_refused(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"models": {"X": {"params": {"value": 1e6}, "compute_s": {"value": 1, "source": "s"},
                                              "overlap": {"value": 0, "source": "s"}}}}))
    with pytest.raises(ValueError, match="source"):
        hc.load_profiles(f)


# -- the command ----------------------------------------------------------------------------

FAST = ["--measure-elements", "4096", "--repeats", "1"]


@pytest.mark.parametrize("bad", [["--modes", "fpisa", "int8"], ["--max-cores", "0"], ["--links", "0"],
                                 ["--fmt", "fp64"], ["--elements-per-packet", "256"],
                                 ["--compare-cores", "0"], ["--rates", "fastest"]])
def test_bad_input_exits_two(tmp_path, capsys, bad):
    assert main(["study", "host-cores", "--out", str(tmp_path), *FAST, *bad]) == 2
    assert "error" in capsys.readouterr().err


def test_bad_rates_file_exits_two(tmp_path, capsys):
    f = tmp_path / "rates.json"
    f.write_text('{"fp32": {"copy": "fast"}}')
    assert main(["study", "host-cores", "--out", str(tmp_path / "o"), *FAST, "--rates", str(f)]) == 2
    assert "copy" in capsys.readouterr().err
    assert main(["study", "host-cores", "--out", str(tmp_path / "o"), *FAST,
                 "--rates", str(tmp_path / "missing.json")]) == 2


def test_end_to_end_with_paper_rates_writes_json_csv_png(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["study", "host-cores", "--out", str(out), "--rates", "paper", "--max-cores", "4",
                 "--links", "10", "100", *FAST])
    assert code == 0
    text = capsys.readouterr().out
    assert "Training speed-up" in text and "extrapolated" in text and "paper" in text
    report = json.loads((out / "host_cores.json").read_text())
    assert list(report["rate_sets"]) == ["paper"]
    assert report["rate_sets"]["paper"]["ops"]["byteswap"]["values_per_s"] == 0.6e9
    assert report["checks"]["ok"]
    assert len(report["grid"]) == len(hc.MODES) * 2 * 4
    assert any(r["extrapolated"] for r in report["grid"]) == (report["study"]["machine_cores"] < 4)
    csv_lines = (out / "host_cores.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rates,mode,fmt,link_gbps,cores") and len(csv_lines) == 1 + len(report["grid"])
    assert (out / "training.csv").read_text().startswith("rates,model,cores")
    for png in ("host_cores.png", "training.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Cores per worker" in (out / "summary.md").read_text()
