"""What every notebook calls first: run mode, quiet output, seeds, and where figures go.

`setup()` makes a notebook's stored outputs reproducible on CPU (so nbval can compare them): it
seeds Python, NumPy and torch, turns progress bars and library chatter off, rounds printed
floats, and returns a `Workbook` that knows the mode (tiny offline / full on a GPU), the device,
the dtype, and where figures go (`figures_folder`).
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

from fastface_lite.sdxl.mode import run_mode

GITHUB_REPO = "fastface-lite/fastface_lite"  # the badges and the Colab install cell point here
COLAB_URL = "https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"
# Below this much GPU memory (a 16 GB T4 reports ~15 GiB) modules wait on the CPU until used.
# Measured (bench/results/h200_full_size_memory.md): a 1024 px image peaks at 14.75 GiB with
# everything on the GPU (9.2 GiB of fp16 weights + the VAE decoding in float32), 9.9 GiB with
# model CPU offload. VAE slicing/tiling change nothing at 1024 px (tiling starts above 1024).
SMALL_GPU_GIB = 20
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

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"

    def describe(self) -> str:
        weights = "random tiny weights, offline" if self.tiny else "real weights from the hub"
        return (
            f"mode {self.mode} ({weights}) on {self.device}, {str(self.dtype).replace('torch.', '')}, seed {self.seed}"
        )

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

        Full mode on a small GPU (T4) turns on model CPU offload: only the module at work sits on
        the GPU, which keeps a 1024 px image under 10 GiB at the cost of weight transfers.
        `cache_dir`: the Hugging Face cache for full mode (e.g. a Drive folder on Colab).
        """
        from fastface_lite.sdxl.loading import load_pipeline
        from fastface_lite.sdxl.tiny import tiny_pipeline

        if self.tiny:
            pipe = tiny_pipeline(adapter=adapter, seed=self.seed, model=model)
        else:
            pipe = load_pipeline(
                model, steps=steps, adapter=adapter, device=self.device, dtype=self.dtype, cache_dir=cache_dir
            )
            if self.device == "cuda" and _gpu_gib() < SMALL_GPU_GIB:
                pipe.enable_model_cpu_offload()
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


def _gpu_gib() -> float:
    return torch.cuda.get_device_properties(0).total_memory / 2**30


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
    """
    if mode is not None:
        os.environ["FASTFACE_MODE"] = mode
    mode = run_mode()
    device = "cuda" if mode == "full" and torch.cuda.is_available() else "cpu"
    if mode == "full" and device == "cpu":
        raise RuntimeError(
            "full mode needs a GPU (Colab: Runtime > Change runtime type > T4 GPU); "
            "use mode='tiny' to run offline on the CPU"
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
    )
