"""Predict-then-check exercises of the notebooks.

An exercise cell holds a variable the learner fills in (``None`` until then); the next cell calls
:func:`check` with the answer the package computes. With ``None`` it only says what to do, so a
notebook run top to bottom (nbval, Colab's "Run all") never fails on an unanswered exercise.

    my_evaluations = None          # your prediction: UNet evaluations of FastFace-AM1 at 4 steps
    check(my_evaluations, planned_evaluations(cfg, timesteps), "UNet evaluations", why="...")
"""

from __future__ import annotations

import math


def check(prediction, answer, what: str, *, why: str = "", rel_tol: float = 0.0, abs_tol: float = 0.0) -> None:
    """Print whether ``prediction`` matches ``answer`` (or, while it is None, what to do).

    Numbers compare with ``math.isclose(rel_tol, abs_tol)`` (exact by default: counts are exact);
    anything else compares with ``==`` (strings case- and space-insensitively).
    """
    if prediction is None:
        print(f"Exercise: write your prediction of {what} in the cell above (it is None), run it, then run this cell.")
        return
    if isinstance(answer, (int, float)) and isinstance(prediction, (int, float)):
        right = math.isclose(prediction, answer, rel_tol=rel_tol, abs_tol=abs_tol)
    elif isinstance(answer, str) and isinstance(prediction, str):
        right = prediction.strip().lower() == answer.strip().lower()
    else:
        right = prediction == answer
    verdict = "Right" if right else f"Not quite: you said {prediction!r}"
    print(f"{verdict}. {what}: {answer!r}." + (f" {why}" if why else ""))
