"""The teaching helpers of the workbook: exercise checks and the diagrams of notebook 00."""

from fastface_lite.workbook import diagrams
from fastface_lite.workbook.exercises import check


def test_unanswered_exercise_says_what_to_do(capsys):
    check(None, 10, "UNet evaluations")
    assert "write your prediction of UNet evaluations" in capsys.readouterr().out


def test_exercise_says_right_or_not(capsys):
    check(10, 10, "UNet evaluations")
    assert capsys.readouterr().out.startswith("Right.")
    check(12, 10, "UNet evaluations")
    assert capsys.readouterr().out.startswith("Not quite: you said 12")
    check(0.52, 0.5, "a score", abs_tol=0.05)
    assert capsys.readouterr().out.startswith("Right.")
    check(" Token 0 ", "token 0", "the token")
    assert capsys.readouterr().out.startswith("Right.")


def test_branch_diagram_marks_unevaluated_branches():
    # a = b = 1: only e_ti has a non-zero coefficient, the other two rows say so
    texts = [t.get_text() for t in diagrams.branch_batch(1.0, 1.0).axes[0].texts]
    assert sum("not evaluated" in t for t in texts) == 2
    texts = [t.get_text() for t in diagrams.branch_batch(1.5, 3.0).axes[0].texts]
    assert not any("not evaluated" in t for t in texts) and "+3.00" in texts


def test_attention_diagram_names_am_and_both_adain_stages():
    texts = " ".join(t.get_text() for t in diagrams.decoupled_attention().axes[0].texts)
    assert "AM" in texts and "AdaIN stage 1" in texts and "AdaIN stage 2" in texts
