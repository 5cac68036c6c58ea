"""The store behind :func:`fastface_lite.inspect.trace.trace`: attention maps aggregated on the fly, and
the queries that turn them into heat maps (:class:`~fastface_lite.inspect.heatmap.HeatMap`).

How it is aggregated, before anything is stored (so memory does not grow with layers or heads):

* the UNet batch is split into guidance branches (branch-major: ``cat([branch_k ...])``, names from
  ``StepContext.branch_names``), and the ``batch_per_branch`` images of a branch are averaged
  (``per_image=True`` keeps them, addressed by ``image=i``);
* heads are averaged (``keep_heads=True`` keeps them, addressed by ``head=h``);
* the N = h*w positions are reshaped to the layer's grid and resized to one common resolution
  (default: the grid of the first cross-attention layer the UNet runs, SDXL's finest, latent/2);
* layers are averaged within their block (``down_blocks.1``, ``down_blocks.2``, ``mid_block``,
  ``up_blocks.0``, ``up_blocks.1``), or kept per layer with ``group="layer"``;
* one running sum (and count) per (kind/stage, block, step, branch), holding all recorded tokens.

Memory bound (the store's tensor bytes, float32; see :func:`memory_bound`)::

    bytes <= 4 * R_h * R_w * G * S * Br * I * Hd * (K_text + n_stages * K_id)

with R the common resolution, G the blocks (or layers with ``group="layer"``), S the recorded steps,
Br the branch names, I the images per branch (1 unless ``per_image``), Hd the largest head count
(1 unless ``keep_heads``), K_text the recorded text tokens (77 by default), K_id the recorded ID
tokens (4 for FaceID) and n_stages the ID stages kept (2: raw and used). A layer's full
probability tensors exist only transiently, while that layer runs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from fastface_lite.method.am import unet_part
from fastface_lite.inspect.heatmap import HeatMap
from fastface_lite.sdxl.processor import StepContext

Selector = Union[None, int, str, Sequence[Union[int, str]]]
PARTS = ("down", "mid", "up")


# ----------------------------------------------------------------------------------------------
# sizes, names and labels
# ----------------------------------------------------------------------------------------------
def memory_bound(
    resolution: tuple[int, int],
    groups: int,
    steps: int,
    branches: int,
    text_tokens: int = 77,
    id_tokens: int = 4,
    stages: int = 2,
    images: int = 1,
    heads: int = 1,
) -> int:
    """Upper bound on :attr:`Trace.nbytes` (float32 store), as stated in the module docstring."""
    rh, rw = resolution
    return 4 * rh * rw * groups * steps * branches * images * heads * (text_tokens + stages * id_tokens)


def block_name(layer: str) -> str:
    """The block of a layer: "down_blocks.1.attentions.0...attn2" -> "down_blocks.1"; mid -> "mid_block"."""
    parts = layer.split(".")
    return parts[0] if parts[0] == "mid_block" else ".".join(parts[:2])


def _matches(name: str, selector: str) -> bool:
    """A block/layer ``name`` matches a part ("down"), a block ("down_blocks.1") or itself."""
    if selector in PARTS:
        return unet_part(name) == selector
    return name == selector or name.startswith(selector + ".")


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple, set, range)) else [x]


def _numbers(values: list[int]) -> str:
    """[0, 1, 2, 3] -> "0-3", [0, 2] -> "0,2", [1] -> "1"."""
    values = sorted(values)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))


def _span(values: list[int], what: str) -> str:
    """"step 1" or "steps 0-3"."""
    return f"{what}{'s' if len(values) > 1 else ''} {_numbers(values)}"


# ----------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------
class AttentionStore:
    """Running sums of attention maps, and the queries over them (:meth:`maps`).

    The base class of :class:`~fastface_lite.inspect.trace.Trace`, which creates the store in its
    ``__init__`` (``_sums``, ``_counts``, ``_groups``, ``_branch_index``, ``timesteps``,
    ``resolution``, ``_latent_hw`` and the options ``group``, ``keep_heads``, ``per_image``,
    ``stages``, ``_branches``) and turns tokens into rows of the store (``_rows``).
    """

    # -- aggregation ----------------------------------------------------------------------------
    def _reduce(self, probs: torch.Tensor, context: StepContext) -> torch.Tensor:
        """(B, heads, N, K) -> (branches, K, I, Hd, R_h, R_w), averaged as configured."""
        batch, heads, n, k = probs.shape
        names = context.branch_names or ("batch",)
        if batch % len(names):
            raise RuntimeError(f"a batch of {batch} does not split into the branches {names}")
        x = probs.float().reshape(len(names), batch // len(names), heads, n, k)
        # means before resizing: resizing is linear, so the order does not change the result
        if not self.per_image:
            x = x.mean(1, keepdim=True)
        if not self.keep_heads:
            x = x.mean(2, keepdim=True)
        h, w = self._grid(n)
        if self.resolution is None:
            self.resolution = (h, w)
        nb, images, hd = x.shape[:3]
        x = x.permute(0, 4, 1, 2, 3).reshape(-1, 1, h, w)
        rh, rw = self.resolution
        if (h, w) != (rh, rw):
            # bilinear weights are convex, so maps that sum to 1 over tokens still do
            mode = "bilinear" if h <= rh and w <= rw else "area"
            x = F.interpolate(x, size=(rh, rw), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        return x.reshape(nb, k, images, hd, rh, rw)

    def _accumulate(self, kind, stage, layer, context, reduced) -> None:
        names = context.branch_names or ("batch",)
        indices = context.branches or tuple(range(len(names)))
        group = block_name(layer) if self.group == "block" else layer
        self._groups.setdefault(group)
        self.timesteps[context.step_index] = context.timestep
        for b, (name, index) in enumerate(zip(names, indices)):
            if self._branches is not None and name not in self._branches:
                continue
            self._branch_index.setdefault(name, index)
            key = (kind, stage, group, context.step_index, name)
            if key not in self._sums:
                self._sums[key] = reduced[b].clone()  # a compact copy: never a view of the batch
                self._counts[key] = 1
            elif self._sums[key].shape != reduced[b].shape:
                raise RuntimeError(
                    f"{group}: map shape changed from {tuple(self._sums[key].shape)} to "
                    f"{tuple(reduced[b].shape)} (images per branch changed with per_image=True?)"
                )
            else:
                self._sums[key] += reduced[b]
                self._counts[key] += 1

    def _grid(self, n: int) -> tuple[int, int]:
        """The (h, w) grid of a layer with n positions: the latent halved until it fits."""
        if self._latent_hw is None:
            side = math.isqrt(n)
            if side * side != n:
                raise RuntimeError(f"cannot tell the grid of {n} positions without the latent size")
            return side, side
        h, w = self._latent_hw
        while h * w > n:
            h, w = math.ceil(h / 2), math.ceil(w / 2)  # stride-2 convs with padding 1 round up
        if h * w != n:
            raise RuntimeError(f"{n} positions are not a halving of the latent grid {self._latent_hw}")
        return h, w

    # -- queries --------------------------------------------------------------------------------
    @property
    def blocks(self) -> list[str]:
        """Recorded blocks (or layers with group="layer"), in UNet order."""
        return list(self._groups)

    @property
    def steps(self) -> list[int]:
        return sorted(self.timesteps)

    @property
    def branches(self) -> list[str]:
        """Recorded branch names in batch order, e.g. ["uncond", "id", "text+id"]."""
        return sorted(self._branch_index, key=self._branch_index.get)

    @property
    def nbytes(self) -> int:
        """Bytes held by the store's tensors (what :func:`memory_bound` bounds)."""
        return sum(t.numel() * t.element_size() for t in self._sums.values())

    def maps(
        self,
        kind: str = "text",
        token: Selector = None,
        block: Union[None, str, Sequence[str]] = None,
        step: Union[None, int, Sequence[int]] = None,
        branch: Optional[str] = None,
        stage: str = "used",
        image: Optional[int] = None,
        head: Optional[int] = None,
    ) -> HeatMap:
        """One heat map: the mean over the selected tokens, blocks and steps.

        Args:
            kind: "text" (prompt tokens) or "id" (ID tokens of the IP branch).
            token: text: a word of the prompt (all its BPE tokens, every occurrence), a position
                0..76, or a list of them; id: an index 0..T-1, a list, or None for all.
                Several tokens give their mean.
            block: a block ("down_blocks.1", "mid_block", ...), a part ("down", "mid", "up"),
                a layer name (with group="layer"), a list of these, or None for all recorded.
            step: a step index, a list, or None for all steps where ``branch`` was evaluated.
            branch: a branch name; None picks the last branch in batch order (FastFace's "text+id",
                a stock pipeline's "cond").
            stage: "raw" (before AM) or "used" (after AM); ID maps only, text has no AM.
            image: with per_image=True, the image within the branch; None averages them.
            head: with keep_heads=True, the head; None averages them.
        Returns:
            :class:`HeatMap` of shape (R_h, R_w): the equal-weight mean of the per-(block, step)
            maps selected, each the mean of its layers.
        """
        if kind not in ("text", "id"):
            raise ValueError(f"kind must be 'text' or 'id', got {kind!r}")
        if stage not in ("raw", "used"):
            raise ValueError(f"stage must be 'raw' or 'used', got {stage!r}")
        if kind == "id" and stage not in self.stages:
            raise ValueError(f"stage {stage!r} was not recorded (trace(..., stages={self.stages}))")
        store_stage = stage if kind == "id" else None
        if not any(key[0] == kind for key in self._sums):
            raise ValueError(f"no {kind} maps were recorded")
        branch = branch if branch is not None else self.branches[-1]
        if branch not in self._branch_index:
            raise ValueError(f"branch {branch!r} was not recorded; recorded: {self.branches}")
        groups = self._select_groups(block)
        steps = self.steps if step is None else [int(s) for s in _as_list(step)]
        keys = [(kind, store_stage, g, s, branch) for g in groups for s in steps]
        keys = [k for k in keys if k in self._sums]
        if not keys:
            raise ValueError(
                f"nothing recorded for block={block!r}, step={step!r}, branch={branch!r}; "
                f"blocks {self.blocks}, steps {self.steps}"
            )
        rows, label = self._rows(kind, token)
        total = None
        for key in keys:
            value = self._sums[key][rows].mean(0) / self._counts[key]  # (I, Hd, R_h, R_w)
            total = value if total is None else total + value
        total = total / len(keys)
        total = self._pick(total, image, self.per_image, "image", "per_image")
        total = self._pick(total, head, self.keep_heads, "head", "keep_heads")
        block_label = "all blocks" if block is None else ", ".join(_as_list(block))
        step_label = _span(sorted({k[3] for k in keys}), "step")
        return HeatMap(total.detach().float().cpu(), kind, label, block_label, step_label, branch,
                       stage if kind == "id" else None)

    @staticmethod
    def _pick(x: torch.Tensor, index, kept: bool, what: str, option: str) -> torch.Tensor:
        """Select or average the leading dim (images, then heads)."""
        if index is None:
            return x.mean(0)
        if not kept:
            raise ValueError(f"{what}={index} needs trace(..., {option}=True)")
        if not 0 <= index < x.shape[0]:
            raise ValueError(f"{what}={index} is outside 0..{x.shape[0] - 1}")
        return x[index]

    def _select_groups(self, block) -> list[str]:
        if block is None:
            return self.blocks
        selectors = _as_list(block)
        groups = [g for g in self.blocks if any(_matches(g, s) for s in selectors)]
        if not groups:
            raise ValueError(f"block {block!r} was not recorded; recorded: {self.blocks}")
        return groups
