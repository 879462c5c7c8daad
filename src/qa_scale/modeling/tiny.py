"""Tiny BERT configurations: the ``BertConfig`` a ``tiny`` model is built from, and the check of
a ``tiny`` settings mapping (its keys, sizes, fractions and booleans)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import BertConfig


def tiny_bert_config(vocab_size: int, hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 2,
                     intermediate_size: int = 128, max_position_embeddings: int = 512,
                     **overrides) -> BertConfig:
    """A small BERT configuration for tests, demos and the offline backbone.

    Args:
        vocab_size: rows of the embedding matrix (at least the tokenizer's largest id + 1).
        hidden_size: width of every layer.
        num_hidden_layers: encoder blocks.
        num_attention_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: width of the feed-forward layers.
        max_position_embeddings: longest input.
        **overrides: any other ``BertConfig`` field (e.g. ``hidden_dropout_prob=0.0``).
    """
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                      num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
                      max_position_embeddings=max_position_embeddings, **overrides)


_TINY_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size")
_TINY_FRACTIONS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
_TINY_NOT = ("vocab_size", "model_type", "transformers_version", "architectures", "dtype", "torch_dtype")


def tiny_config_keys() -> list[str]:
    """The keys a ``tiny`` model's settings may hold: ``BertConfig`` fields (``vocab_size`` comes from
    the tokenizer)."""
    import inspect

    from transformers import BertConfig

    keys = set(inspect.signature(BertConfig.__init__).parameters) | set(BertConfig().to_dict())
    return sorted(k for k in keys if not k.startswith("_") and k not in ("self", "kwargs", *_TINY_NOT))


def check_tiny(tiny: object, where: str = "tiny") -> dict:
    """``tiny`` itself when it is a valid set of :func:`tiny_bert_config` overrides, else a
    :class:`ModelLoadError` naming ``where.key``: unknown keys (with the closest valid one), sizes that
    are not integers ≥ 1, dropout fractions outside [0, 1), booleans that are not booleans, and a
    ``hidden_size`` that ``num_attention_heads`` does not divide.
    """
    import math

    from ..common.settings import unknown_key_message

    if not isinstance(tiny, dict):
        raise ModelLoadError(f"{where}: expected a mapping such as {{hidden_size: 64}}, got {tiny!r}")
    if "vocab_size" in tiny:
        raise ModelLoadError(f"{where}.vocab_size: not a setting: a tiny model's vocabulary is the tokenizer's")
    valid = tiny_config_keys()
    for key in tiny:
        message = unknown_key_message(str(key), valid, prefix=f"{where}.")
        if message:
            raise ModelLoadError(message)
    for key, value in tiny.items():
        if key in _TINY_SIZES and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ModelLoadError(f"{where}.{key}: must be an integer ≥ 1, got {value!r}")
        if key in _TINY_FRACTIONS and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1):
            raise ModelLoadError(f"{where}.{key}: must be a number in [0, 1), got {value!r}")
        if key in ("layer_norm_eps", "initializer_range") and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value <= 0):
            raise ModelLoadError(f"{where}.{key}: must be a finite number > 0, got {value!r}")
        if key in ("is_decoder", "add_cross_attention", "use_cache", "tie_word_embeddings", "return_dict",
                   "output_hidden_states", "output_attentions") and not isinstance(value, bool):
            raise ModelLoadError(f"{where}.{key}: must be true or false, got {value!r}")
    hidden, heads = tiny.get("hidden_size", 64), tiny.get("num_attention_heads", 2)
    if hidden % heads:
        raise ModelLoadError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    return tiny
