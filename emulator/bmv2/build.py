"""Compile the P4 programs with p4c-bm2-ss into p4/build/<program>.json.

A program is a source built for one element format: ``fpisa_fp16`` is
``p4/fpisa.p4`` compiled with ``-DFPISA_FORMAT_FP16`` (:attr:`p4.Program.defines`).
"""

from __future__ import annotations

import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from p4 import BASELINE, BUILD_DIR, INCLUDE_DIR, PROGRAMS, Program, get_program
from p4 import bmv2_opt
from p4.generate import stale_files

from .tools import P4C, require_tools, tool_path

__all__ = ["BuildResult", "build_program", "build_all", "ensure_built", "compiler_defines", "P4C_ARGS"]

P4C_ARGS = ("--arch", "v1model", "--std", "p4-16",
            # the lanes are long chains of straight-line selects (SEL, p4/include/headers.p4);
            # local copy propagation substitutes each definition into its uses and grows
            # them exponentially (one fpisa lane: > 100 s CPU with it, 3.5 s without)
            "--excludeMidendPasses", "P4::LocalCopyPropagation")


@dataclass(frozen=True)
class BuildResult:
    program: str
    json_path: Path
    seconds: float
    ok: bool
    output: str
    #: CPU seconds (user + system) of the compiler: on a shared machine, what
    #: the compile costs whatever else runs (wall time ``seconds`` includes waits)
    cpu_seconds: float = 0.0
    #: what p4.bmv2_opt removed from p4c's output ("" when not run)
    optimized: str = ""


def build_program(program: str | Program, out_dir: Path = BUILD_DIR, optimize: bool = True) -> BuildResult:
    """Run p4c-bm2-ss on one program; never raises for a compile error (ok=False).

    ``optimize``: then rewrite the JSON with p4.bmv2_opt, which removes the
    masks and casts p4c adds that cannot change a value (the same program,
    fewer operations for BMv2 to interpret; docs/p4.md "Speed on BMv2"). Its
    time counts in ``seconds`` and ``cpu_seconds``."""
    program = _program(program)
    require_tools(P4C)
    stale = stale_files()
    if stale:
        raise ValueError(
            "generated P4 files are stale (run `fpisa p4 constants`): "
            + ", ".join(str(p) for p in stale))
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{program.name}.json"
    cmd = [tool_path(P4C), *P4C_ARGS, *compiler_defines(program), "-o", str(json_path),
           str(program.source)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = proc.returncode == 0 and json_path.exists()
    optimized = ""
    if ok and optimize:
        own_before = time.process_time()
        optimized = str(bmv2_opt.optimize_file(json_path))
        cpu += time.process_time() - own_before
    seconds = time.perf_counter() - start
    return BuildResult(program.name, json_path, seconds, ok, (proc.stdout + proc.stderr).strip(), cpu,
                       optimized)


def compiler_defines(program: Program) -> list[str]:
    """The program's preprocessor symbols as p4c arguments (its element format)."""
    return [f"-D{symbol}" for symbol in program.defines]


def build_all(out_dir: Path = BUILD_DIR) -> list[BuildResult]:
    return [build_program(p, out_dir) for p in PROGRAMS.values()]


def _program(program: str | Program) -> Program:
    if isinstance(program, Program):
        return program
    return BASELINE if program == BASELINE.name else get_program(program)


def ensure_built(program: str | Program, out_dir: Path = BUILD_DIR) -> Path:
    """The program's JSON, compiled if missing or older than any P4 source
    (the program's file and everything under p4/include), or than the
    optimizer that rewrote it."""
    program = _program(program)
    json_path = out_dir / f"{program.name}.json"
    sources = [program.source, *INCLUDE_DIR.glob("**/*.p4"), Path(bmv2_opt.__file__)]
    newest = max(p.stat().st_mtime for p in sources)
    if json_path.exists() and json_path.stat().st_mtime >= newest:
        return json_path
    result = build_program(program, out_dir)
    if not result.ok:
        raise RuntimeError(f"p4c-bm2-ss failed on {program.source}:\n{result.output}")
    return result.json_path
