"""FastFacePipeline: SDXL with the three-branch FastFace denoising loop (docs/method.md §4, §6).

Reads top to bottom like diffusers' SDXL pipeline. What differs:

* each step evaluates up to three guidance branches (no condition / one condition / both),
  batched together, and only the branches that step's combination reads;
* the ID inputs (FaceID embedding, and for Plus v2 the CLIP crop embeddings) are laid out per
  branch: "no ID" branches get the negative (all-zero) embedding;
* FastFace attention processors are installed for the call and removed afterwards, with the
  step index set explicitly before every UNet evaluation; ``pipe.compile(cfg)`` instead keeps
  them installed, fuses the FaceID LoRA and compiles the UNet until ``pipe.uncompile()``
  (:mod:`fastface_lite.sdxl.compile`).

    out = pipe(prompt="a person reading", ip_adapter_image_embeds=[torch.cat([zeros, id_embed])],
               fastface=ff.FastFaceConfig.preset("fastface-am2"), generator=torch.Generator().manual_seed(0))
    out.images, out.unet_evaluations
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import retrieve_timesteps

from fastface_lite.errors import ConfigError, InputError
from fastface_lite.method import dcg
from fastface_lite.method.branches import branches_for_step
from fastface_lite.method.config import FastFaceConfig
from fastface_lite.sdxl import compile as fast_path
from fastface_lite.sdxl.call_inputs import (
    callback_result,
    check_callback,
    check_count,
    check_id_inputs,
    check_latents,
    resolve_fastface,
)
from fastface_lite.sdxl.processor import StepContext, install


@dataclass
class FastFaceOutput(StableDiffusionXLPipelineOutput):
    """Images plus what the call cost and saw.

    Attributes:
        unet_evaluations: UNet branch evaluations per image (all branches at 4 steps = 12).
        branches_per_step: the branch indices evaluated at each step.
        timesteps: the scheduler timesteps of the steps.
        guidance_norms: per step, norms of branches and terms (when ``record_norms`` is on).
    """

    unet_evaluations: int = 0
    branches_per_step: list = field(default_factory=list)
    timesteps: list = field(default_factory=list)
    guidance_norms: list = field(default_factory=list)


@dataclass
class _BranchInputs:
    """Per-branch conditioning: index k -> tensor for the B images of branch k."""

    text: list  # (B, L, D) prompt embeddings
    pooled: list  # (B, D_pooled)
    id_embeds: list  # per adapter: list over branches of (B, n_images, ...) ID embeddings
    clip_embeds: dict  # projection layer -> list over branches of (B, n_images, S, D)
    time_ids: torch.Tensor  # (1, 6) SDXL size conditioning, the same for every branch
    # branches -> the batched tensors above; built once per distinct branch set of the call (a
    # 4-step run has at most two), not at every step. Lives and dies with the call.
    _batches: dict = field(default_factory=dict)

    def batch(self, branches: tuple[int, ...]):
        """(text (nB, L, D), pooled (nB, D_pooled), ID embeds per adapter, CLIP embeds per layer,
        time ids (nB, 6)) for the n branches in ``branches``, concatenated in that order."""
        if branches not in self._batches:
            pick = lambda per_branch: torch.cat([per_branch[k] for k in branches])  # noqa: E731
            text = pick(self.text)
            self._batches[branches] = (
                text,
                pick(self.pooled),
                [pick(per_adapter) for per_adapter in self.id_embeds],
                {layer: pick(per_branch) for layer, per_branch in self.clip_embeds.items()},
                self.time_ids.repeat(text.shape[0], 1),
            )
        return self._batches[branches]


class FastFacePipeline(StableDiffusionXLPipeline):
    """SDXL pipeline whose call runs FastFace: DCG over three branches and ID-token AM."""

    _callback_tensor_inputs = ["latents", "noise_pred"]
    # the tiny autoencoder for quick previews (diffusers AutoencoderTiny), or None; set by
    # load_pipeline(preview_decoder=True) or tiny_pipeline(preview_decoder=True). A plain attribute,
    # not a pipeline component: saving, offload and `pipe.to` leave it alone.
    preview_decoder = None
    # what pipe.compile() changed (fastface_lite.sdxl.compile.CompiledState), None when eager
    _compiled_state = None

    # -- the compiled fast path (fastface_lite.sdxl.compile) -------------------------------------
    def compile(
        self,
        fastface: FastFaceConfig | str | None = None,
        mode: str | None = None,
        backend: str = "inductor",
        dynamic: bool | None = False,
    ) -> FastFacePipeline:
        """Keep FastFace's processors installed, fuse the FaceID LoRA and ``torch.compile`` the UNet.

        Explicit, persistent state until :meth:`uncompile` (or use :meth:`compiled` as a context
        manager). Calls afterwards must use ``fastface.faceid_lora_scale`` (the fused weight;
        another one is refused with ConfigError); other settings may change per call (a new
        attention config compiles new graphs). The first call of each step compiles: time it.

        Args:
            fastface: the config the calls will use (its LoRA weight is fused; default baseline).
            mode: ``torch.compile`` mode; default "reduce-overhead" (CUDA graphs) on CUDA with
                inductor, inductor's default elsewhere. CUDA-graph modes are refused off CUDA.
            backend: ``torch.compile`` backend ("inductor"; "aot_eager"/"eager" compile in
                seconds without a C++ compiler, for tests).
            dynamic: passed to ``torch.compile`` (False: one graph per shape).
        Returns:
            the pipeline itself.
        """
        fast_path.check_compilable(self)
        cfg = resolve_fastface(fastface, None)
        self._compiled_state = fast_path.compile_unet(self, cfg, mode, backend, dynamic)
        return self

    def uncompile(self) -> None:
        """Undo :meth:`compile`: eager UNet, LoRA unfused, the original processors back."""
        if self._compiled_state is None:
            raise ConfigError("the pipeline is not compiled; nothing to undo")
        state, self._compiled_state = self._compiled_state, None
        fast_path.uncompile_unet(self, state)

    @contextlib.contextmanager
    def compiled(self, fastface: FastFaceConfig | str | None = None, **options):
        """``with pipe.compiled(cfg): pipe(...)``: :meth:`compile` on entry, :meth:`uncompile` on exit."""
        self.compile(fastface, **options)
        try:
            yield self
        finally:
            self.uncompile()

    @torch.no_grad()
    def __call__(
        self,
        prompt=None,
        prompt_2=None,
        negative_prompt=None,
        negative_prompt_2=None,
        fastface: FastFaceConfig | None = None,
        ip_adapter_image_embeds: list | None = None,
        id_clip_embeds: torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        generator=None,
        latents: torch.Tensor | None = None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        pooled_prompt_embeds=None,
        negative_pooled_prompt_embeds=None,
        timesteps=None,
        sigmas=None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict | None = None,
        original_size=None,
        crops_coords_top_left=(0, 0),
        target_size=None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs=("latents",),
        evaluate_all_branches: bool = False,
    ):
        """Generate with FastFace.

        Args:
            fastface: the variant: a ``FastFaceConfig`` or a variant name such as "fastface-am2"
                (default: ``FastFaceConfig.preset("baseline")``).
            ip_adapter_image_embeds: diffusers' convention, one tensor per adapter,
                ``torch.cat([negative, positive])`` of shape (2, n_images, D) (negative = zeros).
                For Plus v2, ``unet.encoder_hid_proj.image_projection_layers[0].clip_embeds``
                must hold ``cat([negative, positive])`` CLIP hidden states, as diffusers expects,
                or pass them as ``id_clip_embeds`` (then the layer is left alone).
                :func:`fastface_lite.sdxl.adapter.id_inputs` builds both.
            num_inference_steps: must equal ``fastface.num_steps`` when given.
            evaluate_all_branches: evaluate all three branches at every step, as the reference
                does (for comparisons and benchmarks; the result is the same within 1e-6).
            Others: as in ``StableDiffusionXLPipeline``.
        Returns:
            :class:`FastFaceOutput` (or a tuple ``(images,)`` with ``return_dict=False``).
        """
        cfg = resolve_fastface(fastface, num_inference_steps)
        if num_inference_steps is not None and num_inference_steps != cfg.num_steps:
            raise ConfigError(
                f"num_inference_steps={num_inference_steps} but the FastFace config is for "
                f"{cfg.num_steps} steps; pass a config built for {num_inference_steps} steps"
            )
        if ip_adapter_image_embeds is None:
            raise InputError(
                "FastFacePipeline needs ip_adapter_image_embeds=[torch.cat([zeros, id_embedding])]; "
                "fastface_lite.sdxl.adapter.id_inputs builds them from a face embedding (and crop)"
            )
        device = self._execution_device  # once: diffusers walks every module looking for offload hooks
        ip_adapter_image_embeds, id_clip_embeds = check_id_inputs(
            self.unet, ip_adapter_image_embeds, id_clip_embeds, device=device
        )
        callback_on_step_end_tensor_inputs = check_callback(
            callback_on_step_end, callback_on_step_end_tensor_inputs, self._callback_tensor_inputs
        )
        num_images_per_prompt = check_count(num_images_per_prompt)
        if self.unet.config.time_cond_proj_dim is not None:
            raise ConfigError(
                "UNets with a guidance-scale embedding (full LCM UNets) are not supported; use the LCM LoRA"
            )

        height = height or cfg.height or self.default_sample_size * self.vae_scale_factor
        width = width or cfg.width or self.default_sample_size * self.vae_scale_factor
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)
        self.check_inputs(
            prompt,
            prompt_2,
            height,
            width,
            None,
            negative_prompt,
            negative_prompt_2,
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
            None,
            ip_adapter_image_embeds,
            callback_on_step_end_tensor_inputs,
        )
        self._interrupt = False
        if prompt is not None:
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        else:
            batch_size = prompt_embeds.shape[0]
        images = batch_size * num_images_per_prompt
        check_latents(latents, images, self.unet.config.in_channels, height, width, self.vae_scale_factor)

        # 1. conditioning for the three branches
        pos_text, neg_text, pos_pooled, neg_pooled = self.encode_prompt(
            prompt=prompt,
            prompt_2=prompt_2,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=True,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
        )
        id_pairs = self.prepare_ip_adapter_image_embeds(None, ip_adapter_image_embeds, device, images, True)
        add_time_ids = self._get_add_time_ids(
            original_size,
            crops_coords_top_left,
            target_size,
            dtype=pos_text.dtype,
            text_encoder_projection_dim=self.text_encoder_2.config.projection_dim
            if self.text_encoder_2 is not None
            else int(pos_pooled.shape[-1]),
        ).to(device)
        # the ID inputs are already in the UNet's dtype (check_id_inputs): reading unet.dtype again
        # would walk every module of the UNet (diffusers looks for offload hooks there)
        inputs = self._branch_inputs(
            cfg.guidance.dcg_type,
            (neg_text, pos_text),
            (neg_pooled, pos_pooled),
            id_pairs,
            id_clip_embeds,
            images,
            add_time_ids,
            device,
            ip_adapter_image_embeds[0].dtype if ip_adapter_image_embeds else self.unet.dtype,
        )

        # 2. schedule and starting noise
        timesteps, _ = retrieve_timesteps(self.scheduler, cfg.num_steps, device, timesteps, sigmas)
        if len(timesteps) != cfg.num_steps:
            raise ConfigError(f"the scheduler produced {len(timesteps)} timesteps for {cfg.num_steps} steps")
        latents = self.prepare_latents(
            images, self.unet.config.in_channels, height, width, pos_text.dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        self._num_timesteps = len(timesteps)
        # The step bookkeeping (branch planning, guidance weights, the processors' step context)
        # reads the timesteps as Python floats: one device-to-host copy here, none per step.
        step_times = [float(x) for x in timesteps.tolist()]
        # the plan of the whole run, made once before the loop: which branches each step
        # evaluates and their names (what the processors' step context reports)
        names = dcg.BRANCH_NAMES[cfg.guidance.dcg_type]
        plan = [(0, 1, 2) if evaluate_all_branches else branches_for_step(cfg, i, t) for i, t in enumerate(step_times)]
        plan_names = [tuple(names[k] for k in branches) for branches in plan]

        result = FastFaceOutput(images=None)
        saved_clip = {layer: layer.clip_embeds for layer in inputs.clip_embeds}
        state = self._compiled_state
        if state is None:  # eager: processors for this call only
            unet_kwargs = self._unet_kwargs(cross_attention_kwargs, cfg.faceid_lora_scale)
            context = StepContext(batch_per_branch=images)
            installation = install(self.unet, cfg.attention, context, ip_scale=cfg.ip_adapter_scale)
        else:  # compiled: the persistent processors; the LoRA weight is fused, not passed
            context = fast_path.prepare_call(state, cfg)
            context.batch_per_branch = images
            unet_kwargs = self._unet_kwargs(cross_attention_kwargs, 1.0)
            installation = None

        # 3. the loop; processors, step context and CLIP embeddings are restored however it ends
        try:
            with self.progress_bar(total=len(timesteps)) as progress:
                for i, (t, t_host) in enumerate(zip(timesteps, step_times, strict=True)):
                    if self.interrupt:
                        continue
                    branches = plan[i]
                    context.step_index, context.timestep, context.branches = i, t_host, branches
                    context.branch_names = plan_names[i]
                    noise_pred = self._evaluate_branches(latents, t, branches, inputs, unet_kwargs)
                    if cfg.guidance.record_norms:
                        result.guidance_norms.append(dcg.term_norms(noise_pred, cfg.guidance.dcg_type))
                    noise_pred = dcg.combine(noise_pred, i, t_host, cfg.guidance)
                    latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                    result.unet_evaluations += len(branches)
                    result.branches_per_step.append(branches)
                    result.timesteps.append(t_host)
                    if callback_on_step_end is not None:
                        tensors = {"latents": latents, "noise_pred": noise_pred}
                        given = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                        returned = callback_on_step_end(self, i, t, given)
                        latents = callback_result(callback_on_step_end, returned, given, latents)
                    progress.update()
        finally:
            if installation is not None:
                installation.remove()
            context.step_index, context.timestep, context.branches, context.branch_names = None, None, (), ()
            for layer, value in saved_clip.items():
                layer.clip_embeds = value

        result.images = self.latents_to_images(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result.images,)
        return result

    # -- helpers, in the order the call uses them ------------------------------------------------
    def _branch_inputs(
        self, dcg_type, text_pair, pooled_pair, id_pairs, clip_pair, images, time_ids, device, dtype
    ) -> _BranchInputs:
        """Lay out (negative, positive) conditioning for the three branches of ``dcg_type``
        (``device``, ``dtype``: the call's execution device and the UNet's dtype)."""
        conditions = dcg.BRANCH_CONDITIONS[dcg_type]
        text = [text_pair[has_text] for has_text, _ in conditions]
        pooled = [pooled_pair[has_text] for has_text, _ in conditions]
        id_embeds = []
        for pair in id_pairs:  # diffusers returns cat([negative, positive]) per adapter
            negative, positive = pair.chunk(2)
            id_embeds.append([(negative, positive)[has_id] for _, has_id in conditions])
        clip_embeds = {}
        projection = getattr(self.unet, "encoder_hid_proj", None)
        for index, layer in enumerate(getattr(projection, "image_projection_layers", [])):
            if not hasattr(layer, "clip_embeds"):
                continue  # plain FaceID: no CLIP input
            pair = clip_pair if clip_pair is not None and index == 0 else layer.clip_embeds
            if pair is None:
                raise InputError(
                    f"image_projection_layers[{index}].clip_embeds is not set: FaceID Plus needs the CLIP "
                    "hidden states of cat([zero image, face crop]); pass id_clip_embeds "
                    "(see fastface_lite.sdxl.adapter)"
                )
            # on the execution device: the projection layer reads it as an attribute, which model
            # CPU offload's hooks (they move forward() arguments only) would leave behind
            pair = pair.to(device=device, dtype=dtype)
            negative, positive = (_expand(x, images, "clip_embeds") for x in pair.chunk(2))
            clip_embeds[layer] = [(negative, positive)[has_id] for _, has_id in conditions]
        return _BranchInputs(text, pooled, id_embeds, clip_embeds, time_ids)

    def _unet_kwargs(self, cross_attention_kwargs, lora_scale) -> dict:
        kwargs = dict(cross_attention_kwargs or {})
        if "scale" in kwargs:
            raise ConfigError(
                "set the FaceID LoRA weight with FastFaceConfig.faceid_lora_scale, not cross_attention_kwargs['scale']"
            )
        if lora_scale != 1.0:
            if not getattr(self.unet, "peft_config", None):
                raise ConfigError(
                    f"faceid_lora_scale={lora_scale} but the UNet carries no LoRA; load a FaceID adapter "
                    "with its LoRA or leave faceid_lora_scale at 1.0"
                )
            # diffusers scales every unfused LoRA by this for the one forward and unscales after;
            # distillation LoRAs are fused by the loaders, so only the FaceID LoRA is affected.
            kwargs["scale"] = lora_scale
        return kwargs

    def _evaluate_branches(self, latents, t, branches, inputs: _BranchInputs, unet_kwargs):
        """One UNet call on the requested branches -> list of three (B, C, H, W) or None."""
        text, pooled, id_embeds, clip_embeds, time_ids = inputs.batch(branches)
        for layer, value in clip_embeds.items():
            layer.clip_embeds = value
        sample = self.scheduler.scale_model_input(torch.cat([latents] * len(branches)), t)
        out = self.unet(
            sample,
            t,
            encoder_hidden_states=text,
            cross_attention_kwargs=unet_kwargs,
            added_cond_kwargs={
                "text_embeds": pooled,
                "time_ids": time_ids,
                "image_embeds": id_embeds,
            },
            return_dict=False,
        )[0]
        per_branch = [None, None, None]
        for k, chunk in zip(branches, out.chunk(len(branches)), strict=True):
            per_branch[k] = chunk
        return per_branch

    @torch.no_grad()
    def latents_to_images(self, latents, output_type="pil", preview: bool = False):
        """Decode final latents (B, 4, h, w) with the VAE, as the call does for `output_type`.

        With ``preview`` the tiny autoencoder ``self.preview_decoder`` decodes instead: the same
        image size from a network about a hundredth of the VAE's size (softer detail), for sweeps
        and inspection; decoding the same latents again without ``preview`` gives the full image.
        """
        if output_type == "latent":
            return latents
        if preview:
            return self._preview_images(latents, output_type)
        vae = self.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        if upcast:
            vae.to(dtype=torch.float32)
        latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(mean).view(shape).to(latents)
            std = torch.tensor(std).view(shape).to(latents)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if upcast:
            vae.to(dtype=torch.float16)
        if self.watermark is not None:
            image = self.watermark.apply_watermark(image)
        return self.image_processor.postprocess(image, output_type=output_type)

    def _preview_images(self, latents, output_type):
        decoder = self.preview_decoder
        if decoder is None:
            raise ConfigError(
                "preview=True needs a preview decoder: load the pipeline with "
                "load_pipeline(..., preview_decoder=True) (or tiny_pipeline(..., preview_decoder=True))"
            )
        parameter = next(iter(decoder.parameters()))
        if parameter.device != latents.device:  # not moved by pipe.to(): follow the latents
            decoder.to(latents.device)
        # AutoencoderTiny reads SDXL's scaled latents directly (its scaling_factor is 1.0) and
        # returns images in [-1, 1] like the VAE; it is fp16-safe, so no upcast.
        image = decoder.decode(latents.to(parameter.dtype) / decoder.config.scaling_factor, return_dict=False)[0]
        return self.image_processor.postprocess(image.clamp(-1, 1), output_type=output_type)


def _expand(x: torch.Tensor, images: int, what: str) -> torch.Tensor:
    """Repeat a (k, ...) tensor to (images, ...) where k is 1 or already ``images``."""
    if x.shape[0] == images:
        return x
    if x.shape[0] == 1:
        return x.repeat(images, *([1] * (x.ndim - 1)))
    raise InputError(f"{what} holds {x.shape[0]} entries per branch; expected 1 or {images}")
