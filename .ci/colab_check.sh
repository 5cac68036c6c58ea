#!/usr/bin/env bash
# make colab-check: the notebooks' Colab set-up in a fresh virtualenv that stands in for a Colab
# runtime, then the six notebooks (tiny mode) and the import-surface tests against what it installed.
#
# The stand-in: torch 2.14.1 + torchvision 0.29.1 (a matched pair of another release than the
# lock's torch 2.13.0; pip takes both from this machine's disk) and the versions Colab ships of the
# packages the set-up must leave alone. The set-up runs as the notebook cell runs it, from this
# checkout instead of a fresh clone. Fails if any of the stand-in's versions moved.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${COLAB_VENV:-$REPO/.cache/colab-venv}
PY=$VENV/bin/python
# COLAB_TORCH="torch==2.11.0 torchvision==0.26.0" tries another pair (PyPI's 2.11 is a 2.7 GB download)
read -r -a TORCH_PAIR <<< "${COLAB_TORCH:-torch==2.14.1 torchvision==0.29.1}"
STANDIN=("${TORCH_PAIR[@]}" numpy==2.0.2 pandas==2.2.2 pillow==11.3.0 matplotlib==3.10.0
         opencv-python==4.12.0.88 ipywidgets==7.7.1 ipykernel==6.17.1)
# Run outside the checkout (as Colab runs from /content): `import fastface_lite` must find the
# installed package, not this folder, and the notebooks write their figures and runs there.
WORK=$(mktemp -d /tmp/fastface-colab-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export FASTFACE_MODE=tiny HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYDEVD_DISABLE_FILE_VALIDATION=1  # ipykernel 6's debugger notes at every kernel start
# this machine's pip config lists local index folders; pip notes each package they lack
quiet_pip() { grep -v "^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory\.$" || true; }
stamp() { echo "== $(date +%T) $*"; }
protected() { "$PY" -c 'import importlib.metadata as m, sys
for n in sys.argv[1:]:
    print(f"{n}=={m.version(n)}")' torch torchvision numpy pandas pillow matplotlib opencv-python ipywidgets ipykernel; }

start=$SECONDS
stamp "fresh virtualenv $VENV with Colab's stand-in: ${STANDIN[*]}"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip 2>&1 | quiet_pip
"$PY" -m pip install -q --no-compile "${STANDIN[@]}" 2>&1 | quiet_pip  # no .pyc files: faster
protected > "$WORK/before.txt"
echo "before the set-up:"; sed 's/^/  /' "$WORK/before.txt"

stamp "a plain pip install of the package here (no constraints) would keep torch: dry run"
"$PY" -m pip install -q --dry-run --report "$WORK/plain.json" "$REPO[faces,workbook]" 2>&1 | quiet_pip
"$PY" - "$WORK/plain.json" <<'EOF'
import json, sys
names = sorted(item["metadata"]["name"].lower() for item in json.load(open(sys.argv[1]))["install"])
print(f"  pip would add {len(names)} packages:", ", ".join(names))
assert not {"torch", "torchvision"} & set(names), "a plain pip install would replace torch"
EOF

stamp "the notebooks' set-up (fastface_lite/workbook/colab.py, as the first cell runs it)"
(cd "$WORK" && "$PY" -c "import runpy; runpy.run_path('$REPO/fastface_lite/workbook/colab.py')['install']('$REPO')")
protected > "$WORK/after.txt"
echo "after the set-up:"; sed 's/^/  /' "$WORK/after.txt"
if ! diff -u "$WORK/before.txt" "$WORK/after.txt"; then
    echo "colab-check: the set-up changed packages it must leave alone (diff above)" >&2; exit 1
fi

stamp "fastface_lite working beside torchvision"
(cd "$WORK" && "$PY" - <<'EOF'
import torch, torchvision, transformers
import fastface_lite as ff

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)  # the operator that broke on Colab
print(f"torch {torch.__version__}, torchvision {torchvision.__version__} (nms keeps {kept.tolist()}), "
      f"transformers {transformers.__version__}; fastface_lite from {ff.__file__}")
assert "site-packages" in ff.__file__, "the check must use the installed package"
EOF
)
(cd "$WORK" && "$VENV/bin/fastface" --help | sed -n 1p)

stamp "test tools, pinned so they move nothing installed"
"$PY" -m pip freeze --exclude-editable | grep -v "^fastface" > "$WORK/frozen.txt"
"$PY" -m pip install -q -c "$WORK/frozen.txt" pytest nbclient nbformat 2>&1 | quiet_pip

stamp "the six notebooks, tiny mode, plain execution (two at a time: each kernel uses one thread)"
cp "$REPO"/notebooks/*.ipynb "$WORK/"
(cd "$WORK" && JUPYTER_DATA_DIR="$WORK/jupyter" JUPYTER_CONFIG_DIR="$WORK/jupyter" "$PY" - <<'EOF'
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    began = time.time()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return f"  {path.name}: {len(nb.cells)} cells ran in {time.time() - began:.0f} s"


# the kernel must be this virtualenv's Python, not another one a kernelspec points at
probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys, torch; print(sys.prefix, torch.__version__)")])
NotebookClient(probe, timeout=120, kernel_name="python3").execute()
kernel_env = "".join(o.get("text", "") for o in probe.cells[0].outputs if o.get("name") == "stdout").strip()
print(f"  kernel: {kernel_env}")
assert Path(kernel_env.split()[0]).resolve() == Path(sys.prefix).resolve(), "the notebooks would run in another Python"

with ThreadPoolExecutor(max_workers=2) as pool:  # kernels are processes; threads only wait on them
    for line in pool.map(execute, sorted(Path.cwd().glob("[0-9][0-9]_*.ipynb"))):
        print(line, flush=True)
EOF
)

stamp "import-surface tests against the installed package"
(cd "$WORK" && "$VENV/bin/pytest" -q -p no:cacheprovider --rootdir "$REPO" -c "$REPO/pyproject.toml" \
    "$REPO/tests/method" "$REPO/tests/workbook/test_colab.py" \
    "$REPO/tests/sdxl/test_quiet.py")

protected > "$WORK/end.txt"
diff -u "$WORK/before.txt" "$WORK/end.txt" >/dev/null || { echo "colab-check: versions moved during the tests" >&2; exit 1; }
stamp "colab-check passed in $((SECONDS - start)) s; virtualenv $(du -sh "$VENV" | cut -f1)"
