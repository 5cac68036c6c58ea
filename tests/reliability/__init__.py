"""The reliability suite: bad or unusual inputs at each public boundary, one module per boundary.

* test_run_folder_lock.py   run folders: one writer (two processes, stale lock), --resume checks images
* test_run_folder_files.py  run folders: garbled settings.json and log lines, read-only folders, a
                            second --overwrite
* test_cli_errors.py        the command line: user errors are one message and exit 2, bugs keep tracebacks
* test_config_boundaries.py configs: the classes, FastFaceConfig.from_dict, the reference JSON
* test_config_fuzz.py       the two config readers under hypothesis (300 examples per test)
* test_call_boundaries.py   pipeline calls (before any UNet work), ID inputs, trace queries
* test_callbacks_and_counts.py  what a step callback may return; num_images_per_prompt, latents
* test_traces_compose.py    any number of traces on one pipeline, exited in any order

Table-driven where the cases are alike: each case is the call, the error class, and words the
message must contain (the input's name and what valid looks like).
"""
