"""Settings shared by every test.

* Figures are drawn but never shown: the non-interactive Agg backend.
* Hypothesis profiles: ``ci`` (derandomized, so every run tries the same examples,
  and no deadline, since shared CI machines stall) is loaded when the environment
  variable ``CI`` is ``true``; ``dev`` (a fresh random draw on every run, to find new
  failures) otherwise. ``HYPOTHESIS_PROFILE=ci`` picks one explicitly.
* ``checker_contract``: what every exercise checker promises, for the tests of the
  core's checkers and of a chapter module's own.
* Under ``CI=true`` the PyTorch parity tests (tests/test_torch_parity.py) fail rather
  than skip when torch is missing; that module checks the same variable.
"""

import os
import re

import matplotlib
import numpy as np
import pytest
from hypothesis import settings

matplotlib.use("Agg")

IN_CI = os.environ.get("CI", "").lower() == "true"

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60)
settings.register_profile("dev", derandomize=False, deadline=None, max_examples=40)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


# ------------------------------------------------------------------ exercise checkers
def _long_numbers(report):
    """Numbers in a report with more than 3 significant digits (an answer would show
    as one: the reports print differences to 3 digits and the cases' eps, shapes)."""
    digits = (
        re.sub(r"[^0-9]", "", n).lstrip("0")
        for n in re.findall(r"\d*\.\d+|\d+", report)
    )
    return [d for d in digits if len(d.rstrip("0")) > 3]


class CheckerContract:
    """What every code checker of bnlib.exercises promises, wherever it lives (the
    core or a chapter module): right answers pass, each catalogued mistake is named,
    no input and no returned value makes it raise, no report shows the answer."""

    #: What a reader might pass instead of their function.
    ODD = [None, 3, "f", [], {}, (1, 2), np.nan, object(), [[1, 2], [3]], lambda: 1]
    #: What a reader's function might return (or their class build).
    JUNK = [None, 3, "x", [], {}, {"a": 1}, (1, 2), (None, None), [[1, 2], [3]]]
    JUNK += [np.nan, object(), np.zeros(3), np.zeros((2, 2, 2)), (np.zeros(3),) * 5]
    JUNK += [iter([1])]

    @staticmethod
    def judges(result, named=None):
        """A right answer (``named`` None) passes; a wrong one fails, its report names
        ``named`` and shows the failing case, how to recreate it and the interface."""
        assert "could not judge" not in result.report, result.report
        assert "array(" not in result.report, result.report
        assert not _long_numbers(result.report), result.report
        if named is None:
            assert result.passed and bool(result) and result.cause is None
            assert "PASSED" in result.report, result.report
            return
        assert not result.passed and not bool(result), result.report
        assert named in result.report, result.report
        assert "none of the common mistakes matches" not in result.report
        for line in (
            "on case ",
            "Recreate it: ",
            "= bnlib.exercises.case(",
            "Interface: ",
        ):
            assert line in result.report, result.report

    @classmethod
    def rejects_odd_input(cls, check):
        for odd in cls.ODD:
            result = check(odd)
            assert type(result).__name__ == "CheckResult" and not result.passed

    @classmethod
    def rejects_junk_returned(cls, check):
        """Whatever the reader's function returns (or a class builds), the report says
        what is wrong with it; nothing escapes as 'could not judge'."""
        for junk in cls.JUNK:
            result = check(lambda *a, junk=junk, **k: junk)
            assert not result.passed and "could not judge" not in result.report, (
                junk,
                result.report,
            )


@pytest.fixture
def checker_contract():
    return CheckerContract
