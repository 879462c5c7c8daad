"""The project's own contract, checked generically: nothing lost, nothing silent, by construction.

Every command of ``qa_scale.cli.COMMANDS`` is run from one valid invocation (``BASE``, the only
per-command knowledge here), and Hypothesis then breaks that invocation — one input file or folder
made bad (random bytes, GBK text, a BOM, truncation at a random byte, random line edits, a JSON/YAML
document mutated at a random place: other types, deleted keys, lone surrogates, 5000-digit numbers,
NaN/Infinity, 100k-deep nesting, repeated keys, random JSON values; empty, a folder, missing) or one
output path made hostile (an existing file, the command's own input, inside an input, a folder holding
the inputs, a foreign folder, our folder of another kind, under a regular file, under ``/proc``,
another output of the same command). Which argument values are inputs and which outputs comes from
the parser's ``_qa_io`` declarations (``cli.common.input_arg`` / ``output_*``) and, for values given
inside recipes or overrides, from the invocation itself (a path that exists is read, one that does not
is written).

Invariants, for every case:

- the exit status is 0 or 2 (130/143 for an interrupt), and no exception escapes (no traceback);
- exit 2 names what is wrong: the broken file (or a folder holding it), the output path, or the flag;
- no input's bytes change;
- every output is either as it was before (absent, or the same bytes) or complete (it parses);
- no staging file or folder (``.*.qa-scale-stage``, ``.*.tmp``, ``.*.qa-scale-old``) is left behind;
- hostile outputs that can never be right (an input, inside or around an input, a foreign folder, a
  path that cannot be created) are refused with exit 2 before any work;
- a BOM in front of a UTF-8 text input changes nothing.

Commands that would train or serve (``TRIPWIRES``) stop with ``Started`` where the expensive work
begins: reaching it counts as "accepted" (no outputs checked, since none are meant to exist yet).

On a failure Hypothesis prints the falsifying case and a ``@reproduce_failure`` blob (``print_blob``);
``QA_CONTRACT_EXAMPLES=N`` runs more (or fewer) cases per command; ``QA_CONTRACT_SHRINK=1`` lets
Hypothesis shrink a failure to a smaller one (slower).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from qa_scale.cli import COMMANDS, build_parser, main
from qa_scale.cli.app import parse_arguments
from reader_runs import store_world

WINDOWS = ["--max-seq-len", "64", "--max-question-len", "16", "--doc-overlap", "16"]
EXAMPLES = int(os.environ.get("QA_CONTRACT_EXAMPLES", "15"))
CASE_SECONDS = 30  # one in-process run (the valid ones take < 3 s); more is a hang
MARKER = ".qa-scale-output.json"
STAGING = re.compile(r"^\..*\.(qa-scale-stage|tmp|qa-scale-old)$")
TEXT_SUFFIXES = {".json", ".jsonl", ".yaml", ".yml", ".txt", ".csv"}

PHASES = [Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get("QA_CONTRACT_SHRINK") else [])
CONTRACT = settings(max_examples=EXAMPLES, deadline=None, print_blob=True, database=None, phases=PHASES,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# ---------------------------------------------------------------- the valid invocations
#
# ``{name}`` is an input of the world (copied into the case's folder ``in/``; an ensemble or train
# recipe is written there naming the case's own copies); ``{@name}`` an output path in ``out/``.

BASE: dict[str, list[list[str]]] = {
    "check-data": [["check-data", "{squad_dev}", "--tokenizer", "{tok}", *WINDOWS, "--json", "--out", "{@check.json}"]],
    "windows": [["windows", "{hw7_dev}", "--tokenizer", "{tok}", *WINDOWS, "--out", "{@windows}"]],
    "evaluate": [["evaluate", "{squad_dev}", "{dev_preds.json}", "--errors", "{@errors.jsonl}", "--out",
                  "{@scores.json}"],
                 ["evaluate", "{hw7_dev}", "{hw7_dev_preds.csv}", "--json"]],
    "submit": [["submit", "{hw7_test}", "{hw7_test_preds.json}", "--out", "{@submission.csv}"],
               ["submit", "{squad_test}", "{squad_test_preds.json}", "--out", "{@submission.json}"]],
    "vocab": [["vocab", "{corpus}", "{vocab_extra.txt}", "--out", "{@vocab}", "--vocab-size", "600"]],
    "sample-data": [["sample-data", "--out", "{@sample}", "--train-paragraphs", "1", "--dev-paragraphs", "1",
                     "--test-paragraphs", "1"]],
    "predict": [["predict", "{model}", "{squad_dev}", "--out", "{@store}", "--device", "cpu", "--references",
                 "{squad_dev}", "--json"],
                ["predict", "{model}", "{hw7_test}", "--tokenizer", "{tok}", "--out", "{@store}", "--device", "cpu"]],
    "ensemble": [["ensemble", "{s1}", "{s2}", "--references", "{squad_dev}", "--out", "{@ensemble}", "--json"],
                 ["ensemble", "--recipe", "{ensemble_recipe.yaml}", "--no-nbest", "--out", "{@ensemble}"],
                 ["ensemble", "{s1}", "{s2}", "--search-weights", "--references", "{squad_dev}", "--out",
                  "{@ensemble}", "--recipe-out", "{@searched.yaml}"],
                 ["ensemble", "{s1}", "{s2}", "--select-members", "--select-steps", "3", "--references",
                  "{squad_dev}", "--out", "{@ensemble}"]],
    "answer": [["answer", "{model}", "--device", "cpu", "--input", "{questions.jsonl}", "--output",
                "{@answers.jsonl}", "--nbest"],
               ["answer", "{model}", "--device", "cpu", "--context-file", "{context.txt}", "--question", "首都是哪里？",
                "--json"],
               ["answer", "--recipe", "{answer_recipe.yaml}", "--device", "cpu", "--context-file", "{context.txt}",
                "--question", "首都是哪里？"]],
    "serve": [["serve", "{model}", "--device", "cpu", "--port", "8765"],
              ["serve", "--recipe", "{answer_recipe.yaml}", "--device", "cpu", "--port", "8765"]],
    "lora-params": [["lora-params", "--model", "{model}", "--json"]],
    "train": [["train", "{train_recipe.yaml}", "run.output_dir={@run}"]],
    "distill": [["distill", "{train_recipe.yaml}", "run.output_dir={@run}", "--store", "{s1}", "--store", "{s2}"],
                ["distill", "{train_recipe.yaml}", "run.output_dir={@run}", "--store", "{s1}", "--store", "{s2}",
                 "--teacher", "{ensemble_recipe.yaml}"]],
    "backbone": [["backbone", "{corpus}", "--out", "{@backbone}", "--steps", "1", "--layers", "1",
                  "--hidden-size", "32", "--heads", "2"]],
    "demo": [["demo", "--out", "{@demo}"]],
    "compare": [["compare", "{compare_recipe.yaml}", "--out", "{@compare}"],
                ["compare", "--collect", "{full_run}", "{lora_run}", "--bootstrap", "50", "--out", "{@compare}"]],
}


class Started(BaseException):
    """Raised where a command's expensive work begins (training, serving): the case was accepted."""


TRIPWIRES = {  # command → (module, attribute) replaced by a function raising Started
    "train": ("qa_scale.runtime.distributed", "init"),
    "distill": ("qa_scale.runtime.distributed", "init"),
    "backbone": ("qa_scale.runtime.distributed", "init"),
    "demo": ("qa_scale.workflows.demo", "_data_stage"),
    "compare": ("qa_scale.workflows.compare", "run_pair"),  # not reached with --collect
    "serve": ("qa_scale.serving.app", "serve"),
}


# ---------------------------------------------------------------- the world: valid inputs, built once


@dataclass
class World:
    root: Path
    files: dict[str, Path]  # name → file or folder to copy
    roots: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (folder copied, path inside it)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """Sample data, a tokenizer, a tiny model run folder, two dev stores, predictions and side files."""
    from qa_scale import data
    from qa_scale.training.recipe import dump_recipe, load_recipe

    made = store_world(tmp_path_factory.mktemp("contract"))
    root, paths, dev = made["root"], made["paths"], made["dev"]
    side = root / "side"
    side.mkdir()

    def put(name: str, text: str) -> Path:
        (side / name).write_text(text, encoding="utf-8")
        return side / name

    dev_refs = data.load_references(paths["squad_dev"])
    hw7_refs = data.load_references(paths["hw7_dev"])
    files = {k: v for k, v in paths.items()}
    files.update({
        "tok": root / "tok", "s1": root / "s1", "s2": root / "s2", "run": root / "run",
        "dev_preds.json": put("dev_preds.json", json.dumps({q: "北京" for q in dev_refs}, ensure_ascii=False)),
        "hw7_dev_preds.csv": put("hw7_dev_preds.csv", "ID,Answer\r\n" + "".join(f"{q},北京\r\n" for q in hw7_refs)),
        "hw7_test_preds.json": put("hw7_test_preds.json", json.dumps(
            {q: "上海" for q in data.load_references(paths["hw7_test"], skip_bad=True)}, ensure_ascii=False)),
        "squad_test_preds.json": put("squad_test_preds.json", json.dumps(
            {q: "上海" for q in data.load_references(paths["squad_test"], skip_bad=True)}, ensure_ascii=False)),
        "vocab_extra.txt": put("vocab_extra.txt", "北京是中国的首都。\n上海是最大的城市。\n"),
        "questions.jsonl": put("questions.jsonl", "".join(json.dumps(
            {"id": f"a{i}", "context": ex.context, "question": ex.question}, ensure_ascii=False) + "\n"
            for i, ex in enumerate(dev[:3]))),
        "context.txt": put("context.txt", dev[0].context),
    })
    for mode in ("full", "lora"):  # two finished runs as `train` leaves them, for `compare --collect`
        run = root / f"{mode}_run"
        run.mkdir()
        (run / "config.yaml").write_text(dump_recipe(load_recipe(None, [
            f"mode={mode}", "model.tiny={}", f"model.tokenizer={root / 'tok'}", f"data.train_file={paths['squad_train']}",
            f"data.dev_file={paths['squad_dev']}"])), encoding="utf-8")
        (run / "summary.json").write_text(json.dumps({
            "finished": True, "steps": 3, "total_steps": 3, "precision": "fp32", "world_size": 1,
            "parameters": {"trainable": 10 if mode == "lora" else 100, "total": 100,
                           "trainable_percent": 10.0 if mode == "lora" else 100.0},
            "peak_memory": {"bytes": 1000, "kind": "cpu rss"}, "samples_per_s": 5.0, "train_seconds": 1.5}))
        (run / "dev_predictions.json").write_text(json.dumps(
            {q: "北京" if mode == "full" else "上海" for q in dev_refs}, ensure_ascii=False), encoding="utf-8")
        files[f"{mode}_run"] = run
    return World(root, files, roots={"model": ("run", "model")})


class Case:
    """One invocation in its own folder: inputs copied into ``in/``, outputs named in ``out/``."""

    def __init__(self, world: World, template: list[str], folder: Path):
        self.world, self.dir = world, folder
        self.inputs: dict[str, Path] = {}  # name → the path given to the command
        self.input_roots: dict[str, Path] = {}  # name → the copied file or folder (its whole tree is an input)
        self.outputs: dict[str, Path] = {}
        (folder / "in").mkdir(parents=True)
        (folder / "out").mkdir()
        self.argv = [self._fill(token) for token in template]
        self.command = self.argv[0]

    def _fill(self, token: str) -> str:
        return re.sub(r"\{(@?)([^{}]+)\}", lambda m: str(self.output(m[2]) if m[1] else self.input(m[2])), token)

    def output(self, name: str) -> Path:
        return self.outputs.setdefault(name, self.dir / "out" / name)

    def input(self, name: str) -> Path:
        if name in self.inputs:
            return self.inputs[name]
        root_name, inner = self.world.roots.get(name, (name, ""))
        target = self.dir / "in" / root_name
        if name == "ensemble_recipe.yaml":
            target.write_text(yaml.safe_dump({"members": [{"store": str(self.input("s1")), "weight": 1.0},
                                                          {"store": str(self.input("s2")), "weight": 2.0}]}))
        elif name == "answer_recipe.yaml":
            target.write_text(yaml.safe_dump({"members": [{"model": str(self.input("model")), "weight": 1.0}]}))
        elif name in ("train_recipe.yaml", "compare_recipe.yaml"):
            target.write_text(yaml.safe_dump({
                "model": {"tiny": {}, "tokenizer": str(self.input("tok"))},
                "data": {"train_file": str(self.input("squad_train")), "dev_file": str(self.input("squad_dev")),
                         "windows": {"max_seq_len": 64, "max_question_len": 16, "doc_overlap": 16}},
                "optim": {"max_steps": 1}}, allow_unicode=True))
        else:
            source = self.world.files[root_name]
            (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
        self.input_roots[name] = target
        self.inputs[name] = target / inner if inner else target
        return self.inputs[name]

    # ------------------------------------------------------------ observing

    def input_hashes(self) -> dict[str, str]:
        out = {}
        for root in self.input_roots.values():
            for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
                if path.is_file() and not path.is_symlink():
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                elif path.exists():
                    out[str(path)] = "folder" if path.is_dir() else "other"
        return out

    def snapshot(self, path: Path) -> dict[str, bytes] | None:
        if not path.exists():
            return None
        if path.is_file():
            return {"": path.read_bytes()}
        return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>" for p in path.rglob("*")}


def declared(command: str) -> dict[str, str]:
    """``_qa_io`` of the command's parser: dest → "input" | "file" | "folder:KIND" | "workdir:KIND"."""
    return dict(subparser(command).get_default("_qa_io") or {})


_PARSER: argparse.ArgumentParser | None = None


def subparser(command: str) -> argparse.ArgumentParser:
    global _PARSER
    _PARSER = _PARSER or build_parser()
    action = next(a for a in _PARSER._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def flag_of(command: str, dest: str) -> str:
    for action in subparser(command)._actions:
        if action.dest == dest:
            return action.option_strings[0] if action.option_strings else action.metavar or dest
    return dest


def output_flags(case: Case) -> dict[str, str]:
    """Output name → the flag (or ``key=``) that names it in the invocation."""
    return flags_of(case, case.outputs)


def flags_of(case: Case, paths: dict[str, Path]) -> dict[str, str]:
    """Name → the flag (``--out``, a positional's name, or ``key`` of ``key=PATH``) that gives its path."""
    spec = subparser(case.command)
    ns = parse_arguments(spec, case.argv[1:])  # as `qa-scale` parses: overrides may follow options
    found = {}
    for name, path in paths.items():
        for dest, value in vars(ns).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(str(v) == str(path) for v in values):
                found[name] = flag_of(case.command, dest)
            elif any(isinstance(v, str) and v.endswith(f"={path}") for v in values):
                found[name] = next(v for v in values if isinstance(v, str) and v.endswith(f"={path}")).split("=")[0]
    return found


def output_kind(case: Case, name: str) -> str:
    """"file", "folder" or "workdir": declared, else from the name (a suffix: a file)."""
    flag = output_flags(case).get(name)
    for dest, how in declared(case.command).items():
        if flag is not None and flag_of(case.command, dest) == flag and how != "input":
            return how.split(":")[0]
    if case.command in ("train", "distill", "backbone", "demo", "compare"):
        return "workdir"
    return "file" if Path(name).suffix else "folder"


# ---------------------------------------------------------------- running one case


@dataclass
class Result:
    code: int | None
    out: str
    err: str
    started: bool = False
    crash: str | None = None


@contextlib.contextmanager
def tripwire(command: str):
    if command not in TRIPWIRES:
        yield
        return
    import importlib

    module, attr = TRIPWIRES[command]
    mod = importlib.import_module(module)
    old = getattr(mod, attr)

    def stop(*_a, **_k):
        raise Started(f"{command}: {module}.{attr} reached")

    setattr(mod, attr, stop)
    try:
        yield
    finally:
        setattr(mod, attr, old)


class Hung(BaseException):
    pass


def run_case(case: Case, capsys) -> Result:
    capsys.readouterr()

    def alarm(*_):
        raise Hung(f"no answer in {CASE_SECONDS} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    cwd = os.getcwd()
    os.chdir(case.dir)  # relative leftovers (./demo…) land in the case
    try:
        with tripwire(case.command):
            code = main(case.argv)
        result = Result(code, *capsys.readouterr())
    except Started:
        result = Result(0, *capsys.readouterr(), started=True)
    except SystemExit as exc:  # argparse: a usage error is exit 2 too
        result = Result(exc.code if isinstance(exc.code, int) else 2, *capsys.readouterr())
    except BaseException:  # noqa: BLE001 - a traceback is exactly what the contract forbids
        out, err = capsys.readouterr()
        result = Result(None, out, err, crash=traceback.format_exc(limit=-8))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
    return result


def describe(case: Case, result: Result, what: str) -> str:
    tail = (result.crash or result.err)[-2500:]
    return (f"\n{what}\n  qa-scale {' '.join(case.argv)}\n  exit {result.code}"
            f"{' (reached ' + TRIPWIRES[case.command][1] + ')' if result.started else ''}\n  stderr/traceback tail:\n"
            + "\n".join("    " + line for line in tail.splitlines()))


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if STAGING.match(p.name)]


def complete(path: Path, how: str) -> str | None:
    """None when the output at ``path`` is whole (it parses), else what is wrong."""
    if not path.exists():
        return "missing"
    if how == "file":
        if not path.is_file():
            return "not a file"
        return _parses(path)
    if not path.is_dir():
        return "not a folder"
    for p in path.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".yaml", ".csv"):
            problem = _parses(p)
            if problem:
                return f"{p}: {problem}"
    return None


def _parses(path: Path) -> str | None:
    try:
        text = path.read_bytes().decode("utf-8")
        if path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".jsonl":
            for line in text.splitlines():
                if line.strip():
                    json.loads(line)
        elif path.suffix in (".yaml", ".yml"):
            yaml.safe_load(text)
        elif path.suffix == ".csv":
            rows = list(csv.reader(io.StringIO(text, newline="")))
            if not rows or rows[0] != ["ID", "Answer"]:
                return "CSV without its ID,Answer header"
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        return f"does not parse: {err}"
    return None


def check(case: Case, result: Result, *, named: list[str], must_refuse: bool = False, must_pass: bool = False,
          before_inputs: dict, before_outputs: dict[str, dict | None], what: str) -> None:
    """The invariants of the module docstring."""
    problems = []
    if result.crash is not None:
        problems.append("an exception escaped (traceback)")
    elif result.code not in (0, 2):
        problems.append(f"exit status {result.code}, expected 0 or 2")
    if "Traceback" in result.err:
        problems.append("'Traceback' in stderr")
    if result.code == 2 and not any(n and n in result.err for n in named):
        problems.append(f"the message names none of {named}")
    if must_refuse and result.code != 2:
        problems.append("a hostile output was accepted (expected exit 2 before any work)")
    if must_pass and result.code != 0:
        problems.append("refused, though this input is fine (expected exit 0)")
    after_inputs = case.input_hashes()
    changed = sorted(k for k in before_inputs.keys() | after_inputs.keys()
                     if before_inputs.get(k) != after_inputs.get(k))
    if changed:
        problems.append(f"inputs changed: {changed[:5]}")
    for name, path in case.outputs.items():
        how = output_kind(case, name)
        now = case.snapshot(path)
        if result.code == 0 and not result.started and result.crash is None:
            if before_outputs.get(name) != now or now is None:
                problem = complete(path, how)
                if problem:
                    problems.append(f"output {path} is not complete: {problem}")
        elif how != "workdir" and now != before_outputs.get(name):
            problems.append(f"output {path} changed though the command failed "
                            f"({'created' if before_outputs.get(name) is None else 'modified'})")
    stray = leftovers(case.dir)
    if stray:
        problems.append(f"staging left behind: {stray[:3]}")
    assert not problems, describe(case, result, what + ": " + "; ".join(problems))


# ---------------------------------------------------------------- making inputs bad


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
PLACEHOLDER = "__qa_contract_placeholder__"
RAW_VALUES = {  # text spliced in where the placeholder was
    "5000 digits": "1" * 5000, "negative 5000 digits": "-" + "9" * 5000, "long float": "0." + "3" * 5000,
    "1e999": "1e999", "NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity",
    "100k deep": "[" * 100_000 + "]" * 100_000, "100k deep objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
}
ALIAS_BOMB = "[&a0 [" + ",".join(["x"] * 10) + "], " + ", ".join(
    f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)) + "]"  # 10^9 nodes once expanded
YAML_RAW = {".nan": ".nan", ".inf": "-.inf", "!!python/object": "!!python/object/apply:os.system ['true']",
            "alias bomb": ALIAS_BOMB}


def _walk(draw, doc):
    """A random node of ``doc``: (parent, key) pairs from the top, and the node."""
    trail, node = [], doc
    depth = draw(st.integers(0, 9), label="depth")
    for _ in range(depth):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=str)), label="key")
        elif isinstance(node, list) and node:
            key = draw(st.integers(0, len(node) - 1), label="index")
        else:
            break
        trail.append((node, key))
        node = node[key]
    return trail, node


def mutate_document(draw, doc, yaml_file: bool) -> tuple[str, str]:
    """(new text, what was done) — ``doc`` changed at one random place."""
    import copy

    doc = copy.deepcopy(doc)
    trail, node = _walk(draw, doc)
    ops = ["replace", "delete", "surrogate", "surrogate key", "raw", "repeat key", "wrong type"]
    op = draw(st.sampled_from(ops), label="json op")
    raw = None

    def put(value):
        nonlocal doc
        if trail:
            parent, key = trail[-1]
            parent[key] = value
        else:
            doc = value

    where = "/".join(str(k) for _, k in trail) or "top"
    if op == "replace":
        put(draw(JSON_VALUES, label="value"))
    elif op == "wrong type":
        put(draw(st.sampled_from([None, True, 0, -1, 1.5, "", "x", [], {}, [None], {"": None}]), label="value"))
    elif op == "delete" and trail:
        parent, key = trail[-1]
        del parent[key]
    elif op == "surrogate":
        if isinstance(node, str):
            at = draw(st.integers(0, len(node)), label="at")
            put(node[:at] + "\ud800" + node[at:])
        else:
            put("\udc00x")
    elif op == "surrogate key":
        target = node if isinstance(node, dict) and node else next((p for p, _ in reversed(trail)
                                                                    if isinstance(p, dict)), None)
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)), label="renamed key")
            target[key + "\ud800"] = target.pop(key)
        else:
            put({"\ud800": 1})
    elif op == "raw":
        choices = {**RAW_VALUES, **({k: v for k, v in YAML_RAW.items() if v} if yaml_file else {})}
        name = draw(st.sampled_from(sorted(choices)), label="raw")
        put(PLACEHOLDER)
        raw, where = choices[name], f"{where} := {name}"
    elif op == "repeat key":
        target = node if isinstance(node, dict) and node else next((p for p, _ in reversed(trail)
                                                                    if isinstance(p, dict)), None)
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)), label="repeated key")
            target[PLACEHOLDER] = draw(JSON_LEAVES, label="second value")
            raw = json.dumps(key)  # the placeholder key becomes a second `key`
            text = json.dumps(doc, ensure_ascii=True, allow_nan=True).replace(f'"{PLACEHOLDER}"', raw, 1)
            return text, f"{op} {key!r} at {where}"
        put(draw(JSON_VALUES, label="value"))
    text = json.dumps(doc, ensure_ascii=True, allow_nan=True)  # a surrogate stays a \ud800 escape
    if raw is not None:
        text = text.replace(f'"{PLACEHOLDER}"', raw, 1)
    return text, f"{op} at {where}"


def bad_file(draw, path: Path) -> tuple[str, bool]:
    """Make the file at ``path`` bad in one random way; (what was done, whether it is benign)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    kinds = ["random bytes", "truncate", "flip byte", "empty", "folder", "missing"]
    if text is not None and path.suffix in TEXT_SUFFIXES:
        kinds += ["gbk", "bom", "lines"]
        if path.suffix in (".json", ".yaml", ".yml", ".jsonl"):
            kinds += ["document"] * 4  # the richest source of cases
    kind = draw(st.sampled_from(kinds), label="file damage")
    if kind == "random bytes":
        path.write_bytes(draw(st.binary(min_size=1, max_size=300), label="bytes"))
    elif kind == "truncate":
        at = draw(st.integers(0, max(len(data) - 1, 0)), label="cut at")
        path.write_bytes(data[:at])
        kind = f"truncated at byte {at} of {len(data)}"
    elif kind == "flip byte":
        at = draw(st.integers(0, max(len(data) - 1, 0)), label="flip at")
        path.write_bytes(data[:at] + bytes([(data[at] if data else 0) ^ 0xFF]) + data[at + 1:])
        kind = f"byte {at} flipped"
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.unlink()
        path.mkdir()
        (path / "x").write_text("x")
    elif kind == "missing":
        path.unlink()
    elif kind == "gbk":
        gbk = text.encode("gbk", errors="replace")
        if gbk == data:  # all ASCII: GBK bytes of Chinese added
            gbk += "北京".encode("gbk")
        path.write_bytes(gbk)
    elif kind == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + data)
        return kind, True
    elif kind == "lines":
        lines = text.splitlines(keepends=True) or [""]
        at = draw(st.integers(0, len(lines) - 1), label="line")
        how = draw(st.sampled_from(["duplicate", "delete", "insert"]), label="line op")
        if how == "duplicate":
            lines.insert(at, lines[at])
        elif how == "delete":
            del lines[at]
        else:
            lines.insert(at, draw(st.text(max_size=40), label="inserted").replace("\r", "") + "\n")
        path.write_bytes("".join(lines).encode("utf-8", errors="surrogatepass"))
        kind = f"line {at + 1} {how}d"
    elif kind == "document":
        if path.suffix == ".jsonl":
            lines = text.splitlines()
            at = draw(st.integers(0, len(lines) - 1), label="jsonl line")
            new, what = mutate_document(draw, json.loads(lines[at]), False)
            lines[at] = new
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            kind = f"line {at + 1}: {what}"
        else:
            yaml_file = path.suffix in (".yaml", ".yml")
            doc = yaml.safe_load(text) if yaml_file else json.loads(text.lstrip("\ufeff"))
            new, what = mutate_document(draw, doc, yaml_file)
            path.write_text(new, encoding="utf-8")
            kind = what
    return kind, False


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in ([root, *root.rglob("*")] if root.is_dir() else [root]) if p.is_file())


# ---------------------------------------------------------------- the properties


def commands_of() -> list[tuple[str, int]]:
    return [(c, i) for c in sorted(BASE) for i in range(len(BASE[c]))]


@pytest.fixture
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    made = []

    def new(world: World, template: list[str]) -> Case:
        folder = Path(tempfile.mkdtemp(dir=root))
        made.append(folder)
        return Case(world, template, folder)

    yield new
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def test_every_command_has_a_valid_invocation():
    assert sorted(COMMANDS) == sorted(BASE), "add the new command's valid invocation to BASE"


def test_every_path_flag_is_declared_as_input_or_output():
    """A path-typed flag without an ``input_arg``/``output_*`` declaration escapes the output layer's checks."""
    missing = {}
    for name in sorted(COMMANDS):
        spec = declared(name)
        for action in subparser(name)._actions:
            if action.type is Path and action.dest not in spec:
                missing.setdefault(name, []).append(action.option_strings[0] if action.option_strings
                                                    else action.dest)
    assert not missing, f"path flags not declared with input_arg/output_file/output_folder/output_workdir: {missing}"


def test_every_declared_flag_is_exercised():
    """Each declared input/output flag appears in some valid invocation here, so that it is broken below."""
    unused = {}
    for name in sorted(COMMANDS):
        given = {tok for template in BASE.get(name, []) for tok in template}
        for dest in declared(name):
            flag = flag_of(name, dest)
            if flag.startswith("-") and flag not in given and not any(
                    opt in given for a in subparser(name)._actions if a.dest == dest for opt in a.option_strings):
                unused.setdefault(name, []).append(flag)
    assert not unused, f"declared flags no invocation in BASE uses: {unused}"


@pytest.mark.parametrize("command,variant", commands_of())
def test_the_valid_invocation_succeeds(world, cases, capsys, command, variant):
    case = cases(world, BASE[command][variant])
    inputs = case.input_hashes()
    result = run_case(case, capsys)
    check(case, result, named=[], must_pass=True, before_inputs=inputs,
          before_outputs={n: None for n in case.outputs}, what="the valid invocation")
    for name, path in case.outputs.items():
        assert result.started or path.exists(), describe(case, result, f"output {path} was not written")


@pytest.mark.parametrize("command,variant", [(c, i) for c, i in commands_of() if any(
    "{" in tok and "{@" not in tok for tok in BASE[c][i])])
@CONTRACT
@given(data=st.data())
def test_bad_inputs_are_refused_by_name(world, cases, capsys, command, variant, data):
    case = cases(world, BASE[command][variant])
    name = data.draw(st.sampled_from(sorted(case.input_roots)), label="input")
    root = case.input_roots[name]
    candidates = files_of(root)
    whole = data.draw(st.sampled_from(["a file in it", "the input itself"]), label="what") if root.is_dir() \
        else "the input itself"
    if whole == "the input itself" and root.is_dir():
        how = data.draw(st.sampled_from(["missing", "a file"]), label="folder damage")
        shutil.rmtree(root)
        if how == "a file":
            root.write_text("not a folder")
        target, damage, benign = root, f"folder {how}", False
    else:
        target = root if not root.is_dir() else data.draw(st.sampled_from(candidates), label="file")
        damage, benign = bad_file(data.draw, target)
        benign = benign and target == root  # a BOM is fine in files people write, not inside our own folders
    if command in TRIPWIRES and benign:
        return
    named = [str(p) for p in [target, *target.parents] if p == root or root in p.parents]
    named += [target.name, str(case.inputs[name])]
    flag = flags_of(case, {name: case.inputs[name]}).get(name)
    named += [flag] if flag and flag.startswith("-") else []  # "argument --context-file: …" names it too
    before_in = case.input_hashes()
    before_out = {n: case.snapshot(p) for n, p in case.outputs.items()}
    result = run_case(case, capsys)
    check(case, result, named=named, must_pass=benign, before_inputs=before_in, before_outputs=before_out,
          what=f"input {name}: {target.relative_to(case.dir)}: {damage}")


HOSTILE = ["existing file", "an input", "inside an input", "holds the inputs", "foreign folder",
           "our folder of another kind", "under a regular file", "under /proc", "another output",
           "empty folder", "ours, same kind"]
MUST_REFUSE = {"an input", "inside an input", "holds the inputs", "foreign folder", "our folder of another kind",
               "under a regular file", "under /proc", "another output"}


@pytest.mark.parametrize("command,variant", [(c, i) for c, i in commands_of() if "{@" in " ".join(BASE[c][i])])
@CONTRACT
@given(data=st.data())
def test_hostile_outputs_lose_nothing(world, cases, capsys, command, variant, data):
    case = cases(world, BASE[command][variant])
    name = data.draw(st.sampled_from(sorted(case.outputs)), label="output")
    path, how = case.outputs[name], output_kind(case, name)
    hostile = data.draw(st.sampled_from(HOSTILE), label="hostile")
    flag = output_flags(case).get(name, name)
    named = [flag]
    if hostile == "existing file":
        path.write_bytes(data.draw(st.binary(max_size=64), label="old bytes"))
    elif hostile == "an input":
        if not case.inputs:
            return
        new = case.inputs[data.draw(st.sampled_from(sorted(case.inputs)), label="which input")]
    elif hostile == "inside an input":
        if not case.inputs:
            return
        new = case.inputs[data.draw(st.sampled_from(sorted(case.inputs)), label="which input")] / "sub" / path.name
        named.append(str(new.parent.parent))
    elif hostile == "holds the inputs":
        if not case.inputs:
            return
        new = case.dir / "in"
    elif hostile in ("foreign folder", "our folder of another kind", "ours, same kind", "empty folder"):
        path.mkdir()
        if hostile == "foreign folder":
            (path / "notes.txt").write_text("keep me")
        elif hostile != "empty folder":
            kind = "zzz-other" if hostile == "our folder of another kind" else next(
                (h.split(":")[1] for d, h in declared(command).items() if ":" in h and flag_of(command, d) == flag), None)
            if kind is None or how == "file":
                shutil.rmtree(path)
                return
            (path / MARKER).write_text(json.dumps({"kind": kind}))
            (path / "old.txt").write_text("old")
    elif hostile == "under a regular file":
        blocker = case.dir / "out" / "blocker"
        blocker.write_text("x")
        new = blocker / path.name
        named.append(str(blocker))
    elif hostile == "under /proc":
        new = Path("/proc/qa-scale-contract") / path.name
    elif hostile == "another output":
        others = sorted(set(case.outputs) - {name})
        if not others:
            return
        new = case.outputs[data.draw(st.sampled_from(others), label="other")]
    if hostile in ("an input", "inside an input", "holds the inputs", "under a regular file", "under /proc",
                   "another output"):
        case.argv = [tok.replace(str(path), str(new)) for tok in case.argv]
        case.outputs[name] = path = new
    named += [str(p) for p in [path, *path.parents] if len(p.parts) > 2]  # the path or a folder on its way
    before_in = case.input_hashes()
    before_out = {n: case.snapshot(p) for n, p in case.outputs.items()}
    result = run_case(case, capsys)
    refuse = hostile in MUST_REFUSE or (how != "file" and hostile == "existing file") \
        or (how == "file" and hostile in ("empty folder", "foreign folder"))
    check(case, result, named=named, must_refuse=refuse, before_inputs=before_in, before_outputs=before_out,
          what=f"output {flag} ({how}) = {hostile}")


# ---------------------------------------------------------------- interrupted in mid-run


SIGTERM_RUNS = {"windows": 0, "ensemble": 0}


def _env() -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("command", sorted(SIGTERM_RUNS))
@settings(max_examples=2, deadline=None, print_blob=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(delay=st.floats(0.0, 1.5))
def test_sigterm_mid_run_leaves_outputs_whole_or_absent(world, cases, command, delay):
    """SIGTERM a real run (a child process) ``delay`` seconds after its transaction began (its first
    staging file appeared): every output complete, or as it was before; no staging left."""
    case = cases(world, BASE[command][SIGTERM_RUNS[command]])
    for name, path in case.outputs.items():  # an earlier output of ours, to be replaced whole or kept whole
        if output_kind(case, name) == "file":
            path.write_text("old")
    before_in = case.input_hashes()
    before_out = {n: case.snapshot(p) for n, p in case.outputs.items()}
    proc = subprocess.Popen([sys.executable, "-m", "qa_scale", *case.argv], cwd=case.dir, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    while proc.poll() is None and not leftovers(case.dir / "out") and time.perf_counter() - t0 < 120:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    code = proc.returncode
    result = Result(code, out, err)
    assert code in (0, 2, 130, 143, -signal.SIGTERM) and "Traceback" not in err, \
        describe(case, result, f"SIGTERM {delay:.2f} s into the transaction")
    if code == 0:  # finished before the signal: everything written whole
        check(case, result, named=[], before_inputs=before_in, before_outputs=before_out,
              what=f"SIGTERM {delay:.2f} s into the transaction (finished first)")
    else:
        _check_untouched(case, result, before_in, before_out, delay)


def _check_untouched(case: Case, result: Result, before_in: dict, before_out: dict, delay: float) -> None:
    problems = []
    if case.input_hashes() != before_in:
        problems.append("inputs changed")
    for name, path in case.outputs.items():
        now = case.snapshot(path)
        # As before — or complete, when the signal came just after the commit (held back during it).
        problem = complete(path, output_kind(case, name)) if now != before_out[name] else None
        if problem:
            problems.append(f"output {path} is neither as before nor complete: {problem}")
    stray = leftovers(case.dir)
    if stray:
        problems.append(f"staging left behind: {stray[:3]}")
    assert not problems, describe(case, result, f"SIGTERM after {delay:.2f} s: " + "; ".join(problems))
