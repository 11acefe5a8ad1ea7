"""Settings shared by every test.

* Figures are drawn but never shown: the non-interactive Agg backend.
* Hypothesis profiles: ``ci`` (derandomized, so every run tries the same examples,
  and no deadline, since shared CI machines stall) is loaded when the environment
  variable ``CI`` is ``true``; ``dev`` (a fresh random draw on every run, to find new
  failures) otherwise. ``HYPOTHESIS_PROFILE=ci`` picks one explicitly.
* Under ``CI=true`` the PyTorch parity tests (tests/test_torch_parity.py) fail rather
  than skip when torch is missing; that module checks the same variable.
"""

import os

import matplotlib
from hypothesis import settings

matplotlib.use("Agg")

IN_CI = os.environ.get("CI", "").lower() == "true"

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60)
settings.register_profile("dev", derandomize=False, deadline=None, max_examples=40)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))
