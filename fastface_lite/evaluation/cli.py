"""`fastface eval` and `fastface metrics`: the evaluation runner on the command line.

    fastface eval --identities astronaut grace_hopper --variants baseline fastface-am2 --out runs/a --resume
    accelerate launch --multi_gpu --num_processes 4 -m fastface_lite.cli eval ... --out runs/a --resume
    fastface metrics runs/a

Importing this module stays cheap (the `fastface demo` parser imports it): the runner itself, with
torch, diffusers and accelerate, is imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from fastface_lite.errors import FastFaceError, user_error
from fastface_lite.method.checkpoints import ADAPTERS, MODELS
from fastface_lite.method.config import VARIANTS

EVAL_EPILOG = """\
Run folder: settings.json, identities/, images/<model>/<variant>/<identity>/*.png,
shards/process-NNN.jsonl (append-only logs), results.jsonl/.csv, summary.csv/.md, plots/<metric>.png.

A killed run continues where it stopped when the same command is given again with --resume
(--resume on a folder that holds no run yet starts one, so a command with --resume is safe to
repeat). Several processes or GPUs: launch with Hugging Face accelerate, e.g.
  accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
      --dynamo_backend no -m fastface_lite.cli eval --out runs/x --resume ...
(on a machine without GPUs the same --multi_gpu launch runs CPU processes in a gloo group;
`accelerate launch --cpu --num_processes N` starts a single process unless run under mpirun).
"""


def register(subparsers) -> None:
    """Add the `eval` and `metrics` subcommands to the `fastface` parser."""
    ev = subparsers.add_parser(
        "eval",
        help="evaluate variants over identities x prompts (docs/method.md §14), resumable, multi-GPU",
        description="Generate one image per identity x prompt x variant x model, score it (identity\n"
        "similarity, CLIP text alignment, face size) and summarise. Each image has its own\n"
        "seed derived from (seed, identity, prompt), so results do not depend on order.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    flags = ev.add_mutually_exclusive_group()
    flags.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR (same settings required; starts one if there is none)",
    )
    flags.add_argument("--overwrite", action="store_true", help="delete the run in RUN_DIR and start again")
    ev.add_argument(
        "--identities",
        nargs="+",
        default=[],
        metavar="FACE",
        help="shipped photos by name (fastface_lite/data/faces) or paths (default: all shipped)",
    )
    ev.add_argument(
        "--prompt-sets",
        nargs="+",
        default=["realistic", "stylistic"],
        metavar="SET",
        help="prompt sets by name (realistic, stylistic) or prompt files, one prompt a line",
    )
    ev.add_argument(
        "--prompts-per-set",
        type=int,
        default=None,
        metavar="N",
        help="only the first N prompts of each set after sorting (small runs)",
    )
    ev.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=VARIANTS,
        metavar="VARIANT",
        help=f"FastFace variants (default: all): {', '.join(VARIANTS)}",
    )
    ev.add_argument(
        "--models",
        nargs="+",
        default=["hyper"],
        choices=MODELS,
        metavar="MODEL",
        help=f"distilled models (default: hyper): {', '.join(MODELS)}",
    )
    ev.add_argument("--adapter", default="faceid-plusv2", choices=ADAPTERS)
    ev.add_argument("--seed", type=int, default=0, help="base seed of the per-image seeds")
    ev.add_argument("--steps", type=int, default=4, help="sampling steps (variants with per-step lists need 4)")
    ev.add_argument(
        "--size",
        type=int,
        default=None,
        metavar="PX",
        help="image side in pixels (default: the model's; tiny mode: a quarter of it)",
    )
    ev.add_argument(
        "--mode",
        choices=["tiny", "full"],
        default=None,
        help="tiny (offline, random weights) or full (hub weights); default: $FASTFACE_MODE, "
        "else full with CUDA, else tiny",
    )
    ev.add_argument(
        "--rgb-clip-crop",
        action="store_true",
        help="Plus v2: give CLIP the RGB face crop (default: BGR, as the reference does)",
    )
    ev.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="only the first N items of the grid (quick checks; a later run continues)",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(run=run_eval)

    me = subparsers.add_parser(
        "metrics",
        help="score the saved images of a run again and rewrite its summary",
        description="Recompute the metrics of a run folder from its saved images and identity "
        "copies, with the run's mode, then write results and summary again.",
    )
    me.add_argument("run_dir", metavar="RUN_DIR")
    me.add_argument(
        "--device", default=None, help="torch device for the scorers (default: cuda in full mode if present)"
    )
    me.add_argument("--no-progress", action="store_true", help="no progress bar")
    me.set_defaults(run=run_metrics)


def run_eval(args) -> int:
    from fastface_lite.evaluation.grid import EvalSpec
    from fastface_lite.evaluation.runner import run_evaluation

    try:
        spec = EvalSpec(
            identities=tuple(args.identities),
            prompt_sets=tuple(args.prompt_sets),
            prompts_per_set=args.prompts_per_set,
            variants=tuple(args.variants),
            models=tuple(args.models),
            adapter=args.adapter,
            seed=args.seed,
            num_steps=args.steps,
            size=args.size,
            mode=args.mode,
            clip_crop_bgr=not args.rgb_clip_crop,
        )
        with _loading_bars(shown=not args.no_progress):
            run_evaluation(
                spec,
                args.out,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.no_progress,
                limit=args.limit,
            )
    except (FastFaceError, FileNotFoundError) as err:  # a user error: one message, no traceback
        print(user_error("eval", err), file=sys.stderr)
        return 2
    return 0


@contextmanager
def _loading_bars(shown: bool):
    """--no-progress also hides the weight-loading bars of diffusers and transformers. Their switch
    is process-wide, so it is put back as found when the command returns (``cli.main`` may run
    inside another program, e.g. a test or a notebook)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    before = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    try:
        if not shown:
            for lib, _ in before:
                lib.disable_progress_bar()
        yield
    finally:
        for lib, enabled in before:
            (lib.enable_progress_bar if enabled else lib.disable_progress_bar)()


def run_metrics(args) -> int:
    from fastface_lite.evaluation.runner import recompute_metrics

    try:
        with _loading_bars(shown=not args.no_progress):
            recompute_metrics(args.run_dir, progress=not args.no_progress, device=args.device)
    except (FastFaceError, FileNotFoundError) as err:
        print(user_error("metrics", err), file=sys.stderr)
        return 2
    return 0
