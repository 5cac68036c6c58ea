"""What every notebook calls first: run mode, quiet output, seeds, and where figures go.

`setup()` makes a notebook's stored outputs reproducible on CPU (so nbval can compare them): it
seeds Python, NumPy and torch, turns progress bars and library chatter off, rounds printed
floats, and returns a `Workbook` that knows the mode (tiny offline / full on a GPU), the device,
the dtype, and where figures go (`figures_folder`).

Environment variables it reads (besides FASTFACE_MODE, see `fastface_lite.sdxl.mode`):

* ``FASTFACE_ALLOW_CPU_FULL=1``: full mode on a machine without a usable GPU runs on the CPU in
  float32 instead of being refused (hours per image with real SDXL weights; minutes of testing
  with the tiny hub cache of ``make test-full``).
* ``FASTFACE_SIZE=<px>``: the image side `Workbook.pipeline()` sets as the pipeline's default (a
  multiple of 64), instead of the checkpoint's (1024 px; Turbo 512) or tiny mode's quarter of it.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastface_lite.errors import ConfigError
from fastface_lite.sdxl.gpu_plan import GpuPlan, device_gpu_plan
from fastface_lite.sdxl.mode import run_mode

GITHUB_REPO = "fastface-lite/fastface_lite"  # the badges and the Colab install cell point here
COLAB_URL = "https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"
# Which VAE and whether to offload on a GPU of a given size: sdxl/gpu_plan.py (measured peaks).
ALLOW_CPU_FULL_ENV = "FASTFACE_ALLOW_CPU_FULL"
SIZE_ENV = "FASTFACE_SIZE"
# Where notebooks save their figures. `notebooks/build.py` points it at the tracked `figures/` when it
# rebuilds the notebooks; any other run writes under the git-ignored `runs/figures/`, because PNGs
# rendered on another CPU differ in a few pixels and would show up as changed files.
FIGURES_ENV = "FASTFACE_FIGURES"


def repo_root(start: Path | None = None) -> Path:
    """The checkout holding `pyproject.toml` and `figures/` above `start` (default: cwd)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "fastface_lite").is_dir():
            return folder
    return here


def figures_folder(root: Path | None = None) -> Path:
    """Where `Workbook.save` writes: ``$FASTFACE_FIGURES`` if set (relative to the checkout `root`),
    else ``runs/figures/`` in the checkout (git-ignored)."""
    root = repo_root() if root is None else root
    chosen = os.environ.get(FIGURES_ENV)
    return root / chosen if chosen else root / "runs" / "figures"


def colab_badge(notebook_name: str, repo: str = GITHUB_REPO) -> str:
    """Markdown of the 'Open in Colab' badge for `notebooks/<notebook_name>`."""
    url = COLAB_URL.format(repo=repo, name=notebook_name)
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


@dataclass(frozen=True)
class Workbook:
    """The settings a notebook runs under (returned by `setup`)."""

    mode: str  # "tiny" (offline, random weights) or "full" (hub weights)
    device: str  # "cpu" or "cuda"
    dtype: torch.dtype  # float32 on CPU, float16 on a GPU
    seed: int
    figures: Path  # where save() writes: see figures_folder()
    on_colab: bool
    gpu: GpuPlan | None = None  # full mode on CUDA: VAE and offload (see gpu_plan); None elsewhere
    size: int | None = None  # image side from $FASTFACE_SIZE; None: the checkpoint's (tiny: a quarter)

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"

    def describe(self) -> str:
        weights = "random tiny weights, offline" if self.tiny else "real weights from the hub"
        text = (
            f"mode {self.mode} ({weights}) on {self.device}, {str(self.dtype).replace('torch.', '')}, seed {self.seed}"
        )
        if not self.tiny and self.device == "cpu":
            text += f"\nfull mode on the CPU ({ALLOW_CPU_FULL_ENV}=1): slow with real weights"
        if self.gpu is not None:
            text += f"\nGPU {self.gpu.gpu_gib:.1f} GiB: {self.gpu.reason}"
        if self.size is not None:
            text += f"\nimage side {self.size} px ({SIZE_ENV})"
        return text

    def generator(self, seed: int | None = None) -> torch.Generator:
        """A CPU generator (diffusers draws the initial noise on CPU, so images match across devices)."""
        return torch.Generator().manual_seed(self.seed if seed is None else seed)

    def pipeline(
        self,
        model: str = "hyper",
        adapter: str | None = "faceid-plusv2",
        steps: int = 4,
        cache_dir: str | os.PathLike | None = None,
    ):
        """The FastFace pipeline for this mode: the tiny offline twin, or real weights on the GPU.

        Full mode on a GPU follows `self.gpu` (:func:`~fastface_lite.sdxl.gpu_plan.gpu_plan`):
        on a 15 GiB T4 the fp16-fix VAE keeps the decode in float16 so everything stays on the GPU;
        only smaller GPUs get model CPU offload (the module at work on the GPU, the rest waiting on
        the CPU: lowest peak, about 3x slower). `self.size` ($FASTFACE_SIZE) replaces the default
        image side. `cache_dir`: the Hugging Face cache for full mode (e.g. a Drive folder on Colab).
        """
        from fastface_lite.sdxl.loading import load_pipeline
        from fastface_lite.sdxl.tiny import tiny_pipeline

        if self.tiny:
            pipe = tiny_pipeline(adapter=adapter, seed=self.seed, model=model)
        else:
            vae = self.gpu.vae if self.gpu is not None else "sdxl"
            pipe = load_pipeline(
                model, steps=steps, adapter=adapter, device=self.device, dtype=self.dtype, cache_dir=cache_dir, vae=vae
            )
            if self.gpu is not None and self.gpu.offload:
                pipe.enable_model_cpu_offload()
        if self.size is not None:
            pipe.default_sample_size = self.size // pipe.vae_scale_factor
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def identity_inputs(self, pipe, face: str = "astronaut"):
        """(IDInputs, photo path) for `pipe` from a shipped face name or a photo path.

        The face model must be the one the adapter was trained on: in full mode insightface
        buffalo_l (512-d ArcFace), in tiny mode dlib (128-d, the tiny adapters' ID size). The
        Plus v2 CLIP crop is in BGR order in both modes, as the reference feeds it.
        """
        from fastface_lite.workbook.demo import identity_inputs

        return identity_inputs(pipe, face, backend="dlib" if self.tiny else "insightface", bgr=True)

    def save(self, fig, name: str, dpi: int = 100) -> Path:
        """Save a matplotlib figure as `<figures>/<name>.png` (no version stamp: rebuilds leave it unchanged)."""
        from fastface_lite.inspect.plots import save_figure

        return save_figure(fig, self.figures / (name if name.endswith(".png") else f"{name}.png"), dpi=dpi)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def image_size_override() -> int | None:
    """``$FASTFACE_SIZE`` as an image side in pixels (a positive multiple of 64), or None when unset."""
    raw = os.environ.get(SIZE_ENV, "").strip()
    if not raw:
        return None
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size <= 0 or size % 64:
        raise ConfigError(
            f"{SIZE_ENV}={raw!r} is not an image side; give a positive multiple of 64 (e.g. 256, 1024) or unset it"
        )
    return size


def quiet_libraries() -> None:
    """Progress bars and info logging off: they vary run to run and would break stored outputs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers first: importing diffusers already makes transformers warn (torchvision absent)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def setup(seed: int = 0, mode: str | None = None) -> Workbook:
    """Prepare a notebook: pick the mode, quiet the libraries, seed everything, round printing.

    mode: "tiny" or "full"; default FASTFACE_MODE, else full when a GPU is present, else tiny.
    Full mode without a GPU is refused unless FASTFACE_ALLOW_CPU_FULL=1 (then CPU, float32).
    """
    if mode is not None:
        os.environ["FASTFACE_MODE"] = mode
    mode = run_mode()
    size = image_size_override()
    device = "cuda" if mode == "full" and torch.cuda.is_available() else "cpu"
    if mode == "full" and device == "cpu" and not _flag(ALLOW_CPU_FULL_ENV):
        raise RuntimeError(
            "full mode needs a GPU (Colab: Runtime > Change runtime type > T4 GPU); "
            f"use mode='tiny' to run offline on the CPU, or set {ALLOW_CPU_FULL_ENV}=1 to run full mode "
            "on the CPU in float32 (very slow with real weights)"
        )
    quiet_libraries()
    if mode == "tiny":
        # One thread: the tiny model gains nothing from more, a busy 2-core machine loses 10-50x
        # with two, and float sums then come out the same whatever the core count (stored outputs).
        torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    np.set_printoptions(precision=3, suppress=True)
    try:
        import pandas as pd

        pd.set_option("display.precision", 3)
    except ImportError:  # pandas is a requirement; a trimmed install may still lack it
        pass
    import matplotlib

    matplotlib.rcParams.update({"figure.dpi": 80, "savefig.bbox": "tight", "font.size": 9})
    return Workbook(
        mode=mode,
        device=device,
        dtype=torch.float16 if device == "cuda" else torch.float32,
        seed=seed,
        figures=figures_folder(),
        on_colab="google.colab" in sys.modules,
        gpu=device_gpu_plan(device),
        size=size,
    )
