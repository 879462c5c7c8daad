"""Model × windows → start/end logits of every window, in one process or sharded over ranks.

Windows are sorted by length and cut into batches padded only to their longest window (a batch of
full windows goes without an attention mask: :func:`~qa_scale.data.batches.drop_full_mask`). Rank
``r`` runs batches ``r, r + world, …``; every rank runs the same number of forward passes (the
last ones repeat a batch when the count does not divide), because ZeRO-3 gathers parameters
collectively in each forward. Rank 0 receives all logits, in window order. Training's dev
evaluation and ``qa-scale predict`` both call this.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.batches import collate, drop_full_mask, to_device
from ..data.windows import WindowSet
from ..runtime.distributed import Dist, gather_objects, single


def length_batches(ws: WindowSet, batch_size: int) -> list[np.ndarray]:
    """Window indices, longest first, in batches of ``batch_size``."""
    order = np.argsort(-ws.lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_logits(model: Callable, ws: WindowSet, batch_size: int = 32, d: Dist | None = None,
                   progress=None) -> tuple[np.ndarray, np.ndarray] | None:
    """Start and end logits ``[W, max_seq_len]`` (float32, −inf on padding) on rank 0; None elsewhere.

    Args:
        model: a QA model or a DeepSpeed engine (called with input_ids, token_type_ids and, when
            the batch has padding, attention_mask; returns ``start_logits``/``end_logits``), already
            in eval mode.
        ws: the windows.
        batch_size: windows per forward pass on each rank.
        d: this process's place among the data-parallel ranks and its device (default: a
            process of its own, on the CPU).
        progress: optional object with ``update(n)`` (a tqdm bar) advanced by windows done.
    """
    d = d or single()
    batches = length_batches(ws, batch_size)
    mine = batches[d.rank::d.world_size]
    rounds = -(-len(batches) // d.world_size)
    arrays = {"input_ids": ws.input_ids, "token_type_ids": ws.token_type_ids}
    results: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] = []
    for k in range(rounds):
        idx = mine[k] if k < len(mine) else (mine[-1] if mine else batches[-1])
        batch = drop_full_mask(collate(arrays, ws.lengths, idx, ws.pad_id), ws.lengths[idx])
        out = model(**to_device(batch, d.device))
        if k < len(mine):  # kept on the device: one copy to the host at the end, not one per batch
            results.append((idx, out.start_logits.float(), out.end_logits.float()))
            if progress is not None:
                progress.update(len(idx) * d.world_size)
    host = [(idx, s.cpu().numpy(), e.cpu().numpy()) for idx, s, e in results]
    parts = gather_objects(host, d)  # with one rank too: the code path of eight
    if parts is None:
        return None
    host = [r for part in parts for r in part]
    W, L = ws.input_ids.shape
    start = np.full((W, L), -np.inf, np.float32)
    end = np.full((W, L), -np.inf, np.float32)
    for idx, s, e in host:
        start[idx, : s.shape[1]] = s
        end[idx, : e.shape[1]] = e
    # Padding inside a batch's width gets logits too, and they depend on which windows shared the
    # batch: −inf there, so that a window's row (and its log-softmax) is the same however it was batched.
    padding = np.arange(L)[None, :] >= ws.lengths[:, None]
    start[padding] = -np.inf
    end[padding] = -np.inf
    return start, end
