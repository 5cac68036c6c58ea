"""The evaluation runner (docs/method.md §14): identities x prompts x variants x models, one image each.

    from fastface_lite.evaluation.grid import EvalSpec
    from fastface_lite.evaluation.runner import run_evaluation, recompute_metrics
    spec = EvalSpec(identities=("astronaut", "grace_hopper"), variants=("baseline", "fastface-am2"))
    table = run_evaluation(spec, "runs/hyper", resume=True)   # a pandas DataFrame, one row per image
    recompute_metrics("runs/hyper")                           # score the saved images again

What makes a run trustworthy, and which module gets it:

* **An image does not depend on its neighbours**: every item has its own seed, from (seed,
  identity, prompt), and the grid is sorted; see :mod:`fastface_lite.evaluation.grid`.
* **A killed run loses nothing and repeats nothing**: images are written atomically and every
  finished item is appended to an fsynced log, which ``resume=True`` reads; see
  :mod:`fastface_lite.evaluation.run_folder`, which also shows the layout of a run folder.
* **Several processes or GPUs** (``accelerate launch ... fastface eval``): ``accelerate.PartialState``
  gives each process its index; the items still to do are dealt out deterministically (see
  ``grid.shard``: the variants of one (model, identity, prompt) stay together, group g goes to
  process g % n), each process appends to its own log, and the main process merges the logs after
  ``wait_for_everyone`` (:mod:`fastface_lite.evaluation.summary`). Results do not depend on the
  number of processes (bit for bit when every process uses the same number of CPU threads; CPU
  float sums depend on it at the 1e-6 level). One command at a time per run folder: the main
  process holds the folder's lock (``RunFolder.claim``) for the whole command and a second command
  is refused; across machines the folder must be on a shared filesystem.

Metrics per image (docs/method.md §14): identity similarity with the mode's analyzer (tiny: dlib; full:
insightface buffalo_l) plus dlib as an independent second opinion (in tiny mode the primary already
is dlib, so the ``id_dlib_*`` columns repeat the ``id_*`` ones); CLIP text alignment (tiny: a tiny
random CLIP; full: ViT-L/14 as ``clip_score`` and ViT-B/32 as ``clip_score_b32``); face size ratio.
A missing face is a detection failure (a flag, and NaN in the metric), never a number.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from fastface_lite.errors import ConfigError
from fastface_lite.evaluation.grid import (
    FULL_CLIP_MODELS,
    TINY_WEIGHTS_SEED,
    EvalItem,
    EvalSpec,
    RunSettings,
    build_items,
    resolve_identities,
    shard,
)
from fastface_lite.evaluation.run_folder import SUMMARY_MD, Identity, RunFolder
from fastface_lite.evaluation.summary import finalize, load_results
from fastface_lite.method.config import FastFaceConfig

__all__ = ["Scorers", "SimulatedKill", "run_evaluation", "recompute_metrics"]


class SimulatedKill(RuntimeError):
    """Raised by ``run_evaluation(..., stop_after=N)``: a test hook standing in for a killed process."""


# ----------------------------------------------------------------------------------------------
# scoring (shared by the run and by recompute_metrics)
# ----------------------------------------------------------------------------------------------
class Scorers:
    """The metrics of one mode (docs/method.md §14), loaded once per process.

    tiny: dlib identity similarity (the second opinion is the same model, so it is copied),
    ``ClipScorer.tiny()``. full: insightface buffalo_l primary + dlib second opinion, CLIP
    ViT-L/14 (``clip_score``) and ViT-B/32 (``clip_score_b32``). Face size: the primary analyzer.
    CLIP models load on first use.
    """

    def __init__(self, mode: str, device: torch.device | None = None):
        from fastface_lite.faces.analyzer import FaceAnalyzer

        self.mode = mode
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if mode == "tiny":
            self.analyzer = FaceAnalyzer("dlib")
            self.second = None
        else:
            ctx_id = (self.device.index or 0) if self.device.type == "cuda" else -1
            self.analyzer = FaceAnalyzer("insightface", ctx_id=ctx_id)
            self.second = FaceAnalyzer("dlib")
        self._clip = None
        self._references: dict[Path, tuple] = {}

    @property
    def clip(self) -> dict:
        if self._clip is None:
            from fastface_lite.evaluation.metrics import ClipScorer

            if self.mode == "tiny":
                self._clip = {"clip_score": ClipScorer.tiny(seed=0)}
            else:
                self._clip = {
                    column: ClipScorer(model_id, device=self.device) for column, model_id in FULL_CLIP_MODELS.items()
                }
        return self._clip

    def reference(self, photo: Path):
        """(primary Face, second-opinion Face or the photo itself when dlib finds no face).

        The primary analyzer must find a face: the adapter is conditioned on it.
        """
        photo = Path(photo)
        if photo not in self._references:
            primary = self.analyzer.largest(photo)
            second = None
            if self.second is not None:
                from fastface_lite.errors import NoFaceError

                try:
                    second = self.second.largest(photo)
                except NoFaceError:
                    second = photo  # scored as a reference-side detection failure
            self._references[photo] = (primary, second)
        return self._references[photo]

    def score(self, image, prompt: str, photo: Path) -> dict:
        """Metric columns for one generated ``image`` of ``prompt`` against identity ``photo``."""
        from fastface_lite.evaluation.metrics import face_size_ratio, identity_similarity

        primary, second = self.reference(photo)
        scores = {}
        ident = identity_similarity(primary, image, self.analyzer)
        scores.update(ident.as_record("id_"))
        scores["id_failed"] = ",".join(ident.failed)
        if self.second is None:  # tiny: the primary is dlib already
            dlib_ident = ident
        else:
            dlib_ident = identity_similarity(second, image, self.second)
        scores.update(dlib_ident.as_record("id_dlib_"))
        scores["id_dlib_failed"] = ",".join(dlib_ident.failed)
        for column, scorer in self.clip.items():
            scores[column] = float(scorer.scores([image], [prompt])[0])
        size = face_size_ratio(image, self.analyzer)
        scores["face_size_ratio"] = float("nan") if size.ratio is None else size.ratio
        scores["face_detection_failure"] = size.detection_failure
        return scores


# ----------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------
class _Generator:
    """One pipeline at a time (items come grouped by model) and each identity's inputs once."""

    def __init__(self, settings: RunSettings, device: torch.device, scorers: Scorers):
        self.settings = settings
        self.device = device
        self.scorers = scorers
        self.model = None
        self.pipe = None
        self._inputs: dict[str, object] = {}

    def _load(self, model: str):
        if self.model == model:
            return
        self.pipe, self._inputs = None, {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        from fastface_lite.sdxl.gpu_plan import device_gpu_plan
        from fastface_lite.sdxl.loading import load_pipeline
        from fastface_lite.sdxl.tiny import tiny_pipeline

        adapter = self.settings.adapter
        if self.settings.mode == "tiny":
            pipe = tiny_pipeline(adapter=adapter, seed=TINY_WEIGHTS_SEED, model=model, device=str(self.device))
        else:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            pipe = load_pipeline(
                model=model, steps=self.settings.num_steps, adapter=adapter, device=str(self.device), dtype=dtype
            )
            # SDXL's own VAE on every GPU (images comparable across machines); offload where it
            # would not fit (sdxl/gpu_plan.py, from measured peaks)
            plan = device_gpu_plan(self.device, fp16_fix=False)
            if plan is not None and plan.offload:
                print(f"{model}: {plan.reason}", flush=True)
                pipe.enable_model_cpu_offload(device=self.device)
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.model = pipe, model

    def _id_inputs(self, identity: str, photo: Path):
        """Embedding and aligned crop from the mode's analyzer (tiny: dlib 128-d; full: insightface
        512-d); the crop is BGR when ``clip_crop_bgr`` (the reference's choice, docs/method.md §3)."""
        if identity not in self._inputs:
            from fastface_lite.sdxl.adapter import face_id_inputs

            face, _ = self.scorers.reference(photo)
            self._inputs[identity] = face_id_inputs(self.pipe, face, photo, bgr=self.settings.clip_crop_bgr)
        return self._inputs[identity]

    def __call__(self, item: EvalItem, photo: Path):
        """-> (PIL image, UNet evaluations, seconds)."""
        self._load(item.model)
        inputs = self._id_inputs(item.identity, photo)
        cfg = FastFaceConfig.preset(item.variant, model=item.model, num_steps=self.settings.num_steps)
        size = self.settings.size
        # noise from a CPU generator: the same starting latents on any device
        generator = torch.Generator("cpu").manual_seed(item.seed)
        start = time.perf_counter()
        out = self.pipe(
            prompt=item.prompt, fastface=cfg, generator=generator, height=size, width=size, **inputs.call_kwargs()
        )
        image = out.images[0]  # a PIL image: the GPU work is done once it exists
        return image, int(out.unet_evaluations), time.perf_counter() - start


def _item_record(item: EvalItem) -> dict:
    return {
        "key": item.key,
        "model": item.model,
        "variant": item.variant,
        "identity": item.identity,
        "prompt_set": item.prompt_set,
        "prompt": item.prompt,
        "seed": item.seed,
        "image": item.image,
    }


# ----------------------------------------------------------------------------------------------
# the runner
# ----------------------------------------------------------------------------------------------
def _process_state():
    """accelerate's view of this process: index, count, device, barrier.

    ``cpu=True`` where there is no CUDA (or ``accelerate launch --cpu``), so that a launch of
    several processes on a CPU machine forms a gloo group instead of running alone.
    """
    from datetime import timedelta

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # A process that is done waits at the last barrier for the slowest one; the default
    # collective timeout (10 min for NCCL) is too short for a long grid. (Ignored when the
    # process group already exists.)
    return PartialState(
        cpu=not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=timedelta(hours=6)
    )


def run_evaluation(
    spec: EvalSpec,
    out_dir,
    resume: bool = False,
    overwrite: bool = False,
    *,
    progress: bool = True,
    limit: int | None = None,
    stop_after: int | None = None,
) -> pd.DataFrame:
    """Generate and score the grid of ``spec`` into ``out_dir``; returns the merged results table.

    Args:
        spec: what to evaluate.
        out_dir: the run folder (see :mod:`fastface_lite.evaluation.run_folder` for its layout).
        resume: continue the run in ``out_dir`` (its settings must match); with no run there yet,
            start one. So ``resume=True`` makes a command safe to repeat after a kill.
        overwrite: delete the run in ``out_dir`` and start again.
        progress: a tqdm bar on the main process.
        limit: do only the first ``limit`` items of the grid (canonical order); a later call
            with a larger or no limit continues.
        stop_after: TESTING ONLY: raise `SimulatedKill` after this process has recorded this many
            items, as if it were killed there.

    Returns:
        One row per finished item, in grid order (see `summary.load_results`). Every process returns it.

    Raises:
        RunFolderError: ``out_dir`` holds a run and neither flag was given, or its settings differ.
    """
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    folder = RunFolder(out_dir)
    state = _process_state()
    identities = resolve_identities(spec.identities)
    settings = RunSettings.from_spec(spec, identities)
    # the main process owns the folder for the whole command; the others work inside its claim
    with folder.claim() if state.is_main_process else contextlib.nullcontext():
        scorers = _prepare(folder, state, settings, identities, resume, overwrite)
        items = build_items(settings)[:limit]
        done = folder.finished()
        state.wait_for_everyone()  # nobody appends before everyone has read the same `done`
        todo = [item for item in items if item.key not in done]
        mine = shard(todo, state.process_index, state.num_processes)
        _generate(folder, state, settings, scorers, {i.name: i for i in identities}, mine, progress, stop_after)

        # the main process merges and summarises
        state.wait_for_everyone()
        if state.is_main_process:
            table = finalize(folder)
            print(
                f"{folder.path}: {len(table)} images ({len(todo)} generated now by {state.num_processes} "
                f"process(es), {len(items) - len(todo)} already done); summary in {folder.path / SUMMARY_MD}"
            )
        state.wait_for_everyone()
        return load_results(folder.path)


def _prepare(
    folder: RunFolder, state, settings: RunSettings, identities: list[Identity], resume: bool, overwrite: bool
) -> Scorers:
    """Every process checks (reads only), then the main process writes, then everyone reads.

    Returns this process's scorers, with every identity photo's face found (a photo without a face
    fails here, before the folder is touched).
    """
    decision = folder.decide(settings.to_json(), resume, overwrite)
    with state.local_main_process_first():  # one process per machine fetches missing weights first
        scorers = Scorers(settings.mode, state.device)
    for identity in identities:
        scorers.reference(identity.path)
    state.wait_for_everyone()
    if state.is_main_process:
        folder.prepare(decision, settings.to_json(), identities)
    state.wait_for_everyone()
    return scorers


def _generate(
    folder: RunFolder,
    state,
    settings: RunSettings,
    scorers: Scorers,
    identities: dict[str, Identity],
    mine: list[EvalItem],
    progress: bool,
    stop_after: int | None,
) -> None:
    """Generate, save, score and log this process's items, one at a time (the image first: a
    record always has one)."""
    from tqdm.auto import tqdm

    generate = _Generator(settings, state.device, scorers)
    bar = tqdm(
        total=len(mine),
        unit="image",
        disable=not progress or not state.is_main_process,
        desc=f"eval (process {state.process_index + 1}/{state.num_processes})" if state.num_processes > 1 else "eval",
    )
    recorded = 0
    with folder.open_log(state.process_index) as log, bar:
        for item in mine:
            photo = identities[item.identity].path
            image, evaluations, seconds = generate(item, photo)
            facts = folder.write_image(item.image, image)
            record = _item_record(item)
            record.update(facts)  # size and hash: what --resume checks the image against
            record.update(unet_evaluations=evaluations, seconds=seconds)
            record.update(scorers.score(image, item.prompt, photo))
            record["finished_at"] = time.time()
            log.append(record)
            recorded += 1
            bar.update()
            if stop_after is not None and recorded >= stop_after:
                raise SimulatedKill(f"stopped after {recorded} item(s) (stop_after={stop_after})")


# ----------------------------------------------------------------------------------------------
# fastface metrics RUN_DIR
# ----------------------------------------------------------------------------------------------
def recompute_metrics(run_dir, *, progress: bool = True, device=None) -> pd.DataFrame:
    """Score the saved images of a run again and write the table and the summary again.

    Uses the run's mode (settings.json) and its copies of the identity photos. Generation columns
    (seed, unet_evaluations, seconds, ...) are kept; metric columns are replaced and ``metrics_at``
    is set, so a later ``--resume`` keeps the new numbers. Items not finished yet, or whose image
    is missing or damaged, are left out (a warning says how many).
    """
    folder = RunFolder(run_dir)
    with folder.claim(create=False):
        settings = RunSettings.stored_in(folder)
        if device is None:
            device = "cuda" if torch.cuda.is_available() and settings.mode == "full" else "cpu"
        scorers = Scorers(settings.mode, torch.device(device))
        records = folder.records()
        finished = folder.finished()  # a record and an intact image: a damaged image is not scored
        grid = build_items(settings)
        items = [item for item in grid if item.key in finished]
        if len(grid) > len(items):
            warnings.warn(
                f"{folder.path}: {len(grid) - len(items)} item(s) of the grid are not finished (or their "
                f"image is missing or damaged: `fastface eval --resume` makes them again); scoring the "
                f"{len(items)} that are",
                stacklevel=2,
            )
        from PIL import Image
        from tqdm.auto import tqdm

        updated = []
        for item in tqdm(items, unit="image", desc="metrics", disable=not progress):
            record = dict(records[item.key])
            with Image.open(folder.path / record["image"]) as image:
                image = image.convert("RGB")
            record.update(scorers.score(image, item.prompt, folder.identity_photo(item.identity)))
            record["metrics_at"] = time.time()
            updated.append(record)
        folder.write_records(updated)
        table = finalize(folder)
    print(f"{folder.path}: metrics of {len(table)} images recomputed; summary in {folder.path / SUMMARY_MD}")
    return table
