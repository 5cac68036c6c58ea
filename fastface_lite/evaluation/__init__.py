"""The evaluation protocol: identities x prompts x variants x models, one image each, scored.

metrics     identity similarity, CLIP text alignment, face size, bootstrap summaries
grid        what a run is: typed settings, items, per-item seeds, shards over processes
run_folder  the run folder on disk: atomic writes, append-only logs, resume checks
summary     records -> results table, summary per group, plots
runner      run_evaluation / recompute_metrics; cli: `fastface eval` and `fastface metrics`

May import: fastface_lite.inspect, fastface_lite.faces, fastface_lite.sdxl, fastface_lite.method,
fastface_lite.errors.
"""
