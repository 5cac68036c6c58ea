"""Figures of a trace: one overlay, grids on one colour scale, raw vs used, and empty cells."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from traced_runs import BLOCKS, run  # noqa: E402

from fastface_lite.errors import NothingRecorded  # noqa: E402
from fastface_lite.inspect import plots as viz  # noqa: E402
from fastface_lite.inspect.trace import trace  # noqa: E402


@pytest.fixture(scope="module")
def traced(tiny_faceid):
    with trace(tiny_faceid) as tr:
        image = run(tiny_faceid, "fastface-am2", output_type="pil").images[0]
    return tr, image


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def row_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel() and ax.images]


def test_overlay_and_save(traced, tmp_path):
    tr, image = traced
    hm = tr.maps(kind="text", token="reading", block="up_blocks.0", step=1)
    ax = hm.plot_overlay(image)
    assert ax.get_title() == "'reading' · step 1\nup_blocks.0 · text+id" and len(ax.images) == 2
    assert hm.title == "'reading' · up_blocks.0 · step 1 · text+id"
    assert hm.to_numpy().shape == (16, 16)
    path = hm.save(tmp_path / "figures" / "reading.png", image)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grids_have_one_panel_per_cell_and_say_what_they_show(traced, tmp_path):
    tr, image = traced
    fig = viz.token_step_grid(tr, ["person", "reading", 2], image, path=tmp_path / "tokens.png")
    assert len(fig.axes) == 3 * 4 + 1  # panels + the shared colorbar
    # rows and columns are named once (figure conventions), the suptitle says the rest
    assert titles(fig) == ["step 0", "step 1", "step 2", "step 3"]
    assert row_labels(fig) == ["'person'", "'reading'", "token 2"]
    what = fig.get_suptitle()
    assert "text+id" in what and "all blocks" in what and "step" in what
    assert (tmp_path / "tokens.png").is_file()
    fig = viz.block_step_grid(tr, 0, image, kind="id", branch="uncond", stage="raw")
    assert len(fig.axes) == 5 * 4 + 1
    assert row_labels(fig) == list(BLOCKS) and "uncond" in fig.get_suptitle() and "raw" in fig.get_suptitle()
    # one colour scale for the whole figure, on a perceptually uniform colormap
    limits = {ax.images[-1].get_clim() for ax in fig.axes[:-1]}
    assert len(limits) == 1
    assert {ax.images[-1].get_cmap().name for ax in fig.axes[:-1]} == {viz.MAP_CMAP}


def test_raw_vs_used_shows_the_difference(traced, tmp_path):
    tr, image = traced
    fig = viz.raw_vs_used(tr, image=image, step=1, path=tmp_path / "am.png")
    assert len(fig.axes) == 5 * 3 + 2  # raw, used, difference per block + two colorbars
    assert titles(fig) == ["raw (before AM)", "used (after AM)", "used − raw"]
    assert row_labels(fig) == list(BLOCKS)
    assert "id 0-3" in fig.get_suptitle() and "text+id" in fig.get_suptitle()
    mid_diff = fig.axes[3 * BLOCKS.index("mid_block") + 2].images[-1].get_array()
    assert abs(mid_diff).max() == 0  # mid is not an AM target
    # the difference: diverging map centred at 0, symmetric limits from the data
    diff = fig.axes[2].images[-1]
    low, high = diff.get_clim()
    assert diff.get_cmap().name == viz.DIFF_CMAP and low == -high and high > 0
    assert (tmp_path / "am.png").read_bytes()[:4] == b"\x89PNG"


def test_a_step_without_the_branch_is_an_empty_cell_and_a_block_never_recorded_raises(tiny_faceid):
    with trace(tiny_faceid, text=False) as tr:
        out = run(tiny_faceid, "fastface-am1")  # the uncond branch (index 0) runs at some steps only
    ran = [0 in branches for branches in out.branches_per_step]
    assert any(ran) and not all(ran)
    fig = viz.block_step_grid(tr, 0, kind="id", branch="uncond")
    for row in range(len(BLOCKS)):
        for step, evaluated in enumerate(ran):
            ax = fig.axes[row * len(ran) + step]
            assert bool(ax.images) == evaluated
            assert ("not evaluated" in [t.get_text() for t in ax.texts]) == (not evaluated)
    with pytest.raises(NothingRecorded, match="block 'down_blocks.0' was not recorded"):
        viz.block_step_grid(tr, 0, kind="id", blocks=["up_blocks.0", "down_blocks.0"], branch="uncond")
    skipped = [step for step, evaluated in enumerate(ran) if not evaluated]
    with pytest.raises(NothingRecorded, match="nothing recorded for block=None"):
        viz.token_step_grid(tr, [0], kind="id", steps=skipped, branch="uncond")
    with pytest.raises(NothingRecorded, match="no text maps were recorded"):
        viz.token_step_grid(tr, ["person"])
    with pytest.raises(ValueError, match="kind must be"):  # a bad query is not an empty cell
        viz.token_step_grid(tr, [0], kind="face")
