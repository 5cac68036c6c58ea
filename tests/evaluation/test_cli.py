"""The command line of the evaluation (fastface_lite.evaluation.cli)."""
from __future__ import annotations

from fastface_lite import cli


def test_stop_after_is_not_on_the_command_line():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
    assert "stop_after" not in help_text and "stop-after" not in help_text and "--resume" in help_text and "--limit" in help_text

