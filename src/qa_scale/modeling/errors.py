"""The error of the modeling layer: a model that cannot be built or loaded, or does not fit."""

from __future__ import annotations


class ModelLoadError(ValueError):
    """A model that cannot be built or loaded, or does not fit its tokenizer."""
