"""The check every pipeline-boundary test makes: refused with the project's error, before any UNet work."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest


def refused_before_any_unet_work(pipe, error: type[Exception], call: Callable[[], object], words: Sequence[str]):
    """``call()`` must raise ``error`` naming every one of ``words``, with no UNet forward run first."""
    evaluations = []
    hook = pipe.unet.register_forward_pre_hook(lambda *a: evaluations.append(1))
    try:
        with pytest.raises(error) as info:
            call()
    finally:
        hook.remove()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert evaluations == []
