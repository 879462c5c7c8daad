"""Batches for the engine: a deterministic global order, split the same way on any world size.

Each optimizer step takes one *global batch* of ``global_batch_size`` windows; its micro-batch
``k`` on rank ``r`` is the slice ``(k·world + r)·micro …`` of it. The global batches depend only
on the seed, the epoch and the lengths — not on the number of ranks — so one process with
gradient accumulation and N ranks see the same data in every step, and a resumed run can skip
exactly the steps it has done. Written here because the data-parallel samplers of torch and
accelerate shard per rank first, which ties the order to the world size.

Micro-batches are padded only to their longest window (rounded up to a multiple of 8), and with
length grouping the windows of a global batch have similar lengths; one without padding needs no
attention mask (:func:`drop_full_mask`).
"""

from __future__ import annotations

import numpy as np
import torch

MEGABATCH = 50  # global batches sorted together when grouping by length


def global_batches(lengths: np.ndarray, global_batch: int, seed: int, epoch: int,
                   length_grouping: bool = True) -> list[np.ndarray]:
    """The epoch's global batches (index arrays); the last incomplete one is dropped.

    Args:
        lengths: real tokens per window.
        global_batch: windows per optimizer step.
        seed: run seed; with ``epoch`` it fixes the order.
        epoch: epoch number (a new order each epoch).
        length_grouping: sort windows by length within chunks of ``MEGABATCH`` global batches,
            longest first, so that micro-batches need little padding; batches are then shuffled.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if length_grouping:
        chunk = MEGABATCH * global_batch
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")]
                                for c in np.array_split(order, range(chunk, len(order), chunk))] or [order])
    n = len(order) // global_batch
    batches = [order[i * global_batch:(i + 1) * global_batch] for i in range(n)]
    if length_grouping:
        batches = [batches[i] for i in rng.permutation(n)]
    return batches


def rank_micro_batches(batch: np.ndarray, micro: int, world_size: int, rank: int) -> list[np.ndarray]:
    """This rank's micro-batches of one global batch, in accumulation order."""
    steps = len(batch) // (micro * world_size)
    return [batch[(k * world_size + rank) * micro:(k * world_size + rank + 1) * micro] for k in range(steps)]


def pad_width(lengths: np.ndarray, multiple: int = 8, cap: int | None = None) -> int:
    width = int(-(-int(lengths.max()) // multiple) * multiple)
    return min(width, cap) if cap else width


def collate(arrays: dict[str, np.ndarray], lengths: np.ndarray, idx: np.ndarray, pad_id: int = 0,
            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors for the windows ``idx``, padded to their longest window.

    Args:
        arrays: name → array; 2-D arrays ``[N, L]`` are cut to the batch width (``input_ids`` and
            ``token_type_ids``, a teacher's logits), 1-D arrays (labels) are taken as they are.
            Integer arrays become ``long`` tensors, floating ones ``float32`` (a memory-mapped
            array is read only at the batch's rows).
        lengths: real tokens per window (for the attention mask and the width).
        idx: the windows of the batch.
        pad_id: what padding positions of ``input_ids`` hold.
    """
    width = pad_width(lengths[idx], cap=max(a.shape[1] for a in arrays.values() if a.ndim == 2))
    batch = {}
    for name, array in arrays.items():
        part = array[idx, :width] if array.ndim == 2 else array[idx]
        dtype = torch.float32 if np.issubdtype(part.dtype, np.floating) else torch.long
        batch[name] = torch.as_tensor(np.ascontiguousarray(part), dtype=dtype)
    batch["attention_mask"] = (torch.arange(width)[None, :] < torch.as_tensor(lengths[idx])[:, None]).long()
    if "input_ids" in batch:
        batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, pad_id)
    return to_device(batch, device)


def drop_full_mask(batch: dict[str, torch.Tensor], lengths: np.ndarray) -> dict[str, torch.Tensor]:
    """``batch`` without its attention mask when every window fills the batch's width (no padding).

    An all-ones mask changes nothing in the result, but costs on a GPU: transformers checks each
    forward whether the mask it gets is all ones (``mask.all()``, a read that waits for the device)
    before it lets SDPA take its flash or memory-efficient kernel, and under ``torch.compile`` it
    keeps the mask as an explicit bias. Without a mask, SDPA gets ``attn_mask=None`` directly. The
    result is the same by construction: with SDPA transformers itself passes None for an all-ones
    mask, and the eager kernel adds zeros (tested bit for bit). Decided on the host from the window
    lengths, so no switch is needed. Windows of the full ``max_seq_len`` (a multiple of 8 in every
    shipped recipe) fill their micro-batch whenever they share it, which length grouping
    (``run.length_grouping``) makes common.

    Args:
        batch: a collated batch (:func:`collate`; a task's ``prepare`` may have added keys).
        lengths: real tokens of each of its windows.
    """
    mask = batch.get("attention_mask")
    if mask is None or int(np.min(lengths)) < mask.shape[1]:
        return batch
    return {k: v for k, v in batch.items() if k != "attention_mask"}


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The batch on ``device``; to a GPU through pinned memory, without blocking the host.

    The copies are queued on the current stream, ahead of the forward pass that reads them, so
    the host goes on preparing the next micro-batch instead of waiting for the transfer.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class RowView:
    """Rows ``rows`` of ``base`` indexed like an array of their own: ``view[idx, :w]`` is ``base[rows[idx], :w]``.

    Only the rows a batch asks for are read, so ``base`` may be a memory-mapped array larger than
    memory (a distillation teacher's logits). numpy has no lazy row-selection view: fancy indexing
    copies at once, which is what this avoids for the whole array.
    """

    def __init__(self, base: np.ndarray, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows)

    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.base[(self.rows[key[0]], *key[1:])]
        return self.base[self.rows[key]]


class RowSubset:
    """Some rows of a window set, as the engine loop batches them (lengths and pad id) and where they are."""

    def __init__(self, lengths: np.ndarray, pad_id: int, rows: np.ndarray):
        self.rows = np.asarray(rows)
        self.lengths, self.pad_id = np.asarray(lengths)[self.rows], pad_id

    def view(self, arrays: dict[str, np.ndarray]) -> dict[str, RowView]:
        """Each array restricted to these rows, read lazily."""
        return {name: RowView(array, self.rows) for name, array in arrays.items()}
