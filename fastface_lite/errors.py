"""Errors the package raises on bad input. Each message names the input and what to do."""


class ConfigError(ValueError):
    """A FastFace configuration that cannot run: wrong names, lengths or ranges."""


class NothingRecorded(LookupError):
    """A trace query asked for maps that were never recorded (a branch a step did not evaluate,
    a block or step outside what the trace was told to keep)."""
