"""Record cross-attention maps while a pipeline runs, and query them as heat maps.

A tracer in the style of DAAM's ``trace`` and prompt-to-prompt's ``AttentionStore``: one store,
aggregated on the fly, queried by token, block, step and guidance branch::

    with ff.trace(pipe) as tr:
        image = pipe(prompt="a photo of a person reading", fastface=cfg, ...).images[0]
    tr.maps(kind="text", token="reading", block="up_blocks.0", step=1).plot_overlay(image)
    tr.maps(kind="id", token=0, stage="raw")    # ID token 0 before AM; stage="used" after AM

What is recorded, per ``attn2`` layer and UNet evaluation:

* ``kind="text"``: softmax(Q K^T / sqrt(d)) over the 77 text tokens (the probabilities the text
  cross-attention uses; computed only when text is recorded, since SDPA never materialises them);
* ``kind="id"``: the ID-token probabilities of the decoupled IP branch (B, heads, N, T), both
  ``stage="raw"`` (before AM) and ``stage="used"`` (after AM; equal to raw where AM is off).

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

Pipelines: :class:`~fastface_lite.pipeline.FastFacePipeline` (its call nests its own processors
under the tracer's and keeps the tracer as observer), and a stock ``StableDiffusionXLPipeline``
with an IP adapter, where the tracer installs FastFace processors with AM off and names the branches
``("uncond", "cond")`` with CFG, ``("cond",)`` without. The pipeline is left exactly as found on
exit, also after an exception. Recording takes the explicit attention path, so outputs can differ
from an unrecorded run by float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .attention import attention_probs, unet_part
from .config import AttentionConfig
from .processor import StepContext, install

Selector = Union[None, int, str, Sequence[Union[int, str]]]
PARTS = ("down", "mid", "up")


# ----------------------------------------------------------------------------------------------
# heat maps
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HeatMap:
    """One aggregated attention map and what it shows.

    Attributes:
        values: (R_h, R_w) float32 on the CPU: attention probability, averaged as described.
        kind: "text" or "id".
        token: what was asked for, e.g. "'reading'", "#5 'photo'", "id 0" or "id 0-3".
        block: the block, layer or part, or "all blocks".
        step: the step index, or a description such as "steps 0-3".
        branch: the guidance branch, e.g. "text+id".
        stage: "raw" or "used" for ID maps, None for text maps.
    """

    values: torch.Tensor
    kind: str
    token: str
    block: str
    step: str
    branch: str
    stage: Optional[str] = None

    def __repr__(self) -> str:
        return f"HeatMap({self.title!r}, shape={tuple(self.values.shape)})"

    @property
    def title(self) -> str:
        stage = f" · {self.stage}" if self.stage else ""
        return f"{self.token} · {self.block} · {self.step} · {self.branch}{stage}"

    def to_numpy(self) -> np.ndarray:
        """(R_h, R_w) float32 array."""
        return self.values.numpy().copy()

    def plot_overlay(self, image=None, ax=None, **kwargs):
        """Draw the map over ``image`` (PIL, HxWx3 array or tensor; None: the map alone).
        Returns the matplotlib Axes. Keyword arguments go to :func:`fastface_lite.viz.plot_overlay`."""
        from .viz import plot_overlay

        return plot_overlay(self, image, ax=ax, **kwargs)

    def save(self, path, image=None, **kwargs) -> Path:
        """Save the overlay (or the map alone) as an image file, e.g. ``figures/reading.png``."""
        from .viz import save_figure

        ax = self.plot_overlay(image, **kwargs)
        return save_figure(ax.figure, path)


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
# the tracer
# ----------------------------------------------------------------------------------------------
class Trace:
    """Attention recorder for one pipeline; a context manager made by :func:`trace`.

    It is the :class:`~fastface_lite.processor.AttentionObserver` of the FastFace processors it
    installs. Queries (:meth:`maps`) work during and after the ``with`` block.
    """

    def __init__(
        self,
        pipe,
        *,
        text: bool = True,
        id: bool = True,  # noqa: A002 - reads as trace(pipe, text=True, id=True)
        stages: Sequence[str] = ("raw", "used"),
        text_tokens: Selector = None,
        id_tokens: Optional[Sequence[int]] = None,
        group: str = "block",
        keep_heads: bool = False,
        per_image: bool = False,
        resolution: Union[None, int, tuple[int, int]] = None,
        steps: Optional[Sequence[int]] = None,
        blocks: Optional[Sequence[str]] = None,
        branches: Optional[Sequence[str]] = None,
        prompt: Optional[str] = None,
        on_layer: Optional[Callable] = None,
    ):
        if not (text or id):
            raise ValueError("nothing to record: pass text=True and/or id=True")
        bad = [s for s in stages if s not in ("raw", "used")]
        if bad or not stages:
            raise ValueError(f"stages must be a non-empty subset of ('raw', 'used'), got {tuple(stages)}")
        if group not in ("block", "layer"):
            raise ValueError(f"group must be 'block' or 'layer', got {group!r}")
        self.pipe = pipe
        self.wants_text = bool(text)  # read by the processors: text probabilities cost an extra pass
        self.record_id = bool(id)
        self.stages = tuple(stages)
        self.group = group
        self.keep_heads = keep_heads
        self.per_image = per_image
        self.on_layer = on_layer
        self._text_request = text_tokens
        self._id_request = None if id_tokens is None else [int(t) for t in _as_list(id_tokens)]
        self._steps = None if steps is None else {int(s) for s in _as_list(steps)}
        self._blocks = None if blocks is None else _as_list(blocks)
        self._branches = None if branches is None else set(_as_list(branches))
        if isinstance(resolution, int):
            resolution = (resolution, resolution)
        self.resolution: Optional[tuple[int, int]] = None if resolution is None else tuple(resolution)

        self._sums: dict[tuple, torch.Tensor] = {}  # (kind, stage, group, step, branch) -> (K, I, Hd, R_h, R_w)
        self._counts: dict[tuple, int] = {}
        self._text_positions: Optional[list[int]] = None  # rows of the text store = prompt positions
        self._id_positions: Optional[list[int]] = None
        self._groups: dict[str, None] = {}  # insertion-ordered: UNet order
        self._branch_index: dict[str, int] = {}
        self.timesteps: dict[int, float] = {}
        self._latent_hw: Optional[tuple[int, int]] = None
        self._prompts: list[tuple[int, ...]] = []
        self._prompt_open = True
        self._fixed_prompt = prompt is not None  # given: never replaced by what the encoder sees
        self._installation = None
        self._hooks: list = []
        if prompt is not None:
            self._prompts.append(tuple(self._tokenizer()(prompt, padding="max_length", truncation=True).input_ids))

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> "Trace":
        if self._installation is not None:
            raise RuntimeError("this trace is already active")
        from .pipeline import FastFacePipeline

        unet = self.pipe.unet
        if isinstance(self.pipe, FastFacePipeline):
            # The pipeline installs its own processors per call; nested, they keep this observer
            # and set the step and branches themselves.
            self._installation = install(unet, AttentionConfig(), StepContext(), observer=self)
        else:
            pipe = self.pipe
            self._installation = install(
                unet, AttentionConfig(), StepContext(), observer=self, scheduler=pipe.scheduler,
                branch_names=lambda: ("uncond", "cond") if pipe.do_classifier_free_guidance else ("cond",),
            )
        try:
            self._hooks.append(unet.register_forward_pre_hook(self._before_unet, with_kwargs=True))
            encoder = self.pipe.text_encoder if self.pipe.text_encoder is not None else self.pipe.text_encoder_2
            if encoder is not None:
                self._hooks.append(encoder.register_forward_pre_hook(self._before_text_encoder, with_kwargs=True))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._remove()
        return False

    def _remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._installation is not None:
            self._installation.remove()
            self._installation = None

    def _before_unet(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self._latent_hw = tuple(sample.shape[-2:])
        self._prompt_open = True  # the next text-encoder call belongs to a new pipeline call

    def _before_text_encoder(self, module, args, kwargs):
        # encode_prompt runs the prompt before the negative prompt: keep the first call per run
        if not self._prompt_open or self._fixed_prompt:
            return
        self._prompt_open = False
        ids = args[0] if args else kwargs["input_ids"]
        for row in ids.tolist():
            if tuple(row) not in self._prompts:
                self._prompts.append(tuple(row))

    # -- the observer ---------------------------------------------------------------------------
    def on_text_attention(self, layer: str, context: StepContext, query, key) -> None:
        """query (B, heads, N, d), key (B, heads, 77, d) of a text cross-attention."""
        if not self.wants_text or not self._wanted(layer, context):
            return
        with torch.no_grad():
            probs = attention_probs(query.float(), key.float())  # (B, heads, N, 77)
            if self.on_layer is not None:
                self.on_layer(layer, "text", None, context, probs)
            if self._text_positions is None:
                self._text_positions = self._resolve_text_request(probs.shape[-1])
            self._add("text", None, layer, context, probs[..., self._text_positions])

    def on_id_attention(self, layer: str, context: StepContext, raw, used) -> None:
        """raw, used: (B, heads, N, T) ID-token probabilities before and after AM."""
        if not self.record_id or not self._wanted(layer, context):
            return
        with torch.no_grad():
            if self.on_layer is not None:
                self.on_layer(layer, "id", "raw", context, raw)
                self.on_layer(layer, "id", "used", context, used)
            if self._id_positions is None:
                self._id_positions = self._resolve_id_request(raw.shape[-1])
            reduced = {}
            for stage, probs in (("raw", raw), ("used", used)):
                if stage not in self.stages:
                    continue
                if stage == "used" and used is raw and "raw" in reduced:
                    reduced[stage] = reduced["raw"]  # AM off here: same tensor, reduce once
                else:
                    reduced[stage] = self._reduce(probs[..., self._id_positions], context)
                self._accumulate("id", stage, layer, context, reduced[stage])

    def _wanted(self, layer: str, context: StepContext) -> bool:
        if context.step_index is None:
            return False
        if self._steps is not None and context.step_index not in self._steps:
            return False
        return self._blocks is None or any(_matches(layer, b) for b in self._blocks)

    def _add(self, kind, stage, layer, context, probs) -> None:
        self._accumulate(kind, stage, layer, context, self._reduce(probs, context))

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

    # -- tokens ---------------------------------------------------------------------------------
    def _tokenizer(self):
        tok = getattr(self.pipe, "tokenizer", None) or getattr(self.pipe, "tokenizer_2", None)
        if tok is None:
            raise ValueError("the pipeline has no tokenizer; address text tokens by index")
        return tok

    def _prompt_ids(self) -> tuple[int, ...]:
        if not self._prompts:
            raise ValueError(
                "no prompt seen yet (was the pipeline called with prompt_embeds?); pass "
                "trace(pipe, prompt=...) or address text tokens by index"
            )
        if len(self._prompts) > 1:
            raise ValueError(
                f"the traced runs used {len(self._prompts)} different prompts, so a word has no "
                "single position; address text tokens by index"
            )
        return self._prompts[0]

    @property
    def prompt_tokens(self) -> list[tuple[int, str]]:
        """(position, token) of the prompt's tokens, BOS to the first EOS, e.g. (2, 'photo</w>')."""
        ids = self._prompt_ids()
        tokens = self._tokenizer().convert_ids_to_tokens(list(ids))
        end = self._end(ids)
        return [(i, tokens[i]) for i in range(end + 1)]

    def _end(self, ids) -> int:
        eos = self._tokenizer().eos_token_id
        return ids.index(eos) if eos in ids else len(ids) - 1

    @property
    def words(self) -> list[str]:
        """The prompt's words, as CLIP's BPE splits them (a word ends at a "</w>" token)."""
        return [word for word, _ in self._word_spans()]

    def _word_spans(self) -> list[tuple[str, list[int]]]:
        ids = self._prompt_ids()
        tok = self._tokenizer()
        tokens = tok.convert_ids_to_tokens(list(ids))
        spans, current = [], []
        for i in range(1, self._end(ids)):  # skip BOS, stop before EOS
            current.append(i)
            if tokens[i].endswith("</w>") or i == self._end(ids) - 1:
                spans.append((tok.decode([ids[j] for j in current]).strip(), current))
                current = []
        return spans

    def token_positions(self, word: str) -> list[int]:
        """Prompt positions of ``word`` (all its BPE tokens, at every occurrence).

        The positions are the same in both SDXL encoders: they share the BPE and the 77 slots.
        """
        tok = self._tokenizer()
        wanted = tok.convert_tokens_to_ids(tok.tokenize(word))
        ids = self._prompt_ids()
        end = self._end(ids)
        positions = []
        for start in range(1, end - len(wanted) + 1):
            if list(ids[start : start + len(wanted)]) == wanted:
                positions.extend(range(start, start + len(wanted)))
        if not wanted or not positions:
            raise ValueError(f"{word!r} is not in the prompt; its words are {self.words}")
        return sorted(set(positions))

    def _resolve_text_request(self, length: int) -> list[int]:
        if self._text_request is None:
            return list(range(length))
        positions = []
        for t in _as_list(self._text_request):
            positions += self.token_positions(t) if isinstance(t, str) else [int(t)]
        bad = [p for p in positions if not 0 <= p < length]
        if bad:
            raise ValueError(f"text token positions {bad} are outside 0..{length - 1}")
        return sorted(set(positions))

    def _resolve_id_request(self, num_tokens: int) -> list[int]:
        if self._id_request is None:
            return list(range(num_tokens))
        bad = [t for t in self._id_request if not 0 <= t < num_tokens]
        if bad:
            raise ValueError(f"ID tokens {bad} do not exist: the adapter has {num_tokens} (0..{num_tokens - 1})")
        return sorted(set(self._id_request))

    def _rows(self, kind: str, token: Selector) -> tuple[list[int], str]:
        """Rows of the store and a label for the token(s) asked for."""
        if kind == "id":
            recorded = self._id_positions or []
            wanted = recorded if token is None else [int(t) for t in _as_list(token)]
            missing = [t for t in wanted if t not in recorded]
            if missing or not wanted:
                raise ValueError(f"ID tokens {missing or wanted} were not recorded; recorded: {recorded}")
            return [recorded.index(t) for t in wanted], f"id {_numbers(wanted)}"
        if token is None:
            raise ValueError("kind='text' needs a token: a word of the prompt or a position (0..76)")
        recorded = self._text_positions or []
        positions, labels = [], []
        for t in _as_list(token):
            if isinstance(t, str):
                positions += self.token_positions(t)
                labels.append(repr(t))
            else:
                positions.append(int(t))
                labels.append(self._position_label(int(t)))
        missing = [p for p in positions if p not in recorded]
        if missing:
            raise ValueError(f"text positions {missing} were not recorded (trace(..., text_tokens=...))")
        positions = sorted(set(positions))
        return [recorded.index(p) for p in positions], " + ".join(labels)

    def _position_label(self, position: int) -> str:
        try:
            token = self._tokenizer().convert_ids_to_tokens([self._prompt_ids()[position]])[0]
            return f"#{position} {token.replace('</w>', '')!r}"
        except ValueError:
            return f"#{position}"

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


def trace(pipe, **options) -> Trace:
    """Record attention maps of ``pipe`` inside a ``with`` block.

    Args:
        pipe: a FastFacePipeline, or a stock StableDiffusionXLPipeline with an IP adapter loaded.
        text: record text-token maps (costs one softmax(Q K^T) per layer).
        id: record ID-token maps.
        stages: ID stages to keep, ("raw", "used") by default.
        text_tokens: words/positions to record (default: all 77 positions); words are looked
            up in the prompt of the first traced run (or ``prompt=``).
        id_tokens: ID tokens to record (default: all).
        group: "block" (default) or "layer".
        keep_heads: keep heads instead of averaging them.
        per_image: keep the images of a branch instead of averaging them.
        resolution: common map size (int or (h, w)); default: the first cross-attention layer's grid.
        steps, blocks, branches: record only these step indices, blocks/parts, branch names.
        prompt: the prompt, for word lookup when the pipeline is called with prompt_embeds.
        on_layer: ``fn(layer, kind, stage, context, probs)`` called per layer with the full,
            unaggregated (B, heads, N, L) probabilities (for inspection and tests).
    Returns:
        a :class:`Trace`; use it as ``with trace(pipe) as tr: pipe(...)``.
    """
    return Trace(pipe, **options)
