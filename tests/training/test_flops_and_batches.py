"""Training FLOPs that count only what trains (LoRA), and the warning when ranks get small batches."""

from __future__ import annotations

import logging
import types

import pytest

from qa_scale.training.ds_config import resolve, small_batch_warning
from qa_scale.training.flops import encoder_flops_per_token, flops_per_token_fn, matmul_parameters
from qa_scale.training.recipe import load_recipe

TINY = ["model.tokenizer=tok", "model.tiny={}", "data.train_file=t.json"]


def test_lora_flops_count_weight_gradients_of_trainable_weights_only():
    # N = 1000 of which 100 train, 2 layers, width 8, 16 tokens. Weights: 2N forward + 2N input
    # gradients + 2·N_trainable weight gradients; attention (1024 forward) is 3× whatever trains.
    assert encoder_flops_per_token(1000, 2, 8, 16, n_trainable=1000) == 9072.0  # = 6N + 3·1024
    assert encoder_flops_per_token(1000, 2, 8, 16, n_trainable=100) == 4000 + 200 + 3 * 1024
    assert encoder_flops_per_token(1000, 2, 8, 16, n_trainable=0) == 4000 + 3 * 1024
    assert encoder_flops_per_token(1000, 2, 8, 16, training=False, n_trainable=100) == 3024.0
    with pytest.raises(ValueError, match="n_trainable"):
        encoder_flops_per_token(1000, 2, 8, 16, n_trainable=1001)


def tiny_reader(lora: bool):
    from qa_scale.modeling.lora import LoraSection, apply_lora
    from qa_scale.modeling.model import load_qa_model

    model = load_qa_model(None, vocab_size=100, tiny={}, seed=0)
    return apply_lora(model, LoraSection()) if lora else model


# Tiny reader (width 64, 2 layers, FFN 128): per layer q, k, v, o 4·(64·64 + 64), two norms 2·128,
# FFN 64·128 + 128 + 128·64 + 64; head 64·2 + 2. LoRA r=8 on q, k, v, o (4 · 8·128) and the FFN
# (2 · 8·192) per layer; the head trains in full (peft's frozen copy of it never runs).
TINY_N = 2 * (4 * (64 * 64 + 64) + 2 * 128 + 64 * 128 + 128 + 128 * 64 + 64) + 64 * 2 + 2
TINY_ADAPTERS = 2 * (4 * 8 * 128 + 2 * 8 * 192)


@pytest.mark.parametrize("lora, n, n_trainable", [
    (False, TINY_N, TINY_N),
    (True, TINY_N + TINY_ADAPTERS, TINY_ADAPTERS + 64 * 2 + 2),
])
def test_training_flops_of_a_reader_count_what_trains(monkeypatch, lora, n, n_trainable):
    model = tiny_reader(lora)
    assert matmul_parameters(model) == (n, n_trainable)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *a: "NVIDIA H200")
    engine = types.SimpleNamespace(module=model)
    per_token, peak = flops_per_token_fn(engine, {"bf16": {"enabled": True}}, "cuda:0")
    assert peak == 989e12
    attention = 4 * 2 * 384 * 64
    assert per_token(384) == 4 * n + 2 * n_trainable + 3 * attention
    if not lora:
        assert per_token(384) == 6 * n + 12 * 2 * 64 * 384  # PaLM's count




def batches(global_batch: int, lr: float = 2e-5, micro="auto"):
    return load_recipe(None, TINY + [f"optim.global_batch_size={global_batch}", f"optim.micro_batch_size={micro}",
                                     "optim.max_micro_batch_size=32", f"optim.lr={lr}"])


def resolve_logged(caplog, config, world_size: int) -> list[str]:
    """The warning rank 0 logs for this plan (the trainer logs it once; resolving logs nothing per rank)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qa_scale.training.ds_config"):
        ds = resolve("ds_configs/zero2_bf16.json", config, world_size, hidden_size=64)
    assert ds["train_batch_size"] == config.optim.global_batch_size
    assert not caplog.records  # every rank resolves; none of them warns from here
    warning = small_batch_warning(config, world_size)
    return [warning] if warning else []


def test_eight_gpus_sharing_a_batch_of_32_are_warned_with_the_remedy(caplog):
    # The shipped GPU recipes: global 32, micro auto → 4 windows a rank on 8 GPUs.
    [message] = resolve_logged(caplog, batches(32), 8)
    assert "8 ranks, global batch 32: 4 windows per rank per micro-step (accumulation 1), under 8" in message
    assert "optim.global_batch_size" in message and "64 = 8 × 8" in message
    assert "square root" in message and "× 1.41: 2.00e-05 → 2.83e-05" in message


def test_no_warning_when_every_rank_gets_eight_or_one_rank_runs(caplog):
    assert resolve_logged(caplog, batches(256), 8) == []  # 32 a rank
    assert resolve_logged(caplog, batches(64), 8) == []  # exactly 8 a rank
    assert resolve_logged(caplog, batches(4), 1) == []  # one rank: no all-reduce to hide
    assert small_batch_warning(batches(32), 1) is None


def test_a_small_micro_batch_under_a_large_global_batch_is_told_to_grow_the_micro_batch():
    message = small_batch_warning(batches(256, micro=4), 8)
    assert "4 windows per rank per micro-step (accumulation 8)" in message
    assert "optim.micro_batch_size to 8" in message and "optim.global_batch_size" not in message
