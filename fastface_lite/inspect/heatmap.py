"""One aggregated attention map, as :meth:`fastface_lite.inspect.trace.Trace.maps` (and the store's
:meth:`~fastface_lite.inspect.store.AttentionStore.maps`) return it, and its plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


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
    stage: str | None = None

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
        Returns the matplotlib Axes. Keyword arguments go to :func:`fastface_lite.inspect.plots.plot_overlay`."""
        from fastface_lite.inspect.plots import plot_overlay

        return plot_overlay(self, image, ax=ax, **kwargs)

    def save(self, path, image=None, **kwargs) -> Path:
        """Save the overlay (or the map alone) as an image file, e.g. ``figures/reading.png``."""
        from fastface_lite.inspect.plots import save_figure

        ax = self.plot_overlay(image, **kwargs)
        return save_figure(ax.figure, path)
