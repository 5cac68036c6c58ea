"""Looking inside a run: attention traces and their heat maps.

trace    ff.trace(pipe): a context manager that records attention maps while a pipeline runs
store    the running sums behind a trace and the queries over them
heatmap  one aggregated map and its plots; plots: figure grids and the one figure saver

May import: fastface_lite.sdxl, fastface_lite.method, fastface_lite.errors, matplotlib.
"""
