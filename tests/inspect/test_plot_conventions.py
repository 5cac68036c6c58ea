"""The figure conventions of fastface_lite.inspect.plots, on plain arrays (no model needed)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from fastface_lite.inspect import plots as viz  # noqa: E402


def test_symmetric_limit_is_the_largest_magnitude_and_never_zero():
    assert viz.symmetric_limit(np.array([-0.3, 0.1]), np.array([0.2])) == 0.3
    assert viz.symmetric_limit(np.zeros((2, 2))) > 0


def test_map_row_shares_one_scale_and_centres_the_difference():
    a, b = np.linspace(0, 1, 16).reshape(4, 4), np.linspace(0, 2, 16).reshape(4, 4)
    fig = viz.map_row({"a": a, "b": b}, difference=("b - a", b - a), label="weight", title="t")
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["a", "b", "b - a"]
    assert panels[0].images[0].get_clim() == panels[1].images[0].get_clim() == (0.0, 2.0)
    diff = panels[2].images[0]
    assert diff.get_cmap().name == viz.DIFF_CMAP and diff.get_clim() == (-1.0, 1.0)
    assert panels[0].images[0].get_cmap().name == viz.MAP_CMAP != "jet"
    assert fig.get_suptitle() == "t"
