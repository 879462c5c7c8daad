"""`qa-scale train --help` lists every recipe key with its default, range and help, without torch."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

HEAVY = ("torch", "transformers", "datasets", "deepspeed", "fastapi", "peft")
SIGNS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
KEY_LINE = re.compile(r"^ {4}(?P<key>[a-z_][a-z0-9_.]*) = (?P<default>.*?)(?: {2,}(?P<help>.*))?$")


def leaves(cls: type, prefix: str = "") -> dict[str, tuple[dataclasses.Field, typing.Any]]:
    """Every leaf key of a recipe, walked here from the dataclasses (not from the renderer's walk)."""
    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(leaves(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (f, hints[f.name])
    return out


def default_of(f: dataclasses.Field) -> typing.Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def train_help(columns: int) -> str:
    script = Path(sys.executable).with_name("qa-scale")
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([str(script), "train", "--help"], capture_output=True, text=True, check=True, env=env).stdout


def blocks(text: str) -> dict[str, tuple[str, str]]:
    """key → (default as printed, help as one line), from the epilog's key lines and their continuations."""
    out, key = {}, None
    epilog = text.split("recipe keys (", 1)[1]
    for line in epilog.splitlines()[1:]:
        match = KEY_LINE.match(line)
        if match:
            key = match["key"]
            assert key not in out, f"{key} listed twice"
            out[key] = (match["default"], match["help"] or "")
        elif line.startswith(" " * 5) and key:  # a continuation of the help of the key above
            out[key] = (out[key][0], f"{out[key][1]} {line.strip()}".strip())
        else:  # a section heading
            assert re.match(r"^  \S", line), line
            key = None
    return out


@pytest.fixture(scope="module", params=[80, 200])
def listed(request):
    return blocks(train_help(request.param))


@pytest.fixture(scope="module")
def recipe_leaves():
    from qa_scale.training.recipe import TrainConfig

    return leaves(TrainConfig)


def test_every_key_is_listed_once_with_its_default(listed, recipe_leaves):
    assert sorted(listed) == sorted(recipe_leaves)
    for key, (f, annotation) in recipe_leaves.items():
        printed, default = listed[key][0], default_of(f)
        value = yaml.safe_load(printed)
        if isinstance(default, float) and isinstance(value, str):  # YAML 1.1 reads 3e-05 as text; the recipe as a number
            value = float(value)
        assert value == default and type(value) is type(default), f"{key}: printed {printed!r}, default {default!r}"


def test_every_help_range_and_choice_is_shown(listed, recipe_leaves):
    from qa_scale.common.settings import literals

    for key, (f, annotation) in recipe_leaves.items():
        shown = " ".join(listed[key][1].split())
        assert " ".join(f.metadata["help"].split()) in shown, f"{key}: help missing in {shown!r}"
        for bound, sign in SIGNS.items():
            if bound in f.metadata:
                assert f"{sign} {f.metadata[bound]}" in shown, f"{key}: range {bound} missing in {shown!r}"
        for choice in literals(annotation):
            assert re.search(rf"(one of: |or |, ){re.escape(str(choice))}\b", shown), f"{key}: choice {choice!r}"


def test_spot_checks():
    text = train_help(80)
    listed = blocks(text)
    assert listed["optim.lr"] == ("3e-05", "peak learning rate (> 0)")
    assert listed["optim.warmup_ratio"][1].endswith("(≥ 0, < 1)")
    assert listed["run.timeout_minutes"][0] == "60.0" and listed["run.timeout_minutes"][1].endswith("(≥ 1)")
    assert listed["optim.micro_batch_size"][1].endswith("(≥ 1, or auto)")
    assert listed["run.precision"] == ("bf16", "training precision; the DeepSpeed config must agree "
                                               "(one of: bf16, fp16, fp32)")
    assert listed["lora.modules_to_save"][0] == "[]" and listed["model.tiny"][0] == "null"
    assert listed["run.export"][0] == "true" and listed["data.windows.mark_matches"][0] == "false"
    for heading in ("  (top level):", "  model:", "  lora: LoRA settings (mode: lora)", "  data:",
                    "  data.windows: window settings", "  optim:", "  run:", "  decode:"):
        assert f"\n{heading}" in text, heading
    assert text.index("  data:") < text.index("    data.train_file") < text.index("  data.windows:") \
        < text.index("    data.windows.doc_step") < text.index("  optim:")
    assert max(len(line) for line in text.split("\nrecipe keys (", 1)[1].splitlines()) <= 78  # COLUMNS - 2


def test_printed_defaults_are_valid_overrides(recipe_leaves):
    """Each `KEY = VALUE` line, given back as KEY=VALUE, rebuilds the default recipe."""
    from qa_scale.training.recipe import ModelSection, TrainConfig, load_recipe

    listed = blocks(train_help(200))
    overrides = [f"{key}={listed[key][0]}" for key in recipe_leaves] + ["model.name_or_path=some/model"]
    assert load_recipe(None, overrides) == TrainConfig(model=ModelSection(name_or_path="some/model"))


def test_help_imports_no_torch_and_a_run_no_recipe():
    code = ("import contextlib, io, sys\n"
            "from qa_scale.cli import build_parser, main\n"
            "build_parser().parse_args(['train', 'optim.lr=1e-4'])\n"
            "print('qa_scale.training.recipe' in sys.modules)\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n"
            "        main(['train', '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print('optim.lr = 3e-05' in out.getvalue())\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["False", "True", "[]"], out
