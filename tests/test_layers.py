"""The import contracts in pyproject.toml ([tool.importlinter]) that `make lint` checks.

They must hold for the package as it is, and each must break when the import it forbids appears:
shown on a copy of the package with one such import added, checked by lint-imports the way `make
lint` runs it (a separate process that finds the copy first on PYTHONPATH).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path, *contracts: str) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts (all, or those ids) on the fastface_lite in `package_parent`."""
    command = [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"]
    command += [arg for contract in contracts for arg in ("--contract", contract)]
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(command, cwd=package_parent, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# (file in the copy, line appended to it, contract id, what the report must name)
BREAKS = [
    (
        "method/config.py",
        "import fastface_lite.workbook",
        "layers",
        "fastface_lite.method.config -> fastface_lite.workbook",
    ),
    (
        "inspect/heatmap.py",
        "import fastface_lite.faces.images",
        "layers",
        "fastface_lite.inspect.heatmap -> fastface_lite.faces.images",
    ),
    ("method/dcg.py", "import diffusers", "method-torch-only", "fastface_lite.method.dcg -> diffusers"),
    (
        "faces/images.py",
        "import fastface_lite.sdxl.mode",
        "faces-without-sdxl",
        "fastface_lite.faces.images -> fastface_lite.sdxl.mode",
    ),
]


@pytest.mark.parametrize(("path", "line", "contract", "reported"), BREAKS, ids=[b[0] + ":" + b[1] for b in BREAKS])
def test_a_forbidden_import_breaks_its_contract(tmp_path, path, line, contract, reported):
    shutil.copytree(ROOT / "fastface_lite", tmp_path / "fastface_lite", ignore=shutil.ignore_patterns("__pycache__"))
    module = tmp_path / "fastface_lite" / path
    module.write_text(f"{module.read_text()}\n{line}\n")

    result = lint_imports(tmp_path, contract)

    assert result.returncode != 0, f"adding `{line}` to {path} broke no contract:\n{result.stdout}"
    broken = result.stdout.partition("Broken contracts")[2]
    assert reported in broken, f"the report does not name {reported!r}:\n{result.stdout}"
