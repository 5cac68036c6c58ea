"""fastface_lite: learn, inspect and measure FastFace on few-step SDXL models."""
