"""The store behind a trace: attention maps aggregated on the fly, and the query that turns them
into a heat map (:class:`~fastface_lite.inspect.heatmap.HeatMap`).

An :class:`AttentionStore` knows nothing of pipelines, prompts or tokenizers: it is fed
probability tensors (:meth:`AttentionStore.add_text`, :meth:`AttentionStore.add_id`) and queried
by store row (:meth:`AttentionStore.maps`). :class:`~fastface_lite.inspect.trace.Trace` owns one,
feeds it from the attention processors and turns words and token positions into rows; the store
can as well be fed by hand::

    store = AttentionStore()
    store.add_id("up_blocks.0.attentions.0.transformer_blocks.0.attn2", context, raw, used)
    store.maps("id", rows=[0], block="up", stage="raw")

How it is aggregated, before anything is stored (so memory does not grow with layers or heads):

* the batch is split into guidance branches (branch-major: ``cat([branch_k ...])``, names from
  ``StepContext.branch_names``), and the images of a branch are averaged (``per_image=True``
  keeps them, addressed by ``image=i``);
* heads are averaged (``keep_heads=True`` keeps them, addressed by ``head=h``);
* the N = h*w positions are reshaped to the layer's grid and resized to one common resolution
  (default: the grid of the first layer added, in a UNet the first cross-attention layer it runs,
  SDXL's finest, latent/2);
* layers are averaged within their block (``down_blocks.1``, ``down_blocks.2``, ``mid_block``,
  ``up_blocks.0``, ``up_blocks.1``), or kept per layer with ``group="layer"``;
* one running sum (and count) per (kind/stage, block, step, branch), holding all added rows.

Memory bound (the store's tensor bytes, float32; see :func:`memory_bound`)::

    bytes <= 4 * R_h * R_w * G * S * Br * I * Hd * (K_text + n_stages * K_id)

with R the common resolution, G the blocks (or layers with ``group="layer"``), S the recorded steps,
Br the branch names, I the images per branch (1 unless ``per_image``), Hd the largest head count
(1 unless ``keep_heads``), K_text the text rows (77 when a trace keeps every position), K_id the
ID rows (4 for FaceID) and n_stages the ID stages kept (2: raw and used). A layer's full
probability tensors exist only transiently, while that layer runs.

What a query can fail with: :class:`ValueError` when the query is malformed whatever was
recorded (an unknown kind or stage, no rows, a negative index); :class:`~fastface_lite.errors.NothingRecorded`
when it is well formed but asks for maps the store does not hold (a kind, stage, branch, block,
step, row, image or head that was not recorded or not kept), so a caller can tell "not there"
from "asked wrongly" by the exception's class.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fastface_lite.errors import InputError, NothingRecorded
from fastface_lite.inspect.heatmap import HeatMap
from fastface_lite.method.am import unet_part
from fastface_lite.method.am_config import PARTS
from fastface_lite.sdxl.processor import StepContext

Selector = None | int | str | Sequence[int | str]
KINDS = ("text", "id")
STAGES = ("raw", "used")


# ----------------------------------------------------------------------------------------------
# sizes, names, selectors and labels (shared with the tracer)
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
    """Upper bound on :attr:`AttentionStore.nbytes` (float32 store), as stated in the module docstring."""
    rh, rw = resolution
    return 4 * rh * rw * groups * steps * branches * images * heads * (text_tokens + stages * id_tokens)


def block_name(layer: str) -> str:
    """The block of a layer: "down_blocks.1.attentions.0...attn2" -> "down_blocks.1"; mid -> "mid_block"."""
    parts = layer.split(".")
    return parts[0] if parts[0] == "mid_block" else ".".join(parts[:2])


def matches_block(name: str, selector: str) -> bool:
    """Whether a block or layer ``name`` is selected by ``selector``: a UNet part ("down", "mid",
    "up"), a block ("down_blocks.1", selecting its layers too) or the name itself."""
    if selector in PARTS:
        return unet_part(name) == selector
    return name == selector or name.startswith(selector + ".")


def as_list(selector) -> list:
    """A selector as a list: None -> [], a list/tuple/set/range -> its items, anything else -> [it]."""
    if selector is None:
        return []
    return list(selector) if isinstance(selector, (list, tuple, set, range)) else [selector]


def format_indices(values: Sequence[int]) -> str:
    """Indices for a label: [0, 1, 2, 3] -> "0-3", [0, 2] -> "0,2", [1] -> "1"."""
    values = sorted(values)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))


def _span(values: list[int], what: str) -> str:
    """ "step 1" or "steps 0-3"."""
    return f"{what}{'s' if len(values) > 1 else ''} {format_indices(values)}"


# ----------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------
class AttentionStore:
    """Running sums of attention maps (:meth:`add_text`, :meth:`add_id`) and the query over them
    (:meth:`maps`).

    Args:
        stages: ID stages to keep, a non-empty subset of ("raw", "used").
        group: "block" (average the layers of a block) or "layer" (keep each layer).
        keep_heads: keep heads instead of averaging them.
        per_image: keep the images of a branch instead of averaging them.
        resolution: common map size (int or (h, w)); None: the grid of the first layer added.
        branches: keep only these branch names; None keeps all.
    """

    def __init__(
        self,
        *,
        stages: Sequence[str] = STAGES,
        group: str = "block",
        keep_heads: bool = False,
        per_image: bool = False,
        resolution: None | int | tuple[int, int] = None,
        branches: Sequence[str] | None = None,
    ):
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise ValueError(f"stages must be a non-empty subset of ('raw', 'used'), got {tuple(stages)}")
        if group not in ("block", "layer"):
            raise ValueError(f"group must be 'block' or 'layer', got {group!r}")
        if isinstance(resolution, int):
            resolution = (resolution, resolution)
        self.stages = tuple(stages)
        self.group = group
        self.keep_heads = bool(keep_heads)
        self.per_image = bool(per_image)
        self.resolution: tuple[int, int] | None = None if resolution is None else tuple(resolution)
        self._keep_branches = None if branches is None else set(as_list(branches))
        self._sums: dict[tuple, torch.Tensor] = {}  # (kind, stage, group, step, branch) -> (K, I, Hd, R_h, R_w)
        self._counts: dict[tuple, int] = {}
        self._groups: dict[str, None] = {}  # insertion-ordered: the order layers were added (UNet order)
        self._branch_index: dict[str, int] = {}
        self._row_counts: dict[str, int] = {}  # kind -> K, fixed by the first maps of that kind
        self.timesteps: dict[int, float] = {}  # step index -> timestep, of every step added

    # -- adding ---------------------------------------------------------------------------------
    def add_text(
        self, layer: str, context: StepContext, probs: torch.Tensor, latent_hw: tuple[int, int] | None = None
    ) -> None:
        """Add one layer's text-token probabilities.

        Args:
            layer: the layer's module name ("down_blocks.1.attentions.0...attn2").
            context: the step and the branches the batch holds (``step_index`` must be set).
            probs: (B, heads, N, K): the K rows to keep (e.g. the recorded prompt positions).
            latent_hw: the latent's (h, w), to tell a layer's grid from N; None: square grids.
        """
        self._accumulate("text", None, layer, context, self._reduce(probs, context, latent_hw))

    def add_id(
        self,
        layer: str,
        context: StepContext,
        raw: torch.Tensor,
        used: torch.Tensor,
        latent_hw: tuple[int, int] | None = None,
    ) -> None:
        """Add one layer's ID-token probabilities before (raw) and after (used) AM, each
        (B, heads, N, K); the stages not kept are dropped. ``used is raw`` (AM off) reduces once."""
        reduced = {}
        for stage, probs in (("raw", raw), ("used", used)):
            if stage not in self.stages:
                continue
            if stage == "used" and used is raw and "raw" in reduced:
                reduced[stage] = reduced["raw"]
            else:
                reduced[stage] = self._reduce(probs, context, latent_hw)
            self._accumulate("id", stage, layer, context, reduced[stage])

    def _reduce(self, probs: torch.Tensor, context: StepContext, latent_hw) -> torch.Tensor:
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
        h, w = _grid(n, latent_hw)
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
        if context.step_index is None:
            raise ValueError(f"{layer}: the context has no step_index; set it before adding maps")
        rows = self._row_counts.setdefault(kind, reduced.shape[1])
        if reduced.shape[1] != rows:
            raise RuntimeError(f"{layer}: {reduced.shape[1]} {kind} rows, but earlier maps had {rows}")
        names = context.branch_names or ("batch",)
        indices = context.branches or tuple(range(len(names)))
        group = block_name(layer) if self.group == "block" else layer
        self._groups.setdefault(group)
        self.timesteps[context.step_index] = context.timestep
        for b, (name, index) in enumerate(zip(names, indices, strict=True)):
            if self._keep_branches is not None and name not in self._keep_branches:
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

    # -- what is held ---------------------------------------------------------------------------
    @property
    def blocks(self) -> list[str]:
        """Recorded blocks (or layers with group="layer"), in the order added (UNet order)."""
        return list(self._groups)

    @property
    def steps(self) -> list[int]:
        """Recorded step indices, ascending."""
        return sorted(self.timesteps)

    @property
    def branches(self) -> list[str]:
        """Recorded branch names in batch order, e.g. ["uncond", "id", "text+id"]."""
        return sorted(self._branch_index, key=self._branch_index.get)

    @property
    def nbytes(self) -> int:
        """Bytes held by the store's tensors (what :func:`memory_bound` bounds)."""
        return sum(t.numel() * t.element_size() for t in self._sums.values())

    def rows(self, kind: str) -> int:
        """How many rows (tokens) the maps of ``kind`` hold; 0 when none were added."""
        return self._row_counts.get(kind, 0)

    # -- the query ------------------------------------------------------------------------------
    def maps(
        self,
        kind: str = "text",
        rows: None | int | Sequence[int] = None,
        *,
        label: str | None = None,
        block: None | str | Sequence[str] = None,
        step: None | int | Sequence[int] = None,
        branch: str | None = None,
        stage: str = "used",
        image: int | None = None,
        head: int | None = None,
    ) -> HeatMap:
        """One heat map: the mean over the selected rows, blocks and steps.

        Args:
            kind: "text" or "id".
            rows: store rows (0..K-1 of what was added), a list of them, or None for all.
                Several rows give their mean.
            label: what the rows are, for the heat map's title (default: "rows 0-3").
            block: a block ("down_blocks.1", "mid_block", ...), a part ("down", "mid", "up"),
                a layer name (with group="layer"), a list of these, or None for all recorded.
            step: a step index, a list, or None for all steps where ``branch`` was recorded.
            branch: a branch name; None picks the last branch in batch order (FastFace's "text+id",
                a stock pipeline's "cond").
            stage: "raw" (before AM) or "used" (after AM); ID maps only, text has no AM.
            image: with per_image=True, the image within the branch; None averages them.
            head: with keep_heads=True, the head; None averages them.
        Returns:
            :class:`HeatMap` of shape (R_h, R_w): the equal-weight mean of the per-(block, step)
            maps selected, each the mean of its layers.
        Raises:
            ValueError: a malformed query; NothingRecorded: maps the store does not hold.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be 'text' or 'id', got {kind!r}")
        if stage not in STAGES:
            raise ValueError(f"stage must be 'raw' or 'used', got {stage!r}")
        if kind == "id" and stage not in self.stages:
            raise NothingRecorded(f"stage {stage!r} was not recorded (trace(..., stages={self.stages}))")
        store_stage = stage if kind == "id" else None
        count = self.rows(kind)
        if not any(key[0] == kind for key in self._sums):
            raise NothingRecorded(f"no {kind} maps were recorded")
        rows = list(range(count)) if rows is None else [int(r) for r in as_list(rows)]
        if not rows or min(rows) < 0:
            raise ValueError(f"rows must be indices 0..{count - 1}, got {rows}")
        if max(rows) >= count:
            raise NothingRecorded(
                f"{kind} rows {[r for r in rows if r >= count]} were not recorded; the store holds rows 0..{count - 1}"
            )
        branch = branch if branch is not None else self.branches[-1]
        if branch not in self._branch_index:
            raise NothingRecorded(f"branch {branch!r} was not recorded; recorded: {self.branches}")
        groups = self._select_groups(block)
        steps = self.steps if step is None else _step_indices(step)
        keys = [(kind, store_stage, g, s, branch) for g in groups for s in steps]
        keys = [k for k in keys if k in self._sums]
        missing = [s for s in steps if step is not None and not any(k[3] == s for k in keys)]
        if missing and keys:  # asked for by index: every step asked for must be there, none dropped
            raise NothingRecorded(
                f"step(s) {missing} of step={step!r} were not recorded for branch {branch!r} in block={block!r}; "
                f"recorded steps: {self.steps}"
            )
        if not keys:
            raise NothingRecorded(
                f"nothing recorded for block={block!r}, step={step!r}, branch={branch!r}; "
                f"blocks {self.blocks}, steps {self.steps}"
            )
        total = None
        for key in keys:
            value = self._sums[key][rows].mean(0) / self._counts[key]  # (I, Hd, R_h, R_w)
            total = value if total is None else total + value
        total = total / len(keys)
        total = _pick(total, image, self.per_image, "image", "per_image")
        total = _pick(total, head, self.keep_heads, "head", "keep_heads")
        block_label = "all blocks" if block is None else ", ".join(as_list(block))
        step_label = _span(sorted({k[3] for k in keys}), "step")
        label = label if label is not None else f"rows {format_indices(rows)}"
        return HeatMap(
            total.detach().float().cpu(), kind, label, block_label, step_label, branch, stage if kind == "id" else None
        )

    def _select_groups(self, block) -> list[str]:
        if block is None:
            return self.blocks
        selectors = as_list(block)
        unmatched = [s for s in selectors if not any(matches_block(g, s) for g in self.blocks)]
        if unmatched:  # one selector that matches nothing is an error, not silently dropped
            raise NothingRecorded(f"block {unmatched[0]!r} was not recorded; recorded: {self.blocks}")
        return [g for g in self.blocks if any(matches_block(g, s) for s in selectors)]


def _step_indices(step) -> list[int]:
    """``step`` (an index or a list of them) as a list of ints; anything else is an InputError."""
    steps = as_list(step)
    if not steps or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in steps):
        raise InputError(f"step must be a step index (an int from 0) or a list of them, got {step!r}")
    return [int(s) for s in steps]


def _pick(x: torch.Tensor, index, kept: bool, what: str, option: str) -> torch.Tensor:
    """Select or average the leading dim (images, then heads)."""
    if index is None:
        return x.mean(0)
    if index < 0:
        raise ValueError(f"{what}={index}: give an index from 0")
    if not kept:
        raise NothingRecorded(f"{what}={index} was averaged away; keep it with trace(..., {option}=True)")
    if index >= x.shape[0]:
        raise NothingRecorded(f"{what}={index} was not recorded; recorded: 0..{x.shape[0] - 1}")
    return x[index]


def _grid(n: int, latent_hw: tuple[int, int] | None) -> tuple[int, int]:
    """The (h, w) grid of a layer with n positions: the latent halved until it fits."""
    if latent_hw is None:
        side = math.isqrt(n)
        if side * side != n:
            raise RuntimeError(f"cannot tell the grid of {n} positions without the latent size")
        return side, side
    h, w = latent_hw
    while h * w > n:
        h, w = math.ceil(h / 2), math.ceil(w / 2)  # stride-2 convs with padding 1 round up
    if h * w != n:
        raise RuntimeError(f"{n} positions are not a halving of the latent grid {tuple(latent_hw)}")
    return h, w
