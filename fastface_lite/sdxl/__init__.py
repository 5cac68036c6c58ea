"""FastFace inside diffusers' SDXL pipeline.

processor  the attention processor that applies AM, installed per UNet instance
pipeline   FastFacePipeline: the denoising loop over the three guidance branches
adapter    the IP-Adapter FaceID adapters: loading, what they expect, building their ID inputs
loading    load_pipeline (real hub checkpoints) and the schedulers of each checkpoint
gpu_plan   which VAE and whether to offload on a GPU of a given size (from measured peaks)
tiny       offline twins with random weights; tokenizer: the real CLIP tokenizer, offline
cache      where built artefacts are kept; mode: tiny or full
quiet      drops transformers' torchvision fallback note (before diffusers is first imported)

May import: fastface_lite.method, fastface_lite.errors, torch, diffusers, transformers, peft.
"""

from fastface_lite.sdxl.quiet import drop_torchvision_fallback_note

drop_torchvision_fallback_note()
