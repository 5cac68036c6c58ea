"""The method as the paper defines it, in plain torch: nothing here knows diffusers.

config       frozen FastFaceConfig / GuidanceConfig / AttentionConfig and the six variants
checkpoints  the one table of distilled SDXL checkpoints (repo ids, sampler, size, default guidance)
schedules    guidance weights over the steps (per-step lists and timestep shapes)
dcg          decoupled classifier-free guidance: combining the three UNet branches
am           attention manipulation of the ID-token attention
branches     which UNet branches a step must evaluate, and how many evaluations a run costs
reference_json  reading variants stored in the reference implementation's JSON format

May import: torch, the standard library, fastface_lite.errors.
"""
