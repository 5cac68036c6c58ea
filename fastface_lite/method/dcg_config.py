"""How the three guidance branches are combined: :class:`GuidanceConfig` (docs/method.md §3).

A frozen value: nothing mutates it during a run, so one run can never change the next.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastface_lite.errors import ConfigError
from fastface_lite.method.checks import boolean, instance, integer, optional_number
from fastface_lite.method.schedules import WeightSchedule

DCG_TYPES = (1, 2, 3)


@dataclass(frozen=True)
class GuidanceConfig:
    """How the three UNet branches are combined at each step (docs/method.md §4).

    Args:
        dcg_type: 1, 2 or 3 (3 is FastFace: e = e_u + a (e_i - e_u) + b (e_ti - e_i)).
        a, b: the two weights, as schedules over the steps.
        renorm: scale the second guidance term to the Frobenius norm of the first.
        rescale: phi of the std rescale applied after combining, or None for no rescale.
        record_norms: keep the norms of the branches and terms per step (needs all branches).
    """

    dcg_type: int = 3
    a: WeightSchedule = WeightSchedule()
    b: WeightSchedule = WeightSchedule()
    renorm: bool = False
    rescale: float | None = None
    record_norms: bool = False

    def __post_init__(self):
        if integer(self.dcg_type, "dcg_type") not in DCG_TYPES:
            raise ConfigError(f"dcg_type must be one of {DCG_TYPES}, got {self.dcg_type!r}")
        for name in ("a", "b"):
            hint = "e.g. WeightSchedule.constant(3.0) or WeightSchedule.per_step([1, 1.5, 1.5, 1])"
            instance(getattr(self, name), WeightSchedule, f"guidance weight {name}", hint)
        object.__setattr__(self, "renorm", boolean(self.renorm, "renorm"))
        object.__setattr__(self, "record_norms", boolean(self.record_norms, "record_norms"))
        object.__setattr__(self, "rescale", optional_number(self.rescale, "rescale (phi)", 0.0, 1.0))

    def check_steps(self, num_steps: int) -> None:
        self.a.check_steps(num_steps, "guidance weight a")
        self.b.check_steps(num_steps, "guidance weight b")
