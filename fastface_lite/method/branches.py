"""Which UNet branches a step must evaluate, and what a run costs in UNet evaluations
(docs/method.md §6).

Guidance alone reads a branch only where its coefficient is non-zero (or the rescale, renorm or
norm recording read it: :func:`fastface_lite.method.dcg.needed_branches`). AM can force all three
back: the softmask transforms min-max normalise over the whole batch, so a branch's maps depend on
the other branches being in that batch.
"""

from __future__ import annotations

from dataclasses import replace

from fastface_lite.method import dcg
from fastface_lite.method.config import FastFaceConfig


def branches_for_step(cfg: FastFaceConfig, step_index: int, t) -> tuple[int, ...]:
    """Branches a step evaluates: what guidance reads, or all three where AM normalises over the
    batch (so the min-max statistics match the reference's three-branch batch)."""
    if cfg.attention.couples_batch(step_index):
        return (0, 1, 2)
    needed = dcg.needed_branches(step_index, t, cfg.guidance)
    return tuple(k for k in range(3) if needed[k])


def planned_evaluations(cfg: FastFaceConfig, timesteps) -> int:
    """UNet evaluations per image that `cfg` needs over `timesteps` (without norm recording)."""
    plain = cfg.replace(guidance=replace(cfg.guidance, record_norms=False))
    return sum(len(branches_for_step(plain, i, t)) for i, t in enumerate(timesteps))
