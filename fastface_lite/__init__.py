"""fastface_lite: learn, inspect and measure FastFace on few-step SDXL models.

    import fastface_lite as ff
    cfg = ff.FastFaceConfig.preset("fastface-am1", model="hyper")
    pipe = ff.tiny_pipeline(adapter="faceid-plusv2", seed=0)

The package is built in layers; each sub-package imports only from the ones below it:

    workbook/     notebook helpers: setup, widgets, anatomy, synthetic maps, the demo
    evaluation/   the evaluation protocol: metrics, run grid, run folder, runner, CLI
    inspect/      attention tracing and heat maps       faces/   photos and face analysis
    sdxl/         FastFace inside diffusers' SDXL: processor, pipeline, adapter, loading
    method/       the method itself, torch only: configs, schedules, DCG, AM, branches

This module only names the public API; the method layer is imported eagerly (it is light), the
diffusers-backed names on first use.
"""

from fastface_lite.errors import ConfigError
from fastface_lite.method import am, dcg, schedules
from fastface_lite.method.am_config import AttentionConfig, AttentionSchedule, PartConstants, PartTable
from fastface_lite.method.checkpoints import MODELS
from fastface_lite.method.config import VARIANTS, FastFaceConfig
from fastface_lite.method.dcg_config import GuidanceConfig
from fastface_lite.method.schedules import WeightSchedule
from fastface_lite.sdxl.mode import run_mode

# The names the paper's two ideas go by in the README and notebooks: ff.guidance.guide (DCG) and
# ff.attention.ip_attention (AM).
guidance = dcg
attention = am

__all__ = [
    "am",
    "dcg",
    "guidance",
    "attention",
    "schedules",
    "MODELS",
    "VARIANTS",
    "AttentionConfig",
    "AttentionSchedule",
    "FastFaceConfig",
    "GuidanceConfig",
    "PartConstants",
    "PartTable",
    "ConfigError",
    "run_mode",
    "WeightSchedule",
    "FastFacePipeline",
    "FastFaceOutput",
    "tiny_pipeline",
    "load_pipeline",
    "install",
    "StepContext",
    "EvalSpec",
    "run_evaluation",
    "recompute_metrics",
    "trace",
]

# name -> (module, attribute): diffusers-backed, imported on first use
_LAZY = {
    "FastFacePipeline": ("fastface_lite.sdxl.pipeline", "FastFacePipeline"),
    "FastFaceOutput": ("fastface_lite.sdxl.pipeline", "FastFaceOutput"),
    "tiny_pipeline": ("fastface_lite.sdxl.tiny", "tiny_pipeline"),
    "load_pipeline": ("fastface_lite.sdxl.loading", "load_pipeline"),
    "install": ("fastface_lite.sdxl.processor", "install"),
    "StepContext": ("fastface_lite.sdxl.processor", "StepContext"),
    "EvalSpec": ("fastface_lite.evaluation.grid", "EvalSpec"),
    "run_evaluation": ("fastface_lite.evaluation.runner", "run_evaluation"),
    "recompute_metrics": ("fastface_lite.evaluation.runner", "recompute_metrics"),
    "trace": ("fastface_lite.inspect.trace", "trace"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fastface_lite' has no attribute {name!r}")
