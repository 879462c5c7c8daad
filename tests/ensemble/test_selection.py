"""Ensemble selection (greedy forward selection with replacement): what it keeps out of the bag, that
the predictions it scores are the ensembler's own, its fallbacks to uniform weights, the CLI and its
recipe, and the shape of its weights.

Stores are made by hand from the sample dev windows: gold bumps and wrong-span bumps over Gaussian
noise, so that what each member gets right on each split is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_runs import sample_files

from qa_scale import data
from qa_scale.cli import main
from qa_scale.data.tokenization import load_tokenizer
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.ensemble import rules
from qa_scale.ensemble.combine import EnsembleError, ensemble, mean_logits
from qa_scale.ensemble.selection import METHOD, Pool, SelectionSettings, select_members
from qa_scale.ensemble.spec import load_recipe
from qa_scale.ensemble.weight_search import split_ids
from qa_scale.evaluation.decode import decode
from qa_scale.evaluation.metrics import evaluate
from qa_scale.inference import logits_store

HOLDOUT = 0.3


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    paths = sample_files(root, train_paragraphs=1, dev_paragraphs=20, seed=2)
    tok = load_tokenizer(paths["tok"])
    examples = data.load(paths["squad_dev"], "lenient").examples
    ws = build_windows(examples, tok, WindowConfig(max_seq_len=128, max_question_len=32, doc_overlap=32))
    return {"root": root, "examples": examples, "ws": ws, "path": paths["squad_dev"],
            "references": data.load_references(paths["squad_dev"])}


def logits(dev, gold: np.ndarray, wrong: np.ndarray, seed: int, scale: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Start/end logits: N(0, scale²) noise; the windows holding the answer get ``gold[w]`` on the gold
    start and end tokens and ``wrong[w]`` on a span of the same length elsewhere in the context."""
    ws = dev["ws"]
    rng = np.random.default_rng(seed)
    start, end = (scale * rng.standard_normal(ws.input_ids.shape).astype(np.float32) for _ in range(2))
    for w in np.flatnonzero(ws.start_positions != ws.cls_index):
        s, e = ws.start_positions[w], ws.end_positions[w]
        context = np.flatnonzero(ws.context_mask[w])
        other = context[0] if context[0] + (e - s) < s else e + 1  # before the answer, else right after it
        start[w, s] += gold[w]
        end[w, e] += gold[w]
        start[w, other] += wrong[w]
        end[w, other + (e - s)] += wrong[w]
    pad = np.arange(ws.input_ids.shape[1])[None, :] >= ws.lengths[:, None]
    start[pad] = end[pad] = -np.inf
    return start, end


def store(dev, name: str, arrays: tuple[np.ndarray, np.ndarray]) -> logits_store.Store:
    ws, examples, (start, end) = dev["ws"], dev["examples"], arrays
    return logits_store.write_store(dev["root"] / name, logits_store.StoreContent(
        ws, examples, start, end, decode(ws, start, end, examples, nbest=True),
        model={"path": str(dev["root"] / name / "model")}))


def windows_where(dev, ids) -> np.ndarray:
    ws = dev["ws"]
    return np.isin(np.asarray(ws.example_ids, dtype=object)[ws.example_index], np.asarray(list(ids), dtype=object))


@pytest.fixture(scope="module")
def pool(dev):
    """``left`` is sure of three examples in four and wrong on the fourth, ``right`` is sure of the odd
    examples and wrong on the even ones (so ``left`` is the best single member, and the two together are
    right everywhere), ``left_copy`` is ``left`` again, ``noise`` is pure N(0, 3²) noise."""
    ws = dev["ws"]
    n, q = len(ws), ws.example_index % 4

    def member(sure: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return logits(dev, np.where(sure, 3.0, 1.0), np.where(sure, 0.0, 1.5), seed)

    left = member(q != 3, seed=1)
    return {"left": store(dev, "left", left), "right": store(dev, "right", member(q % 2 == 1, seed=2)),
            "left_copy": store(dev, "left_copy", left),
            "noise": store(dev, "noise", logits(dev, np.zeros(n), np.zeros(n), seed=3, scale=3.0))}


def key(scores: dict, metric: str) -> tuple:
    return scores[metric], scores["f1" if metric == "em" else "em"]


@pytest.mark.parametrize("metric", ["f1", "em"])
def test_selection_leaves_noise_out_and_beats_uniform(dev, pool, metric):
    stores = [pool[n] for n in ("left", "right", "left_copy", "noise")]
    found = select_members(stores, dev["references"], SelectionSettings(holdout=HOLDOUT, metric=metric))
    assert found.found_by["method"] == METHOD and found.found_by["steps"][0]["added"] == "left"  # best single
    assert found.selected_counts[3] == 0 and "noise" not in found.found_by["selected_counts"]
    assert found.found_by["selected_weights"][3] == 0
    assert found.selected_counts[0] > 0 and found.selected_counts[1] > 0  # both halves
    search, held = found.scores["search"], found.scores["holdout"]
    assert key(search["selected"], metric) >= key(search["uniform"], metric)
    assert key(search["selected"], metric) >= max(key(m, metric) for m in search["members"].values())
    assert found.chosen == "selected" and found.counts == found.selected_counts
    assert found.weights == pytest.approx(np.array(found.counts) / sum(found.counts))
    assert found.weights[3] == 0 and held["selected"][metric] >= held["uniform"][metric]
    assert search["examples"] + held["examples"] == len(dev["examples"])


@pytest.mark.parametrize("rule", ["mean_logits", "mean_log_softmax"])
def test_the_predictions_scored_are_the_ensemblers_own(dev, pool, rule):
    stores = [pool[n] for n in ("left", "right", "noise")]
    found = select_members(stores, dev["references"], SelectionSettings(holdout=HOLDOUT, rule=rule))
    again = ensemble(stores, found.selected_counts, rule).decoded.predictions  # the streamed mean, from disk
    assert again == found.predictions
    search, _ = split_ids([i for i in stores[0].windows.example_ids if dev["references"].get(i)], HOLDOUT)
    s = evaluate(again, {i: dev["references"][i] for i in search})
    assert {"em": round(s.em, 4), "f1": round(s.f1, 4)} == found.scores["search"]["selected"]
    kept = found.found_by["steps"][found.found_by["kept_prefix"] - 1]["search"]
    assert kept == found.scores["search"]["selected"]  # the kept bag is the prefix the climb scored
    held = Pool(stores, rules.get(rule), stores[0].decode_config())
    for counts in ([2, 1, 0], [3, 1, 2], [0, 0, 5], [1, 1, 1]):  # weights of 1/3, 1/6, …: rounded like ensemble()'s
        for mine, streamed in zip(held.mean(counts), mean_logits(stores, counts, rule)):
            np.testing.assert_array_equal(mine, streamed)


def test_a_selection_that_overfits_the_search_split_falls_back_to_uniform(dev):
    ws = dev["ws"]
    answered = [i for i in ws.example_ids if dev["references"].get(i)]
    search, held_ids = split_ids(answered, HOLDOUT)
    held = windows_where(dev, held_ids)
    missed = windows_where(dev, search[::3])  # a third of the search split that "honest" gets wrong
    # "leaky" is sure and right on the search split and wrong on the held-out split; "honest" is right
    # everywhere but on a third of the search split. The climb keeps "leaky" alone (perfect on the search
    # split); the uniform mean is as good there and right on the held-out split.
    leaky = store(dev, "leaky", logits(dev, np.where(held, 0.0, 10.0), np.where(held, 2.0, 0.0), seed=4))
    honest = store(dev, "honest", logits(dev, np.where(missed, 0.0, 4.0), np.where(missed, 3.0, 0.0), seed=5))
    found = select_members([leaky, honest], dev["references"], SelectionSettings(holdout=HOLDOUT, metric="em"))
    search_s, holdout_s = found.scores["search"], found.scores["holdout"]
    assert found.selected_counts == [1, 0] and found.found_by["selected_weights"] == [1.0, 0.0]
    assert search_s["selected"]["em"] == 100 and search_s["members"]["honest"]["em"] < 80
    assert search_s["selected"]["em"] >= search_s["uniform"]["em"]  # passes the search split …
    assert holdout_s["selected"]["em"] < 10 < 90 < holdout_s["uniform"]["em"]  # … and overfits it
    assert found.chosen == "uniform" and found.weights == [0.5, 0.5] and found.counts == [1, 1]
    assert found.found_by["reason"] == "selected weights scored below uniform on the held-out split (em): overfit"
    assert found.found_by["stopped"].startswith("3 step(s) in a row")  # patience, before 2 × K = 4 steps


def test_a_selection_below_uniform_on_the_search_split_falls_back(dev, pool):
    stores = [pool[n] for n in ("left", "right")]  # one step: one half only; uniform has both
    found = select_members(stores, dev["references"], SelectionSettings(holdout=HOLDOUT, max_steps=1))
    assert found.selected_counts == [1, 0] and found.chosen == "uniform" and found.counts == [1, 1]
    assert found.found_by["reason"] == "selected weights scored below uniform on the search split (f1)"
    assert found.found_by["stopped"] == "max_steps (1) additions made"


def test_non_finite_logits_are_refused_naming_the_member(dev, pool):
    start, end = logits(dev, np.zeros(len(dev["ws"])), np.zeros(len(dev["ws"])), seed=6)
    start[3, 1] = np.nan
    broken = store(dev, "broken", (start, end))
    with pytest.raises(EnsembleError, match=r"broken \(member 2\): non-finite start_logits .* on 1 of"):
        select_members([pool["left"], broken], dev["references"])


def test_select_members_writes_a_recipe_that_ensemble_takes_back(dev, pool, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(dev["root"])  # recipes record paths relative to the working directory
    stores = [str(pool[n].path) for n in ("left", "right", "noise")]
    assert main(["ensemble", *stores, "--references", str(dev["path"]), "--select-members", "--out",
                 str(tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    recipe = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert summary["search"]["chosen"] == "selected" and summary["files"]["recipe"] == str(tmp_path / "out/recipe.yaml")
    assert recipe.weights == [float(c) for c in summary["search"]["bag"].values()] + [0.0]  # counts, noise 0
    assert recipe.found_by["method"] == METHOD and recipe.scores["search"]["selected"]
    assert summary["weights"] == pytest.approx(np.array(recipe.weights) / sum(recipe.weights))
    header = (tmp_path / "out" / "recipe.yaml").read_text("utf-8").splitlines()[0]
    assert header == "# Ensemble recipe written by `qa-scale ensemble --select-members` (see ensemble/README.md)."
    assert main(["ensemble", "--recipe", str(tmp_path / "out" / "recipe.yaml"), "--out", str(tmp_path / "again")]) == 0
    capsys.readouterr()
    for name in ("predictions.json", "nbest.json"):
        assert (tmp_path / "again" / name).read_text("utf-8") == (tmp_path / "out" / name).read_text("utf-8")
    assert main(["ensemble", *stores[:2], "--references", str(dev["path"]), "--select-members", "--select-steps",
                 "1", "--out", str(tmp_path / "one")]) == 0  # one step: "left" alone; uniform is better
    text = capsys.readouterr().out
    assert "ensemble selection kept the bag left×1 (counts over 1 additions)" in text
    assert "weights uniform: selected weights scored below uniform on the search split (f1)" in text


AT_MOST_ONE = "give at most one of --weights, --recipe, --search-weights and --select-members"


@pytest.mark.parametrize("flags, named", [
    (["--select-members", "--weights", "1,1"], AT_MOST_ONE),
    (["--select-members", "--search-weights"], AT_MOST_ONE),
    (["--select-members", "--recipe", "{recipe}"], AT_MOST_ONE),
    (["--select-members"], "--select-members needs --references"),
    (["--select-steps", "2"], "--select-steps applies to --select-members only"),
    (["--select-members", "--select-steps", "0", "--references", "{dev}"], "select_steps: must be ≥ 1, got 0"),
])
def test_contradicting_flags_exit_2_naming_them(dev, pool, tmp_path, capsys, flags, named):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"members: [{{store: {pool['left'].path}, weight: 1}}]\n", encoding="utf-8")
    flags = [f.format(dev=dev["path"], recipe=recipe) for f in flags]
    stores = [str(pool[n].path) for n in ("left", "right")]
    assert main(["ensemble", *stores, *flags, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qa-scale ensemble: error: ") and named in err
    assert "Traceback" not in err and not (tmp_path / "e").exists()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(st.sampled_from(["left", "right", "left_copy", "noise"]), min_size=1, max_size=4),
       max_steps=st.integers(1, 6), patience=st.integers(1, 3), metric=st.sampled_from(["em", "f1"]))
def test_weights_are_counts_over_their_total_and_the_climb_is_deterministic(dev, pool, members, max_steps,
                                                                             patience, metric):
    stores = [pool[n] for n in members]
    how = SelectionSettings(holdout=HOLDOUT, metric=metric, max_steps=max_steps, patience=patience)
    found, again = (select_members(stores, dev["references"], how) for _ in range(2))
    for result in (found, again):
        result.found_by.pop("date")
    assert found == again  # counts, weights, steps, scores, predictions
    w, counts = np.array(found.weights), np.array(found.counts)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0) and w == pytest.approx(counts / counts.sum())
    assert found.counts == (found.selected_counts if found.chosen == "selected" else [1] * len(stores))
    steps = found.found_by["steps"]
    assert sum(found.selected_counts) == found.found_by["kept_prefix"] <= len(steps) <= max_steps
    keys = [key(s["search"], metric) for s in steps]
    assert found.found_by["kept_prefix"] == keys.index(max(keys)) + 1  # the first best prefix
    if len(steps) < max_steps:  # stopped by patience: the last `patience` steps beat nothing before them
        assert len(steps) - found.found_by["kept_prefix"] == patience
