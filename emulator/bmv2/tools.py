"""Where the p4lang tools are, and a clear error when they are not."""

from __future__ import annotations

import shutil

__all__ = ["P4C", "SIMPLE_SWITCH", "SIMPLE_SWITCH_CLI", "ToolMissing", "missing_tools",
           "require_tools", "tool_path"]

P4C = "p4c-bm2-ss"
SIMPLE_SWITCH = "simple_switch"
SIMPLE_SWITCH_CLI = "simple_switch_CLI"

_WHERE = ("p4c (p4c-bm2-ss, tested with v1.2.4.8) and BMv2 (simple_switch, simple_switch_CLI, "
          "tested with 1.15.5) are not in PyPI or Debian; install them from p4lang sources "
          "or use the P4 tutorial VM, and put them on PATH (docs/p4.md)")


class ToolMissing(RuntimeError):
    """A required p4lang tool is not on PATH (CLI exit code 3)."""

    def __init__(self, names: list[str]):
        super().__init__(f"not on PATH: {', '.join(names)}. {_WHERE}")
        self.names = names


def tool_path(name: str) -> str | None:
    return shutil.which(name)


def missing_tools(*names: str) -> list[str]:
    return [n for n in names if tool_path(n) is None]


def require_tools(*names: str) -> None:
    missing = missing_tools(*names)
    if missing:
        raise ToolMissing(missing)
