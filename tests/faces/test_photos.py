"""The shipped photos and prompt sets (fastface_lite.faces.photos): prompt files are read,
cleaned and split into style and scene. Offline."""

from __future__ import annotations

import pytest

from fastface_lite.faces.photos import load_prompts, prompt_sets, split_style


@pytest.mark.parametrize("name", ["realistic", "stylistic"])
def test_shipped_prompt_sets(name):
    prompts = load_prompts(name)
    assert len(prompts) >= 25 and len(set(prompts)) == len(prompts)
    assert all(p == p.strip().lower() and p and not p.startswith("#") for p in prompts)
    if name == "stylistic":
        assert all(all(split_style(p)) for p in prompts)
    else:
        assert all(split_style(p)[0] is None for p in prompts)


def test_load_prompts_from_path(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# a comment\n\n  A Person On A Bridge  \n\t\nOil Painting; A Person\n")
    assert load_prompts(path) == ["a person on a bridge", "oil painting; a person"]
    assert split_style("oil painting; a person") == ("oil painting", "a person")
    assert set(prompt_sets()) >= {"realistic", "stylistic"}
    with pytest.raises(FileNotFoundError, match="realistic, stylistic"):
        load_prompts("cartoons")
