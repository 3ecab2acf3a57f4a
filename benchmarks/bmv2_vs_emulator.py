"""Packets/s of BMv2 (simple_switch) vs the emulator's pipeline, same packet stream.

The stream: K workers, R rounds; round i uses slot i % pool in shadow set
(i // pool) % 2, every worker sends one DATA packet of random values (the
arrival order rotates), the last one completes the slot (K results). Both
switches get the identical bytes in the identical order:

- emulator: ``SwitchPipeline.process`` in memory (no transport), after a
  warm-up, timed with perf_counter;
- BMv2: ``simple_switch --use-files`` reading one pcap file (no root, no
  kernel networking); the rate from the output frames' timestamps (not from
  the end of the start-up wait: simple_switch starts that wait only after
  loading the JSON, which takes long for a large program). The stream is
  a warm-up of ``--warmup-rounds`` (default: as many as ``--rounds``), then
  the timed ``--rounds``, all in one pcap burst. Two figures per run:

  - *burst*: the warm-up's packets between the first output frame and the
    warm-up's last output, over that time: a freshly started switch handed
    a whole stream at once, which is what this benchmark measured before
    the warm-up existed (with ``--warmup-rounds 0``: the whole stream);
  - *steady*: the timed rounds' packets over the time from the warm-up's
    last output to the last output. simple_switch reuses the PHV (the
    packet's header and metadata vector) of every packet it has finished,
    and creates one only when its pool is empty; a burst into a fresh
    switch creates one for nearly every packet in flight (the reader runs
    ahead of the ingress thread by up to its 1,024-packet input buffer),
    and creating a PHV costs more than processing the packet. A
    long-running switch fed by windowed workers (Mininet, ``fpisa allreduce
    --switch bmv2``) creates its few PHVs once; the steady figure is that
    case (docs/p4.md, "Fourth round").

Both outputs are also compared byte for byte.

In the same run, the baseline ``benchmarks/p4/minimal_register_add.p4``
(the same parser and wire format, 48 ``register<bit<32>>`` read-add-writes
per packet, every packet sent back: what that much arithmetic costs BMv2 at
all) is timed the same way on the same number of packets. Prints per program
the compile time, the pipeline nodes of the compiled JSON
(``p4.pipeline_nodes``: tables, conditionals, primitives; the longest path a
packet can take), packets/s of both switches, each BMv2 figure over the baseline's of the same
kind (burst, steady) and steady BMv2/emulator.
BMv2 timings are the best of ``--repeats`` runs (the machine may be shared).
``--json`` writes the numbers.

``--program all`` (the default) times the fp32 builds and switchml; any build
name (``fpisa_fp16``, ``fpisa_a_bf16``, ...: ``p4.PROGRAMS``) times that build
on packets of its format.

Run: python benchmarks/bmv2_vs_emulator.py [--program fpisa] [--rounds 500] [--warmup-rounds 500]
     [--workers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator.pipeline import SwitchConfig, SwitchPipeline  # noqa: E402
from fpisa.job import MODE_TABLE, JobSpec, mode_info  # noqa: E402
from fpisa.net import build_frame, parse_frame  # noqa: E402
from fpisa.protocol import Header, MsgType, UDP_PORT, format_code, pack, pool_index  # noqa: E402
from p4 import BASELINE, DEFAULT_FORMAT, N_ELEMENTS, PROGRAMS  # noqa: E402
from p4.pipeline_nodes import count_pipeline_nodes  # noqa: E402

_MODE_OF_SOURCE = {info.p4_program: mode.value for mode, info in MODE_TABLE.items() if info.p4_program}
#: build name -> the mode it aggregates
MODE_OF = {name: _MODE_OF_SOURCE[p.source_stem] for name, p in PROGRAMS.items()}
SWITCH = ("10.0.0.100", "02:00:00:00:01:00")


def workers(k: int) -> list[dict]:
    return [{"ip": f"10.0.0.{r + 1}", "udp_port": 40000 + r, "mac": f"02:00:00:00:00:{r + 1:02x}",
             "switch_port": r + 1} for r in range(k)]


def make_stream(mode: str, k: int, rounds: int, pool: int, seed: int = 0,
                fmt: str = DEFAULT_FORMAT) -> list[tuple[int, bytes]]:
    rng = np.random.default_rng(seed)
    wire = mode_info(mode).data_wire_mode
    stream = []
    for i in range(rounds):
        slot, shadow = i % pool, (i // pool) % 2
        for j in range(k):
            r = (i + j) % k
            if wire.is_float:
                values = np.ldexp(rng.uniform(1, 2, N_ELEMENTS) * rng.choice([-1, 1], N_ELEMENTS),
                                  rng.integers(-6, 7, N_ELEMENTS)).astype(np.float32)
                values = (values.view(np.uint32) if fmt == "fp32"
                          else values.astype(np.float16).view(np.uint16) if fmt == "fp16"
                          else (values.view(np.uint32) >> 16).astype(np.uint16))  # bf16, truncated
            else:
                values = rng.integers(-2**24, 2**24, N_ELEMENTS).astype(np.int32)
            header = Header(MsgType.DATA, wire, format_code(fmt) if wire.is_float else 0, 0, 1, r, k,
                            N_ELEMENTS, pool_index(slot, shadow), 0, i)
            stream.append((r, pack(header, values)))
    return stream


def run_emulator(mode: str, k: int, pool: int, stream, fmt: str = DEFAULT_FORMAT) -> tuple[float, Counter]:
    ws = workers(k)
    config = SwitchConfig(JobSpec(mode=mode, fmt=fmt, num_workers=k, job=1, packet_elements=N_ELEMENTS,
                                  window=pool),
                          tuple((w["ip"], w["udp_port"]) for w in ws))
    warm = SwitchPipeline(config)
    for r, data in stream[: 4 * k]:
        warm.process(data, (ws[r]["ip"], ws[r]["udp_port"]))
    pipeline = SwitchPipeline(config)
    sources = [(ws[r]["ip"], ws[r]["udp_port"]) for r, _ in stream]
    process = pipeline.process
    out = []
    start = time.perf_counter()
    for (_, data), source in zip(stream, sources):
        out += process(data, source)
    seconds = time.perf_counter() - start
    return len(stream) / seconds, Counter((tuple(d), p) for d, p in out)


def compile_program(program, compile_fresh: bool) -> tuple[Path, tuple[float, float] | None]:
    """The compiled JSON, and p4c-bm2-ss's (wall, CPU) seconds if it was compiled now."""
    from emulator.bmv2.build import build_program, ensure_built

    if not compile_fresh:
        return ensure_built(program), None
    result = build_program(program)
    if not result.ok:
        raise RuntimeError(f"p4c-bm2-ss failed on {program}:\n{result.output}")
    return result.json_path, (result.seconds, result.cpu_seconds)


def run_bmv2(json_path: Path, k: int, pool: int, stream, wait: int = 4,
             configure: bool = True, warmup: int = 0) -> tuple[float, float | None, Counter]:
    """Packets/s of simple_switch on ``stream`` (pcap-file mode, no logging),
    and what it sent. ``configure``: install the job (the aggregation
    programs, whose first output needs the first round's ``k`` packets); the
    baseline has no tables and answers every packet.

    The rate is taken from the output frames' timestamps (simple_switch
    stamps each frame it writes). simple_switch starts its start-up wait only
    after it has loaded the JSON (tens of seconds for a large program), so a
    clock started at "process start + wait" would count the loading as
    packet time.

    ``warmup``: the first ``warmup`` packets of ``stream`` (whole rounds) are
    the warm-up, the rest the timed part; both go in one burst. Returns
    (burst, steady, outputs):

    - burst: the warm-up's packets processed between the first output frame
      and the warm-up's last output, over that time: a fresh switch handed a
      burst (BMv2's PHV pool is empty, so nearly every packet in flight gets
      a newly created PHV). With ``warmup=0`` the whole stream, as before.
    - steady: the timed part's packets over the time from the warm-up's last
      output to the last output (the switch is busy throughout: the timed
      part is queued behind the warm-up), with the PHV pool primed by the
      warm-up, as in a long-running switch; None without a warm-up."""
    from emulator.bmv2.control_plane import Bmv2Job, ProgramInfo, SwitchCLI, WorkerPort, configure_job
    from emulator.bmv2.pcap import read_pcap, read_pcap_records, write_pcap
    from emulator.bmv2.switch import SimpleSwitch

    if not 0 <= warmup < len(stream) or warmup % k:
        raise ValueError(f"warm-up of {warmup} packets: whole rounds of {k}, fewer than the stream's")
    ws = workers(k)
    workdir = Path(tempfile.mkdtemp(prefix="bmv2-bench-"))
    frames = [build_frame(data, src_mac=ws[r]["mac"], dst_mac=SWITCH[1], src_ip=ws[r]["ip"],
                          dst_ip=SWITCH[0], src_port=ws[r]["udp_port"], dst_port=UDP_PORT)
              for r, data in stream]
    ports = {0: "uplink", **{w["switch_port"]: f"worker{r}" for r, w in enumerate(ws)}}
    for port, name in ports.items():
        write_pcap(workdir / f"{name}_in.pcap", frames if port == 0 else [], gap_us=0)
    expected = len(stream)  # every round: K packets in, K results out (baseline: 1 per packet)
    sw = SimpleSwitch(json_path, ports, workdir, pcap_wait_seconds=wait)
    try:
        sw.start()
        cli = SwitchCLI(sw.thrift_port)
        # pcap mode hands BMv2 the whole stream at once; its egress queues hold
        # 64 packets per port and drop the rest when the egress or transmit
        # thread falls behind (seen with the baseline, which answers every
        # packet, on a loaded machine: a run then never completes). Queues
        # deep enough for the whole stream drop nothing; the work per packet
        # is the same.
        cli.run([f"set_queue_depth {expected + 64}"])
        if configure:
            configure_job(cli, ProgramInfo(json_path),
                          Bmv2Job(job=1, pool_size=pool, workers=tuple(
                              WorkerPort(r, w["mac"], w["ip"], w["udp_port"], w["switch_port"])
                              for r, w in enumerate(ws))))
        if sw.seconds_until_processing() <= 0:
            raise RuntimeError("configuration took longer than the start-up wait; raise --wait")
        done = False
        deadline = time.monotonic() + wait + 600
        while time.monotonic() < deadline:
            count = sum(len(read_pcap(sw.out_pcap(p))) for p in ports if sw.out_pcap(p).exists())
            if count >= expected:
                done = True
                break
            time.sleep(0.01)
        if not done:
            raise RuntimeError(f"BMv2 sent {count} of {expected} results within the deadline")
    finally:
        sw.stop()
    out, stamps = Counter(), []
    for p in ports:
        for stamp, frame in read_pcap_records(sw.out_pcap(p)):
            stamps.append(stamp)
            parsed = parse_frame(frame)
            if parsed:
                out[((parsed[4], parsed[5]), parsed[6])] += 1
    shutil.rmtree(workdir, ignore_errors=True)
    stamps.sort()
    before_first = k if configure else 1
    # as many outputs as input packets: the warm-up's are the first `warmup`
    burst_end = stamps[warmup - 1] if warmup else stamps[-1]
    burst_packets = (warmup or len(stream)) - before_first
    seconds = burst_end - stamps[0]
    steady_seconds = stamps[-1] - burst_end if warmup else None
    if seconds <= 0 or (warmup and steady_seconds <= 0):
        raise RuntimeError("output frames share one timestamp; use a longer stream (--rounds)")
    steady = (len(stream) - warmup) / steady_seconds if warmup else None
    return burst_packets / seconds, steady, out


def best_bmv2(json_path: Path, k: int, pool: int, stream, wait: int, repeats: int,
              configure: bool = True, warmup: int = 0) -> tuple[float, float | None, list[Counter]]:
    """The best burst and steady packets/s of ``repeats`` runs (``run_bmv2``),
    and every run's outputs."""
    best, best_steady, outs = 0.0, None, []
    for _ in range(max(1, repeats)):
        pps, steady, out = run_bmv2(json_path, k, pool, stream, wait, configure, warmup)
        best = max(best, pps)
        if steady is not None:
            best_steady = max(best_steady or 0.0, steady)
        outs.append(out)
    return best, best_steady, outs


def _nodes_column(json_path: Path) -> tuple[dict, str]:
    counts = count_pipeline_nodes(json_path)
    ing = counts["ingress"]
    return ({name: c.as_dict() for name, c in counts.items()},
            f"{ing.tables:6d} {ing.conditionals:5d} {ing.primitives:6d} "
            f"{ing.path_nodes:6d} {ing.path_primitives:7d}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--program", choices=[*PROGRAMS, "all"], default="all")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=500, help="completed slots per program (timed part)")
    parser.add_argument("--warmup-rounds", type=int, default=None,
                        help="rounds before the timed part, which prime BMv2's PHV pool "
                             "(default: --rounds; 0: no warm-up, burst figures only)")
    parser.add_argument("--pool", type=int, default=64, help="slots per shadow set")
    parser.add_argument("--wait", type=int, default=4, help="simple_switch start-up wait (s)")
    parser.add_argument("--repeats", type=int, default=3, help="BMv2 runs per program; the best counts")
    parser.add_argument("--no-compile", action="store_true",
                        help="use p4/build/*.json when up to date instead of compiling (no compile times)")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)
    from emulator.bmv2.tools import P4C, SIMPLE_SWITCH, SIMPLE_SWITCH_CLI, missing_tools

    missing = missing_tools(P4C, SIMPLE_SWITCH, SIMPLE_SWITCH_CLI)
    if missing:
        print(f"needs {', '.join(missing)} on PATH (docs/p4.md)", file=sys.stderr)
        return 3
    programs = ([n for n, p in PROGRAMS.items() if p.fmt == DEFAULT_FORMAT] if args.program == "all"
                else [args.program])
    warm_rounds = args.rounds if args.warmup_rounds is None else args.warmup_rounds
    # with a warm-up, the warm-up rounds are the burst's stream (as without one)
    burst_rounds = warm_rounds or args.rounds
    rounds = warm_rounds + args.rounds if warm_rounds else args.rounds
    warmup = warm_rounds * args.workers
    results = []
    print(f"{'program':21s} {'compile s (cpu)':>15s} {'tables':>6s} {'conds':>5s} {'prims':>6s} "
          f"{'path n':>6s} {'path pr':>7s} {'packets':>7s} {'emulator pkt/s':>14s} "
          f"{'burst pkt/s':>11s} {'/base':>5s} {'steady pkt/s':>12s} {'/base':>5s} {'steady/emu':>10s}"
          "  outputs identical")
    print("(tables, conds, prims: the compiled ingress's tables, conditionals and their actions' "
          "primitives; path n, path pr: the most nodes and primitives one packet can walk through)")
    print(f"(burst: a fresh simple_switch handed {burst_rounds} rounds at once, as before this column "
          "existed; steady: the next "
          f"{args.rounds if warm_rounds else 0} rounds, queued behind them, with BMv2's PHV pool primed "
          "(docs/p4.md, fourth round); /base: over the baseline's figure of the same kind, this run)")

    def row(name, seconds, nodes_text, packets, emu_pps, burst, steady, base, same):
        compile_text = (f"{seconds[0]:7.1f} ({seconds[1]:5.1f})" if seconds is not None
                        else f"{'-':>15s}")
        emu_text = f"{emu_pps:14.0f}" if emu_pps else f"{'-':>14s}"
        steady_text = (f"{steady:12.0f} {steady / base[1]:5.2f}" if steady is not None
                       else f"{'-':>12s} {'-':>5s}")
        ratio_emu = f"{steady / emu_pps:10.4f}" if emu_pps and steady else f"{'-':>10s}"
        print(f"{name:21s} {compile_text} {nodes_text} {packets:7d} {emu_text} {burst:11.0f} "
              f"{burst / base[0]:5.2f} {steady_text} {ratio_emu}  {same}", flush=True)

    def ratios(burst, steady, base):
        return {"ratio_bmv2_over_baseline": burst / base[0],
                "ratio_steady_over_baseline": steady / base[1] if steady is not None else None}

    # the baseline first, on as many packets as a program's stream (fpisa's values:
    # the baseline only adds them)
    base_stream = make_stream(MODE_OF[programs[0]], args.workers, rounds, args.pool)
    base_json, base_seconds = compile_program(BASELINE, not args.no_compile)
    base_burst, base_steady, _ = best_bmv2(base_json, args.workers, args.pool, base_stream, args.wait,
                                           args.repeats, configure=False, warmup=warmup)
    base = (base_burst, base_steady)
    base_nodes, base_text = _nodes_column(base_json)
    results.append({"program": BASELINE.name, "packets": len(base_stream), "warmup_packets": warmup,
                    "compile_seconds": base_seconds and base_seconds[0],
                    "compile_cpu_seconds": base_seconds and base_seconds[1],
                    "pipeline_nodes": base_nodes, "bmv2_pps": base_burst, "bmv2_steady_pps": base_steady,
                    **ratios(base_burst, base_steady, base)})
    row(BASELINE.name, base_seconds, base_text, len(base_stream), None, base_burst, base_steady, base, "-")
    for program in programs:
        mode, fmt = MODE_OF[program], PROGRAMS[program].fmt
        stream = make_stream(mode, args.workers, rounds, args.pool, fmt=fmt)
        json_path, seconds = compile_program(program, not args.no_compile)
        nodes, nodes_text = _nodes_column(json_path)
        emu_pps, emu_out = run_emulator(mode, args.workers, args.pool, stream, fmt)
        burst, steady, bmv2_outs = best_bmv2(json_path, args.workers, args.pool, stream, args.wait,
                                             args.repeats, warmup=warmup)
        same = all(out == emu_out for out in bmv2_outs)
        results.append({"program": program, "packets": len(stream), "warmup_packets": warmup,
                        "workers": args.workers,
                        "elements_per_packet": N_ELEMENTS, "compile_seconds": seconds and seconds[0],
                        "compile_cpu_seconds": seconds and seconds[1],
                        "pipeline_nodes": nodes, "emulator_pps": emu_pps, "bmv2_pps": burst,
                        "bmv2_steady_pps": steady,
                        "ratio_bmv2_over_emulator": (steady or burst) / emu_pps,
                        **ratios(burst, steady, base),
                        "repeats": args.repeats, "outputs_identical": same})
        row(program, seconds, nodes_text, len(stream), emu_pps, burst, steady, base, same)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r.get("outputs_identical", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
