"""Importing the package and running its CLI prints no library notes a user cannot act on."""

import logging
import subprocess
import sys

from fastface_lite.sdxl.quiet import LOGGER_NAME, TorchvisionFallbackFilter, drop_torchvision_fallback_note

# transformers 5.23's wording, as logged from transformers/utils/import_utils.py
NOTE = (
    "`SiglipImageProcessor` requires torchvision (not installed); falling back to `SiglipImageProcessorPil` "
    "for backward compatibility. Install torchvision to use the default backend, or import "
    "`SiglipImageProcessorPil` directly to silence this warning."
)


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord(LOGGER_NAME, logging.WARNING, __file__, 1, message, None, None)


def test_filter_drops_only_the_fallback_note():
    keep = TorchvisionFallbackFilter().filter
    assert not keep(_record(NOTE))
    assert not keep(_record(NOTE.replace("Siglip", "CLIP")))
    assert keep(_record("`CLIPImageProcessor` requires torchvision, which failed to import: undefined symbol"))
    assert keep(_record("Could not import module 'CLIPModel'. Are this object's requirements defined correctly?"))


def test_filter_is_attached_once():
    drop_torchvision_fallback_note()
    drop_torchvision_fallback_note()
    filters = logging.getLogger(LOGGER_NAME).filters
    assert sum(isinstance(f, TorchvisionFallbackFilter) for f in filters) == 1


def test_other_transformers_warnings_still_show():
    code = (
        "import fastface_lite.sdxl\n"
        f"from transformers.utils import logging\nlogging.get_logger({LOGGER_NAME!r}).warning('a real problem')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "a real problem" in result.stderr


def test_importing_the_pipeline_layers_prints_nothing():
    code = "import fastface_lite.sdxl.tiny, fastface_lite.sdxl.loading, fastface_lite.workbook.demo"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_cli_error_is_the_only_output(tmp_path):
    missing = tmp_path / "nobody.jpg"
    result = subprocess.run(
        [sys.executable, "-m", "fastface_lite.cli", "demo", "--out", str(tmp_path), "--face", str(missing)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastface demo: ") and "nobody.jpg" in lines[0], result.stderr
