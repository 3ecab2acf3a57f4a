"""The exit codes of every ``fpisa`` command (one definition).

0: success. 1: a check failed (a result not bit-exact, a worker or the
switch died, a simulation disagreeing with the numerics core). 2: bad usage
or configuration (a ValueError with a message). 3: a required external
tool (p4c, BMv2, Mininet, torch) is missing. 130: interrupted (Ctrl-C).
143: terminated (SIGTERM; cleaned up as after Ctrl-C).
"""

from __future__ import annotations

import enum

__all__ = ["ExitCode", "EPILOG"]


class ExitCode(enum.IntEnum):
    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    TOOL_MISSING = 3
    INTERRUPTED = 130
    TERMINATED = 143


#: the line every --help ends with
EPILOG = ("exit codes: 0 ok, 1 check failed, 2 bad usage/config, 3 required tool missing, 130 interrupted, "
          "143 terminated")
