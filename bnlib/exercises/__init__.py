"""Self-checks for the course's exercises: a layer of its own between the library
(``bnlib/*.py``, which never imports it) and the chapters.

* :mod:`~bnlib.exercises.normalization`: code checkers,
  ``check_<what>(your_function)``. Each runs your code on four seeded cases (eps from
  1e-5 to 0.1, batches of 2 to 16, float64 and float32), compares each output with
  bnlib's and names the likely mistake.
* :mod:`~bnlib.exercises.answers`: ``check_answer(label, value)`` judges a number or a
  small array against an answer key of ``ANSWERS``, computed with bnlib or numpy.
* :mod:`~bnlib.exercises.cases`: ``case(kind, k)`` recreates the case a report names.
* :mod:`~bnlib.exercises.judging`: the parts every checker is built from, including
  the chapters' own (``never_raises``, ``judge_cases``, ``call_reader``,
  ``reader_outputs``, ``reader_name``, ``copy_array``).

Every checker returns a :class:`~bnlib.exercises.judging.CheckResult`; none prints the
answer or raises, whatever it gets. All public names are available here, as
``bnlib.exercises.check_answer``.

    >>> result = check_batchnorm_forward(my_batchnorm_forward)
    >>> result            # prints the report
    >>> assert result.passed
"""

from . import answers, cases, judging, normalization

_PARTS = (cases, judging, normalization, answers)
globals().update({n: getattr(m, n) for m in _PARTS for n in m.__all__})
__all__ = [n for m in _PARTS for n in m.__all__]
