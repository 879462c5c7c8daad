"""The weight search's fallbacks: searched weights that win on the surrogate but lose on the metric
(search split) or overfit the search split (held-out split) are replaced by the uniform mean.

Stores are made by hand from the sample dev windows: gold bumps and wrong-span bumps over small
N(0, 0.5²) noise, so that what each member gets right on each split is known."""

from __future__ import annotations

import numpy as np
import pytest

from cli_runs import sample_files

from qa_scale import data
from qa_scale.data.tokenization import load_tokenizer
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.ensemble.weight_search import SearchSettings, search_weights, split_ids
from qa_scale.evaluation.decode import decode
from qa_scale.inference import logits_store

HOLDOUT = 0.3


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    paths = sample_files(root, train_paragraphs=1, dev_paragraphs=20, seed=2)
    tok = load_tokenizer(paths["tok"])
    examples = data.load(paths["squad_dev"], "lenient").examples
    ws = build_windows(examples, tok, WindowConfig(max_seq_len=128, max_question_len=32, doc_overlap=32))
    return {"root": root, "examples": examples, "ws": ws, "references": data.load_references(paths["squad_dev"])}


def member(dev, name: str, gold: np.ndarray, wrong: np.ndarray, seed: int) -> logits_store.Store:
    """A store whose windows holding the answer get ``gold[w]`` on the gold start and end tokens and
    ``wrong[w]`` on a span of the same length elsewhere in the context (``[W]`` bumps)."""
    ws, examples = dev["ws"], dev["examples"]
    rng = np.random.default_rng(seed)
    start, end = (0.5 * rng.standard_normal(ws.input_ids.shape).astype(np.float32) for _ in range(2))
    for w in np.flatnonzero(ws.start_positions != ws.cls_index):
        s, e = ws.start_positions[w], ws.end_positions[w]
        context = np.flatnonzero(ws.context_mask[w])
        other = context[0] if context[0] + (e - s) < s else e + 1  # before the answer, else right after it
        assert other + (e - s) <= context[-1]
        start[w, s] += gold[w]
        end[w, e] += gold[w]
        start[w, other] += wrong[w]
        end[w, other + (e - s)] += wrong[w]
    pad = np.arange(ws.input_ids.shape[1])[None, :] >= ws.lengths[:, None]
    start[pad] = end[pad] = -np.inf
    return logits_store.write_store(dev["root"] / name, logits_store.StoreContent(
        ws, examples, start, end, decode(ws, start, end, examples, nbest=True),
        model={"path": str(dev["root"] / name / "model")}))


def held_out_windows(dev) -> np.ndarray:
    ws = dev["ws"]
    _, held = split_ids([ex.id for ex in dev["examples"]], HOLDOUT)
    return np.isin(np.asarray(ws.example_ids, dtype=object)[ws.example_index], np.asarray(held, dtype=object))


def test_weights_that_overfit_the_search_split_fall_back_to_uniform(dev):
    held = held_out_windows(dev)
    # "leaky" is sure and right on the search split and mildly wrong on the held-out split;
    # "honest" is right everywhere with a smaller margin. The surrogate, fitted on the search split,
    # weights "leaky" almost alone; the uniform mean is right on the held-out split.
    leaky = member(dev, "leaky", np.where(held, 0.0, 10.0), np.where(held, 2.0, 0.0), seed=1)
    honest = member(dev, "honest", np.full(len(held), 4.0), np.zeros(len(held)), seed=2)
    found = search_weights([leaky, honest], dev["references"], SearchSettings(holdout=HOLDOUT, metric="em"))
    search, holdout = found.scores["search"], found.scores["holdout"]
    assert found.found_by["searched_weights"][0] > 0.75  # what the search found …
    assert search["searched"]["em"] >= search["uniform"]["em"]  # … passes the search split …
    assert holdout["searched"]["em"] < holdout["uniform"]["em"]  # … and overfits it
    assert found.chosen == "uniform" and found.weights == [0.5, 0.5]
    assert found.found_by["reason"] == "searched weights scored below uniform on the held-out split (em): overfit"
    assert holdout["members"]["leaky"]["em"] < 10 and holdout["uniform"]["em"] > 90


def test_weights_that_win_the_surrogate_but_lose_the_metric_fall_back_to_uniform(dev):
    n = len(dev["ws"])
    # "hedging" puts a large gold bump and a slightly larger wrong one everywhere: a low loss (the
    # surrogate), no exact match. "plain" is right with a small margin. The surrogate's optimum
    # leans to "hedging", where the wrong span wins; the uniform mean keeps the gold span ahead.
    hedging = member(dev, "hedging", np.full(n, 8.0), np.full(n, 9.0), seed=3)
    plain = member(dev, "plain", np.full(n, 2.0), np.zeros(n), seed=4)
    found = search_weights([hedging, plain], dev["references"], SearchSettings(holdout=HOLDOUT, metric="em"))
    search = found.scores["search"]
    assert found.found_by["surrogate"]["searched"] < found.found_by["surrogate"]["uniform"]
    assert search["searched"]["em"] < search["uniform"]["em"]
    assert found.chosen == "uniform" and found.weights == [0.5, 0.5]
    assert found.found_by["reason"] == "searched weights scored below uniform on the search split (em)"
