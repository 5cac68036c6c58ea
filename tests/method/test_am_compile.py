"""The AM math compiles as one graph (no graph break, hence no host sync) and matches eager.

``torch.compile(fullgraph=True)`` raises on any graph break, and a data-dependent Python branch on a
tensor (``if tensor.any():``), ``.item()`` or ``.tolist()`` is a graph break. The cheap
``aot_eager`` backend traces forward through AOTAutograd as inductor would but runs the ops
eagerly, so this checks traceability in seconds on the CPU without a C++ compiler.
"""

import pytest
import torch

import fastface_lite as ff
from fastface_lite.method import am


def qkv(seed=0, b=3, h=2, n=16, t=4, d=8):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g) for shape in ((b, h, n, d), (b, h, t, d), (b, h, t, d)))


@pytest.mark.parametrize("variant", ["am1", "am2", "fastface-am2"])
@pytest.mark.parametrize("part, step", [("down", 0), ("up", 1), ("mid", 2)])
def test_ip_attention_maps_compiles_without_graph_breaks(variant, part, step):
    torch._dynamo.reset()
    cfg = ff.FastFaceConfig.preset(variant).attention
    q, k, v = qkv(step)

    def maps(q, k, v):
        return tuple(am.ip_attention_maps(q, k, v, part, step, cfg, branches=3))

    compiled = torch.compile(maps, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(q, k, v), maps(q, k, v), strict=True):
        # same ops, possibly regrouped by the tracer: equal up to float32 rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_adain_nan_fallback_keeps_the_unblended_output_without_branching():
    out = torch.randn(2, 2, 5, 8)
    matched = torch.randn(2, 2, 5, 8)
    torch.testing.assert_close(am._blend_unless_nan(out, matched, 0.7), 0.7 * out + 0.3 * matched)
    matched[1, 0, 3, 2] = float("nan")  # one NaN anywhere: the whole tensor stays unblended
    assert torch.equal(am._blend_unless_nan(out, matched, 0.7), out)
    compiled = torch.compile(am._blend_unless_nan, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(out, matched, 0.7), out)
