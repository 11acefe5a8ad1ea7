"""Numeric answers: each chapter registers its keys with :func:`answer_key`, and
:func:`check_answer` judges a reader's value against one."""

from __future__ import annotations

import difflib
import re

import numpy as np

from .judging import UNANSWERED, CheckResult, never_raises

__all__ = ["check_answer", "ANSWERS", "answer_key"]


# label -> dict(what, tol, rel, any_order, each, right, wrong, also): see answer_key.
# (No doc comment on purpose: the API page must not print the keys.)
# Each chapter module registers its chapter's keys when it is imported.
ANSWERS: dict = {}


def answer_key(label, what, tol, right, wrong=None, also=None, **options):
    """Register the answer key of exercise part ``label``.

    what: the answer in words (shown in every message); tol: the tolerance, absolute,
    or relative with ``rel=True``; ``any_order=True`` compares sorted values;
    ``each=True`` judges every value given against the one right number;
    ``keyed=True`` accepts a dict, its values in order (a row of a chapter's table).
    right: the value, or a function computing it (called when checked).
    wrong: {the mistake it reveals: wrong value}; also: {note: a value also right}.
    """
    opts = dict(rel=False, any_order=False, each=False, keyed=False) | options
    ANSWERS[label] = dict(what=what, tol=tol, right=right, wrong=wrong or {}, **opts)
    ANSWERS[label]["also"] = also or {}


def _value(v):
    return np.asarray(v() if callable(v) else v)


@never_raises
def check_answer(label, value):
    """Judge ``value`` (a number, or a list, tuple or array of numbers; a dict where
    the key says so, e.g. a table row) for the
    exercise part ``label`` of ``ANSWERS``, within the key's stated tolerance; a
    known wrong value is named with the mistake it reveals. The answer is not shown."""
    if not isinstance(label, str) or label not in ANSWERS:
        near = difflib.get_close_matches(str(label), list(ANSWERS), n=3)
        tip = ", ".join(near) if near else "one of bnlib.exercises.ANSWERS"
        chapter = re.match(r"ex-ch(\d)-", str(label))
        if chapter and not near:  # its chapter module registers the keys on import
            tip = f"running the chapter's first cell (it imports ch{chapter[1]})"
        return CheckResult(str(label), False, [f"no answer key {label!r}; try {tip}"])
    key = ANSWERS[label]
    if value is Ellipsis:  # the starter cell, not filled in yet
        return CheckResult(label, False, [f"expected: {key['what']}"], UNANSWERED)
    what, tol, want = key["what"], key["tol"], _value(key["right"])
    is_bool, want = want.dtype == bool, want.astype(float).ravel()
    judged = "exactly" if tol == 0 else f"to ±{tol:g}"
    judged = f"to a relative {tol:.0%}" if key["rel"] else judged
    if isinstance(value, dict) and not key["keyed"]:
        msg = f"give a tuple or list, not a dict, in this order: {key['what']}"
        return CheckResult(label, False, [msg])
    try:
        v = np.asarray(
            list(value.values()) if isinstance(value, dict) else value, float
        )
    except Exception:
        v = np.full(want.size + 1, np.nan)
    v = v.ravel()
    if not (v.size == want.size or key["each"] and v.size) or not np.isfinite(v).all():
        msg = f"expected {want.size} finite number(s): {what}; got {value!r:.60}"
        return CheckResult(label, False, [msg])

    def close(a, b):
        a, b = np.asarray(a, float).ravel(), _value(b).astype(float).ravel()
        b = np.full(a.size, b[0]) if key["each"] and b.size == 1 else b
        if a.shape != b.shape:
            return False
        a, b = (np.sort(a), np.sort(b)) if key["any_order"] else (a, b)
        room = tol * (np.abs(b) if key["rel"] else 1) + 1e-12 * np.abs(b)
        return bool(np.all(np.abs(a - b) <= room))

    right = f"right: {what}, judged {judged}."
    if close(v, want):
        return CheckResult(label, True, [right])
    note = next((note for note, alt in key["also"].items() if close(v, alt)), None)
    if note:
        return CheckResult(label, True, [f"{right} {note}"])
    cause = next((msg for msg, w in key["wrong"].items() if close(v, w)), None)
    hint = (
        ("Most likely cause: " + cause)
        if cause
        else "Hint: " + _answer_hint(v, want, close, what, is_bool, key["any_order"])
    )
    return CheckResult(
        label, False, [f"not right: {what}, judged {judged}.", hint], cause
    )


def _answer_hint(v, want, close, what, is_bool, key_any_order=False):
    """A generic diagnosis of a wrong value that no key names."""
    if np.all(np.abs(want) <= 1) and np.any(want) and close(v / 100, want):
        return "this looks like a percentage; give a fraction (0.5, not 50)"
    if v.size > 1 and not is_bool and close(np.sort(v), np.sort(want)):
        return f"the right numbers in the wrong order; give {what}"
    if np.any(want) and close(-v, want):
        return "the right size with the wrong sign"
    if v.size > 1 and want.size == v.size:
        right = [
            str(i + 1) for i in range(v.size) if close(v[i : i + 1], want[i : i + 1])
        ]
        which = (
            f" (number {', '.join(right)}, counting from 1 in the order given)"
            if right and not is_bool and not key_any_order
            else ""
        )
        return f"{len(right)} of {v.size} values are right{which}"
    return "not one of the common mistakes; rework it from the exercise text"
