"""Decoupled classifier-free guidance (DCG), docs/method.md §4.

The UNet is evaluated on up to three branches per step. Their order, per ``dcg_type``:

    type 1:  e_u (no text, no ID)   e_t  (text)       e_ti (text + ID)   e = e_u + a(e_t - e_u) + b(e_ti - e_t)
    type 2:  e_u                    e_t  (text)       e_i  (ID)          e = e_u + a(e_t - e_u) + b(e_i - e_u)
    type 3:  e_u                    e_i  (ID)         e_ti (text + ID)   e = e_u + a(e_i - e_u) + b(e_ti - e_i)

Every combination is linear, e = c0 e0 + c1 e1 + c2 e2, so a branch with a zero coefficient is not
needed unless something else reads it (the rescale reads branches 1 and 2, renorm and norm
recording read all three). :func:`needed_branches` says which; :func:`combine` works with the
missing ones left out. That is where FastFace runs faster than evaluating all three always.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastface_lite.method.dcg_config import GuidanceConfig

BRANCH_NAMES = {
    1: ("uncond", "text", "text+id"),
    2: ("uncond", "text", "id"),
    3: ("uncond", "id", "text+id"),
}
# which conditions each branch carries: (has_text, has_id)
BRANCH_CONDITIONS = {
    1: ((False, False), (True, False), (True, True)),
    2: ((False, False), (True, False), (False, True)),
    3: ((False, False), (False, True), (True, True)),
}


def weights_at(step_index: int, timestep, cfg: GuidanceConfig) -> tuple[float, float]:
    """The weights (a, b) at this step."""
    t = float(timestep)
    return cfg.a.at(step_index, t), cfg.b.at(step_index, t)


def coefficients(a: float, b: float, dcg_type: int) -> tuple[float, float, float]:
    """Per-branch coefficients (c0, c1, c2) with e = c0 e0 + c1 e1 + c2 e2."""
    if dcg_type in (1, 3):  # e0 + a (e1 - e0) + b (e2 - e1)
        return 1.0 - a, a - b, b
    return 1.0 - a - b, a, b  # type 2: e0 + a (e1 - e0) + b (e2 - e0)


def needed_branches(step_index: int, timestep, cfg: GuidanceConfig) -> tuple[bool, bool, bool]:
    """Which of the three branches this step reads."""
    if cfg.renorm or cfg.record_norms:
        return True, True, True
    a, b = weights_at(step_index, timestep, cfg)
    needed = [c != 0.0 for c in coefficients(a, b, cfg.dcg_type)]
    if cfg.rescale is not None:
        needed[1] = needed[2] = True
    return tuple(needed)


def terms(branches: Sequence[torch.Tensor], dcg_type: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two guidance directions (term1, term2) of docs/method.md §4."""
    e0, e1, e2 = branches
    if dcg_type in (1, 3):
        return e1 - e0, e2 - e1
    return e1 - e0, e2 - e0


def term_norms(branches: Sequence[torch.Tensor], dcg_type: int) -> dict[str, float]:
    """Frobenius norms of the branches and terms (whole tensors), for plots of guidance per step."""
    term1, term2 = terms(branches, dcg_type)
    names = BRANCH_NAMES[dcg_type]
    tensors = dict(zip(names, branches, strict=True))
    tensors.update(term1=term1, term2=term2)
    return {k: float(torch.linalg.vector_norm(v.float())) for k, v in tensors.items()}


def combine(branches: Sequence[torch.Tensor | None], step_index: int, timestep, cfg: GuidanceConfig) -> torch.Tensor:
    """Combine branch predictions into one noise prediction.

    Args:
        branches: three tensors (B, C, H, W) in the order of ``cfg.dcg_type``; a branch that
            :func:`needed_branches` says is unused may be None.
    Returns:
        (B, C, H, W) guided noise prediction.
    """
    a, b = weights_at(step_index, timestep, cfg)
    if cfg.renorm:
        term1, term2 = terms(branches, cfg.dcg_type)
        # scaling term2 by r is the same as scaling b by r; r stays a 0-d tensor on the device
        # (a float() here would wait for the GPU at every step); renorm reads all three branches
        b = b * (torch.linalg.vector_norm(term1) / torch.linalg.vector_norm(term2))
    coeffs = coefficients(a, b, cfg.dcg_type)
    pred = None  # no dcg type has all three coefficients zero, so pred gets a value
    for c, e in zip(coeffs, branches, strict=True):
        if not torch.is_tensor(c) and c == 0.0:
            continue
        if e is None:
            raise ValueError(f"branch with coefficient {c} was not evaluated; see needed_branches()")
        pred = c * e if pred is None else pred + c * e
    if cfg.rescale is not None:
        pred = rescale(pred, branches[1], branches[2], cfg.rescale)
    return pred


def rescale(pred: torch.Tensor, out1: torch.Tensor, out2: torch.Tensor, phi: float) -> torch.Tensor:
    """Std rescale after combining (docs/method.md §4): per sample over (C, H, W), unbiased std.

    f = (std(out1) + std(out2)) / (2 std(pred)); f = phi f + (1 - phi); pred * f.
    """
    dims = tuple(range(1, pred.ndim))
    factor = (out1.std(dim=dims, keepdim=True) + out2.std(dim=dims, keepdim=True)) / (
        2 * pred.std(dim=dims, keepdim=True)
    )
    factor = phi * factor + (1 - phi)
    return pred * factor


def guide(noise_pred: torch.Tensor, step_index: int, timestep, cfg: GuidanceConfig) -> torch.Tensor:
    """DCG on a full three-branch batch.

    Args:
        noise_pred: (3B, C, H, W), the branches concatenated on dim 0 in the order of docs/method.md §4.
        step_index: index of the denoising step (for per-step schedules).
        timestep: scheduler timestep of the step (for timestep-shaped schedules).
        cfg: the guidance config.
    Returns:
        (B, C, H, W) guided noise prediction.
    """
    if noise_pred.shape[0] % 3:
        raise ValueError(f"noise_pred must hold three branches on dim 0, got a batch of {noise_pred.shape[0]}")
    return combine(noise_pred.chunk(3), step_index, timestep, cfg)
