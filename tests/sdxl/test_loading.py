"""models.py: the tiny twin, and the real loading code run offline against a fake hub cache.

The fake cache (tests/support/hub_cache.py) is laid out as huggingface_hub lays it out
(models--org--name/refs/main, snapshots/<commit>/...) under the real repo ids and file names, filled
with tiny weights in the real formats, and read with HF_HUB_OFFLINE=1: load_pipeline runs exactly
as it would on Colab.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    StableDiffusionXLPipeline,
)
from diffusers.models.attention_processor import (
    AttnProcessor2_0,
    IPAdapterAttnProcessor2_0,
)
from PIL import Image
from support.hub_cache import build_hub_cache

from fastface_lite.method.checkpoints import ADAPTERS, CHECKPOINTS
from fastface_lite.sdxl import tiny
from fastface_lite.sdxl.adapter import adapter_info
from fastface_lite.sdxl.loading import load_pipeline, model_timesteps
from fastface_lite.sdxl.pipeline import FastFacePipeline
from fastface_lite.sdxl.tiny import TINY, TINY_ID_DIM, tiny_components, tiny_pipeline, write_faceid_adapter
from fastface_lite.sdxl.tokenizer import BOS, EOS, clip_vocab_and_merges

# Known ids of OpenAI CLIP's tokenizer (openai/clip-vit-large-patch14).
KNOWN_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a photograph of an astronaut riding a horse": [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407],
}
N_ATTN2 = 17  # tiny UNet: down1 2x1 + down2 2x2 + mid 1x2 + up0 3x2 + up1 3x1


def attn2_names(unet):
    return [n for n in unet.attn_processors if n.endswith("attn2.processor")]


def call_stock(pipe, id_embeds, steps=2, seed=0, **kwargs):
    """The stock SDXL __call__ (not FastFacePipeline's loop), CFG on, FaceID convention:
    ip_adapter_image_embeds = [cat([zeros, id])] of shape (2, 1, D)."""
    embeds = torch.cat([torch.zeros_like(id_embeds), id_embeds])[:, None]
    return StableDiffusionXLPipeline.__call__(
        pipe,
        prompt="a photo of a person",
        num_inference_steps=steps,
        guidance_scale=1.5,  # > 1: the stock path only splits cat([zeros, id]) when CFG is on
        ip_adapter_image_embeds=[embeds],
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    ).images


def set_clip_embeds(pipe, face: Image.Image):
    """Plus v2: CLIP penultimate hidden states of cat([zeros-image, face]) as the resampler's input."""
    embeds = pipe.prepare_ip_adapter_image_embeds([face], None, pipe.device, 1, True)[0]
    pipe.unet.encoder_hid_proj.image_projection_layers[0].clip_embeds = embeds
    return embeds


@pytest.fixture(scope="module")
def face():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------------------------
# Presets and tokenizer
# ----------------------------------------------------------------------------------------------


def test_preset_table_matches_spec():
    assert CHECKPOINTS["hyper"].weight_name(1) == "Hyper-SDXL-1step-lora.safetensors"
    assert CHECKPOINTS["hyper"].weight_name(8) == "Hyper-SDXL-8steps-lora.safetensors"
    assert CHECKPOINTS["lightning"].weight_name(2) == "sdxl_lightning_2step_unet.safetensors"
    assert {m: p.default_size for m, p in CHECKPOINTS.items()} == {
        "hyper": 1024,
        "lightning": 1024,
        "lcm": 1024,
        "turbo": 512,
        "base": 1024,
    }
    assert {m: p.default_guidance for m, p in CHECKPOINTS.items()} == {
        "hyper": 1.0,
        "lightning": 1.0,
        "lcm": 1.5,
        "turbo": 1.0,
        "base": 5.0,
    }
    for model in ("hyper", "lightning", "turbo"):
        assert model_timesteps(model, 4) == [999, 749, 499, 249]
    assert model_timesteps("lcm", 4) == [999, 759, 499, 259]
    assert model_timesteps("base", 4) == [751, 501, 251, 1]  # SDXL's own "leading" spacing


def test_tokenizer_vocab_is_clips():
    tokens, merges = clip_vocab_and_merges()
    assert len(tokens) == 49408 and len(merges) == 48894
    assert tokens[:3] == ("!", '"', "#") and tokens[256] == "!</w>"
    assert tokens[-2:] == (BOS, EOS)


def test_tiny_tokenizers_give_real_clip_ids():
    pipe = tiny_pipeline(adapter=None)
    for text, ids in KNOWN_IDS.items():
        assert pipe.tokenizer(text).input_ids == ids
        assert pipe.tokenizer_2(text).input_ids == ids
    # SDXL pads tokenizer with <|endoftext|>, tokenizer_2 with "!" (id 0)
    padded = [t("a cat", padding="max_length", max_length=77).input_ids for t in (pipe.tokenizer, pipe.tokenizer_2)]
    assert padded[0][:6] == [49406, 320, 2368, 49407, 49407, 49407] and len(padded[0]) == 77
    assert padded[1][:6] == [49406, 320, 2368, 49407, 0, 0]


# ----------------------------------------------------------------------------------------------
# tiny_pipeline
# ----------------------------------------------------------------------------------------------


def test_tiny_pipeline_is_sdxl_shaped():
    pipe = tiny_pipeline(adapter="faceid")
    assert isinstance(pipe, FastFacePipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    unet = pipe.unet
    assert (
        unet.config.cross_attention_dim
        == TINY.cross_attention_dim
        == (pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size)
    )
    assert unet.config.addition_embed_type == "text_time"
    blocks = {n.split(".attentions")[0] for n in attn2_names(unet)}
    assert blocks == {"down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.0", "up_blocks.1"}
    assert len(attn2_names(unet)) == N_ATTN2
    heads = {unet.get_submodule(n.removesuffix(".processor")).heads for n in attn2_names(unet)}
    assert min(heads) >= 2
    assert pipe.default_sample_size * pipe.vae_scale_factor == 256 and pipe.vae_scale_factor == 8
    turbo = tiny_pipeline(adapter=None, model="turbo")
    assert isinstance(turbo.scheduler, EulerAncestralDiscreteScheduler)
    assert turbo.default_sample_size * turbo.vae_scale_factor == 128
    with pytest.raises(ValueError, match="no IP adapter"):
        adapter_info(turbo)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_tiny_weights_are_deterministic():
    a, b, c = (tiny_components(seed=s, with_image_encoder=True) for s in (0, 0, 1))
    for name in ("text_encoder", "text_encoder_2", "unet", "vae", "image_encoder"):
        sa, sb, sc = state(a[name]), state(b[name]), state(c[name])
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert not all(torch.equal(sa[k], sc[k]) for k in sa), name
    adapter_a = tiny.faceid_state_dict(a["unet"], "faceid-plusv2", seed=0)
    adapter_b = tiny.faceid_state_dict(b["unet"], "faceid-plusv2", seed=0)
    assert all(torch.equal(adapter_a[p][k], adapter_b[p][k]) for p in adapter_a for k in adapter_a[p])


def test_tiny_pipeline_copies_are_independent_and_leave_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    one = tiny_pipeline(adapter="faceid", seed=7)
    assert torch.equal(torch.rand(3), expected)
    two = tiny_pipeline(adapter="faceid", seed=7)
    with torch.no_grad():
        one.unet.conv_in.weight.add_(1.0)
    assert not torch.equal(one.unet.conv_in.weight, two.unet.conv_in.weight)
    assert torch.equal(two.unet.conv_in.weight, tiny_pipeline(adapter="faceid", seed=7).unet.conv_in.weight)


def test_adapter_files_use_h94_layout_and_content_keyed_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFACE_LITE_CACHE", str(tmp_path))
    unet = tiny_components(seed=0)["unet"]
    folder = write_faceid_adapter(unet, "faceid", seed=0)
    path = folder / ADAPTERS["faceid"]
    assert folder.parent == tmp_path and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert write_faceid_adapter(unet, "faceid", seed=0) == folder and path.stat().st_mtime_ns == stamp
    assert write_faceid_adapter(unet, "faceid", seed=1) != folder
    sd = torch.load(path, weights_only=True)
    assert set(sd) == {"image_proj", "ip_adapter"}
    assert set(sd["image_proj"]) == {
        "proj.0.weight",
        "proj.0.bias",
        "proj.2.weight",
        "proj.2.bias",
        "norm.weight",
        "norm.bias",
    }
    names = list(unet.attn_processors)
    ip_ids = sorted(int(k.split(".")[0]) for k in sd["ip_adapter"] if k.endswith("to_k_ip.weight"))
    assert ip_ids == [i for i, n in enumerate(names) if n.endswith("attn2.processor")]
    assert len([k for k in sd["ip_adapter"] if k.endswith("to_q_lora.down.weight")]) == len(names)


@pytest.mark.parametrize("adapter", ["faceid", "faceid-plusv2"])
def test_tiny_adapter_loads_through_load_ip_adapter(adapter):
    pipe = tiny_pipeline(adapter=adapter)
    assert adapter_info(pipe) == (4, TINY_ID_DIM)
    assert set(pipe.unet.peft_config) == {"faceid_0"}
    folder = write_faceid_adapter(pipe.unet, adapter, seed=0)
    assert folder == write_faceid_adapter(tiny_components(seed=0)["unet"], adapter, seed=0)  # the file it loaded
    file = torch.load(folder / ADAPTERS[adapter], weights_only=True)
    names = list(pipe.unet.attn_processors)
    for i, (name, proc) in enumerate(pipe.unet.attn_processors.items()):
        if name.endswith("attn2.processor"):
            assert isinstance(proc, IPAdapterAttnProcessor2_0)
            assert torch.equal(proc.to_k_ip[0].weight, file["ip_adapter"][f"{i}.to_k_ip.weight"])
        else:
            assert isinstance(proc, AttnProcessor2_0)
    # the FaceID LoRA is peft adapter faceid_0, with the file's weights
    i = names.index("up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor")
    to_q = pipe.unet.get_submodule("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_q")
    assert torch.equal(to_q.lora_A["faceid_0"].weight, file["ip_adapter"][f"{i}.to_q_lora.down.weight"])
    assert torch.equal(to_q.lora_B["faceid_0"].weight, file["ip_adapter"][f"{i}.to_q_lora.up.weight"])
    if adapter == "faceid-plusv2":
        projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        assert projection.shortcut is True and projection.shortcut_scale == 1.0
        assert pipe.image_encoder is not None and pipe.feature_extractor is not None
    else:
        assert pipe.image_encoder is None


@pytest.mark.parametrize("adapter", ["faceid", "faceid-plusv2"])
def test_tiny_stock_call_uses_the_id(adapter, face):
    pipe = tiny_pipeline(adapter=adapter)
    if adapter == "faceid-plusv2":
        assert set_clip_embeds(pipe, face).shape == (2, 1, 257, TINY.clip_hidden)
    id_a, id_b = torch.randn(2, 1, TINY_ID_DIM, generator=torch.Generator().manual_seed(0))
    size = dict(height=128, width=128)  # half the default side: a quarter of the work
    image = call_stock(pipe, id_a, **size)
    assert image.shape == (1, 128, 128, 3) and np.isfinite(image).all()
    assert np.array_equal(image, call_stock(pipe, id_a, **size))
    assert np.abs(image - call_stock(pipe, id_b, **size)).max() > 1e-3


# ----------------------------------------------------------------------------------------------
# load_pipeline: argument validation (no hub access)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(model="sdxl-hyper"), ["model='sdxl-hyper'", "hyper", "lightning", "turbo"]),
        (dict(model="hyper", steps=3), ["steps=3", "[1, 2, 4, 8]"]),
        (dict(model="lightning", steps=1), ["steps=1", "[2, 4, 8]"]),
        (dict(model="lcm", steps=0), ["steps=0"]),
        (dict(adapter="faceid-plus"), ["adapter='faceid-plus'", "faceid-plusv2", "None"]),
    ],
)
def test_load_pipeline_validates_arguments(kwargs, words):
    with pytest.raises(ValueError) as error:
        load_pipeline(device="cpu", **kwargs)
    assert all(w in str(error.value) for w in words), str(error.value)


# ----------------------------------------------------------------------------------------------
# load_pipeline against a fake hub cache
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache with every repo full mode reads, under the real ids and file names
    (tests/support/hub_cache.py; `make test-full` fills the same cache for the notebooks)."""
    return build_hub_cache(tmp_path_factory.mktemp("hf_hub"))


@pytest.fixture
def offline(monkeypatch, hub):
    """HF_HUB_OFFLINE=1, both in the environment and in huggingface_hub's import-time constant."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    return hub


def load(hub, model, adapter="faceid", **kwargs):
    kwargs = {"device": "cpu", "dtype": torch.float32, "cache_dir": hub["cache"], **kwargs}
    return load_pipeline(model=model, steps=4, adapter=adapter, **kwargs)


def base_weights(unet) -> dict:
    """`unet`'s parameters under their plain names, also where peft wrapped the layer (`.base_layer.`)."""
    return {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items() if "lora_" not in k}


def check_faceid_loaded(pipe):
    assert set(pipe.unet.peft_config) == {"faceid_0"}
    procs = pipe.unet.attn_processors
    assert sum(isinstance(p, IPAdapterAttnProcessor2_0) for p in procs.values()) == N_ATTN2
    assert all(isinstance(procs[n], IPAdapterAttnProcessor2_0) for n in attn2_names(pipe.unet))
    assert adapter_info(pipe) == (4, TINY_ID_DIM)


EXPECTED = {
    "hyper": (DDIMScheduler, "trailing", [999, 749, 499, 249], 1024),
    "lightning": (EulerDiscreteScheduler, "trailing", [999, 749, 499, 249], 1024),
    "lcm": (LCMScheduler, None, [999, 759, 499, 259], 1024),
    "turbo": (EulerAncestralDiscreteScheduler, "trailing", [999, 749, 499, 249], 512),
    "base": (EulerDiscreteScheduler, "leading", [751, 501, 251, 1], 1024),
}


@pytest.mark.parametrize("model", list(EXPECTED))
def test_load_pipeline_presets_offline(offline, model):
    pipe = load(offline, model)
    cls, spacing, timesteps, size = EXPECTED[model]
    assert isinstance(pipe, FastFacePipeline) and type(pipe.scheduler) is cls
    if spacing:
        assert pipe.scheduler.config.timestep_spacing == spacing
    pipe.scheduler.set_timesteps(4)
    assert [int(t) for t in pipe.scheduler.timesteps] == timesteps
    assert pipe.default_sample_size * pipe.vae_scale_factor == size
    check_faceid_loaded(pipe)
    assert pipe.tokenizer("a photo of a cat").input_ids == KNOWN_IDS["a photo of a cat"]
    assert pipe.tokenizer_2.pad_token_id == 0 and pipe.tokenizer.pad_token_id == 49407

    weights, name = base_weights(pipe.unet), "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    if model == "hyper":  # fused at 1.0: W + alpha / rank * up @ down, and no "hyper" adapter left
        key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
        lora = offline["hyper"]
        delta = lora[f"{key}.lora_up.weight"] @ lora[f"{key}.lora_down.weight"] * (lora[f"{key}.alpha"] / 4)
        torch.testing.assert_close(weights[name], offline["base_unet"][name] + delta)
    elif model == "lcm":
        assert not torch.equal(weights[name], offline["base_unet"][name])
    elif model == "lightning":  # every tensor of the file, bit for bit
        assert all(torch.equal(weights[k], v) for k, v in offline["lightning"].items())
    elif model == "turbo":
        assert torch.equal(weights[name], offline["turbo_unet"][name])
    else:
        assert torch.equal(weights[name], offline["base_unet"][name])


def test_load_pipeline_plusv2_runs_offline(offline, face):
    pipe = load(offline, "hyper", adapter="faceid-plusv2")
    check_faceid_loaded(pipe)
    projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    assert projection.shortcut is True and projection.shortcut_scale == 1.0
    assert pipe.image_encoder.config.hidden_size == TINY.clip_hidden
    assert pipe.feature_extractor.crop_size["height"] == pipe.image_encoder.config.image_size
    to_q = pipe.unet.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn2.to_q")
    assert to_q.scaling["faceid_0"] == pytest.approx(1.0)  # per-call weight lives in FastFaceConfig
    # the FastFace loop on the hub-loaded pipeline, LoRA weight 0.6 for this call only
    import fastface_lite as ff
    from fastface_lite.sdxl.adapter import id_inputs

    inputs = id_inputs(pipe, np.ones(TINY_ID_DIM, np.float32) / TINY_ID_DIM**0.5, face)
    cfg = ff.FastFaceConfig.preset("fastface-am2", faceid_lora_scale=0.6)
    out = pipe(
        prompt="a photo of a person",
        fastface=cfg,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        **inputs.call_kwargs(),
    )
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all() and out.unet_evaluations == 12
    assert to_q.scaling["faceid_0"] == pytest.approx(1.0)  # restored after the call
    set_clip_embeds(pipe, face)
    id_embeds = torch.randn(1, 1, TINY_ID_DIM, generator=torch.Generator().manual_seed(0))
    image = call_stock(pipe, id_embeds, steps=2, height=64, width=64)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()


def test_load_pipeline_fp16_reads_fp16_variant(offline):
    pipe = load(offline, "base", adapter="faceid-plusv2", dtype=torch.float16)
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float16}
    assert pipe.image_encoder.dtype == torch.float16 and pipe.text_encoder_2.dtype == torch.float16
    assert torch.equal(pipe.unet.conv_in.bias, offline["fp16_conv_in_bias"])


def test_load_pipeline_fp16_fix_vae_and_preview_decoder_offline(offline):
    """vae="fp16-fix" swaps in madebyollin/sdxl-vae-fp16-fix, which decodes in fp16 (no upcast);
    preview_decoder=True adds madebyollin/taesdxl; both from the filled cache."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    pipe = load(offline, "hyper", vae="fp16-fix", preview_decoder=True, dtype=torch.float16)
    assert type(pipe.vae) is AutoencoderKL and pipe.vae.config.force_upcast is False
    assert pipe.vae.dtype == torch.float16
    for key, value in offline["fp16_fix_vae"].items():
        torch.testing.assert_close(pipe.vae.state_dict()[key], value.half(), rtol=0, atol=0)
    assert type(pipe.preview_decoder) is AutoencoderTiny and pipe.preview_decoder.dtype == torch.float16
    assert torch.equal(
        pipe.preview_decoder.state_dict()["decoder.layers.0.weight"].float(),
        offline["preview_decoder"]["decoder.layers.0.weight"].half().float(),
    )
    plain = load(offline, "hyper")  # the default keeps SDXL base's own VAE and no preview decoder
    assert plain.preview_decoder is None and plain.vae.config.force_upcast is True
    assert not torch.equal(plain.vae.post_quant_conv.bias, pipe.vae.post_quant_conv.bias.float())
    with pytest.raises(ValueError, match="'fp16-fix'"):
        load(offline, "hyper", vae="fp16fix")


def test_workbook_full_mode_loads_the_hub_preset(offline):
    """What a notebook's `wb.pipeline()` does in full mode, from the filled cache (CPU, fp32 here)."""
    from fastface_lite.workbook.session import Workbook

    wb = Workbook(mode="full", device="cpu", dtype=torch.float32, seed=0, figures=Path("figures"), on_colab=False)
    pipe = wb.pipeline(model="lightning", adapter="faceid", cache_dir=offline["cache"])
    check_faceid_loaded(pipe)
    assert all(torch.equal(base_weights(pipe.unet)[k], v) for k, v in offline["lightning"].items())
    assert pipe._progress_bar_config == {"disable": True}


@pytest.mark.parametrize(
    "model, options",
    [(model, {}) for model in EXPECTED] + [("hyper", {"vae": "fp16-fix", "preview_decoder": True})],
)
def test_hub_files_lists_every_repo_load_pipeline_reads(hub, monkeypatch, tmp_path, model, options):
    """A cache holding only the repos `anatomy.hub_files` names is enough for `load_pipeline`, and
    each of those repos is needed: notebook 01's table cannot drift from the loader unnoticed."""
    from huggingface_hub import constants

    from fastface_lite.workbook.anatomy import hub_files

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repos = {row.repo for row in hub_files(model, 4, "faceid-plusv2", **options)}

    def cache_with(wanted):
        folder = tmp_path / f"cache-{len(wanted)}-{abs(hash(tuple(sorted(wanted))))}"
        folder.mkdir()
        for repo in wanted:
            name = f"models--{repo.replace('/', '--')}"
            (folder / name).symlink_to(hub["cache"] / name, target_is_directory=True)
        return folder

    pipe = load_pipeline(
        model=model,
        steps=4,
        adapter="faceid-plusv2",
        device="cpu",
        dtype=torch.float32,
        cache_dir=cache_with(repos),
        **options,
    )
    assert isinstance(pipe, FastFacePipeline)
    for missing in sorted(repos):
        with pytest.raises(OSError):  # every "not in the cache" error of the hub clients is an OSError
            load_pipeline(
                model=model,
                steps=4,
                adapter="faceid-plusv2",
                device="cpu",
                dtype=torch.float32,
                cache_dir=cache_with(repos - {missing}),
                **options,
            )
