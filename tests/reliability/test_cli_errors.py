"""The command line: a user error is one message and exit code 2, never a traceback; a bug keeps
its traceback. Table-driven: each case is the arguments, and words the message must contain."""

from __future__ import annotations

import pytest

from fastface_lite import cli, errors
from fastface_lite.errors import FastFaceError, WeightsUnavailable

SMALL = ["--prompt-sets", "realistic", "--prompts-per-set", "1", "--variants", "baseline", "--mode", "tiny"]


def _files(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("a caf\xe9 scene\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    (tmp_path / "a-file").write_text("x")


ONE = ["eval", "--out", "{tmp}/r", "--identities", "astronaut"]
# (arguments, with {tmp} for the test's folder; words the message must contain)
CASES = [
    (["eval", "--out", "{tmp}/a-file", *SMALL], ["a-file", "is a file"]),
    (["eval", "--out", "{tmp}/r", "--identities", "{tmp}/nobody.jpg", *SMALL], ["nobody.jpg", "does not exist"]),
    (["eval", "--out", "{tmp}/r", "--identities", "nobody", *SMALL], ["'nobody'", "shipped"]),
    (
        ["eval", "--out", "{tmp}/r", "--identities", "astronaut", "--prompt-sets", "{tmp}/latin1.txt"],
        ["latin1.txt", "UTF-8"],
    ),
    (
        ["eval", "--out", "{tmp}/r", "--identities", "astronaut", "--prompt-sets", "{tmp}/empty.txt"],
        ["empty.txt", "no prompts"],
    ),
    (["eval", "--out", "{tmp}/r", "--identities", "astronaut", "--size", "30", *SMALL], ["size", "multiple of 8"]),
    (["eval", "--out", "{tmp}/r", "--identities", "astronaut", "--limit", "-1", *SMALL], ["limit", ">= 0"]),
    (["metrics", "{tmp}/missing"], ["missing", "does not exist"]),
    (["metrics", "{tmp}"], ["not an evaluation run folder"]),
]


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(c[0][:1] + c[0][-3:]) for c in CASES])
def test_a_user_error_is_one_message_and_exit_2(tmp_path, capsys, argv, words):
    _files(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastface {argv[0]}: error: ") and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


def test_a_bad_fastface_mode_variable_is_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTFACE_MODE", "huge")
    argv = ["eval", "--out", str(tmp_path / "r"), "--identities", "astronaut", *SMALL[:-2]]
    assert cli.main(argv) == 2
    assert "FASTFACE_MODE='huge'" in capsys.readouterr().err


ERROR_CLASSES = sorted(
    (c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, FastFaceError)), key=lambda c: c.__name__
)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_of_the_package_maps_to_exit_2(cls, capsys, monkeypatch):
    def raises(args):
        raise cls(f"the {cls.__name__} message")

    monkeypatch.setattr(cli, "_demo", raises)
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == f"fastface demo: error: the {cls.__name__} message\n"


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_demo", bug)
    with pytest.raises(ZeroDivisionError):  # propagates: Python prints the traceback
        cli.main(["demo"])
    monkeypatch.setattr(cli, "_demo", lambda args: int("a ValueError of ours is a bug too"))
    with pytest.raises(ValueError):
        cli.main(["demo"])


def test_full_mode_without_face_weights_is_our_error_not_a_traceback(tmp_path):
    """What `fastface eval --mode full` meets offline: the insightface pack cannot be fetched."""
    from fastface_lite.faces.analyzer import FaceAnalyzer

    with pytest.raises(WeightsUnavailable, match="no_such_pack.*could not be downloaded.*dlib"):
        FaceAnalyzer("insightface", name="no_such_pack", root=str(tmp_path))


def test_full_mode_without_hub_weights_is_our_error_not_a_traceback(tmp_path, monkeypatch):
    """What `--mode full` meets offline for the SDXL weights (an empty hub cache, HF_HUB_OFFLINE):
    WeightsUnavailable (exit 2 on the command line), saying why and how to run offline."""
    import torch

    from fastface_lite.sdxl.loading import load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match=r"HF_HUB_OFFLINE is set and they are not cached.*--mode tiny"):
        load_pipeline("hyper", device="cpu", dtype=torch.float32, cache_dir=tmp_path)
