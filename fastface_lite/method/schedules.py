"""Guidance-weight schedules: how the DCG weights `a` and `b` change over the denoising steps.

Two families exist (docs/method.md §5):

* ``custom``: one value per step index, what FastFace itself uses (e.g. a = [1, 1.5, 1.5, 1]).
  Only defined for the step count it was written for.
* timestep shapes: a base weight ``w`` modulated by the scheduler timestep ``t`` in [0, T],
  T = 1000. These are defined for any step count.

Everything here is plain Python on floats; the schedule is evaluated once per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastface_lite.errors import ConfigError
from fastface_lite.method.checks import MAX_WEIGHT, number, numbers_list, optional_number

T_TRAIN = 1000  # number of training timesteps of SDXL and its distillations


def _linear(w, t, c, s):
    return w * (1 - t / T_TRAIN)


def _inv_linear(w, t, c, s):
    return w * t / T_TRAIN


def _cos(w, t, c, s):
    return w * (math.cos(math.pi * t / T_TRAIN) + 1)


def _pcs(w, t, c, s):
    # "power cosine": 0 at t = T, w at t = 0; s bends the curve
    return 0.5 * w * (1 - math.cos(math.pi * ((T_TRAIN - t) / T_TRAIN) ** s))


def _capshape(w, t, c, s):
    # rises as w t/T up to the middle of the trajectory, then falls as w (1 - t/T)
    return _linear(w, t, c, s) if t > T_TRAIN / 2 else w * t / T_TRAIN


def _mirrored(shape):
    """The same shape evaluated at T - t (early and late steps swap roles)."""
    return lambda w, t, c, s: shape(w, T_TRAIN - t, c, s)


def _floored(shape):
    """The shape, never below the floor c."""
    return lambda w, t, c, s: max(c, shape(w, t, c, s))


# name -> (function(w, t, c, s), parameters it needs)
TIMESTEP_SHAPES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "default": (lambda w, t, c, s: w, ()),
    "linear": (_linear, ()),
    "inv_linear": (_inv_linear, ()),
    "clamped_lin": (_floored(_linear), ("c",)),
    "inv_clamp_linear": (_floored(_inv_linear), ("c",)),
    "cos": (_cos, ()),
    "inv_cos": (_mirrored(_cos), ()),
    "pcs": (_pcs, ("s",)),
    "inv_pcs": (_mirrored(_pcs), ("s",)),
    "clamped_pcs": (_floored(_pcs), ("c", "s")),
    "inv_clamped_pcs": (_mirrored(_floored(_pcs)), ("c", "s")),
    "capshape": (_capshape, ()),
    "ccshape": (_floored(_capshape), ("c",)),
}
SCHEDULE_SHAPES = ("custom",) + tuple(TIMESTEP_SHAPES)


@dataclass(frozen=True)
class WeightSchedule:
    """One guidance weight over the steps.

    Args:
        shape: ``"custom"`` or one of :data:`TIMESTEP_SHAPES`.
        weight: base weight ``w`` (the reference's ``guidance_scale_a`` / ``_b``); unused by custom.
        values: per-step values for ``custom`` (one per denoising step).
        c: floor of the ``clamped_*`` / ``ccshape`` shapes.
        s: power of the ``*pcs`` shapes.
    """

    shape: str = "default"
    weight: float = 1.0
    values: tuple[float, ...] | None = None
    c: float | None = None
    s: float | None = None

    def __post_init__(self):
        if not isinstance(self.shape, str) or self.shape not in SCHEDULE_SHAPES:
            raise ConfigError(f"unknown schedule shape {self.shape!r}; valid shapes: {', '.join(SCHEDULE_SHAPES)}")
        if self.shape == "custom":
            if self.values is None or (isinstance(self.values, Sequence) and not self.values):
                raise ConfigError("a 'custom' schedule needs `values`, one weight per step")
            values = numbers_list(self.values, "schedule values", -MAX_WEIGHT, MAX_WEIGHT)
            object.__setattr__(self, "values", values)
        else:
            if self.values is not None:  # read by the custom shape only: a value here would be ignored
                raise ConfigError(
                    f"schedule shape {self.shape!r} takes no `values` (got {self.values!r}); per-step values "
                    "need shape='custom'"
                )
            object.__setattr__(self, "weight", number(self.weight, "schedule weight", -MAX_WEIGHT, MAX_WEIGHT))
            for name in ("c", "s"):
                object.__setattr__(self, name, optional_number(getattr(self, name), f"schedule parameter {name}"))
            for name in TIMESTEP_SHAPES[self.shape][1]:
                if getattr(self, name) is None:
                    raise ConfigError(f"schedule shape {self.shape!r} needs parameter {name!r}")

    @classmethod
    def constant(cls, weight: float) -> WeightSchedule:
        return cls("default", float(weight))

    @classmethod
    def per_step(cls, values) -> WeightSchedule:
        return cls("custom", values=values)  # checked as a list of numbers (a string is refused)

    @property
    def is_constant(self) -> bool:
        return self.shape == "default" or (self.shape == "custom" and len(set(self.values)) == 1)

    def check_steps(self, num_steps: int, what: str) -> None:
        """Raise if a per-step list does not cover exactly ``num_steps`` steps."""
        if self.shape == "custom" and len(self.values) != num_steps:
            raise ConfigError(
                f"{what}: the custom schedule has {len(self.values)} values "
                f"({list(self.values)}) but the run has {num_steps} steps; give one value per step "
                f"or use a timestep shape such as 'linear' that works for any step count"
            )

    def at(self, step_index: int, timestep: float) -> float:
        """The weight at this step (index into custom values, or shape of the timestep)."""
        if self.shape == "custom":
            if not 0 <= step_index < len(self.values):
                raise ConfigError(f"step index {step_index} is outside the custom schedule of {len(self.values)} steps")
            return self.values[step_index]
        fn, _ = TIMESTEP_SHAPES[self.shape]
        return float(fn(self.weight, float(timestep), self.c, self.s))
