"""Fixtures of the evaluation tests: one uninterrupted reference run for the whole session, and
torch on one thread in every test here (see tiny_runs)."""

from __future__ import annotations

import pytest

from fastface_lite import cli

from .tiny_runs import GRID, single_thread


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """An uninterrupted single-process run through the CLI (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("eval") / "reference"
    with single_thread():  # session fixtures are set up before the module's `one_thread`
        assert cli.main(["eval", *GRID, "--out", str(out)]) == 0
    return out
