"""Shared pytest set-up: the hypothesis profile every property test runs under.

"ci" has no deadline: the first call of a Numba kernel compiles it, which
would otherwise fail the first example of whichever test happens to run first.
Select another profile with HYPOTHESIS_PROFILE=dev (fewer examples).
"""

import os

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
