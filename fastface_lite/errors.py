"""Errors the package raises on bad input. Each message names the input and what to do."""


class ConfigError(ValueError):
    """A FastFace configuration that cannot run: wrong names, lengths or ranges."""
