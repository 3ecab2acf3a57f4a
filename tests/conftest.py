"""Shared pytest set-up: the hypothesis profile every property test runs under,
and small helpers the test modules import (``from conftest import free_port``).

"ci" has no deadline: the first call of a Numba kernel compiles it, which
would otherwise fail the first example of whichever test happens to run first.
Select another profile with HYPOTHESIS_PROFILE=dev (fewer examples).
"""

import os
import socket

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_socket() -> socket.socket:
    """A UDP socket bound to a free loopback port (the caller closes it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def bit_view(array):
    """The bit patterns of a float array (numpy or torch), for comparing by bits."""
    if type(array).__module__.startswith("torch"):
        import torch

        return array.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[array.element_size()])
    import numpy as np

    array = np.asarray(array)
    return array.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[array.dtype.itemsize])
