"""Looking inside a run: attention traces and their heat maps.

trace    ff.trace(pipe): a context manager that hooks a pipeline, receives its attention maps and
         resolves words and token positions; it owns a store and delegates to it
store    AttentionStore: running sums of attention maps and the query over them; self-contained
         (fed tensors, queried by store row), usable without a trace
heatmap  one aggregated map and its plots; plots: figure grids and the one figure saver

A query for maps that were not recorded raises fastface_lite.errors.NothingRecorded; a malformed
query raises ValueError.

May import: fastface_lite.sdxl, fastface_lite.method, fastface_lite.errors, matplotlib.
"""
