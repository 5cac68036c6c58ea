"""Plots of recorded attention maps (see :mod:`fastface_lite.inspect.trace`).

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot state, so nothing piles
up in loops or tests) and returns it; Jupyter displays a returned figure. A grid cell with nothing
recorded (a branch that step did not evaluate) says "not evaluated"; a token or block recorded at
no step raises :class:`~fastface_lite.errors.NothingRecorded`.

Figure conventions, shared by every plot here and by the notebooks' own figures (import the
constants and helpers below rather than picking colours per cell):

* maps use a perceptually uniform sequential colormap (:data:`MAP_CMAP`, never jet: jet's bright
  bands invent edges that are not in the data);
* signed differences use a diverging colormap (:data:`DIFF_CMAP`) centred at 0 with symmetric
  limits taken from the data (:func:`symmetric_limit`), so white means "no change";
* panels that share a scale share one colorbar, placed once per row or under the panels, never
  between columns;
* grids name their rows and columns once (:func:`label_grid`) instead of repeating a two-line
  title on every panel; one short suptitle says what the whole figure shows;
* fonts: :data:`TITLE_SIZE` for titles, :data:`LABEL_SIZE` for labels, legible at the saved size.

    tr.maps(kind="text", token="reading").plot_overlay(image)
    token_step_grid(tr, ["person", "reading"], image, path="figures/tokens.png")
    block_step_grid(tr, 0, image, kind="id")
    raw_vs_used(tr, image=image, step=1)          # what AM changed, per block
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from fastface_lite.errors import NothingRecorded

CELL = 2.4  # inches per panel
MAP_CMAP = "magma"  # attention maps and other non-negative quantities: perceptually uniform
DIFF_CMAP = "RdBu_r"  # signed differences: red = more, blue = less, white = 0
TITLE_SIZE = 11
LABEL_SIZE = 10


def symmetric_limit(*arrays) -> float:
    """The largest |value| over ``arrays`` (tensors or arrays), for a diverging scale centred at 0.

    Never 0 (a tiny positive number instead), so an all-zero difference still gets a valid scale.
    """
    largest = max(float(np.abs(np.asarray(a, dtype=np.float64)).max()) for a in arrays)
    return largest or 1e-12


def label_grid(axes, row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> None:
    """Name the rows (y label of the first column) and the columns (title of the top row) once.

    ``axes``: a 2-D array of Axes (``squeeze=False``).
    """
    for ax, label in zip(axes[:, 0], row_labels, strict=False):
        ax.set_ylabel(label, fontsize=LABEL_SIZE)
    for ax, label in zip(axes[0, :], col_labels, strict=False):
        ax.set_title(label, fontsize=LABEL_SIZE)


def map_row(
    maps: dict,
    *,
    difference: tuple[str, object] | None = None,
    label: str = "value",
    title: str = "",
    cmap: str = MAP_CMAP,
) -> Figure:
    """One row of 2-D maps on one shared scale, and optionally a signed difference beside them.

    Args:
        maps: column title -> (H, W) array or tensor; all share one sequential colour scale.
        difference: (column title, (H, W) array) drawn on :data:`DIFF_CMAP`, centred at 0 with
            limits from the data.
        label: what the values are (the shared colorbar's label).
        title: one line over the figure.
    Returns:
        the figure, colorbars under their panels.
    """
    arrays = {name: np.asarray(values, dtype=np.float32) for name, values in maps.items()}
    cols = len(arrays) + (difference is not None)
    fig = Figure(figsize=(cols * CELL, CELL + 1.6), layout="constrained")
    axes = fig.subplots(1, cols, squeeze=False)[0]
    vmin = min(float(a.min()) for a in arrays.values())
    vmax = max(float(a.max()) for a in arrays.values())
    for ax, (name, values) in zip(axes, arrays.items(), strict=False):
        shown = _draw(ax, values, None, cmap=cmap, vmin=vmin, vmax=vmax, alpha=1.0)
        ax.set_title(name, fontsize=LABEL_SIZE)
    fig.colorbar(shown, ax=list(axes[: len(arrays)]), location="bottom", shrink=0.8, label=label)
    if difference is not None:
        name, values = difference
        values = np.asarray(values, dtype=np.float32)
        limit = symmetric_limit(values)
        diff = _draw(axes[-1], values, None, cmap=DIFF_CMAP, vmin=-limit, vmax=limit, alpha=1.0)
        axes[-1].set_title(name, fontsize=LABEL_SIZE)
        fig.colorbar(
            diff,
            ax=axes[-1],
            location="bottom",
            shrink=0.9,
            label="signed difference",
            ticks=[-limit, 0, limit],
            format="%.2g",
        )
    if title:
        fig.suptitle(title, fontsize=TITLE_SIZE)
    return fig


def to_rgb(image) -> np.ndarray:
    """A PIL image, an HxWx3 / HxW array or a (3, H, W) / (H, W, 3) tensor as HxWx3 floats in [0, 1]."""
    if isinstance(image, (list, tuple)):
        image = image[0]  # a pipeline's `.images`: show the first
    if torch.is_tensor(image):
        image = image.detach().float().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = np.clip(array.astype(np.float32), 0.0, 1.0)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"cannot show an image of shape {array.shape}; pass HxWx3")
    return array[..., :3]


def _cell_title(hm) -> str:
    stage = f" · {hm.stage}" if hm.stage else ""
    return f"{hm.token} · {hm.step}\n{hm.block} · {hm.branch}{stage}"


def _draw(ax, values: np.ndarray, rgb: np.ndarray | None, *, cmap, vmin, vmax, alpha):
    """Image (if any) with the map stretched over it; returns the map's AxesImage."""
    if rgb is not None:
        h, w = rgb.shape[:2]
        extent = (0, w, h, 0)
        ax.imshow(rgb, extent=extent)
        shown = ax.imshow(values, extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha, interpolation="bilinear")
    else:
        shown = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def plot_overlay(
    heatmap,
    image=None,
    ax=None,
    *,
    alpha: float = 0.55,
    cmap: str = MAP_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = False,
):
    """Draw one :class:`~fastface_lite.inspect.heatmap.HeatMap` over ``image`` (or alone when None).

    The (R_h, R_w) map is stretched over the whole image (the latent grid covers the picture).
    Returns the Axes (a new figure's when ``ax`` is None).
    """
    if ax is None:
        ax = Figure(figsize=(CELL + (0.6 if colorbar else 0), CELL + 0.3), layout="constrained").subplots()
    rgb = None if image is None else to_rgb(image)
    values = heatmap.to_numpy()
    shown = _draw(ax, values, rgb, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha if rgb is not None else 1.0)
    ax.set_title(title if title is not None else _cell_title(heatmap), fontsize=LABEL_SIZE)
    if colorbar:
        bar = ax.figure.colorbar(shown, ax=ax, shrink=0.8)
        bar.solids.set_alpha(1.0)  # the overlay is translucent; its scale should not be
    return ax


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure, without matplotlib's version stamp (so re-rendering an
    unchanged figure changes no byte). The one renderer behind every saved or shown figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def save_figure(fig: Figure, path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (PNG; a path without suffix gets ``.png``), creating folders.

    The file is replaced atomically (a temporary file in the same folder, then ``os.replace``),
    so a reader or a killed process never sees half a figure.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: figures are saved as PNG; use a .png path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(figure_png(fig, dpi))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _colorbar(fig: Figure, shown, axes, label: str, location: str = "right"):
    bar = fig.colorbar(shown, ax=axes, shrink=0.8, label=label, location=location)
    bar.solids.set_alpha(1.0)  # the overlay is translucent; its scale should not be
    return bar


def _grid(
    cells: list[list],
    rgb,
    suptitle: str,
    path,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cmap: str = MAP_CMAP,
    alpha: float = 0.55,
) -> Figure:
    """Rows x cols panels of HeatMaps (None = not evaluated) on one colour scale, one colorbar,
    rows and columns labelled once."""
    if not cells:
        raise ValueError("nothing to plot: give at least one token or block")
    rows, cols = len(cells), len(cells[0])
    maps = [hm for row in cells for hm in row if hm is not None]  # not empty: _cells keeps no empty row
    vmin = min(float(hm.values.min()) for hm in maps)
    vmax = max(float(hm.values.max()) for hm in maps)
    fig = Figure(figsize=(cols * CELL + 0.8, rows * (CELL + 0.3) + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    shown = None
    for r, row in enumerate(cells):
        for c, hm in enumerate(row):
            ax = axes[r, c]
            if hm is None:
                ax.text(
                    0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax.transAxes, fontsize=LABEL_SIZE
                )
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            shown = plot_overlay(hm, rgb, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha, title="").images[-1]
    label_grid(axes, row_labels, col_labels)
    _colorbar(fig, shown, axes.ravel().tolist(), "attention weight")
    fig.suptitle(suptitle, fontsize=TITLE_SIZE)
    if path is not None:
        save_figure(fig, path)
    return fig


def _branch(tr, branch: str | None) -> str:
    """The branch to show: ``branch``, or the trace's last (FastFace's "text+id")."""
    if branch:
        return branch
    if not tr.branches:
        raise NothingRecorded("nothing recorded yet: call the pipeline inside `with ff.trace(pipe) as tr:`")
    return tr.branches[-1]


def _cells(tr, rows: Sequence[dict], steps: Sequence[int], **query) -> list[list]:
    """``tr.maps(**query, **row, step=s)`` for each row and step; None in a cell where nothing was
    recorded (a branch that step did not evaluate). A row with nothing at any step re-raises its
    :class:`~fastface_lite.errors.NothingRecorded`: its block or token was not recorded at all."""
    if not steps:
        raise ValueError("no steps to plot: pass steps=[...] with recorded steps")
    cells = []
    for row in rows:
        line, missing = [], None
        for step in steps:
            try:
                line.append(tr.maps(**query, **row, step=step))
            except NothingRecorded as error:
                line.append(None)
                missing = missing or error
        if missing is not None and all(hm is None for hm in line):
            raise missing
        cells.append(line)
    return cells


def token_step_grid(
    tr,
    tokens: Sequence,
    image=None,
    *,
    kind: str = "text",
    block=None,
    steps: Sequence[int] | None = None,
    branch: str | None = None,
    stage: str = "used",
    path=None,
) -> Figure:
    """Rows = tokens (words/positions for text, indices for ID), columns = steps.

    Returns a figure with len(tokens) x len(steps) panels plus one colorbar axes.
    """
    branch = _branch(tr, branch)
    steps = list(tr.steps if steps is None else steps)
    cells = _cells(tr, [dict(token=t) for t in tokens], steps, kind=kind, block=block, branch=branch, stage=stage)
    where = "all blocks" if block is None else str(block)
    stage_note = f" · {stage}" if kind == "id" else ""
    return _grid(
        cells,
        None if image is None else to_rgb(image),
        f"{kind} attention by token (rows) and step (columns) · {where} · branch {branch}{stage_note}",
        path,
        [f"token {t}" if isinstance(t, int) else repr(t) for t in tokens],
        [f"step {s}" for s in steps],
    )


def block_step_grid(
    tr,
    token,
    image=None,
    *,
    kind: str = "text",
    blocks: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    branch: str | None = None,
    stage: str = "used",
    path=None,
) -> Figure:
    """Rows = blocks (default: all recorded), columns = steps, for one token (or list, averaged).

    Returns a figure with len(blocks) x len(steps) panels plus one colorbar axes.
    """
    branch = _branch(tr, branch)
    blocks = list(tr.blocks if blocks is None else blocks)
    steps = list(tr.steps if steps is None else steps)
    cells = _cells(tr, [dict(block=b) for b in blocks], steps, kind=kind, token=token, branch=branch, stage=stage)
    stage_note = f" · {stage}" if kind == "id" else ""
    return _grid(
        cells,
        None if image is None else to_rgb(image),
        f"{kind} token {token!r} by block (rows) and step (columns) · branch {branch}{stage_note}",
        path,
        list(blocks),
        [f"step {s}" for s in steps],
    )


def raw_vs_used(
    tr,
    token=None,
    image=None,
    *,
    blocks: Sequence[str] | None = None,
    step=None,
    branch: str | None = None,
    path=None,
    alpha: float = 0.55,
) -> Figure:
    """ID attention before AM (raw), after it (used) and their difference, one row per block.

    Raw and used share one colour scale; the difference (used - raw) has its own, symmetric
    around 0 with limits from the data (red: AM added attention, blue: removed). Non-target blocks
    show a zero difference. Rows are labelled with the block, columns once; both colorbars sit
    under their columns. Returns a figure with 3 x len(blocks) panels plus two colorbar axes.
    """
    branch = _branch(tr, branch)
    blocks = list(tr.blocks if blocks is None else blocks)
    rgb = None if image is None else to_rgb(image)
    pairs = [
        (
            tr.maps(kind="id", token=token, block=b, step=step, branch=branch, stage="raw"),
            tr.maps(kind="id", token=token, block=b, step=step, branch=branch, stage="used"),
        )
        for b in blocks
    ]
    vmin = min(min(float(r.values.min()), float(u.values.min())) for r, u in pairs)
    vmax = max(max(float(r.values.max()), float(u.values.max())) for r, u in pairs)
    limit = symmetric_limit(*[(u.values - r.values).numpy() for r, u in pairs])
    fig = Figure(figsize=(3 * CELL + 0.6, len(blocks) * CELL + 1.4), layout="constrained")
    axes = fig.subplots(len(blocks), 3, squeeze=False)
    for row, (raw, used) in enumerate(pairs):
        shared = plot_overlay(raw, rgb, ax=axes[row, 0], vmin=vmin, vmax=vmax, alpha=alpha, title="").images[-1]
        plot_overlay(used, rgb, ax=axes[row, 1], vmin=vmin, vmax=vmax, alpha=alpha, title="")
        diff = _draw(
            axes[row, 2], (used.values - raw.values).numpy(), None, cmap=DIFF_CMAP, vmin=-limit, vmax=limit, alpha=1.0
        )
    label_grid(axes, blocks, ["raw (before AM)", "used (after AM)", "used − raw"])
    _colorbar(fig, shared, axes[:, :2].ravel().tolist(), "ID attention weight", location="bottom")
    _colorbar(fig, diff, axes[:, 2].ravel().tolist(), "used − raw", location="bottom").set_ticks(
        [-limit, 0, limit], labels=[f"{-limit:.2g}", "0", f"{limit:.2g}"]
    )
    first = pairs[0][0]
    fig.suptitle(
        f"{first.token} · {first.step} · branch {branch}: ID attention before and after AM", fontsize=TITLE_SIZE
    )
    if path is not None:
        save_figure(fig, path)
    return fig
