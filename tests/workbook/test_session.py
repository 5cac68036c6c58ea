"""workbook.setup(): the mode, quiet libraries, seeds and figure saving every notebook relies on."""

import random

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fastface_lite.workbook.session import FIGURES_ENV, Workbook, colab_badge, figures_folder, repo_root, setup


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_setup_tiny_is_reproducible(monkeypatch, restore_threads):
    monkeypatch.setenv("FASTFACE_MODE", "tiny")
    wb = setup(seed=3)
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    assert setup(seed=3) == wb
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws
    assert (wb.mode, wb.device, wb.dtype, wb.tiny) == ("tiny", "cpu", torch.float32, True)
    assert torch.get_num_threads() == 1
    assert wb.describe() == "mode tiny (random tiny weights, offline) on cpu, float32, seed 3"
    assert wb.figures == figures_folder() and figures_folder().is_relative_to(repo_root())


def test_figures_go_to_the_ignored_runs_folder_unless_chosen(monkeypatch, tmp_path):
    # Only notebooks/build.py writes the tracked figures/ (PNGs differ in a few pixels between CPUs).
    monkeypatch.delenv(FIGURES_ENV, raising=False)
    assert figures_folder(tmp_path) == tmp_path / "runs" / "figures"
    monkeypatch.setenv(FIGURES_ENV, "figures")
    assert figures_folder(tmp_path) == tmp_path / "figures"
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path / "elsewhere"))
    assert figures_folder(repo_root()) == tmp_path / "elsewhere"


def test_runs_folder_is_ignored_by_git():
    # what a run writes (runs/figures/, runs/demo/, evaluation runs) must not show in `git status`
    assert "runs/" in (repo_root() / ".gitignore").read_text().splitlines()


def test_setup_full_without_a_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("FASTFACE_MODE", "tiny")
    with pytest.raises(RuntimeError, match="full mode needs a GPU.*mode='tiny'"):
        setup(mode="full")


def test_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv("FASTFACE_MODE", "fast")
    with pytest.raises(ValueError, match="FASTFACE_MODE='fast' is not a mode"):
        setup()


def test_save_writes_a_png_without_timestamps(tmp_path):
    wb = Workbook(mode="tiny", device="cpu", dtype=torch.float32, seed=0, figures=tmp_path / "figs", on_colab=False)
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    first = wb.save(fig, "line").read_bytes()
    assert wb.save(fig, "line.png") == tmp_path / "figs" / "line.png"
    assert first.startswith(b"\x89PNG") and first == (tmp_path / "figs" / "line.png").read_bytes()
    assert b"Matplotlib" not in first  # no software/version stamp: a rebuild leaves the file unchanged


def test_generator_is_cpu_and_seeded():
    wb = Workbook(mode="tiny", device="cpu", dtype=torch.float32, seed=5, figures=repo_root(), on_colab=False)
    assert torch.equal(
        torch.rand(3, generator=wb.generator()), torch.rand(3, generator=torch.Generator().manual_seed(5))
    )
    assert torch.equal(
        torch.rand(3, generator=wb.generator(7)), torch.rand(3, generator=torch.Generator().manual_seed(7))
    )


def test_colab_badge_points_at_the_notebook():
    badge = colab_badge("03_guidance_schedules.ipynb", repo="me/fork")
    assert badge.endswith(
        "(https://colab.research.google.com/github/me/fork/blob/main/notebooks/03_guidance_schedules.ipynb)"
    )


def test_identity_inputs_use_the_tiny_adapters_face_model(tiny_plus):
    from fastface_lite.sdxl.adapter import adapter_id_dim

    wb = Workbook(mode="tiny", device="cpu", dtype=torch.float32, seed=0, figures=repo_root(), on_colab=False)
    inputs, photo = wb.identity_inputs(tiny_plus, "grace_hopper")
    assert photo.name == "grace_hopper.jpg"
    negative, positive = inputs.call_kwargs()["ip_adapter_image_embeds"][0].chunk(2)
    assert positive.shape[-1] == adapter_id_dim(tiny_plus) == 128  # dlib's descriptor size
    assert torch.count_nonzero(negative) == 0 and torch.count_nonzero(positive) > 0


def test_full_mode_on_the_cpu_is_an_explicit_opt_in(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("FASTFACE_MODE", "tiny")
    monkeypatch.setenv("FASTFACE_ALLOW_CPU_FULL", "0")
    with pytest.raises(RuntimeError, match="FASTFACE_ALLOW_CPU_FULL=1"):
        setup(mode="full")
    monkeypatch.setenv("FASTFACE_ALLOW_CPU_FULL", "1")
    threads = torch.get_num_threads()
    wb = setup(mode="full")
    assert (wb.mode, wb.device, wb.dtype, wb.tiny, wb.gpu) == ("full", "cpu", torch.float32, False, None)
    assert torch.get_num_threads() == threads  # one thread is tiny mode's choice only
    assert "FASTFACE_ALLOW_CPU_FULL=1" in wb.describe()


def test_size_override_is_checked_and_reaches_the_pipeline(monkeypatch, restore_threads):
    monkeypatch.setenv("FASTFACE_MODE", "tiny")
    monkeypatch.setenv("FASTFACE_SIZE", "128")
    wb = setup(seed=0)
    assert wb.size == 128 and wb.describe().endswith("image side 128 px (FASTFACE_SIZE)")
    pipe = wb.pipeline(adapter=None)
    assert pipe.default_sample_size * pipe.vae_scale_factor == 128
    for bad in ("100", "-64", "big", "0"):
        monkeypatch.setenv("FASTFACE_SIZE", bad)
        with pytest.raises(ValueError, match=f"FASTFACE_SIZE='{bad}'.*multiple of 64"):
            setup(seed=0)


def test_describe_says_which_gpu_plan_was_chosen():
    from fastface_lite.sdxl.gpu_plan import gpu_plan

    wb = Workbook(
        mode="full", device="cuda", dtype=torch.float16, seed=0, figures=repo_root(), on_colab=True, gpu=gpu_plan(14.75)
    )
    assert wb.describe().splitlines()[1].startswith("GPU 14.8 GiB: fp16-fix VAE, all on the GPU")
