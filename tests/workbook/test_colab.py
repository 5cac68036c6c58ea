"""The Colab set-up's decisions, on fake pip / nvidia-smi / torch answers, and the script itself."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fastface_lite.workbook import colab
from fastface_lite.workbook.colab import Gpu, Result, SetupError, Torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "fastface_lite" / "workbook" / "colab.py"

# Shaped like the tools' output on a Colab T4 runtime (values made up for the tests).
SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""
SMI_L = "GPU 0: Tesla T4 (UUID: GPU-5e1b7a6c-0000-0000-0000-000000000000)\n"
T4 = Gpu(("Tesla T4",), "550.54.15", "12.4")
COLAB_TORCH = Torch("2.11.0+cu128", "12.8", True, ("Tesla T4",))
INSTALLED = {
    "torch": "2.11.0+cu128",
    "torchvision": "0.26.0+cu128",
    "numpy": "2.0.2",
    "pandas": "2.2.2",
    "ipykernel": "6.17.1",
}


def test_nvidia_smi_parsed_and_absent():
    assert colab.parse_nvidia_smi(Result(0, SMI), Result(0, SMI_L)) == T4
    missing = Result(127, "", "No such file or directory: 'nvidia-smi'")
    assert colab.parse_nvidia_smi(missing, missing) is None
    # the binary present without a GPU behind it (a CPU runtime that keeps the tools)
    no_device = Result(9, "", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    assert colab.parse_nvidia_smi(no_device, no_device) is None


def test_torch_probe_parsed():
    line = json.dumps({"version": "2.14.1+cu130", "cuda": "13.0", "available": False, "devices": []})
    torch = colab.parse_torch(Result(0, line + "\n", "UserWarning: The NVIDIA driver on your system is too old"))
    assert (torch.version, torch.cuda, torch.available) == ("2.14.1+cu130", "13.0", False)
    assert "too old" in torch.notes
    error = "RuntimeError: operator torchvision::nms does not exist"
    broken = colab.parse_torch(Result(0, json.dumps({"error": error})))
    assert broken.version is None and "nms" in broken.notes


def test_constraints_pin_what_is_present_with_local_labels():
    lines = colab.constraint_lines(INSTALLED | {"pillow": None})
    assert lines == [
        "torch==2.11.0+cu128",
        "torchvision==0.26.0+cu128",
        "numpy==2.0.2",
        "pandas==2.2.2",
        "ipykernel==6.17.1",
    ]


CUDA12 = "onnxruntime-gpu>=1.19,<1.27"


@pytest.mark.parametrize(
    "cuda, wanted",
    [("12.8", CUDA12), ("12.4", CUDA12), ("13.0", "onnxruntime-gpu>=1.27,<2"), (None, None), ("11.8", None)],
)
def test_onnxruntime_gpu_follows_torch_cuda(cuda, wanted):
    assert colab.onnxruntime_gpu(cuda) == wanted


def _requirements(step):
    """The positional arguments of a pip command: what it installs or removes."""
    args, skip = [], False
    for arg in step.argv[3:]:
        if skip:
            skip = False
        elif arg == "-c":
            skip = True
        elif not arg.startswith("-") and arg not in ("install", "uninstall"):
            args.append(arg)
    return args


def _constrained_by(step, path):
    argv = list(step.argv)
    return "-c" in argv and argv[argv.index("-c") + 1] == str(path)


def test_plan_on_a_cpu_runtime_installs_runtime_extras_only(tmp_path):
    steps = colab.plan("python3", tmp_path, tmp_path / "c.txt", Torch("2.11.0+cpu", None, False))
    assert [_requirements(s) for s in steps] == [[f"{tmp_path}[faces,workbook]"], ["open_clip_torch>=3.3"]]
    assert all(s.argv[3] == "install" and _constrained_by(s, tmp_path / "c.txt") for s in steps)


def test_plan_on_a_cuda12_runtime_swaps_onnxruntime_before_installing_the_gpu_build(tmp_path):
    steps = colab.plan("python3", tmp_path, tmp_path / "c.txt", COLAB_TORCH)
    assert [s.argv[3] for s in steps] == ["install", "install", "uninstall", "install"]
    assert _requirements(steps[2]) == ["onnxruntime", "onnxruntime-gpu"]
    assert _requirements(steps[3]) == ["onnxruntime-gpu>=1.19,<1.27"] and _constrained_by(steps[3], tmp_path / "c.txt")
    named = {req.split("[")[0].split(">")[0].split("=")[0] for s in steps for req in _requirements(s)}
    assert not named & set(colab.PROTECTED)


def test_mode_report_full_tiny_and_unusable_gpu():
    assert colab.mode_report(COLAB_TORCH, T4).mode == "full"
    tiny = colab.mode_report(Torch("2.11.0+cpu", None, False), None)
    assert tiny.mode == "tiny" and not tiny.loud and colab.RUNTIME_HOWTO in tiny.message
    stale = Torch("2.13.0+cu130", "13.0", False, notes="UserWarning: The NVIDIA driver on your system is too old")
    loud = colab.mode_report(stale, T4)
    assert loud.loud and loud.mode == "tiny"
    assert all(word in loud.message for word in ("Tesla T4", "CUDA 13.0", "CUDA 12.4", "too old", "TINY"))
    cpu_build = colab.mode_report(Torch("2.11.0+cpu", None, False), T4)
    assert cpu_build.loud and "CPU-only build" in cpu_build.message


class FakeRuntime:
    """Answers the set-up's commands like a Colab runtime would; pip's answers are chosen per test."""

    def __init__(self, installed, torch=COLAB_TORCH, pip_exit=0, pip_output="", after=None):
        self.installed, self.after, self.torch = installed, after or installed, torch
        self.pip_exit, self.pip_output, self.calls = pip_exit, pip_output, []

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "nvidia-smi":
            return Result(0, SMI_L if "-L" in argv else SMI)
        if argv[1:3] == ["-m", "pip"]:
            return Result(self.pip_exit, "", self.pip_output)
        code = argv[2]
        if code == colab._VERSIONS:
            pip_ran = any(c[1:3] == ["-m", "pip"] for c in self.calls)
            found = self.after if pip_ran else self.installed
            return Result(0, json.dumps({name: found.get(name) for name in argv[3:]}))
        if code == colab._TORCH:
            t = self.torch
            return Result(
                0,
                json.dumps(
                    {"version": t.version, "cuda": t.cuda, "available": t.available, "devices": list(t.devices)}
                ),
            )
        if code == colab._IMPORT_CHECK:
            return Result(0, "fastface_lite imports from /usr/local/lib/python3.12/dist-packages/fastface_lite\n")
        raise AssertionError(f"unexpected command {argv}")


def test_install_runs_the_plan_and_reports_full_mode():
    notes = (
        "WARNING: Location 'file:///x' is ignored: it is neither a file nor a directory.\n"
        "ERROR: pip's dependency resolver does not currently take into account ...\n"
        "sentence-transformers 3.4.1 requires transformers<5.0.0, but you have transformers 5.24.0\n"
        "Successfully installed fastface_lite-0.1.0\n"
    )
    fake, said = FakeRuntime(INSTALLED, pip_output=notes), []
    report = colab.install(REPO, run=fake, python="python3", say=said.append)
    pips = [c for c in fake.calls if c[1:3] == ["-m", "pip"]]
    assert len(pips) == 4 and report.mode == "full" and report.changed == {}
    text = "\n".join(said)
    assert "torch==2.11.0+cu128" in text and "dependency resolver" in text and "transformers<5.0.0" in text
    assert "is ignored" not in text and "Successfully" not in text


def test_install_stops_when_pip_fails():
    fake = FakeRuntime(INSTALLED, pip_exit=1, pip_output="ERROR: No matching distribution found for dlib-bin>=20.0.1")
    with pytest.raises(SetupError, match=r"(?s)install fastface_lite\[faces,workbook\].*failed.*dlib-bin"):
        colab.install(REPO, run=fake, python="python3", say=lambda _: None)
    assert sum(c[1:3] == ["-m", "pip"] for c in fake.calls) == 1  # nothing after the failed step


def test_install_stops_when_a_protected_version_moved():
    fake = FakeRuntime(INSTALLED, after=INSTALLED | {"numpy": "2.4.6"})
    with pytest.raises(SetupError, match="numpy 2.0.2 -> 2.4.6"):
        colab.install(REPO, run=fake, python="python3", say=lambda _: None)


def test_install_refuses_a_missing_checkout_and_a_missing_torch(tmp_path):
    with pytest.raises(SetupError, match="not a fastface_lite checkout"):
        colab.install(tmp_path, run=FakeRuntime(INSTALLED), python="python3", say=lambda _: None)
    with pytest.raises(SetupError, match="has no torch"):
        colab.install(REPO, run=FakeRuntime({"numpy": "2.0.2"}), python="python3", say=lambda _: None)


def test_dry_run_script_needs_only_the_standard_library():
    """The file runs as the notebooks run it, before anything is installed: torch is never imported."""
    code = (
        f"import runpy, sys\nrunpy.run_path({str(SCRIPT)!r})['main'](['--dry-run'])\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'diffusers', 'fastface_lite') if m in sys.modules)\n"
        "print('imported:', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent)
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout
    assert f"would install fastface_lite[faces,workbook] from {REPO}" in result.stdout
    assert "-m pip install -q -c" in result.stdout and f"'{REPO}[faces,workbook]'" in result.stdout


def _run_cell(source, monkeypatch, on_colab):
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    exec(compile(source, "<setup cell>", "exec"), namespace)
    return namespace


def test_setup_cell_is_plain_python_and_idle_off_colab(monkeypatch, tmp_path):
    source = colab.setup_cell("https://github.com/fastface-lite/fastface_lite", str(tmp_path / "clone"))
    assert not any(line.lstrip().startswith(("!", "%")) for line in source.splitlines())
    namespace = _run_cell(source, monkeypatch, on_colab=False)
    assert "checkout" not in namespace and not (tmp_path / "clone").exists()


def test_setup_cell_stops_when_the_clone_fails(monkeypatch, tmp_path):
    source = colab.setup_cell(str(tmp_path / "no-such-repository"), str(tmp_path / "clone"))
    with pytest.raises(RuntimeError, match="git clone into .*clone failed"):
        _run_cell(source, monkeypatch, on_colab=True)


def test_setup_cell_runs_install_from_the_checkout(monkeypatch, tmp_path):
    """A folder with the script but no project (a clone cut short) stops at the checkout check."""
    script = tmp_path / "clone" / "fastface_lite" / "workbook" / "colab.py"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT.read_text())
    source = colab.setup_cell("https://example.invalid/never-cloned", str(tmp_path / "clone"))
    with pytest.raises(Exception, match="is not a fastface_lite checkout") as raised:
        _run_cell(source, monkeypatch, on_colab=True)
    assert type(raised.value).__name__ == "SetupError"
