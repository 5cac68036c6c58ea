"""gpu_plan: which VAE decodes and whether to offload, over GPU sizes (no GPU needed)."""

import pytest

from fastface_lite.errors import ConfigError
from fastface_lite.sdxl.gpu_plan import (
    FP16_DECODE_PEAK_GIB,
    FP32_DECODE_PEAK_GIB,
    HEADROOM_GIB,
    OFFLOAD_PEAK_GIB,
    device_gpu_plan,
    gpu_plan,
)

T4_GIB = 14.75  # what torch reports for a 16 GB T4 (15,095 MiB)


@pytest.mark.parametrize(
    "gpu_gib, vae, offload",
    [
        (139.8, "sdxl", False),  # H200
        (79.3, "sdxl", False),  # A100 80 GB
        (22.0, "sdxl", False),  # A10 / L4
        (16.25, "sdxl", False),  # just fits: 14.75 + 1.5
        (15.77, "fp16-fix", False),  # V100 16 GB: the float32 decode would not fit
        (T4_GIB, "fp16-fix", False),  # Colab's T4
        (13.47, "fp16-fix", False),  # just fits: 11.97 + 1.5
        (11.76, "sdxl", True),  # a 12 GB card
        (7.8, "sdxl", True),  # 8 GB: offload is all that is left
    ],
)
def test_plan_over_gpu_sizes(gpu_gib, vae, offload):
    plan = gpu_plan(gpu_gib)
    assert (plan.vae, plan.offload) == (vae, offload)
    assert plan.gpu_gib == gpu_gib and plan.reason
    if not offload:  # an on-GPU plan is only chosen when its peak plus the headroom fits
        assert plan.peak_gib + HEADROOM_GIB <= gpu_gib + 1e-9
    else:
        assert plan.peak_gib == OFFLOAD_PEAK_GIB and "offload" in plan.reason


def test_the_estimated_fp16_decode_peak_lies_between_the_measured_ones():
    # measured: UNet steps 10.30 GiB, float32 decode 14.75 GiB; the float16 decode holds half the bytes
    assert 10.30 <= FP16_DECODE_PEAK_GIB < FP32_DECODE_PEAK_GIB
    assert FP16_DECODE_PEAK_GIB == pytest.approx(11.965, abs=1e-3)


def test_the_t4_reason_says_why_not_offload():
    reason = gpu_plan(T4_GIB).reason
    assert "fp16-fix" in reason and "14.75 GiB" in reason and "would not fit" in reason


def test_a_bigger_headroom_moves_the_choice():
    assert gpu_plan(T4_GIB, headroom_gib=3.0).offload is True


@pytest.mark.parametrize("bad", [0, -1.0])
def test_nonsense_gpu_size_is_refused(bad):
    with pytest.raises(ConfigError, match="gpu_gib"):
        gpu_plan(bad)


@pytest.mark.parametrize("gpu_gib", [T4_GIB, 15.0, 16.0])
def test_without_the_fp16_fix_vae_a_small_gpu_offloads_and_keeps_sdxls_vae(gpu_gib):
    # what fastface eval asks for: the same decoder on every GPU, offload where it does not fit
    assert gpu_plan(gpu_gib).vae == "fp16-fix"
    plan = gpu_plan(gpu_gib, fp16_fix=False)
    assert (plan.vae, plan.offload) == ("sdxl", True) and "comparable" in plan.reason
    assert gpu_plan(79.2, fp16_fix=False) == gpu_plan(79.2)


def test_no_plan_off_cuda():
    assert device_gpu_plan("cpu") is None
