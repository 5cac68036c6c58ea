"""Tests of fastface_lite.evaluation, one file per module.

A package (not a folder of loose files) so that its conftest.py and helper module do not shadow
the top-level tests/conftest.py that other test folders import from, and so that its file names
(test_cli.py, ...) cannot clash with test files of the same name elsewhere.
"""
