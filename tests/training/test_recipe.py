"""Recipes, overrides and the DeepSpeed "auto" resolver; every shipped recipe and config loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa_scale.training import ds_config
from qa_scale.training.ds_config import DSConfigError, resolve
from qa_scale.training.recipe import dump_recipe, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "launch" / "recipes").glob("*.yaml"))
DS_CONFIGS = sorted((ROOT / "ds_configs").glob("*.json"))
TINY = ["model.tokenizer=tok", "model.tiny={}", "data.train_file=t.json"]


def test_overrides_types_and_round_trip(tmp_path):
    cfg = load_recipe(None, TINY + ["optim.lr=2e-5", "data.windows.doc_step=15", "data.windows.max_context_len=150",
                                    "run.length_grouping=false", "optim.layer_lr_decay=0.9"])
    assert cfg.optim.lr == 2e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.data.windows.doc_step == 15 and cfg.data.windows.doc_overlap is None
    assert cfg.run.length_grouping is False and cfg.optim.layer_lr_decay == 0.9
    (tmp_path / "r.yaml").write_text(dump_recipe(cfg), encoding="utf-8")
    assert load_recipe(tmp_path / "r.yaml") == cfg


@pytest.mark.parametrize("overrides,message", [
    (["optim.lrr=1"], "unknown key optim.lrr; did you mean optim.lr"),
    (["optim.lr=fast"], "optim.lr: expected float"),
    (["run.precision=fp8"], "run.precision: must be one of"),
    (["optim.global_batch_size=30", "optim.micro_batch_size=8"], "not a multiple"),
    (["data.windows.doc_step=8", "data.windows.doc_overlap=8"], "not both"),
    (["optim.layer_lr_decay=1.5"], "layer_lr_decay"),
    (["optim"], "not of the form"),
])
def test_bad_recipes_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(None, TINY + overrides)


def test_model_is_required():
    with pytest.raises(ValueError, match="model.name_or_path"):
        load_recipe(None, ["data.train_file=t.json"])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_its_ds_config_resolves(recipe):
    cfg = load_recipe(recipe)
    ds = resolve(ROOT / cfg.run.deepspeed, cfg, world_size=1, hidden_size=64)
    assert ds["train_batch_size"] == cfg.optim.global_batch_size


def base(**kw):
    return load_recipe(None, TINY + [f"{k}={v}" for k, v in kw.items()])


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_every_ds_config_fills_all_autos(path):
    precision = "fp16" if "fp16" in path.name else "bf16"
    cfg = base(**{"run.precision": precision, "optim.micro_batch_size": 4, "optim.global_batch_size": 32,
                  "optim.grad_clip": 0.5})
    ds = resolve(path, cfg, world_size=2, hidden_size=64)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 4, 32)
    assert ds["gradient_clipping"] == 0.5 and ds[precision]["enabled"] is True
    assert "auto" not in json.dumps(ds)
    if "reduce_bucket_size" in ds["zero_optimization"]:  # h*h, but never tiny buckets for small models
        assert ds["zero_optimization"]["reduce_bucket_size"] == 1 << 20
        big = resolve(path, cfg, world_size=2, hidden_size=2048)["zero_optimization"]
        assert big["reduce_bucket_size"] == 2048 * 2048
    if ds["zero_optimization"]["stage"] == 3:
        assert ds["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)


def test_explicit_value_that_disagrees_is_an_error():
    template = json.loads((ROOT / "ds_configs" / "zero2_bf16.json").read_text())
    template["train_micro_batch_size_per_gpu"] = 16
    with pytest.raises(DSConfigError, match="train_micro_batch_size_per_gpu is 16 .* recipe gives 8"):
        resolve(template, base(), world_size=1, hidden_size=64)
    template["train_micro_batch_size_per_gpu"] = 8  # agreeing explicit values are fine
    assert resolve(template, base(), world_size=1, hidden_size=64)["train_micro_batch_size_per_gpu"] == 8


def test_precision_and_blocks_must_agree():
    with pytest.raises(DSConfigError, match="no 'fp16' block"):
        resolve(ROOT / "ds_configs" / "zero2_bf16.json", base(**{"run.precision": "fp16"}), 1, 64)
    ds = resolve(ROOT / "ds_configs" / "zero2_bf16.json", base(**{"run.precision": "fp32"}), 1, 64)
    assert ds["bf16"]["enabled"] is False
    with pytest.raises(DSConfigError, match="'optimizer' block"):
        resolve({"optimizer": {"type": "Adam"}}, base(), 1, 64)
    with pytest.raises(DSConfigError, match="not divisible"):
        ds_config.batch_plan(base(**{"optim.micro_batch_size": 8, "optim.global_batch_size": 32}), 3)
    with pytest.raises(DSConfigError, match="no rule fills zero_optimization.foo"):
        resolve({"bf16": {}, "zero_optimization": {"stage": 2, "foo": "auto"}}, base(), 1, 64)


def test_shipped_ds_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # recipes say ds_configs/…; the shipped file is found from here too
    assert resolve("ds_configs/zero3_bf16.json", base(), world_size=1, hidden_size=64)["zero_optimization"]["stage"] == 3
    with pytest.raises(DSConfigError, match="not found: ds_configs/zero9.json .*zero2_bf16.json"):
        resolve("ds_configs/zero9.json", base(), world_size=1, hidden_size=64)
    (tmp_path / "ds_configs").mkdir()  # a file of that name here wins over the shipped one
    (tmp_path / "ds_configs" / "zero3_bf16.json").write_text(json.dumps({"bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 1}}))
    assert resolve("ds_configs/zero3_bf16.json", base(), world_size=1, hidden_size=64)["zero_optimization"]["stage"] == 1


@pytest.mark.slow
def test_the_wheel_ships_the_deepspeed_templates(tmp_path):
    """An installed package (not a source checkout) finds ds_configs/ as package data."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "project"  # a copy: a stale build/ folder in the checkout cannot answer for the wheel
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("qa_scale-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"qa_scale/ds_configs/{p.name}" for p in (ROOT / "ds_configs").glob("*.json")}
    assert shipped and shipped <= names
    assert ds_config.SHIPPED.name == "ds_configs" and ds_config.SHIPPED.parent.name == "qa_scale"


@pytest.mark.parametrize("override,message", [
    ("optim.lr=.nan", "optim.lr: must be a finite number"),
    ("optim.lr=.inf", "optim.lr: must be a finite number"),
    ("optim.epochs=.inf", "optim.epochs: must be a finite number"),
    ("optim.grad_clip=-1", "optim.grad_clip: must be ≥ 0"),
    ("optim.weight_decay=.nan", "optim.weight_decay: must be a finite number"),
    ("run.seed=true", "run.seed: expected int"),
    ("optim.micro_batch_size=true", "optim.micro_batch_size: expected int"),
    ("data.max_train_examples=-1", "data.max_train_examples: must be ≥ 1"),
    ("run.stop_after=-3", "run.stop_after: must be ≥ 1"),
    ("optim.max_steps=0", "optim.max_steps: must be ≥ 1"),
    ("optim.max_steps=-5", "optim.max_steps: must be ≥ 1"),
    ("optim.max_steps=2.5", "optim.max_steps: expected int"),
    ("model.tiny=5", "model.tiny: expected a mapping"),
    ("run.output_dir=", "run.output_dir is empty"),
    ("optim.adam_beta2=1.0", "optim.adam_beta2: must be < 1"),
    ("data.windows.max_seq_len=.inf", "data.windows.max_seq_len: expected int"),
    ("decode.max_answer_len=0", "decode.max_answer_len: must be ≥ 1"),
    ("lora.dropout=1", "lora.dropout: must be < 1"),
    ("optim.micro_batch_size=big", "optim.micro_batch_size: expected int"),
])
def test_every_field_is_checked_for_type_and_range(override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(None, TINY + [override])


@pytest.mark.parametrize("world,max_micro,global_batch,plan", [
    (1, 32, 32, (32, 1, 32)), (8, 32, 32, (4, 1, 32)), (1, 8, 32, (8, 4, 32)), (2, 32, 24, (12, 1, 24)),
    (1, 5, 24, (4, 6, 24)),
])
def test_auto_micro_batch_fits_the_world(world, max_micro, global_batch, plan):
    cfg = base(**{"optim.micro_batch_size": "auto", "optim.max_micro_batch_size": max_micro,
                  "optim.global_batch_size": global_batch})
    assert ds_config.batch_plan(cfg, world) == plan
    with pytest.raises(DSConfigError, match="not divisible by 5 ranks"):
        ds_config.batch_plan(cfg, 5)


def test_bucket_rules_scale_with_the_model():
    rules = ds_config.ZERO_RULES
    assert rules["reduce_bucket_size"](64, 600_000) == 1 << 20  # a tiny model: one bucket
    assert rules["reduce_bucket_size"](1024, 324_473_346) == 324_473_346 // 8  # MacBERT-large: 8 buckets
    assert rules["reduce_bucket_size"](8192, 10**11) == 500_000_000  # never above DeepSpeed's default
    assert rules["stage3_prefetch_bucket_size"](1024, 324_473_346) == 324_473_346 // 16
    assert rules["stage3_prefetch_bucket_size"](64, 0) == int(0.9 * 64 * 64)


# ---------------------------------------------------------------- "auto" lengths (resolve_auto)
import yaml  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qa_scale.data import Answer, Example  # noqa: E402
from qa_scale.data.windows import WindowConfig  # noqa: E402
from qa_scale.training.auto_lengths import (  # noqa: E402
    AUTO_PERCENTILE,
    MIN_AUTO_ANSWER_LEN,
    MIN_AUTO_QUESTION_LEN,
    auto_max_answer_len,
    auto_max_question_len,
    resolve_auto,
    unresolved_auto,
)

AUTO = TINY + ["decode.max_answer_len=auto", "data.windows.max_question_len=auto"]
lengths_st = st.lists(st.integers(1, 700), min_size=1, max_size=3000)
windows_st = st.builds(lambda seq, overlap: WindowConfig(max_seq_len=seq, doc_overlap=min(overlap, seq // 3)),
                       st.integers(16, 1024), st.integers(0, 256))


@settings(max_examples=200, deadline=None)
@given(lengths_st, windows_st)
def test_auto_answer_limit_covers_the_percentile_and_keeps_the_floor(lengths, windows):
    choice = auto_max_answer_len(lengths, windows, n_special=3)
    value, cap = choice["value"], windows.max_seq_len - 3
    covered = sum(n <= value for n in lengths) / len(lengths)
    assert choice["cap"] == cap and value <= cap
    assert value >= min(MIN_AUTO_ANSWER_LEN, cap)
    assert value == cap or covered >= AUTO_PERCENTILE / 100  # capped only by what a window can hold
    assert choice["covered_percent"] == pytest.approx(100 * covered)
    # the smallest such limit: one token less leaves more than 0.1% out (unless the floor set it)
    below = sum(n <= value - 1 for n in lengths) / len(lengths)
    assert value in (MIN_AUTO_ANSWER_LEN, cap) or below < AUTO_PERCENTILE / 100


@settings(max_examples=200, deadline=None)
@given(lengths_st, windows_st)
def test_auto_question_limit_covers_the_percentile_and_leaves_room_for_context(lengths, windows):
    choice = auto_max_question_len(lengths, windows, n_special=3)
    value = choice["value"]
    room = windows.max_seq_len - 3
    assert value <= choice["cap"] and room - value >= room / 2  # half the window (at least) stays context
    assert value >= min(MIN_AUTO_QUESTION_LEN, choice["cap"])
    covered = sum(n <= value for n in lengths) / len(lengths)
    assert value == choice["cap"] or covered >= AUTO_PERCENTILE / 100
    from dataclasses import replace
    replace(windows, max_question_len=value).check(3)  # the resolved windows are valid


def examples_with(answer_lengths: list[int], question: str = "问？") -> list[Example]:
    ctx = "北京是中国的首都，上海是中国最大的城市。北京有故宫和长城。" * 4  # one token per character
    return [Example(str(i), question, ctx, (Answer(ctx[3:3 + n], 3),)) for i, n in enumerate(answer_lengths)]


def test_resolve_auto_fills_numbers_once_and_they_are_saved(char_tokenizer, tmp_path):
    cfg = load_recipe(None, AUTO + ["data.windows.max_seq_len=128", "data.windows.doc_overlap=16"])
    assert unresolved_auto(cfg) == ["data.windows.max_question_len", "decode.max_answer_len"]
    with pytest.raises(ValueError, match="max_question_len is still 'auto'"):
        cfg.data.windows.check(3)
    exs = examples_with([5] * 997 + [40, 45, 50], question="张伟于1987年出生在哪个城市？" * 6)  # 96 question tokens
    out, how = resolve_auto(cfg, exs, char_tokenizer)
    # 99.9th percentile of 1000 answers: the 999th smallest = 45 tokens; questions: 96 → capped at 128 - 3 - 63 (half of 125, rounded up) = 62
    assert (out.decode.max_answer_len, out.data.windows.max_question_len) == (45, 62)
    assert how["decode.max_answer_len"]["covered_percent"] == 99.9 and how["data.windows.max_question_len"]["cap"] == 62
    assert unresolved_auto(out) == [] and cfg.decode.max_answer_len == "auto"  # the recipe itself is not changed
    saved = dump_recipe(out)
    assert yaml.safe_load(saved)["decode"]["max_answer_len"] == 45
    assert yaml.safe_load(saved)["data"]["windows"]["max_question_len"] == 62
    (tmp_path / "config.yaml").write_text(saved, encoding="utf-8")
    again = load_recipe(tmp_path / "config.yaml")
    assert again == out and resolve_auto(again, exs, char_tokenizer) == (again, {})  # numbers stay numbers
    short, _ = resolve_auto(cfg, examples_with([2, 3, 4]), char_tokenizer)
    assert (short.decode.max_answer_len, short.data.windows.max_question_len) == (MIN_AUTO_ANSWER_LEN, 62)


def test_auto_is_only_a_word_for_the_length_keys():
    assert base(**{"decode.max_answer_len": 40}).decode.max_answer_len == 40
    with pytest.raises(ValueError, match="decode.max_answer_len: expected int"):
        base(**{"decode.max_answer_len": "long"})
    with pytest.raises(ValueError, match="data.windows.max_seq_len: expected int"):
        base(**{"data.windows.max_seq_len": "auto"})


CMRC_RECIPES = [p for p in RECIPES if "cmrc" in p.name]


@pytest.mark.parametrize("recipe", CMRC_RECIPES, ids=lambda p: p.name)
def test_cmrc_recipes_resolve_auto_on_the_real_data(recipe, shared_data, bert_tokenizer):
    """CMRC 2018 train is not here: its dev set stands in for the training answers."""
    from qa_scale import data
    cfg = load_recipe(recipe)
    assert unresolved_auto(cfg) == ["data.windows.max_question_len", "decode.max_answer_len"]
    out, how = resolve_auto(cfg, data.load(shared_data / "cmrc2018_dev.json", "lenient").examples, bert_tokenizer)
    assert (out.decode.max_answer_len, out.data.windows.max_question_len) == (71, 64)
    assert how["decode.max_answer_len"]["lengths"] == {"count": 3219, "p50": 6, "p90": 23, "p99": 50, "p99.9": 71,
                                                       "max": 85}
