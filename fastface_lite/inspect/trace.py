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

A :class:`Trace` owns an :class:`~fastface_lite.inspect.store.AttentionStore` (``tr.store``): the
trace hooks the pipeline, installs the processors, receives their maps and turns words and token
positions into rows of the store; the store aggregates (how, and the memory bound that follows, are
in :mod:`fastface_lite.inspect.store`) and answers queries with a
:class:`~fastface_lite.inspect.heatmap.HeatMap`. A query for maps that were not recorded raises
:class:`~fastface_lite.errors.NothingRecorded`; a malformed one raises :class:`ValueError`.

Pipelines: :class:`~fastface_lite.sdxl.pipeline.FastFacePipeline` (its call nests its own processors
under the tracer's and keeps the tracer as observer: the one way maps reach a trace), and a stock
``StableDiffusionXLPipeline`` with an IP adapter, where the tracer installs FastFace processors with
AM off and names the branches ``("uncond", "cond")`` with CFG, ``("cond",)`` without. The pipeline
is left exactly as found on exit, also after an exception. Any number of traces may record one
pipeline at once, entered and exited in any order: each records what it was asked, and the
pipeline is as found once the last one exits. Recording takes the explicit attention
path, so outputs can differ from an unrecorded run by float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fastface_lite.errors import InputError, NothingRecorded
from fastface_lite.inspect.heatmap import HeatMap
from fastface_lite.inspect.store import KINDS, AttentionStore, Selector, as_list, format_indices, matches_block
from fastface_lite.method.am import attention_probs
from fastface_lite.method.am_config import AttentionConfig
from fastface_lite.sdxl.processor import StepContext, install

TEXT_POSITIONS = 77  # CLIP's context: every SDXL prompt is padded or cut to 77 token positions
_TRACES = "_fastface_traces"  # attribute of a UNet while traces record it: their `_Traces`


class _Traces:
    """The traces active on one UNet, entered and exited in any order.

    One set of FastFace processors is installed for all of them (by the first trace), with this
    object as their observer: it hands every map to each active trace, so nested and overlapping
    traces each record what they were asked, and an exited trace records nothing. The last trace
    to exit removes the processors, which puts back the very objects found before the first.
    """

    def __init__(self, pipe):
        from fastface_lite.sdxl.pipeline import FastFacePipeline

        self.members: list[Trace] = []
        self.pipe = pipe
        if isinstance(pipe, FastFacePipeline):
            # The pipeline installs its own processors per call; nested, they keep this observer
            # and set the step and branches themselves. This is the one way maps reach a trace:
            # the pipeline takes no observer of its own.
            self.installation = install(pipe.unet, AttentionConfig(), StepContext(), observer=self)
        else:
            self.installation = install(
                pipe.unet,
                AttentionConfig(),
                StepContext(),
                observer=self,
                scheduler=pipe.scheduler,
                branch_names=lambda: ("uncond", "cond") if pipe.do_classifier_free_guidance else ("cond",),
            )

    def accepts(self, pipe) -> bool:
        """Whether a trace of ``pipe`` can join: the processors installed suit it (a FastFacePipeline
        steps them itself; a stock pipeline's steps are tracked through its own scheduler)."""
        from fastface_lite.sdxl.pipeline import FastFacePipeline

        both_fastface = isinstance(pipe, FastFacePipeline) and isinstance(self.pipe, FastFacePipeline)
        return pipe is self.pipe or both_fastface

    @property
    def wants_text(self) -> bool:
        return any(t.wants_text for t in self.members)

    def on_text_attention(self, layer: str, context: StepContext, query, key) -> None:
        for member in list(self.members):
            member.on_text_attention(layer, context, query, key)

    def on_id_attention(self, layer: str, context: StepContext, raw, used) -> None:
        for member in list(self.members):
            member.on_id_attention(layer, context, raw, used)


class Trace:
    """Attention recorder for one pipeline; a context manager made by :func:`trace`.

    It is the :class:`~fastface_lite.sdxl.processor.AttentionObserver` of the FastFace processors it
    installs, and owns the :class:`~fastface_lite.inspect.store.AttentionStore` (``store``) the maps
    go to. Queries (:meth:`maps`) work during and after the ``with`` block. The arguments are
    those of :func:`trace`.
    """

    def __init__(
        self,
        pipe,
        *,
        text: bool = True,
        id: bool = True,  # noqa: A002 - reads as trace(pipe, text=True, id=True)
        stages: Sequence[str] = ("raw", "used"),
        text_tokens: Selector = None,
        id_tokens: Sequence[int] | None = None,
        group: str = "block",
        keep_heads: bool = False,
        per_image: bool = False,
        resolution: None | int | tuple[int, int] = None,
        steps: Sequence[int] | None = None,
        blocks: Sequence[str] | None = None,
        branches: Sequence[str] | None = None,
        prompt: str | None = None,
        on_layer: Callable | None = None,
    ):
        if not (text or id):
            raise ValueError("nothing to record: pass text=True and/or id=True")
        self.store = AttentionStore(
            stages=stages,
            group=group,
            keep_heads=keep_heads,
            per_image=per_image,
            resolution=resolution,
            branches=branches,
        )
        self.pipe = pipe
        self.wants_text = bool(text)  # read by the processors: text probabilities cost an extra pass
        self._record_id = bool(id)
        self.on_layer = on_layer
        self._text_request = text_tokens
        self._id_request = None if id_tokens is None else [int(t) for t in as_list(id_tokens)]
        self._steps = None if steps is None else {int(s) for s in as_list(steps)}
        self._blocks = None if blocks is None else as_list(blocks)
        self._text_positions: list[int] | None = None  # rows of the text store = these prompt positions
        self._id_positions: list[int] | None = None
        self._latent_hw: tuple[int, int] | None = None
        self._prompts: list[tuple[int, ...]] = []
        self._prompt_open = True
        self._fixed_prompt = prompt is not None  # given: never replaced by what the encoder sees
        self._traces: _Traces | None = None  # while active: the traces of this UNet, this one among them
        self._hooks: list = []
        if prompt is not None:
            self._prompts.append(tuple(self._tokenizer()(prompt, padding="max_length", truncation=True).input_ids))

    # -- what the store holds (see AttentionStore) ------------------------------------------------
    @property
    def blocks(self) -> list[str]:
        """Recorded blocks (or layers with group="layer"), in UNet order."""
        return self.store.blocks

    @property
    def steps(self) -> list[int]:
        """Recorded step indices, ascending."""
        return self.store.steps

    @property
    def branches(self) -> list[str]:
        """Recorded branch names in batch order, e.g. ["uncond", "id", "text+id"]."""
        return self.store.branches

    @property
    def timesteps(self) -> dict[int, float]:
        """Step index -> scheduler timestep, of every recorded step."""
        return self.store.timesteps

    @property
    def nbytes(self) -> int:
        """Bytes held by the store's tensors (what :func:`~fastface_lite.inspect.store.memory_bound` bounds)."""
        return self.store.nbytes

    @property
    def resolution(self) -> tuple[int, int] | None:
        """The common (R_h, R_w) of every map; None until the first map is recorded."""
        return self.store.resolution

    @property
    def stages(self) -> tuple[str, ...]:
        """The ID stages kept, e.g. ("raw", "used")."""
        return self.store.stages

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> Trace:
        if self._traces is not None:
            raise RuntimeError("this trace is already active")
        unet = self.pipe.unet
        traces = getattr(unet, _TRACES, None)
        if traces is not None and not traces.accepts(self.pipe):
            raise InputError(
                "another pipeline that shares this UNet is being traced; a FastFacePipeline and a "
                "stock pipeline built from its components cannot be traced at once: exit that trace first"
            )
        if traces is None:  # the first trace on this UNet installs the processors
            traces = _Traces(self.pipe)
            setattr(unet, _TRACES, traces)
        traces.members.append(self)
        self._traces = traces
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
        traces, self._traces = self._traces, None
        if traces is not None:
            traces.members.remove(self)
            if not traces.members:  # the last trace out puts the UNet back as the first found it
                traces.installation.remove()
                delattr(self.pipe.unet, _TRACES)

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
            self.store.add_text(layer, context, probs[..., self._text_positions], self._latent_hw)

    def on_id_attention(self, layer: str, context: StepContext, raw, used) -> None:
        """raw, used: (B, heads, N, T) ID-token probabilities before and after AM."""
        if not self._record_id or not self._wanted(layer, context):
            return
        with torch.no_grad():
            if self.on_layer is not None:
                self.on_layer(layer, "id", "raw", context, raw)
                self.on_layer(layer, "id", "used", context, used)
            if self._id_positions is None:
                self._id_positions = self._resolve_id_request(raw.shape[-1])
            positions = self._id_positions
            picked_raw = raw[..., positions]
            # AM off: used is raw; keep them one tensor so the store reduces it once
            picked_used = picked_raw if used is raw else used[..., positions]
            self.store.add_id(layer, context, picked_raw, picked_used, self._latent_hw)

    def _wanted(self, layer: str, context: StepContext) -> bool:
        if context.step_index is None:
            return False
        if self._steps is not None and context.step_index not in self._steps:
            return False
        return self._blocks is None or any(matches_block(layer, b) for b in self._blocks)

    # -- the query ------------------------------------------------------------------------------
    def maps(
        self,
        kind: str = "text",
        token: Selector = None,
        block: None | str | Sequence[str] = None,
        step: None | int | Sequence[int] = None,
        branch: str | None = None,
        stage: str = "used",
        image: int | None = None,
        head: int | None = None,
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
            :class:`~fastface_lite.inspect.heatmap.HeatMap` of shape (R_h, R_w): the equal-weight
            mean of the per-(block, step) maps selected, each the mean of its layers.
        Raises:
            ValueError: a malformed query (unknown kind or stage, a text query without a token,
                a word not in the prompt). NothingRecorded: maps that were not recorded (a branch
                a step did not evaluate, a block, step, stage or token the trace did not keep).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be 'text' or 'id', got {kind!r}")
        rows, label = self._rows(kind, token)
        return self.store.maps(
            kind, rows, label=label, block=block, step=step, branch=branch, stage=stage, image=image, head=head
        )

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
    def id_tokens(self) -> list[int]:
        """Indices of the ID tokens recorded (0..3 for FaceID); empty when no ID map was recorded."""
        return list(self._id_positions or [])

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
        for t in as_list(self._text_request):
            positions += self.token_positions(t) if isinstance(t, str) else [int(t)]
        bad = [p for p in positions if not 0 <= p < length]
        if bad:
            raise InputError(f"text token positions {bad} are outside 0..{length - 1}")
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
        if token is not None and not as_list(token):
            raise ValueError(f"token={token!r} selects no token; give a token or a list of them")
        if kind == "id":
            recorded = self._id_positions
            if recorded is None:
                raise NothingRecorded("no id maps were recorded")
            wanted = recorded if token is None else [int(t) for t in as_list(token)]
            missing = [t for t in wanted if t not in recorded]
            if missing:
                raise NothingRecorded(f"ID tokens {missing} were not recorded; recorded: {recorded}")
            return [recorded.index(t) for t in wanted], f"id {format_indices(wanted)}"
        if token is None:
            raise ValueError("kind='text' needs a token: a word of the prompt or a position (0..76)")
        recorded = self._text_positions
        if recorded is None:
            raise NothingRecorded("no text maps were recorded")
        positions, labels = [], []
        for t in as_list(token):
            if isinstance(t, str):
                positions += self.token_positions(t)
                labels.append(repr(t))
            else:
                if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < TEXT_POSITIONS:
                    raise InputError(
                        f"text token {t!r} is neither a position 0..{TEXT_POSITIONS - 1} nor a word "
                        "of the prompt (a string); see tr.prompt_tokens for the positions"
                    )
                positions.append(t)
                labels.append(self._position_label(t))
        missing = [p for p in positions if p not in recorded]
        if missing:
            raise NothingRecorded(f"text positions {missing} were not recorded (trace(..., text_tokens=...))")
        positions = sorted(set(positions))
        return [recorded.index(p) for p in positions], " + ".join(labels)

    def _position_label(self, position: int) -> str:
        try:
            token = self._tokenizer().convert_ids_to_tokens([self._prompt_ids()[position]])[0]
            return f"#{position} {token.replace('</w>', '')!r}"
        except ValueError:
            return f"#{position}"


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
