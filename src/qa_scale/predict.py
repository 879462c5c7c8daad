"""Model × windows → start/end logits of every window, in one process or sharded over ranks.

Windows are sorted by length and cut into batches padded only to their longest window. Rank
``r`` runs batches ``r, r + world, …``; every rank runs the same number of forward passes (the
last ones repeat a batch when the count does not divide), because ZeRO-3 gathers parameters
collectively in each forward. Rank 0 receives all logits, in window order.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from .batches import collate
from .windows import WindowSet


def _batches(ws: WindowSet, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(-ws.lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_logits(model: Callable, ws: WindowSet, batch_size: int = 32, rank: int = 0, world_size: int = 1,
                   device: torch.device | str = "cpu", progress=None) -> tuple[np.ndarray, np.ndarray] | None:
    """Start and end logits ``[W, max_seq_len]`` (float32, −inf on padding) on rank 0; None elsewhere.

    Args:
        model: a QA model or a DeepSpeed engine (called with input_ids, token_type_ids,
            attention_mask; returns ``start_logits``/``end_logits``), already in eval mode.
        ws: the windows.
        batch_size: windows per forward pass on each rank.
        rank, world_size: this process's place among the data-parallel ranks.
        device: where the batches go.
        progress: optional object with ``update(n)`` (a tqdm bar) advanced by windows done.
    """
    batches = _batches(ws, batch_size)
    mine = batches[rank::world_size]
    rounds = -(-len(batches) // world_size)
    arrays = {"input_ids": ws.input_ids, "token_type_ids": ws.token_type_ids}
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k in range(rounds):
        idx = mine[k] if k < len(mine) else (mine[-1] if mine else batches[-1])
        out = model(**collate(arrays, ws.lengths, idx, ws.pad_id, device))
        if k < len(mine):
            results.append((idx, out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()))
            if progress is not None:
                progress.update(len(idx) * world_size)
    if world_size > 1:
        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object(results, gathered, dst=0)
        if rank != 0:
            return None
        results = [r for part in gathered for r in part]
    W, L = ws.input_ids.shape
    start = np.full((W, L), -np.inf, np.float32)
    end = np.full((W, L), -np.inf, np.float32)
    for idx, s, e in results:
        start[idx, : s.shape[1]] = s
        end[idx, : e.shape[1]] = e
    return start, end
