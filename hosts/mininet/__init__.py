"""Mininet experiments: workers and switches as real hosts on emulated links.

- :mod:`.config`: :class:`ExperimentConfig`, one experiment's settings;
- :mod:`.network`: the :class:`Testbed` (star / two-level, shaped links, teardown);
- :mod:`.leaf`: the leaf switch of the two-level topology;
- :mod:`.nodes`: the programs run inside the hosts (switch, leaf, spine, worker);
- :mod:`.bmv2`: BMv2 ``simple_switch`` as the star's switch (``--switch bmv2``)
  and the order-free check of its results;
- :mod:`.experiment`: run one experiment, check it bit-exact, time it;
- :mod:`.sweep`: grids of experiments to CSV/JSON and plots;
- :mod:`.cli`: ``fpisa mininet run|sweep``.

docs/mininet.md describes the topologies, the hierarchical semantics and
how the committed example sweep was made.
"""

from .config import ExperimentConfig

__all__ = ["ExperimentConfig"]
