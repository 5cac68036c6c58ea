"""Diagrams of the method drawn by code, for notebook 00 (docs/method.md §4, §6, §11).

Two figures, both plain ``matplotlib.figure.Figure`` objects (no pyplot state):

* :func:`branch_batch` — the guidance batch of one step: the three branches of a DCG type, which
  conditions each carries, and the coefficient each gets in e = λ0 e0 + λ1 e1 + λ2 e2 at given
  weights a and b (a grey branch is not evaluated: its coefficient is 0 and nothing else reads it).
* :func:`decoupled_attention` — one ``attn2`` layer of the UNet: the text attention and the
  adapter's ID attention side by side, summed, with the place where AM rewrites the ID
  probabilities and where AdaIN's two stages act.

Nothing here runs a model: the diagrams take a few milliseconds and need no download.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from fastface_lite.method import dcg

TEXT_COLOUR = "#4c72b0"  # text conditioning
ID_COLOUR = "#dd8452"  # identity conditioning
AM_COLOUR = "#c44e52"  # where AM acts
NEUTRAL = "#8c8c8c"


def _box(ax, x, y, w, h, label, colour, *, filled=True, fontsize=10, weight="normal"):
    """A rounded box centred at (x, y) in axes data coordinates, with its label."""
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.08",
        facecolor=colour if filled else "white",
        edgecolor=colour,
        alpha=0.9 if filled else 1.0,
        linewidth=1.5,
    )
    ax.add_patch(patch)
    ax.text(x, y, label, ha="center", va="center", fontsize=fontsize, weight=weight, color="black")


def _arrow(ax, start, end, colour="black", style="-|>"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=colour, linewidth=1.3))


def branch_batch(a: float = 1.5, b: float = 3.0, dcg_type: int = 3) -> Figure:
    """The three guidance branches of one step and their coefficients at weights (a, b).

    Rows are the branches of ``dcg_type`` in batch order; a branch whose coefficient is 0 is drawn
    hollow and marked "not evaluated" (without rescale: docs/method.md §11 lists what else reads a
    branch).
    """
    names = dcg.BRANCH_NAMES[dcg_type]
    conditions = dcg.BRANCH_CONDITIONS[dcg_type]
    coeffs = dcg.coefficients(a, b, dcg_type)
    fig = Figure(figsize=(9.0, 3.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4)
    ax.axis("off")
    ax.text(0.2, 3.7, f"one denoising step, DCG type {dcg_type}, a = {a:g}, b = {b:g}", fontsize=11, weight="bold")
    ax.text(2.2, 3.25, "branch (batch index)", ha="center", fontsize=9, color=NEUTRAL)
    ax.text(4.6, 3.25, "conditions", ha="center", fontsize=9, color=NEUTRAL)
    ax.text(6.6, 3.25, "coefficient λ", ha="center", fontsize=9, color=NEUTRAL)
    for row, (name, (has_text, has_id), c) in enumerate(zip(names, conditions, coeffs, strict=True)):
        y = 2.6 - row * 0.85
        used = c != 0.0
        colour = ID_COLOUR if has_id else (TEXT_COLOUR if has_text else NEUTRAL)
        _box(ax, 2.2, y, 2.6, 0.6, f"{row}: e_{_subscript(has_text, has_id)}  ({name})", colour, filled=used)
        tags = [w for w, on in (("text", has_text), ("ID", has_id)) if on] or ["none"]
        ax.text(4.6, y, " + ".join(tags), ha="center", va="center", fontsize=10)
        ax.text(6.6, y, f"{c:+.2f}" if used else "0 (not evaluated)", ha="center", va="center", fontsize=10)
        _arrow(ax, (7.6, y), (8.4, 1.75), colour=colour if used else "#d0d0d0")
    _box(ax, 9.1, 1.75, 1.3, 0.8, "e = Σ λ_k e_k\n→ scheduler", "#e0e0e0", fontsize=9)
    ax.text(
        0.2,
        0.05,
        "UNet(x_t, conditions) per branch; the branches run as one batch of 3 · images.",
        fontsize=9,
        color=NEUTRAL,
    )
    return fig


def _subscript(has_text: bool, has_id: bool) -> str:
    return ("t" if has_text else "") + ("i" if has_id else "") or "u"


def decoupled_attention() -> Figure:
    """One ``attn2`` layer: text attention + ID attention, and where AM and AdaIN act in it."""
    fig = Figure(figsize=(10.0, 4.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5.2)
    ax.axis("off")
    ax.text(0.2, 4.95, "decoupled cross-attention (one attn2 layer) and AM's place in it", fontsize=11, weight="bold")
    # inputs
    _box(ax, 1.1, 2.5, 1.8, 0.8, "image positions\nQ  (N per layer)", "#e0e0e0", fontsize=9)
    _box(ax, 1.1, 4.1, 1.8, 0.6, "77 text tokens", TEXT_COLOUR, fontsize=9)
    _box(ax, 1.1, 0.9, 1.8, 0.6, "4 ID tokens", ID_COLOUR, fontsize=9)
    # text path (top)
    _box(ax, 3.8, 4.1, 2.6, 0.6, "A_text = softmax(Q K_textᵀ/√d)", TEXT_COLOUR, filled=False, fontsize=9)
    _box(ax, 7.0, 4.1, 1.6, 0.6, "A_text V_text", TEXT_COLOUR, filled=False, fontsize=9)
    # ID path (bottom)
    _box(ax, 3.8, 0.9, 2.6, 0.6, "A = softmax(Q K_ipᵀ/√d)", ID_COLOUR, filled=False, fontsize=9)
    _box(ax, 6.4, 0.9, 1.9, 0.75, "AM: transforms\n(+ AdaIN stage 1)", AM_COLOUR, fontsize=9, weight="bold")
    _box(ax, 8.6, 0.9, 1.9, 0.75, "O = A'' V_ip\n(+ AdaIN stage 2)", AM_COLOUR, filled=False, fontsize=9)
    # sum
    _box(ax, 10.6, 2.5, 1.9, 0.9, "out = text part\n+ scale · ID part", "#e0e0e0", fontsize=9)
    _arrow(ax, (2.0, 4.1), (2.5, 4.1))
    _arrow(ax, (2.0, 0.9), (2.5, 0.9))
    _arrow(ax, (1.6, 2.9), (2.6, 3.8))
    _arrow(ax, (1.6, 2.1), (2.6, 1.2))
    _arrow(ax, (5.1, 4.1), (6.2, 4.1))
    _arrow(ax, (5.1, 0.9), (5.45, 0.9))
    _arrow(ax, (7.35, 0.9), (7.65, 0.9))
    _arrow(ax, (7.8, 4.1), (10.2, 2.95))
    _arrow(ax, (9.55, 0.9), (10.2, 2.05))
    ax.text(
        6.4,
        0.2,
        "rewrites columns of A (B, H, N, 4); rows no longer sum to 1",
        ha="center",
        fontsize=8.5,
        color=AM_COLOUR,
    )
    ax.text(
        5.8,
        2.5,
        "text and ID share Q but have their own keys, values and softmax;\n"
        "AM touches only the ID probabilities, in the down and up blocks, at steps 0-3",
        ha="center",
        va="center",
        fontsize=9,
        color=NEUTRAL,
    )
    return fig
