"""fastface_lite: learn, inspect and measure FastFace on few-step SDXL models.

    import fastface_lite as ff
    cfg = ff.FastFaceConfig.preset("fastface-am1", model="hyper")
    pipe = ff.tiny_pipeline(adapter="faceid-plusv2", seed=0)
"""
from . import attention, guidance, schedules
from .config import (
    MODELS,
    PRESETS,
    AttentionConfig,
    AttentionSchedule,
    FastFaceConfig,
    GuidanceConfig,
    PartConstants,
    PartTable,
)
from .errors import ConfigError
from .mode import run_mode
from .schedules import WeightSchedule

__all__ = [
    "attention", "guidance", "schedules", "MODELS", "PRESETS", "AttentionConfig", "AttentionSchedule",
    "FastFaceConfig", "GuidanceConfig", "PartConstants", "PartTable", "ConfigError", "run_mode",
    "WeightSchedule", "FastFacePipeline", "FastFaceOutput", "tiny_pipeline", "load_pipeline", "install",
    "StepContext", "EvalSpec", "run_evaluation", "recompute_metrics", "trace",
]


def __getattr__(name):
    # The diffusers-backed layer is imported on first use: the math layer stays light to import.
    lazy = {
        "FastFacePipeline": ("pipeline", "FastFacePipeline"),
        "FastFaceOutput": ("pipeline", "FastFaceOutput"),
        "tiny_pipeline": ("models", "tiny_pipeline"),
        "load_pipeline": ("models", "load_pipeline"),
        "install": ("processor", "install"),
        "StepContext": ("processor", "StepContext"),
        "EvalSpec": ("evaluate", "EvalSpec"),
        "run_evaluation": ("evaluate", "run_evaluation"),
        "recompute_metrics": ("evaluate", "recompute_metrics"),
        "trace": ("recorder", "trace"),
    }
    if name in lazy:
        import importlib

        module, attr = lazy[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'fastface_lite' has no attribute {name!r}")
