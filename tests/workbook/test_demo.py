"""`fastface demo` end to end on the tiny pipeline with a real identity."""

import subprocess
import sys

from fastface_lite.workbook.demo import run_demo


def test_demo_runs_all_variants(tmp_path):
    rows = run_demo(out_dir=tmp_path, seed=0)
    assert [r["variant"] for r in rows] == ["baseline", "dcg", "am1", "am2", "fastface-am1", "fastface-am2"]
    assert [r["unet_evaluations"] for r in rows] == [4, 10, 4, 12, 10, 12]
    assert rows[0]["max_diff_vs_baseline"] == 0.0
    assert all(r["max_diff_vs_baseline"] > 1e-3 for r in rows[1:])
    for name in ("demo_variants.png", "demo_variants.md", "demo_variants.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "demo_variants.csv").read_text().count("\n") == 7


def test_cli_reports_bad_face_path(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastface_lite.cli",
            "demo",
            "--out",
            str(tmp_path),
            "--face",
            str(tmp_path / "nobody.jpg"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "nobody" in result.stderr
