"""Checks of single values at the package's boundaries: numbers that are numbers, finite and in
range; integers that are integers; booleans that are booleans; lists that are lists.

Each check returns the value in its canonical type or raises :class:`~fastface_lite.errors.ConfigError`
naming the input (``what``), what it got, and what valid looks like. They never convert a string:
``"false"`` is not False, ``"1221"`` is not a list and ``"0.8"`` is not a number.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from fastface_lite.errors import ConfigError

# Bounds that keep a generation meaningful: far above any setting that gives an image, far below
# what overflows float16 activations (1e30 as a weight runs to a black image).
MAX_WEIGHT = 100.0  # guidance weights a, b (absolute value)
MAX_SCALE = 10.0  # IP-adapter and LoRA scales, AM scale and pow factors
MAX_SLOPE = 1000.0  # sigmoid slopes of the softmask transforms


def number(value, what: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number in [low, high] as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{what} must lie in [{low}, {high}], got {value!r}")
    return value


def optional_number(value, what: str, low: float | None = None, high: float | None = None) -> float | None:
    return None if value is None else number(value, what, low, high)


def integer(value, what: str, low: int | None = None) -> int:
    """An integer (an integral float such as 4.0 is accepted; 4.5 is not truncated, it is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(float(value)) or not float(value).is_integer():
            raise ConfigError(f"{what} must be an integer, got {value!r}; it is not rounded for you")
        value = int(value)
    value = int(value)
    if low is not None and value < low:
        kind = "a non-negative integer" if low == 0 else f"an integer >= {low}"
        raise ConfigError(f"{what} must be {kind}, got {value!r}")
    return value


def boolean(value, what: str) -> bool:
    """True or False only (a JSON boolean); strings such as "false" are refused, not guessed."""
    if not isinstance(value, bool):
        hint = " (a string: write true or false without quotes)" if isinstance(value, str) else ""
        raise ConfigError(f"{what} must be true or false, got {value!r}{hint}")
    return value


def sequence(value, what: str) -> tuple:
    """A list or tuple as a tuple; a string is refused (it is not a list of its characters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{what} must be a list, got {value!r} ({type(value).__name__}); e.g. [1.0, 1.5, 1.5, 1.0]")
    return tuple(value)


def numbers_list(value, what: str, low: float | None = None, high: float | None = None) -> tuple[float, ...]:
    return tuple(number(v, f"{what}[{i}]", low, high) for i, v in enumerate(sequence(value, what)))


def integers_list(value, what: str, low: int | None = 0) -> tuple[int, ...]:
    return tuple(integer(v, f"{what}[{i}]", low) for i, v in enumerate(sequence(value, what)))


def strings_list(value, what: str) -> tuple[str, ...]:
    items = sequence(value, what)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{what} must be a list of names (strings), got {list(items)!r}")
    return items


def instance(value, cls, what: str, hint: str = ""):
    """``value`` if it is a ``cls``; a dict (or anything else) is refused with how to build one."""
    if not isinstance(value, cls):
        how = hint or f"build one with {cls.__name__}(...)"
        raise ConfigError(f"{what} must be a {cls.__name__}, got {type(value).__name__} {value!r:.80}; {how}")
    return value
