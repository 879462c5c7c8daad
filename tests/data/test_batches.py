"""Global batches are the same on any world size; micro-batches pad only to their longest window."""

from __future__ import annotations

import numpy as np
import torch

from qa_scale.data.batches import collate, global_batches, rank_micro_batches


def test_order_is_deterministic_and_independent_of_world_size():
    lengths = np.random.default_rng(0).integers(10, 200, 203)
    a = global_batches(lengths, 16, seed=3, epoch=1)
    assert [x.tolist() for x in a] == [x.tolist() for x in global_batches(lengths, 16, seed=3, epoch=1)]
    assert [x.tolist() for x in a] != [x.tolist() for x in global_batches(lengths, 16, seed=3, epoch=2)]
    assert len(a) == 203 // 16 and len({i for b in a for i in b.tolist()}) == 16 * len(a)
    for batch in a:
        one = np.concatenate(rank_micro_batches(batch, 4, 1, 0))
        two = [rank_micro_batches(batch, 4, 2, r) for r in range(2)]
        assert sorted(one.tolist()) == sorted(np.concatenate(two[0] + two[1]).tolist()) == sorted(batch.tolist())
        assert len(two[0]) == len(two[1]) == 2


def test_length_grouping_reduces_padding():
    lengths = np.random.default_rng(1).integers(10, 384, 4000)
    def padding(batches):
        return sum(int(lengths[m].max()) * len(m) - int(lengths[m].sum())
                   for b in batches for m in rank_micro_batches(b, 8, 1, 0))
    assert padding(global_batches(lengths, 32, 0, 0, True)) < 0.2 * padding(global_batches(lengths, 32, 0, 0, False))


def test_collate_pads_to_the_batch():
    ids = np.arange(40).reshape(4, 10) + 1
    lengths = np.array([3, 10, 5, 2])
    batch = collate({"input_ids": ids, "start_positions": np.array([0, 1, 2, 3])}, lengths, np.array([0, 2]), pad_id=0)
    assert batch["input_ids"].shape == (2, 8)  # longest is 5, rounded up to 8
    assert batch["input_ids"][0].tolist() == [1, 2, 3, 0, 0, 0, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 3
    assert batch["start_positions"].tolist() == [0, 2]


def test_a_row_view_batches_like_the_rows_it_stands_for(tmp_path):
    from qa_scale.data.batches import RowSubset, collate

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 17, 40)
    ids = np.lib.format.open_memmap(tmp_path / "ids.npy", mode="w+", dtype=np.int32, shape=(40, 16))
    ids[:] = rng.integers(1, 100, (40, 16))
    teacher = rng.normal(size=(40, 16)).astype(np.float32)
    labels = rng.integers(0, 16, 40)
    rows = np.array([3, 7, 8, 20, 39, 0])
    subset = RowSubset(lengths, 0, rows)
    arrays = {"input_ids": np.load(tmp_path / "ids.npy", mmap_mode="r"), "teacher_start": teacher,
              "start_positions": labels}
    materialised = {k: np.asarray(v)[rows] for k, v in arrays.items()}
    idx = np.array([5, 1, 2])
    got = collate(subset.view(arrays), subset.lengths, idx, pad_id=0)
    want = collate(materialised, lengths[rows], idx, pad_id=0)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert got["teacher_start"].dtype == torch.float32 and got["input_ids"].dtype == torch.long
