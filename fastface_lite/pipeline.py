"""FastFacePipeline: SDXL with the three-branch FastFace loop (work in progress, see core issue)."""
from diffusers import StableDiffusionXLPipeline


class FastFacePipeline(StableDiffusionXLPipeline):
    """Placeholder until the three-branch loop lands; behaves like StableDiffusionXLPipeline."""
