"""The software switch: FPISA / SwitchML aggregation behind UDP or raw Ethernet.

- :mod:`emulator.pipeline`: the data plane (slots, shadow sets, bitmaps,
  the numerics core's registers), transport independent.
- :mod:`emulator.fastpath`: the same data plane over a batch of packets in
  one Numba call (what the server runs), checked byte for byte against it.
- :mod:`emulator.server`: the loop that feeds a pipeline from a transport,
  injects faults and reports statistics.
- :mod:`emulator.cli`: ``fpisa switch``.
"""

from .pipeline import SwitchConfig, SwitchCounters, SwitchPipeline

__all__ = ["SwitchConfig", "SwitchPipeline", "SwitchCounters"]
