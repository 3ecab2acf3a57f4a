"""The programs that run inside the Mininet hosts: switch, leaf, spine, worker.

``python -m hosts.mininet.nodes SPEC.json`` runs one node; SPEC's ``role``
says which. The orchestrator (:mod:`hosts.mininet.experiment`) talks to a
node over its stdin/stdout, one line per message:

- every node prints ``ready`` when it can take traffic (kernels loaded);
  role ``warm`` only compiles the switch kernels into Numba's cache and
  exits (run once by the orchestrator before the nodes start);
- a worker reads ``go R``, runs allreduce number R, saves its result to
  ``<out>/result_w<rank>_r<R>.npy`` and prints one JSON line (timing,
  counters, the packet ids it used); ``exit`` ends it;
- a switch reads ``stop``, writes its statistics (``<out>.json``) and the
  arrival order of every slot it completed (``<out>.npz``), prints
  ``stopped`` and exits.

This is the experiment layer: it composes ``emulator`` (the switches) and
``hosts`` (the workers), each imported only by the role that needs it.
Errors are reported as a JSON line ``{"error": ...}`` before exiting 1.
"""

from __future__ import annotations

import json
import select
import sys
import time
import traceback

import numpy as np

from fpisa.exitcodes import ExitCode
from fpisa.job import JobSpec
from fpisa.netem import LinkFaults
from fpisa.protocol import UDP_PORT

__all__ = ["main"]


def _say(message) -> None:
    sys.stdout.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
    sys.stdout.flush()


def _stdin_has_line() -> bool:
    return bool(select.select([sys.stdin], [], [], 0)[0])


def _faults(spec: dict, seed_offset: int) -> LinkFaults | None:
    faults = LinkFaults(loss=spec.get("process_loss", 0.0), delay_ms=spec.get("process_delay_ms", 0.0),
                        duplicate=spec.get("duplicate", 0.0), reorder=spec.get("reorder", 0.0),
                        seed=spec.get("seed", 0) * 1000 + seed_offset)
    return faults if faults.active else None


def run_switch(spec: dict) -> None:
    """role switch (star), leaf or spine: the emulator on raw interfaces."""
    from emulator.fastpath import BatchProcessor
    from emulator.pipeline import SwitchConfig, SwitchPipeline
    from emulator.server import serve, warm_up
    from fpisa.net import EthEndpoint, RawEthernetTransport

    from .leaf import LeafSwitch

    workers = tuple(EthEndpoint(*w) for w in spec["workers"])
    # a leaf serves its own workers, the spine the leaves: each its own count
    job = JobSpec.from_dict(spec["job"]).replace(num_workers=len(workers))
    config = SwitchConfig(job, workers, record_orders=True)
    warm_up(config)
    pipeline = SwitchPipeline(config)
    ports = list(spec["ports"])
    faults = _faults(spec, spec.get("seed_offset", 0))
    if spec["role"] == "leaf":
        uplink = spec["uplink"]
        ports.append(uplink)
        leaf = LeafSwitch(pipeline, leaf_index=spec["leaf_index"], num_leaves=spec["num_leaves"],
                          global_ranks=spec["global_ranks"], total_workers=spec["total_workers"],
                          spine=EthEndpoint(uplink, *spec["spine"]), uplink_interface=uplink,
                          batch_processor=BatchProcessor(pipeline).process)
    transport = RawEthernetTransport(ports, local_ip=spec["ip"], listen_port=UDP_PORT)
    _say("ready")
    if spec["role"] == "leaf":
        stats = _serve_leaf(leaf, transport, faults)
        stats["send_errors"] = transport.send_errors
    else:
        stats = serve(pipeline, transport, faults=faults, should_stop=_stdin_has_line)
    sys.stdin.readline()
    stats["transport"] = {"ignored": transport.ignored, "oversize": transport.oversize,
                          "send_errors": transport.send_errors}
    np.savez(spec["out"] + ".npz", **pipeline.recorded_arrays())
    with open(spec["out"] + ".json", "w") as f:
        json.dump(stats, f)
    transport.close()
    _say("stopped")


def _serve_leaf(leaf, transport, faults: LinkFaults | None) -> dict:
    """The switch's loop (emulator.server.relay) around a leaf."""
    from emulator.server import relay
    from fpisa.netem import FaultInjector

    injector = FaultInjector(faults) if faults is not None else None
    relay(transport, leaf.process_batch, injector=injector, should_stop=_stdin_has_line)
    if injector is not None:
        return {**leaf.stats(), "faults": injector.counters.as_dict()}
    return leaf.stats()


def run_warm(spec: dict) -> None:
    """role warm: compile (and cache) the switch's Numba kernels once, before
    the nodes start together and would otherwise all compile at once."""
    from emulator.pipeline import SwitchConfig
    from emulator.server import warm_up

    job = JobSpec.from_dict(spec["job"]).replace(num_workers=2)
    warm_up(SwitchConfig(job, (("warm", 0), ("warm", 1))))
    _say("ready")


def run_worker(spec: dict) -> None:
    """role worker: the hosts allreduce client over the namespace's UDP stack."""
    from fpisa.net import UdpTransport
    from hosts.allreduce import gradient_like
    from hosts.worker import AllreduceClient, WorkerConfig

    rank = spec["rank"]
    transport = UdpTransport.bind(spec["ip"], spec["port"])
    client = AllreduceClient(WorkerConfig.from_dict(spec["worker_config"]), transport,
                             (spec["switch_ip"], UDP_PORT), faults=_faults(spec, 1 + rank))

    def data(repeat: int) -> np.ndarray:
        return gradient_like(spec["elements"], rank, spec["seed"] + repeat, spec["job"]["fmt"])

    bits, prepared = data(0), 0
    _say("ready")
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "exit":
            break
        repeat = int(words[1])
        if repeat != prepared:
            bits, prepared = data(repeat), repeat
        base = client.packet_ids
        start = time.perf_counter()
        result = client.allreduce(bits)
        end = time.perf_counter()
        np.save(f"{spec['out']}/result_w{rank}_r{repeat}.npy", result)
        # the next repeat's data now, so that generating it is not timed
        bits, prepared = data(repeat + 1), repeat + 1
        _say({"repeat": repeat, "start": start, "end": end, "packet_id_base": base,
              "packet_ids": client.packet_ids - base, "counters": client.counters.as_dict(),
              "conversion": client.conversion.as_dict(),
              "send_errors": transport.send_errors})
    transport.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hosts.mininet.nodes SPEC.json", file=sys.stderr)
        return ExitCode.USAGE
    try:
        with open(argv[0]) as f:
            spec = json.load(f)
        if spec["role"] == "worker":
            run_worker(spec)
        elif spec["role"] == "warm":
            run_warm(spec)
        else:
            run_switch(spec)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as e:
        traceback.print_exc()
        _say({"error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
