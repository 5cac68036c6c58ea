"""What the notebooks call: set-up, widgets, a look inside the pipeline, synthetic maps, the demo.

session    setup(): mode, seeds, quiet libraries; the Workbook object every notebook starts from
widgets    the guidance sweep explorer and the attention inspector
anatomy    what a loaded pipeline is made of and how an identity becomes ID tokens
synthetic  a synthetic ID-token attention map with a known face
demo       `fastface demo`: the six variants side by side

May import: every layer below (evaluation, inspect, faces, sdxl, method, errors).
"""
