"""Throughput, model FLOPs utilisation and peak memory of a training run.

``encoder_flops_per_token`` counts the model FLOPs of a Transformer encoder, ``peak_flops``
knows the dense bf16/fp16 peak of common GPUs, and :class:`Throughput` measures rates between
log points, so that ``mfu`` is achieved model FLOP/s over the peak of the same hardware.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

__all__ = [
    "Throughput", "encoder_flops_per_token", "flops_per_token_fn", "matmul_parameters", "mfu", "peak_flops",
    "peak_memory",
]


class Throughput:
    """Samples and tokens per second between log points.

    Counts are whatever the caller passes: per-rank counts give per-GPU rates (what
    :func:`mfu` wants), global counts give job-wide rates.

    Args:
        clock: Seconds as a float; ``time.perf_counter`` unless a test substitutes one.
    """

    def __init__(self, clock: Callable[[], float] | None = None):
        self._clock = clock or time.perf_counter
        self.reset()

    def reset(self) -> None:
        """Zero the counts and restart the clock (e.g. after evaluation, so it is not counted)."""
        self.samples = 0
        self.tokens = 0
        self._start = self._clock()

    def update(self, samples: int, tokens: int) -> None:
        """Add one step's work."""
        self.samples += samples
        self.tokens += tokens

    def rates(self) -> dict[str, float]:
        """``{"samples_per_s", "tokens_per_s"}`` since the last call or reset; then reset."""
        now = self._clock()
        elapsed = now - self._start
        out = {
            "samples_per_s": self.samples / elapsed if elapsed > 0 else 0.0,
            "tokens_per_s": self.tokens / elapsed if elapsed > 0 else 0.0,
        }
        self.samples = self.tokens = 0
        self._start = now  # the same reading: no time falls between two windows
        return out


def encoder_flops_per_token(
    n_params_non_embedding: int,
    n_layers: int,
    hidden: int,
    seq_len: int,
    training: bool = True,
    n_trainable: int | None = None,
) -> float:
    """Model FLOPs per token of a bidirectional Transformer encoder.

    Forward: ``2·N + 4·n_layers·seq_len·hidden``. Every non-embedding weight is used in one
    multiply-add per token (2 FLOPs each: the ``2·N`` term, the accounting of Kaplan et al.
    2020, Table 1). Attention adds two parameter-free matmuls per layer: scores ``Q·Kᵀ`` and
    the weighted sum over ``V``, each ``seq_len·hidden`` multiply-adds per token, hence
    ``4·n_layers·seq_len·hidden``. The often-quoted ``2·n_layer·n_ctx·d`` (Kaplan et al.)
    is half that, which fits a causal decoder whose tokens see half the context on average;
    an encoder token sees every position, as in PaLM's appendix B training count
    ``6N + 12·L·H·Q·T``.

    Backward, per forward matmul ``y = x·W``: one matmul for the input gradient (``dy·Wᵀ``,
    needed whether or not ``W`` trains, so the gradient reaches the adapters and head) and one
    for the weight gradient (``xᵀ·dy``) only where ``W`` trains. Hence training costs
    ``2·N + 2·N + 2·N_trainable`` for the weights: ``6·N`` in full fine-tuning, ``4·N +
    2·N_trainable`` under LoRA, where the frozen backbone has no weight gradients (counting
    ``6·N`` there overstates MFU about 1.5×). The attention matmuls multiply two activations,
    so both of their backward matmuls are input gradients and are always counted:
    ``3 × 4·n_layers·seq_len·hidden`` whatever trains. Embedding lookups, softmax, norms and
    activation recomputation are not counted, as usual for MFU.

    Args:
        n_params_non_embedding: Parameters excluding token/position/type embeddings (``N``).
        n_layers: Encoder layers.
        hidden: Model width (= heads × head size).
        seq_len: Tokens per window (the padded length actually computed).
        training: Count forward + backward rather than forward only.
        n_trainable: Non-embedding parameters that receive gradients (``N_trainable``);
            None means all ``N`` (full fine-tuning).
    """
    attention = 4 * n_layers * seq_len * hidden
    forward = 2 * n_params_non_embedding + attention
    if not training:
        return float(forward)
    trainable = n_params_non_embedding if n_trainable is None else n_trainable
    if not 0 <= trainable <= n_params_non_embedding:
        raise ValueError(f"n_trainable={trainable} must lie in [0, {n_params_non_embedding}] (N)")
    input_grads = 2 * n_params_non_embedding + 2 * attention  # attention: dQ, dK and dP, dV
    return float(forward + input_grads + 2 * trainable)


def matmul_parameters(module) -> tuple[int, int]:
    """(N, N_trainable) of :func:`encoder_flops_per_token`: non-embedding parameters, all and trainable.

    Embeddings are lookups, not matmuls. peft's frozen ``original_module`` copy of a head in
    ``modules_to_save`` is skipped too: the forward runs the trained copy only. Under ZeRO-3 a
    parameter's local tensor is an empty shard; its full size is ``ds_numel``.
    """
    n = n_trainable = 0
    for name, p in module.named_parameters():
        if "embeddings" in name or ".original_module." in name:
            continue
        size = getattr(p, "ds_numel", p.numel())
        n += size
        n_trainable += size if p.requires_grad else 0
    return n, n_trainable


# Dense (no 2:4 sparsity) tensor-core peaks from vendor datasheets, in FLOP/s, per GPU.
# Matched in order against torch.cuda.get_device_name(); whole-word patterns so that "A10"
# does not match "A100" nor "L4" match "L40S". An H100 SXM reports "NVIDIA H100 80GB HBM3".
_BF16_FP16 = ("bf16", "fp16")
_PEAKS: tuple[tuple[str, tuple[str, ...], float | None], ...] = (
    (r"H[12]00 NVL", _BF16_FP16, None),  # lower clocks than SXM; no figure we are sure of
    (r"\bH[18]00\b.*\bPCIe\b", _BF16_FP16, 756e12),
    (r"\bG?H[128]00\b", _BF16_FP16, 989e12),  # H100/H800 SXM, H200, GH200
    (r"\bA[18]00\b", _BF16_FP16, 312e12),
    (r"\bL40S\b", _BF16_FP16, 362e12),
    (r"\bL40\b", _BF16_FP16, 181e12),
    (r"\bL4\b", _BF16_FP16, 121e12),
    (r"\bA10\b", _BF16_FP16, 125e12),
    (r"\bRTX 4090\b(?! D\b)", _BF16_FP16, 165e12),  # fp32 accumulate, as training uses
    (r"\bV100S\b", ("fp16",), 130e12),  # Volta has no bf16
    (r"\bV100\b.*\bPCIe\b", ("fp16",), 112e12),
    (r"\bV100\b", ("fp16",), 125e12),
)
_DTYPES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16"}


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one GPU for bf16/fp16 matmuls, or None when not known.

    Args:
        device_name: ``torch.cuda.get_device_name()``.
        dtype: "bf16"/"bfloat16"/"fp16"/"float16" (a ``torch.dtype`` works too). Anything
            else, fp32 included, gives None: MFU is quoted against the half-precision peak.
    """
    dtype = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    for pattern, dtypes, peak in _PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak if dtype in dtypes else None
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation, a fraction: achieved model FLOP/s over ``peak``.

    ``tokens_per_s`` and ``peak`` must describe the same hardware (one GPU, or multiply
    ``peak`` by the world size for job-wide rates). None when the peak is unknown.
    """
    if not peak:
        return None
    return tokens_per_s * flops_per_token / peak


def peak_memory(device) -> tuple[str, int]:
    """(what was measured, bytes): CUDA max allocated on a GPU, else this process's peak RSS.

    The two are not the same quantity: RSS counts the interpreter and libraries too, so only
    compare runs measured the same way (the ``kind`` says which).
    """
    import resource

    import torch

    if torch.device(device).type == "cuda":
        return "cuda_max_allocated", int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return "peak_rss", int(rss if os.uname().sysname == "Darwin" else rss * 1024)


def flops_per_token_fn(engine, ds: dict, device) -> tuple[Callable[[float], float] | None, float | None]:
    """(tokens per window → training FLOPs per token, peak FLOP/s of this GPU), or (None, None) off CUDA."""
    import torch

    if torch.device(device).type != "cuda":
        return None, None
    precision = "bf16" if ds.get("bf16", {}).get("enabled") else "fp16" if ds.get("fp16", {}).get("enabled") else "fp32"
    cfg = engine.module.config
    n, n_trainable = matmul_parameters(engine.module)
    return (lambda seq: encoder_flops_per_token(n, cfg.num_hidden_layers, cfg.hidden_size, int(seq),
                                                n_trainable=n_trainable),
            peak_flops(torch.cuda.get_device_name(), precision))
