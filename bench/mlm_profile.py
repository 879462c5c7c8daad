"""Where a masked-LM step's time goes with the real 21,128-entry vocabulary (used by ``real_text.py``).

A few optimizer steps of the backbone's shape, timed in four parts: the encoder's forward pass,
the vocabulary projection with its loss, the backward pass and the AdamW update. Twice: with
``MaskedOnlyBertForMaskedLM`` (the projection on the masked tokens only, what ``qa-scale backbone``
trains) and with the plain ``BertForMaskedLM`` arithmetic (every position projected, the unmasked
ones ignored by the loss). Token ids are random draws from the vocabulary, 15% masked: timing
does not depend on which ids they are.
"""

from __future__ import annotations

import time

import torch


def _step(model, optimizer, ids, labels, masked_only: bool) -> dict[str, float]:
    times = {}
    t0 = time.perf_counter()
    hidden = model.bert(input_ids=ids, attention_mask=torch.ones_like(ids))[0]
    t1 = time.perf_counter()
    keep = labels != -100
    if masked_only:
        loss = torch.nn.functional.cross_entropy(model.cls(hidden[keep]), labels[keep])
    else:
        logits = model.cls(hidden)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1),
                                                 ignore_index=-100)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t4 = time.perf_counter()
    times.update(encoder_forward=t1 - t0, vocab_head_and_loss=t2 - t1, backward=t3 - t2, optimizer=t4 - t3)
    return times


def profile(vocab_size: int, layers: int, hidden: int, heads: int, seq_len: int, batch: int, steps: int,
            threads: int, seed: int = 0) -> dict:
    """Milliseconds per step in each part and samples/s, for the masked-only and the full projection."""
    from qa_scale.modeling.model import build_mlm_model, tiny_bert_config

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    out = {"shape": {"layers": layers, "hidden": hidden, "heads": heads, "vocab": vocab_size, "seq_len": seq_len,
                     "batch": batch}, "steps_timed": steps, "threads": threads}
    try:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(1000, vocab_size, (batch, seq_len), generator=gen)
        labels = torch.full_like(ids, -100)
        mask = torch.rand(batch, seq_len, generator=gen) < 0.15
        labels[mask] = ids[mask]
        for name, masked_only in (("masked_only", True), ("full_vocab", False)):
            config = tiny_bert_config(vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, intermediate_size=4 * hidden)
            model = build_mlm_model(config, seed=seed)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            _step(model, optimizer, ids, labels, masked_only)  # warm-up, not counted
            parts = [_step(model, optimizer, ids, labels, masked_only) for _ in range(steps)]
            ms = {k: round(1000 * sum(p[k] for p in parts) / steps, 1) for k in parts[0]}
            total = sum(ms.values())
            out[name] = {"ms_per_step": ms, "share": {k: round(v / total, 3) for k, v in ms.items()},
                         "samples_per_s": round(1000 * batch / total, 1)}
        out["speed_up"] = round(out["masked_only"]["samples_per_s"] / out["full_vocab"]["samples_per_s"], 2)
    finally:
        torch.set_num_threads(before)
    return out
