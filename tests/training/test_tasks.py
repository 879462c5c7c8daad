"""The QA task cuts each epoch's training windows once, whoever asks for them."""

from __future__ import annotations

import numpy as np

from cli_runs import sample_files

from qa_scale.data.tokenization import load_tokenizer
from qa_scale.runtime.distributed import single
from qa_scale.training import tasks
from qa_scale.training.recipe import load_recipe


def test_random_windows_are_cut_once_per_epoch(tmp_path, monkeypatch):
    paths = sample_files(tmp_path, train_paragraphs=3)
    tok = load_tokenizer(paths["tok"])
    config = load_recipe(None, ["model.tiny={}", f"model.tokenizer={tmp_path / 'tok'}",
                                f"data.train_file={paths['squad_train']}", "data.strategy=random_answer",
                                "data.windows.max_seq_len=64", "data.windows.max_question_len=16",
                                "data.windows.doc_overlap=16"])
    cuts = []
    real = tasks.build_windows

    def counted(*args, **kwargs):
        cuts.append(args[4] if len(args) > 4 else kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks, "build_windows", counted)
    task = tasks.QATask(config, tok, tmp_path / "cache", single())
    first = task.windows(0)  # the trainer's setup counts the batches of epoch 0…
    assert task.windows(0) is first  # …and the loop trains on the same cut
    second = task.windows(1)
    assert len(cuts) == 2 and cuts[0] != cuts[1]
    assert not np.array_equal(first.input_ids, second.input_ids)  # a fresh placement each epoch
