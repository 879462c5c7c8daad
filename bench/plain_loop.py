"""The baseline of the ``speed`` stage of ``bench/gpu_check.py``: a plain PyTorch training loop.

Why it exists: tokens/s and MFU of the engine alone do not say what DeepSpeed, ZeRO and the project's
loop cost or gain. This loop trains the same Hugging Face model with none of them, in the same run,
so that engine / baseline is that cost or gain (issue 19 asks for ≥ 0.9 at bf16 ZeRO-2, 512 tokens):

* the model: transformers' ``BertForQuestionAnswering`` built from the same ``BertConfig`` as the
  engine's (``qa_scale.modeling.tiny.tiny_bert_config`` with the same shape and vocabulary size),
  SDPA attention, random weights, fp32 master weights;
* the data: the engine's own windows and batches (``random_answer`` windows cut anew each epoch with
  seed + epoch, ``qa_scale.data.batches.global_batches`` with length grouping, ``collate``), one
  micro-batch per step as the engine on one GPU, attention mask passed as a plain loop passes it;
* the step: bf16 autocast on CUDA (fp32 on the CPU dry run), the model's own span loss, backward,
  gradient clipping at 1.0, ``torch.optim.AdamW(fused=True)`` on CUDA (weight decay 0.01 but not on
  biases and norms), the linear warm-up schedule;
* the clock as the engine's log: the first step is warm-up, then one rate per ``log_every`` steps
  with a host sync at each boundary, real (unpadded) tokens counted, the median rate reported; MFU
  with the project's formula (``qa_scale.training.flops``) at the mean real window length.

The windows of every step are cut before the clock starts. (The engine cuts a new epoch's windows
inside its clock; the speed data is sized so that no measured run crosses an epoch.)

Run by ``gpu_check.py`` as a child:  ``python bench/plain_loop.py SPEC_JSON``; prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def _plan(examples, tok, window_config, micro: int, steps: int, seed: int) -> list[tuple[object, object]]:
    """(window set, window indices) of each step: the engine's order on one rank."""
    from qa_scale.data.batches import global_batches
    from qa_scale.data.windows import build_windows

    plan, epoch = [], 0
    while len(plan) < steps:
        ws = build_windows(examples, tok, window_config, "random_answer", seed + epoch)
        batches = global_batches(ws.lengths, micro, seed, epoch, True)
        if not batches:
            raise ValueError(f"{len(ws)} windows make no batch of {micro}")
        plan += [(ws, idx) for idx in batches[: steps - len(plan)]]
        epoch += 1
    return plan


def _optimizer(model, spec: dict, cuda: bool):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or "LayerNorm" in name or name.endswith("bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec["lr"], fused=cuda)


def measure(model, examples, tok, config: dict, spec: dict, device) -> dict:
    """One configuration: warm-up step, then ``steps - 1`` timed steps in windows of ``log_every``."""
    import torch
    from transformers import get_scheduler

    from qa_scale.data.batches import collate, to_device
    from qa_scale.data.windows import WindowConfig
    from qa_scale.training.flops import encoder_flops_per_token, matmul_parameters, mfu, peak_flops

    cuda = device.type == "cuda"
    steps, every = spec["steps"], spec["log_every"]
    plan = _plan(examples, tok, WindowConfig(max_seq_len=config["seq"], max_question_len=config["question"],
                                             doc_overlap=config["overlap"]), config["micro"], steps, spec["seed"])
    opt = _optimizer(model, spec, cuda)
    schedule = get_scheduler("linear", opt, num_warmup_steps=int(spec["warmup_ratio"] * steps),
                             num_training_steps=steps)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and spec["dtype"] == "bf16")
    n, n_trainable = matmul_parameters(model)
    cfg = model.config
    peak = peak_flops(torch.cuda.get_device_name(device), spec["dtype"]) if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    windows, tokens, samples, losses = [], 0, 0, []
    t0 = time.perf_counter()
    for step, (ws, idx) in enumerate(plan, start=1):
        arrays = {"input_ids": ws.input_ids, "token_type_ids": ws.token_type_ids,
                  "start_positions": ws.start_positions, "end_positions": ws.end_positions}
        batch = to_device(collate(arrays, ws.lengths, idx, ws.pad_id), device)
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        if step == 1:  # warm-up is not throughput
            sync()
            t0 = time.perf_counter()
            continue
        tokens, samples = tokens + int(ws.lengths[idx].sum()), samples + len(idx)
        if step % every == 0 or step == steps:
            sync()
            now = time.perf_counter()
            per_token = encoder_flops_per_token(n, cfg.num_hidden_layers, cfg.hidden_size, tokens / samples,
                                                n_trainable=n_trainable)
            windows.append({"tokens_per_s": tokens / (now - t0), "samples_per_s": samples / (now - t0),
                            "mfu": mfu(tokens / (now - t0), per_token, peak)})
            tokens, samples, t0 = 0, 0, now

    def median(key):
        values = [w[key] for w in windows if w[key] is not None]
        return round(statistics.median(values), 4) if values else None

    out = {**config, "steps": steps, "timed_windows": len(windows), "tokens_per_s": median("tokens_per_s"),
           "samples_per_s": median("samples_per_s"), "mfu": median("mfu"),
           "final_loss": round(float(losses[-1]), 4),
           "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None}
    del opt, schedule
    if cuda:
        torch.cuda.empty_cache()
    return out


def run(spec: dict) -> dict:
    import torch
    from transformers import BertForQuestionAnswering

    from qa_scale import data
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.modeling.tiny import tiny_bert_config

    device = torch.device(spec["device"])
    tok = load_tokenizer(spec["vocab"])
    examples = data.load(spec["train_file"], "lenient").examples
    config = tiny_bert_config(max(tok.get_vocab().values()) + 1, **spec["shape"])
    torch.manual_seed(spec["seed"])
    model = BertForQuestionAnswering._from_config(config, attn_implementation="sdpa").to(device).train()
    runs = [measure(model, examples, tok, c, spec, device) for c in spec["configs"]]
    return {"model": "transformers.BertForQuestionAnswering", "device": str(device),
            "autocast": "bf16" if device.type == "cuda" and spec["dtype"] == "bf16" else None,
            "optimizer": f"torch.optim.AdamW(fused={device.type == 'cuda'})", "parameters": model.num_parameters(),
            "runs": runs}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
