"""The embedded-default job: the whole path offline, on data and backbones the project makes.

sample data → character vocabulary (deterministic) → oracle fidelity → masked-LM backbones of
different shapes and seeds → readers fine-tuned from each (the HW7 boss recipe in miniature),
each trained by the DeepSpeed engine on ``ranks`` CPU processes → a logits store per reader and
split (``predict``) → member weights searched on one part of dev → the weighted mean of their
logits, decoded once → the ensemble against the member that is best on the search part,
measured on the other part, with a paired bootstrap interval → HW7 CSV and CMRC-style JSON.
``report.json`` holds every figure (:mod:`.demo_report` computes them).

Every training stage is the real command under the real launcher (``deepspeed --num_gpus N
qa-scale …``), so the demo exercises what a GPU server runs. Finished stages are reused when the
demo is run again into the same folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shlex
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from .. import data, synthetic
from ..common.inputs import read_json, read_mapping, read_text
from ..common.outputs import atomic_open, remove_tree, workdir, write_json
from ..data.tokenization import build_char_vocab
from ..ensemble.weight_search import split_ids
from ..evaluation import oracle
from ..inference.logits_store import open_store
from ..inference.options import ReaderOptions
from ..inference.predict import PredictOptions
from ..inference.predict import run as predict
from ..runtime import processes
from ..training import ds_config
from .demo_config import BackboneSpec, DemoConfig, DemoFiles, MemberSpec
from .demo_report import ensemble_report
from .demo_student import answer_latency, student_report

log = logging.getLogger(__name__)


def _qa_scale(args: list, ranks: int, log_file: Path) -> None:
    """Run ``qa-scale ARGS`` under the deepspeed launcher (``ranks`` > 1) or plainly; log to a file."""
    cmd = processes.command(args, ranks=ranks)
    log.info("  $ %s  (log: %s)", shlex.join(cmd), log_file)
    with atomic_open(log_file, binary=True) as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=processes.child_env(), check=False)
    if proc.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {proc.returncode}); end of {log_file}:\n{tail}")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the package's source: a stage made by other code is made again, not reused."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _stage(run_dir: Path, args: list, ranks: int, log_file: Path, inputs: str) -> str:
    """Run ``qa-scale ARGS`` into ``run_dir`` unless it holds a finished run of this very command.

    ``inputs`` names what the command reads (data settings, the backbone's own stage key), so a
    stage is redone when anything upstream changed. Returns this stage's key for its dependents.
    """
    key = json.dumps({"args": [str(a) for a in args], "ranks": ranks, "inputs": inputs, "code": code_version()},
                     ensure_ascii=False)
    stamp, summary = run_dir / "demo_stage.json", run_dir / "summary.json"
    if stamp.exists() and read_text(stamp) == key and summary.exists() \
            and read_mapping(summary, "run summary").get("finished", False):
        log.info("  reusing %s", run_dir)
        return key
    remove_tree(run_dir)  # another configuration, or an unfinished run: start over (only a folder of ours)
    _qa_scale(args, ranks, log_file)
    with atomic_open(stamp) as fh:
        fh.write(key)
    return key


def _member_overrides(cfg: DemoConfig, files: DemoFiles, backbone: Path, member: MemberSpec, out: Path) -> list[str]:
    """The ``qa-scale train`` overrides of one reader (its command line: the stage runs the real command)."""
    w, mode = cfg.windows(), member.mode
    values = {
        "mode": mode, "model.name_or_path": backbone, "data.train_file": files.squad_train,
        "data.dev_file": files.dev_search, "data.strategy": member.strategy,  # the best checkpoint: search part only
        "data.windows.max_seq_len": w.max_seq_len, "data.windows.max_question_len": w.max_question_len,
        "data.windows.doc_overlap": w.doc_overlap, "data.cache_dir": out.parent / "cache",
        "optim.lr": cfg.lora_lr if mode == "lora" else cfg.member_lr, "optim.max_steps": cfg.member_steps,
        "optim.micro_batch_size": cfg.batch_size // cfg.ranks, "optim.global_batch_size": cfg.batch_size,
        "optim.warmup_ratio": 0.06, "optim.weight_decay": 0.01, "lora.r": cfg.lora_r, "lora.alpha": 2 * cfg.lora_r,
        "lora.dropout": 0.0, "run.seed": member.seed, "run.output_dir": out, "run.precision": "fp32", "run.device": "cpu",
        "run.deepspeed": ds_config.SHIPPED / "zero2_bf16.json", "run.eval_every": max(1, cfg.member_steps // 4),
        "run.save_every": cfg.member_steps, "run.log_every": 20, "run.tensorboard": "false",
        "decode.max_answer_len": 32,
    }
    return [f"{k}={v}" for k, v in values.items()]


class _Clock:
    """Seconds per demo stage, for the report."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 1)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.laps, "total": round(time.perf_counter() - self.t0, 1)}


MARKER = "demo.json"


def run_demo(out_dir: str | Path, config: DemoConfig | None = None) -> dict:
    """Run the embedded-default job into ``out_dir`` and return its report."""
    cfg, out, clock = config or DemoConfig(), Path(out_dir).resolve(), _Clock()
    if cfg.batch_size % cfg.ranks:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of ranks {cfg.ranks}")
    workdir(out, "demo")  # new, empty or an earlier demo's: it writes and replaces sub-folders there
    write_json(out / MARKER, {"config": asdict(cfg)})
    files, data_key, report = _data_stage(cfg, out)
    clock.lap("data")
    backbones = {}
    for spec in cfg.backbone_specs():
        backbones[spec.name] = _backbone_stage(cfg, out, files, data_key, spec, report)
        clock.lap(f"backbone_{spec.name}")
    members, member_keys = [], []
    specs = cfg.member_specs()
    for i, member in enumerate(specs):
        run_dir, (backbone_run, backbone_key) = out / "members" / member.name, backbones[member.backbone]
        log.info("5/10 reader %d/%d: %s fine-tuning from backbone %s, seed %s, %s windows", i + 1, len(specs),
                 member.mode, member.backbone, member.seed, member.strategy)
        overrides = _member_overrides(cfg, files, backbone_run / "model", member, run_dir)
        member_keys.append(_stage(run_dir, ["train", *overrides], cfg.ranks, out / "logs" / f"{member.name}.log",
                                  backbone_key))
        members.append((member.name, run_dir))
        clock.lap(f"train_{member.name}")
    stores = _store_stage(members, files)
    clock.lap("predict")
    report.update(ensemble_report(cfg, out, files, members, stores))
    clock.lap("ensemble_and_submit")
    if cfg.student_steps:
        report["student"] = _student_stage(cfg, out, files, backbones, members, member_keys, report)
        clock.lap("student")
    report["files"] = {name: str(out / name) for name in
                       ("submission.csv", "test_predictions.json", "dev_predictions.json", "dev_errors.jsonl",
                        "ensemble_recipe.yaml")}
    report["seconds"] = clock.total()
    write_json(out / "report.json", report)
    return report


def _data_stage(cfg: DemoConfig, out: Path) -> tuple[DemoFiles, str, dict]:
    log.info("1/10 sample data → %s", out / "data")
    sample = synthetic.SampleConfig(seed=cfg.seed, train_paragraphs=cfg.train_paragraphs,
                                    dev_paragraphs=cfg.dev_paragraphs, paragraph_chars=tuple(cfg.paragraph_chars))
    paths = synthetic.write_all(sample, out / "data")
    refs = data.load_references(paths["squad_dev"])
    search, _ = split_ids(list(refs), 1 - cfg.search_fraction)
    files = DemoFiles(paths["corpus"], paths["squad_train"], paths["squad_dev"],
                      _subset(paths["squad_dev"], set(search), out / "data" / "squad_dev_search.json"),
                      paths["hw7_test"], paths["hw7_test_answers"], out / "tokenizer")
    data_key = json.dumps({"sample": asdict(sample), "vocab_size": cfg.vocab_size, "search": cfg.search_fraction})
    log.info("2/10 character vocabulary and 3/10 oracle fidelity of the dev windows")
    # Paragraphs and the training questions: question marks and question words (？ 哪 什么) are
    # characters of questions, rarely of paragraphs; dev and test questions are not looked at.
    questions = [ex.question for ex in data.load(files.squad_train, "strict").examples]
    tok = build_char_vocab(read_text(files.corpus).splitlines() + questions, files.tokenizer, vocab_size=cfg.vocab_size)
    dev = data.load(files.squad_dev, "strict")
    report: dict = {"config": asdict(cfg), "windows": {**vars(cfg.windows()), "stride": cfg.windows().stride()},
                    "dev_oracle": oracle.oracle_fidelity(dev.examples, tok, cfg.windows()).to_dict(max_listed=10),
                    "backbones": {}}
    return files, data_key, report


def _subset(squad_file: Path, ids: set[str], out: Path) -> Path:
    """The SQuAD-style file with only the questions in ``ids`` (the members' dev: the search part)."""
    raw = read_json(squad_file)
    for article in raw["data"]:
        for para in article["paragraphs"]:
            para["qas"] = [qa for qa in para["qas"] if qa["id"] in ids]
    raw["data"] = [a for a in raw["data"] if any(p["qas"] for p in a["paragraphs"])]
    return write_json(out, raw)


def _backbone_stage(cfg: DemoConfig, out: Path, files: DemoFiles, data_key: str, spec: BackboneSpec,
                    report: dict) -> tuple[Path, str]:
    run = out / f"backbone_{spec.name}"
    log.info("4/10 masked-LM backbone %s (%d layers, hidden %d, seed %d, %d steps, %d ranks)", spec.name, spec.layers,
             spec.hidden, spec.seed, cfg.backbone_steps, cfg.ranks)
    args = ["backbone", files.corpus, "--tokenizer", files.tokenizer, "--out", run,
            "--hidden-size", spec.hidden, "--layers", spec.layers, "--heads", cfg.heads, "--device", "cpu",
            "--seq-len", cfg.backbone_seq_len, "--steps", cfg.backbone_steps, "--lr", cfg.backbone_lr,
            "--batch-size", cfg.batch_size, "--seed", spec.seed]
    key = _stage(run, args, cfg.ranks, out / "logs" / f"backbone_{spec.name}.log", data_key)
    summary = read_mapping(run / "summary.json", "run summary")
    report["backbones"][spec.name] = {"layers": spec.layers, "hidden_size": spec.hidden, "seed": spec.seed,
                                      "steps": summary["steps"], "parameters": summary["parameters"]["total"]}
    return run, key


def _store_stage(members: list[tuple[str, Path]], demo_files: DemoFiles) -> dict[str, list]:
    log.info("6/10 logits stores: every reader × dev and test")
    files = {"dev": demo_files.squad_dev, "test": demo_files.hw7_test}
    stores: dict[str, list] = {"dev": [], "test": []}
    for _, run_dir in members:
        for split in ("dev", "test"):
            store_dir = run_dir / f"{split}_store"
            if not (store_dir / "store.json").exists():
                predict(PredictOptions(run_dir / "model", files[split], store_dir, ReaderOptions(device="cpu", batch_size=64)))
            stores[split].append(open_store(store_dir))
    return stores


def _student_stage(cfg: DemoConfig, out: Path, files: DemoFiles, backbones: dict, members: list[tuple[str, Path]],
                   member_keys: list[str], report: dict) -> dict:
    """A reader of the best member's backbone distilled from the ensemble (``qa-scale distill``), measured."""
    weights = report["ensemble"]["weights"]
    teachers = [(name, run) for name, run in members if weights[name] > 0]
    log.info("9/10 the teachers' stores of the training file (%d members)", len(teachers))
    train_stores = []
    for name, run in teachers:
        store = run / "train_store"  # inside the member's folder: gone with it when the member is trained anew
        if not (store / "store.json").exists():  # in this process: small readers gain nothing from a launch
            predict(PredictOptions(run / "model", files.squad_train, store, ReaderOptions(device="cpu", batch_size=64)))
        train_stores.append(store)
    best = report["ensemble_vs_best_member"]["best_member"]
    spec = next(m for m in cfg.member_specs() if m.name == best)
    backbone_run, backbone_key = backbones[spec.backbone]
    run_dir = out / "student"
    log.info("10/10 student: backbone %s (that of %s, best on search) distilled from the ensemble, %s windows",
             spec.backbone, best, cfg.student_strategy)
    student = MemberSpec("student", spec.backbone, "full", spec.seed, "all")
    overrides = _member_overrides(cfg, files, backbone_run / "model", student, run_dir) + [
        f"optim.max_steps={cfg.student_steps}", f"run.eval_every={max(1, cfg.student_steps // 4)}",
        f"run.save_every={cfg.student_steps}", f"distill.strategy={cfg.student_strategy}",
        f"distill.kl_weight={cfg.student_kl_weight}", f"distill.temperature={cfg.student_temperature}"]
    args = ["distill", *overrides, "--teacher", out / "ensemble_recipe.yaml"]
    for store in train_stores:
        args += ["--store", store]
    teacher_key = json.dumps({"backbone": backbone_key, "members": member_keys, "weights": weights,
                              "combine": cfg.combine}, sort_keys=True)
    _stage(run_dir, args, cfg.ranks, out / "logs" / "student.log", teacher_key)
    stores = {}
    for split, data_file in (("dev", files.squad_dev), ("test", files.hw7_test)):
        store_dir = run_dir / f"{split}_store"
        if not (store_dir / "store.json").exists():
            predict(PredictOptions(run_dir / "model", data_file, store_dir, ReaderOptions(device="cpu", batch_size=64)))
        stores[split] = open_store(store_dir)
    result = student_report(cfg, out, files, stores, report)
    opened = [open_store(p) for p in train_stores]  # what a teacher of the training file costs on disk
    result["teacher_stores"] = {"members": len(opened), "windows": opened[0].shape[0],
                                "bytes": sum(s.nbytes for s in opened)}
    result["latency"] = answer_latency(cfg, out, files, run_dir / "model")
    return result

