"""docs/method.md against the package: the document's tables state the numbers the code uses.

The document is written for people; these tests keep it from drifting. Each test finds a table by
its header row, reads it, and compares it with the package (constants, per-step lists, schedule
formulas evaluated as written, DCG combinations evaluated as written, UNet evaluation counts); one
checks §8's claim about inverting token 0. The last two check that the sections are numbered 1..n
and that every "docs/method.md §n" reference in the repository names a section that exists.
"""

import math
import os
import re
from pathlib import Path

import pytest
import torch

import fastface_lite as ff
from fastface_lite.method import am, dcg, schedules
from fastface_lite.method.am_config import TRANSFORMS, AttentionSchedule, PartTable
from fastface_lite.method.branches import planned_evaluations
from fastface_lite.method.checkpoints import CHECKPOINTS, NUM_ID_TOKENS
from fastface_lite.method.dcg_config import GuidanceConfig
from fastface_lite.sdxl.loading import model_timesteps

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "method.md"
DOC = DOC_PATH.read_text(encoding="utf-8")


def tables(*header: str) -> list[list[dict]]:
    """Every markdown table whose header row starts with `header`, as lists of {column: cell}."""
    found, lines = [], DOC.splitlines()
    for n, line in enumerate(lines):
        cells = _cells(line)
        if cells[: len(header)] != list(header):
            continue
        rows = []
        for row in lines[n + 2 :]:  # skip the |---| separator
            if not row.startswith("|"):
                break
            rows.append(dict(zip(cells, _cells(row), strict=True)))
        found.append(rows)
    assert found, f"docs/method.md has no table with header {header}"
    return found


def table(*header: str) -> list[dict]:
    (rows,) = tables(*header)
    return rows


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    return [c.strip() for c in line.strip().strip("|").split("|")]


def code(cell: str) -> str:
    """The text between the first pair of backticks of a cell."""
    match = re.search(r"`([^`]+)`", cell)
    assert match, f"expected a `code` span in table cell {cell!r}"
    return match.group(1)


def numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)]


# ------------------------------------------------------------------------------------- §3 models
def test_checkpoint_table_matches_presets_and_scheduler_timesteps():
    rows = table("preset", "hub repository")
    assert sorted(code(r["preset"]) for r in rows) == sorted(ff.MODELS)
    for r in rows:
        name = code(r["preset"])
        preset = CHECKPOINTS[name]
        assert code(r["hub repository"]) == preset.repo, name
        assert code(r["scheduler"]) == preset.scheduler, name
        assert int(r["size"]) == preset.default_size, name
        assert float(r["default a = b"]) == preset.default_guidance, name
        assert numbers(r["timesteps at 4 steps"]) == model_timesteps(name, 4), name


# ---------------------------------------------------------------------------------------- §4 DCG
@pytest.mark.parametrize("dcg_type", [1, 2, 3])
def test_dcg_combinations_as_written_equal_the_package(dcg_type):
    row = next(r for r in table("type", "branch 0") if r["type"] == str(dcg_type))
    names = [code(row[f"branch {k}"]) for k in range(3)]
    branches = list(torch.randn(3, 2, 4, 8, 8, generator=torch.Generator().manual_seed(dcg_type)))
    a, b = 1.7, 2.9
    cfg = GuidanceConfig(dcg_type=dcg_type, a=ff.WeightSchedule.constant(a), b=ff.WeightSchedule.constant(b))
    written = eval(code(row["combination"]), {}, {**dict(zip(names, branches, strict=True)), "a": a, "b": b})
    # the package sums per-branch coefficients, the formula differences: same value, other rounding
    torch.testing.assert_close(dcg.combine(branches, 0, 999, cfg), written, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------- §5, §9 per-step lists
def _per_step_rows() -> dict[str, list[float]]:
    """Rows of both per-step tables (guidance in §5, attention in §9), by their label."""
    return {r["per step i"]: [float(r[str(i)]) for i in range(4)] for rows in tables("per step i") for r in rows}


def test_fastface_guidance_lists():
    rows, g = _per_step_rows(), ff.FastFaceConfig.preset("dcg").guidance
    assert g.dcg_type == 3
    assert rows["a"] == [g.a.at(i, 0) for i in range(4)]
    assert rows["b"] == [g.b.at(i, 0) for i in range(4)]
    assert rows["φ"] == [g.rescale] * 4


def test_attention_schedule_and_adain_weight():
    rows, default = _per_step_rows(), AttentionSchedule()
    assert rows["k"] == list(default.softmask_k)
    assert rows["q"] == list(default.quantile)
    assert rows["s"] == list(default.scale)
    assert default.parts == ("down", "up")
    am2 = ff.FastFaceConfig.preset("fastface-am2").attention
    assert am2.schedule == default
    assert rows["w (AdaIN, FastFace-AM2)"] == [am2.adain_weight] * 4


# --------------------------------------------------------------------------- §5 schedule shapes
PARAMETER_NAMES = {"g": None, "m": "c", "γ": "s"}  # document letter -> WeightSchedule field


@pytest.mark.parametrize("bend", [0.6, 1.8])
def test_every_schedule_shape_formula_as_written(bend):
    rows = table("shape", "weight at timestep t")
    assert sorted(code(r["shape"]) for r in rows) == sorted(schedules.TIMESTEP_SHAPES)
    g, floor = 1.7, 0.4
    for r in rows:
        shape, formula = code(r["shape"]), code(r["weight at timestep t"])
        letters = [p.strip() for p in r["parameters"].split(",")]
        needed = {PARAMETER_NAMES[p] for p in letters} - {None}
        assert needed == set(schedules.TIMESTEP_SHAPES[shape][1]), shape
        schedule = ff.WeightSchedule(shape, g, c=floor, s=bend)
        for t in (999, 749, 501, 500, 499, 259, 249, 1, 0):
            scope = {
                "g": g,
                "m": floor,
                "γ": bend,
                "t": t,
                "T": schedules.T_TRAIN,
                "π": math.pi,
                "cos": math.cos,
                "max": max,
            }
            written = eval(formula, {"__builtins__": {}}, scope)
            assert math.isclose(schedule.at(0, t), written, rel_tol=1e-12, abs_tol=1e-12), (shape, t)


# --------------------------------------------------------------------------- §7 AM constants
def test_transform_constants_per_part():
    fields = {"p": "pow", "s": "scale", "k": "softmask_k", "q": "quantile"}
    rows, parts = table("transform", "letter"), PartTable()
    assert sorted(r["letter"] for r in rows) == sorted(fields)
    for r in rows:
        for part in ("down", "mid", "up"):
            assert float(r[part]) == getattr(parts[part], fields[r["letter"]]), (r["letter"], part)


def test_transform_names_and_fixed_numbers():
    assert sorted(code(r["transform"]) for r in table("transform", "A' =")) == sorted(TRANSFORMS)
    values = {r["fixed number"]: float(r["value"]) for r in table("fixed number", "value")}
    assert values == {
        "scale ceiling": am.SCALE_CEILING,
        "softmask centre": am.SOFTMASK_CENTRE,
        "quantile floor": am.QUANTILE_FLOOR,
        "AdaIN epsilon": am.ADAIN_EPS,
        "training timesteps T": schedules.T_TRAIN,
        "ID tokens J": NUM_ID_TOKENS,
    }


# ---------------------------------------------------------------------------- §8 inverse token 0
def test_inverse_token0_cancels_for_the_plain_softmask_but_not_the_adaptive_one():
    probs = torch.randn(6, 2, 64, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64).softmax(-1)
    const, tokens = PartTable().down, (0, 1, 2, 3)

    def token0(chain, invert):
        return am.manipulate(probs, tokens, chain, const, invert_token0=invert)[..., 0]

    plain = token0(("softmask", "scale"), False)
    # s (M - min_N M): the un-inverted map minus its minimum over positions (dim -1 here), per batch and head
    torch.testing.assert_close(
        token0(("softmask", "scale"), True), plain - plain.amin(dim=-1, keepdim=True), rtol=0, atol=1e-9
    )
    adaptive = token0(("adaptive_softmask", "scale"), False)
    shifted = adaptive - adaptive.amin(dim=-1, keepdim=True)
    assert (token0(("adaptive_softmask", "scale"), True) - shifted).abs().max() > 0.01


# ------------------------------------------------------------------------- §12 the six variants
def test_variant_cheat_sheet_evaluation_counts():
    rows = table("variant", "preset")
    assert [code(r["preset"]) for r in rows] == list(ff.VARIANTS)
    columns = [c for c in rows[0] if c.startswith("evaluations: ")]
    assert columns, "the cheat sheet lost its evaluation columns"
    for column in columns:
        models = [m.strip() for m in column.removeprefix("evaluations: ").split(",")]
        for r in rows:
            name = code(r["preset"])
            for model in models:
                cfg = ff.FastFaceConfig.preset(name, model=model)
                assert planned_evaluations(cfg, model_timesteps(model, 4)) == int(r[column]), (name, model)


# ---------------------------------------------------------------------------- section numbering
def test_sections_are_numbered_one_to_n():
    numbers_in_order = [int(n) for n in re.findall(r"^## §(\d+) ", DOC, flags=re.M)]
    assert numbers_in_order == list(range(1, len(numbers_in_order) + 1))


def _reference_sections(text: str, prefix: str) -> set[int]:
    """Section numbers cited as `prefix` §n (also "§n, §m" and "§n and §m" runs)."""
    cited = set()
    for run in re.findall(prefix + r"((?:(?:,\s*|\s+and\s+|\s+or\s+|-)?§\d+)+)", text):
        cited.update(int(n) for n in re.findall(r"§(\d+)", run))
    return cited


def test_every_reference_names_an_existing_section():
    sections = {int(n) for n in re.findall(r"^## §(\d+) ", DOC, flags=re.M)}
    cited = {DOC_PATH: _reference_sections(DOC, "")}  # the document's own cross-references
    skip = {".git", ".venv", "node_modules", "__pycache__", ".ipynb_checkpoints", "runs"}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".")]
        for name in files:
            if name.endswith((".py", ".md", ".ipynb", ".txt")):
                path = Path(folder) / name
                text = path.read_text(encoding="utf-8", errors="replace")
                cited[path] = cited.get(path, set()) | _reference_sections(text, r"docs/method\.md\s*")
    missing = {str(p.relative_to(ROOT)): sorted(n - sections) for p, n in cited.items() if n - sections}
    assert not missing, f"references to sections docs/method.md does not have: {missing}"
