"""BMv2 (simple_switch) as the aggregating switch: build, run, configure.

The P4 programs live in :mod:`p4`; this package drives the p4lang tools
around them, none of which ship with the project (docs/p4.md):

- :mod:`.tools`: finds ``p4c-bm2-ss``, ``simple_switch``, ``simple_switch_CLI``.
- :mod:`.build`: compiles the programs into ``p4/build/`` (``fpisa p4 build``).
- :mod:`.switch`: starts ``simple_switch`` in pcap-file mode (no root) or on
  network interfaces, and stops it cleanly.
- :mod:`.netns`: veth pairs in a network namespace for the interface mode (root).
- :mod:`.control_plane`: configures a running switch for a job (multicast
  group, worker tables) and reads its counters and registers back, through
  ``simple_switch_CLI`` (thrift).
- :mod:`.pcap`: the few lines of the pcap format the file mode needs.
- :mod:`.bridge`: BMv2 as the switch of ``fpisa allreduce --switch bmv2``
  (loopback UDP <-> a veth into simple_switch, root).
- :mod:`.cli`: ``fpisa p4 build | constants | status``.
"""

from .tools import ToolMissing, missing_tools, require_tools

__all__ = ["ToolMissing", "missing_tools", "require_tools"]
