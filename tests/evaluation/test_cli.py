"""The command line of the evaluation (fastface_lite.evaluation.cli)."""

from __future__ import annotations

from fastface_lite import cli
from fastface_lite.evaluation.grid import EvalSpec
from fastface_lite.method.checkpoints import ADAPTERS, MODELS
from fastface_lite.method.config import VARIANTS


def eval_parser():
    return cli.build_parser()._subparsers._group_actions[0].choices["eval"]


def test_stop_after_is_not_on_the_command_line():
    help_text = eval_parser().format_help()
    assert (
        "stop_after" not in help_text
        and "stop-after" not in help_text
        and "--resume" in help_text
        and "--limit" in help_text
    )


def test_choices_and_defaults_are_the_tables_and_the_spec():
    actions = {a.dest: a for a in eval_parser()._actions}
    assert list(actions["adapter"].choices) == list(ADAPTERS)
    assert list(actions["variants"].choices) == list(VARIANTS) and actions["variants"].default == list(VARIANTS)
    assert list(actions["models"].choices) == list(MODELS)
    spec = EvalSpec()  # the flags' defaults are the spec's
    assert (
        actions["adapter"].default,
        tuple(actions["models"].default),
        actions["seed"].default,
        actions["steps"].default,
        tuple(actions["prompt_sets"].default),
    ) == (spec.adapter, spec.models, spec.seed, spec.num_steps, spec.prompt_sets)


def test_no_progress_hides_loading_bars_during_the_command_and_puts_the_switch_back(monkeypatch, tmp_path):
    import pytest
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from fastface_lite.evaluation import runner

    seen = []

    def fake_metrics(run_dir, *, progress, device):
        seen.append(
            (progress, diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
        )

    monkeypatch.setattr(runner, "recompute_metrics", fake_metrics)
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()
    assert cli.main(["metrics", str(tmp_path), "--no-progress"]) == 0
    assert cli.main(["metrics", str(tmp_path)]) == 0
    assert seen == [(False, False, False), (True, True, True)]
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()

    def failing(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "recompute_metrics", failing)
    with pytest.raises(RuntimeError):
        cli.main(["metrics", str(tmp_path), "--no-progress"])
    assert diffusers_logging.is_progress_bar_enabled()  # put back on the way out of an error too
