"""hw_model: an executable cycle model of a Banzai/Tofino-class switch pipeline.

It shows why FPISA needs new ALU features and what they buy against
SwitchML's integer aggregation: machines (machine.py) built from atoms
(atoms.py) run per-element programs (programs.py) that a Domino-style
mapper places or rejects (mapper.py); a cycle simulation executes them
(simulate.py) and must agree bit for bit with ``fpisa.aggregate``; metrics
(metrics.py) count stages, ALUs, passes, throughput and area; ``fpisa hw
report`` (cli.py) prints the comparison. docs/hw_model.md explains the model
and its limits. Stands alone: from ``fpisa`` it imports only definitions
(number formats, the wire header size), the host-side SwitchML conversion
and normalization of raw registers, and ``aggregate`` for checking.
"""

from .atoms import STATEFUL_ATOMS, STATELESS_ALUS, StatefulAtom, StatelessAlu
from .machine import PRESETS, Machine, ParserLimits, get_machine
from .mapper import NOT_EXPRESSIVE, TOO_SMALL, Mapping, MappingError, PacketPlan, map_program, plan_packet
from .metrics import AreaCosts, Metrics, evaluate, compare
from .programs import PROGRAM_NAMES, Program, build_program
from .simulate import CheckResult, check_against_numerics, simulate_fpisa, simulate_switchml

__all__ = [
    "Machine",
    "ParserLimits",
    "PRESETS",
    "get_machine",
    "StatelessAlu",
    "StatefulAtom",
    "STATELESS_ALUS",
    "STATEFUL_ATOMS",
    "Program",
    "PROGRAM_NAMES",
    "build_program",
    "Mapping",
    "PacketPlan",
    "MappingError",
    "NOT_EXPRESSIVE",
    "TOO_SMALL",
    "map_program",
    "plan_packet",
    "simulate_fpisa",
    "simulate_switchml",
    "check_against_numerics",
    "CheckResult",
    "AreaCosts",
    "Metrics",
    "evaluate",
    "compare",
]
