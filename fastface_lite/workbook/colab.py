"""Install fastface_lite on Google Colab beside Colab's own torch (the notebooks' first cell runs this).

It runs before the package's dependencies are installed, so it uses the standard library only and
looks at torch in a subprocess. From the checkout the notebook cell cloned:

    python fastface_lite/workbook/colab.py            # install from the checkout holding this file
    python fastface_lite/workbook/colab.py --dry-run  # print the pip commands, change nothing

The notebook cell runs it in the kernel, so that a failure stops "Run all":
`runpy.run_path(f"{checkout}/fastface_lite/workbook/colab.py")["install"](checkout)`.

In order, it:
1. pins the versions present of what Colab ships and the session relies on (torch, torchvision,
   numpy, pandas, the Jupyter kernel, ...; `PROTECTED`) in a pip constraints file, so neither the
   package nor any of its dependencies can upgrade or replace them;
2. asks torch for its version, its CUDA version and whether it sees a GPU, and nvidia-smi whether
   the runtime has one;
3. installs the package with its runtime extras (faces, workbook; not dev), and open_clip_torch
   without its dependencies (tiny mode reads CLIP's BPE vocabulary from that wheel);
4. with a CUDA 12 or 13 torch, swaps insightface's CPU onnxruntime for the onnxruntime-gpu build of
   that CUDA (they share one package folder, so the CPU one goes first);
5. checks that the pinned versions did not move and that fastface_lite imports beside torchvision;
6. says which mode the notebooks will run in, loudly when the GPU is there but torch cannot use it.

Any failed step raises `SetupError` naming the step, with the end of pip's output.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# What the runtime ships and must keep: the torch build that matches its driver, the packages the
# kernel has already imported, and those sharing a folder with a sibling (the opencv wheels: cv2/).
PROTECTED = (
    "torch",
    "torchvision",
    "torchaudio",
    "numpy",
    "pandas",
    "pillow",
    "matplotlib",
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "ipywidgets",
    "ipykernel",
    "ipython",
    "jupyter-client",
    "jupyter-core",
    "jupyter-server",
    "notebook",
    "jupyterlab",
    "traitlets",
    "tornado",
    "pyzmq",
)
EXTRAS = ("faces", "workbook")  # runtime extras only: `dev` (pytest, selenium, ...) stays out
TOKENIZER_WHEEL = "open_clip_torch>=3.3"  # only its BPE file is read; its deps would pull timm
# onnxruntime-gpu by torch's CUDA major: 1.19-1.26 are CUDA 12 builds, 1.27 and later CUDA 13.
ONNXRUNTIME_GPU = {"12": "onnxruntime-gpu>=1.19,<1.27", "13": "onnxruntime-gpu>=1.27,<2"}
RUNTIME_HOWTO = "Runtime > Change runtime type > T4 GPU > Save, then Runtime > Run all"


class SetupError(RuntimeError):
    """A set-up step failed; the message names the step and what to do."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Result]


def run_command(argv: Sequence[str]) -> Result:
    """Run `argv`, capturing its output (a notebook shows only what Python prints)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True)
    except FileNotFoundError as err:
        return Result(127, "", str(err))
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Torch:
    """What the runtime's torch says about itself (probed in a subprocess)."""

    version: str | None  # None: torch does not import
    cuda: str | None  # torch.version.cuda, None for a CPU-only build
    available: bool  # torch.cuda.is_available()
    devices: tuple = ()
    notes: str = ""  # what torch printed while probing (e.g. a driver warning) or its import error


@dataclass(frozen=True)
class Gpu:
    """What nvidia-smi reports: the GPUs present and the newest CUDA its driver supports."""

    names: tuple
    driver: str | None
    cuda: str | None


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple


@dataclass
class Report:
    mode: str  # "full" or "tiny"
    message: str
    loud: bool = False
    changed: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Decisions (pure)
# ---------------------------------------------------------------------------------------------


def parse_torch(result: Result) -> Torch:
    """`Torch` from the probe's JSON line; an unreadable probe reads as a torch that does not import."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return Torch(None, None, False, notes=(result.stderr or result.stdout).strip())
    data = json.loads(lines[-1])
    if "error" in data:
        return Torch(None, None, False, notes=data["error"])
    return Torch(data["version"], data["cuda"], bool(data["available"]), tuple(data["devices"]), result.stderr.strip())


def parse_nvidia_smi(summary: Result, listing: Result) -> Gpu | None:
    """`Gpu` from `nvidia-smi` (its header names driver and CUDA) and `nvidia-smi -L`; None: no GPU."""
    names = tuple(
        m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID:.*)?$", listing.stdout, re.MULTILINE)
    )
    if listing.returncode != 0 or not names:
        return None
    driver = re.search(r"Driver Version:\s*([\d.]+)", summary.stdout)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", summary.stdout)
    return Gpu(names, driver and driver.group(1), cuda and cuda.group(1))


def constraint_lines(installed: dict) -> list:
    """`name==version` for each protected package present (local labels such as +cu128 kept)."""
    return [f"{name}=={installed[name]}" for name in PROTECTED if installed.get(name)]


def onnxruntime_gpu(torch_cuda: str | None) -> str | None:
    """The onnxruntime-gpu requirement for torch's CUDA version; None: keep the CPU onnxruntime."""
    if not torch_cuda:
        return None
    return ONNXRUNTIME_GPU.get(torch_cuda.split(".")[0])


def plan(python: str, source: Path, constraints: Path, torch: Torch) -> list:
    """The pip steps, in order. Every install runs under the constraints file."""
    pip = (python, "-m", "pip")
    pinned = ("-c", str(constraints))
    steps = [
        Step(
            f"install fastface_lite[{','.join(EXTRAS)}] from {source}",
            (*pip, "install", "-q", *pinned, f"{source}[{','.join(EXTRAS)}]"),
        ),
        Step(
            "install open_clip_torch (its CLIP BPE file, for tiny mode; no dependencies)",
            (*pip, "install", "-q", "--no-deps", *pinned, TOKENIZER_WHEEL),
        ),
    ]
    gpu_runtime = onnxruntime_gpu(torch.cuda)
    if gpu_runtime:
        steps += [
            Step(
                "remove the CPU onnxruntime (onnxruntime-gpu writes the same folder)",
                (*pip, "uninstall", "-q", "-y", "onnxruntime", "onnxruntime-gpu"),
            ),
            Step(
                f"install {gpu_runtime} (insightface on the GPU; torch is CUDA {torch.cuda})",
                (*pip, "install", "-q", *pinned, gpu_runtime),
            ),
        ]
    return steps


def changed_versions(before: dict, after: dict) -> dict:
    """{name: (before, after)} for protected packages whose version moved, appeared or went."""
    return {name: (before.get(name), after.get(name)) for name in PROTECTED if before.get(name) != after.get(name)}


def _banner(lines: Sequence[str]) -> str:
    bar = "!" * 100
    return "\n".join([bar, *(f"!! {line}" for line in lines), bar])


def mode_report(torch: Torch, gpu: Gpu | None) -> Report:
    """Which mode the notebooks will run in, and what to do when that is not what the runtime allows."""
    if torch.available:
        name = torch.devices[0] if torch.devices else "a GPU"
        return Report(
            "full",
            f"GPU: {name}; torch {torch.version} (CUDA {torch.cuda}) uses it. "
            "The notebooks run in full mode (real weights from the Hugging Face hub).",
        )
    if gpu is None:
        return Report(
            "tiny",
            "No GPU in this runtime: the notebooks run in tiny mode (random weights, "
            "so the pictures are noise; the mechanics are real). For full mode on "
            f"Colab: {RUNTIME_HOWTO}.",
        )
    if torch.version is None:
        why = f"torch does not import: {torch.notes}"
    elif torch.cuda is None:
        why = f"torch {torch.version} is a CPU-only build."
    else:
        why = (
            f"torch {torch.version} is built for CUDA {torch.cuda}; the driver ({gpu.driver}) "
            f"supports CUDA {gpu.cuda or 'unknown'}."
        )
    lines = [f"This runtime has a GPU ({', '.join(gpu.names)}) but torch cannot use it.", why]
    if torch.notes and torch.version is not None:
        lines += [f"torch said: {torch.notes.splitlines()[-1][:300]}"]
    lines += [
        "The notebooks would run in TINY mode (random weights, noise pictures), not full mode.",
        "Fix: Runtime > Disconnect and delete runtime, then Runtime > Run all. A new runtime",
        "has Colab's own torch, built for its driver (this set-up never installs torch).",
    ]
    return Report("tiny", _banner(lines), loud=True)


# ---------------------------------------------------------------------------------------------
# Reading the runtime and running the steps
# ---------------------------------------------------------------------------------------------

_VERSIONS = """import importlib.metadata as m, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = m.version(name)
    except m.PackageNotFoundError:
        found[name] = None
print(json.dumps(found))"""

_TORCH = """import json
try:
    import torch
except Exception as err:
    print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
else:
    ok = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if ok else []
    print(json.dumps({"version": torch.__version__, "cuda": torch.version.cuda, "available": ok,
                      "devices": names}))"""

# the failure Colab users met: a torchvision that does not match torch breaks transformers' import
_IMPORT_CHECK = """import importlib.util
import fastface_lite, fastface_lite.sdxl.pipeline, fastface_lite.faces.analyzer, transformers
if importlib.util.find_spec("torchvision"):
    import torchvision, torchvision.ops
print("fastface_lite imports from", fastface_lite.__file__)"""


def versions(run: Runner, python: str, names: Sequence[str]) -> dict:
    """Installed versions of `names` for `python` (None: not installed), read in a fresh process."""
    result = run([python, "-c", _VERSIONS, *names])
    if result.returncode != 0:
        raise SetupError(f"could not read the installed versions with {python}:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _tail(result: Result, lines: int = 30) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def _pip_notes(result: Result) -> list:
    """pip's warnings and its resolver's list of other installed packages whose pins now disagree,
    less its notes on its own index settings and on uninstalling what is not there."""
    noise = ("is ignored: it is neither a file", "as it is not installed")
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if (line.startswith(("WARNING:", "ERROR:")) or "but you have" in line) and not any(n in line for n in noise)
    ]


def checkout_of(path: Path) -> Path:
    """The repository root holding this file (it sits at fastface_lite/workbook/colab.py)."""
    return path.resolve().parents[2]


def install(
    source: Path,
    *,
    dry_run: bool = False,
    run: Runner = run_command,
    python: str = sys.executable,
    say: Callable[[str], None] = print,
) -> Report:
    """Install the package from the checkout `source` beside the runtime's torch; see the module doc."""
    source = Path(source)
    if not ((source / "pyproject.toml").is_file() and (source / "fastface_lite").is_dir()):
        raise SetupError(
            f"{source} is not a fastface_lite checkout (did the git clone fail?). "
            "Delete the folder and run the cell again."
        )
    before = versions(run, python, PROTECTED)
    if not before.get("torch"):
        raise SetupError(
            f"{python} has no torch. This set-up uses the torch the runtime ships (Colab "
            "always has one) and never installs it; install torch first, then run it again."
        )
    torch = parse_torch(run([python, "-c", _TORCH]))
    gpu = parse_nvidia_smi(run(["nvidia-smi"]), run(["nvidia-smi", "-L"]))
    pins = constraint_lines(before)
    say("kept as they are: " + ", ".join(pins))
    with tempfile.TemporaryDirectory(prefix="fastface-colab-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        for step in plan(python, source, constraints, torch):
            say(f"{'would ' if dry_run else ''}{step.what}:\n  {shlex.join(step.argv)}")
            if dry_run:
                continue
            result = run(step.argv)
            if result.returncode != 0:
                raise SetupError(
                    f"'{step.what}' failed (pip exit code {result.returncode}); the runtime's "
                    f"packages stay pinned at: {', '.join(pins)}.\n{_tail(result)}"
                )
            for note in _pip_notes(result):
                say(f"  pip: {note}")
    report = mode_report(torch, gpu)
    if not dry_run:
        report.changed = changed_versions(before, versions(run, python, PROTECTED))
        if report.changed:
            moved = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in report.changed.items())
            raise SetupError(
                f"the install changed packages it must leave alone: {moved}. Restart the "
                "runtime (Runtime > Disconnect and delete runtime) and report this."
            )
        check = run([python, "-c", _IMPORT_CHECK])
        if check.returncode != 0:
            raise SetupError(f"fastface_lite was installed but does not import:\n{_tail(check)}")
        say(check.stdout.strip())
    say(report.message)
    return report


CHECKOUT = "/content/fastface_lite"  # where the notebooks' first cell clones the repository on Colab


def setup_cell(clone_url: str, checkout: str = CHECKOUT) -> str:
    """The notebooks' first code cell: on Colab, clone once and run `install`; elsewhere nothing.

    Plain Python (no ! or % lines), so a failed clone or install raises and stops "Run all".
    clone_url: e.g. f"https://github.com/{GITHUB_REPO}" (fastface_lite.workbook.session).
    """
    return f"""\
# On Colab: install fastface_lite beside Colab's own torch (a few minutes, once per session);
# elsewhere this cell does nothing. It stops with the reason if the clone or the install fails.
import sys
if "google.colab" in sys.modules:
    import os, runpy, subprocess
    checkout, url = {json.dumps(checkout)}, {json.dumps(clone_url)}
    if not os.path.isdir(checkout):
        clone = subprocess.run(["git", "clone", "-q", "--depth=1", url, checkout], capture_output=True, text=True)
        if clone.returncode:
            raise RuntimeError(f"git clone into {{checkout}} failed:\\n{{clone.stderr}}")
    runpy.run_path(f"{{checkout}}/fastface_lite/workbook/colab.py")["install"](checkout)"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=checkout_of(Path(__file__)),
        help="the fastface_lite checkout to install (default: the one holding this file)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands, run none")
    args = parser.parse_args(argv)
    install(args.source, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    try:
        main()
    except SetupError as err:
        print(f"fastface_lite set-up failed: {err}", file=sys.stderr)
        sys.exit(1)
