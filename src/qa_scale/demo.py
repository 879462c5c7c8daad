"""The embedded-default job: the whole path offline, on data and a backbone the project makes.

sample data → character vocabulary → oracle fidelity → masked-LM backbone → three readers
(two full fine-tunes with different seeds, one LoRA), each trained by the DeepSpeed engine on
``ranks`` CPU processes → a logits store per reader and split (``predict``) → the fingerprint-
checked mean of their logits (``ensemble``) → the shared decoder → EM/F1 of every member and of
the ensemble → HW7 CSV and CMRC-style JSON. ``report.json`` holds every figure.

Every training stage is the real command under the real launcher (``deepspeed --num_gpus N
qa-scale …``), so the demo exercises what a GPU server runs. Finished stages are reused when the
demo is run again into the same folder.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from . import data, ds_config, metrics, oracle, sample_data, submit
from .config import option
from .baselines import trivial_baselines
from .files import write_json
from .tokenization import build_char_vocab
from .windows import WindowConfig

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Sizes of the embedded default, chosen so that the whole demo fits in ~15 min on 2 CPU cores."""

    seed: int = option(0, "seed of the sample data")
    ranks: int = option(2, "DeepSpeed CPU ranks per training run (1: plain processes, no launcher)")
    train_paragraphs: int = option(1500, "sample-data training paragraphs")
    dev_paragraphs: int = option(200, "sample-data dev paragraphs (member and ensemble scores)")
    paragraph_chars: tuple[int, int] = option((120, 300), "MIN MAX characters per sample paragraph")
    vocab_size: int = option(1000, "bound on the character vocabulary (the sample corpus has ~900 distinct characters)")
    hidden_size: int = option(128, "backbone width")
    layers: int = option(2, "backbone encoder layers")
    heads: int = option(4, "backbone attention heads")
    backbone_steps: int = option(1000, "masked-LM steps of the backbone")
    backbone_lr: float = option(1e-3, "masked-LM peak learning rate")
    backbone_seq_len: int = option(128, "tokens per masked-LM block")
    member_steps: int = option(1200, "optimizer steps of each reader")
    member_lr: float = option(1e-3, "peak learning rate of the full fine-tunes")
    lora_lr: float = option(3e-3, "peak learning rate of the LoRA reader")
    lora_r: int = option(16, "LoRA rank of the LoRA reader")
    batch_size: int = option(32, "windows per optimizer step")
    # Short windows: a small reader from a briefly pre-trained backbone learns far faster on
    # 64-token windows (one answer window per question) than on 256-token ones, at equal time.
    max_seq_len: int = option(64, "reader window length in tokens")
    doc_overlap: int = option(16, "tokens shared by consecutive windows")
    max_question_len: int = option(32, "question tokens kept")
    strategy: Literal["random_answer", "all"] = option(
        "random_answer", "training windows: one answer window per question, or every window")
    members: list[str] = field(default_factory=lambda: ["full:1", "full:2", "lora:1"], metadata={
        "help": "readers as MODE:SEED"})

    def windows(self) -> WindowConfig:
        return WindowConfig(max_seq_len=self.max_seq_len, max_question_len=self.max_question_len,
                            doc_overlap=self.doc_overlap)


def _child_env() -> dict:
    # Each training run starts its own process group; nothing of this process's may leak in.
    return {k: v for k, v in os.environ.items()
            if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}


def _qa_scale(args: list, ranks: int, log_file: Path) -> None:
    """Run ``qa-scale ARGS`` under the deepspeed launcher (``ranks`` > 1) or plainly; log to a file."""
    script = Path(sys.executable).parent / "qa-scale"
    exe = str(script) if script.exists() else "qa-scale"
    cmd = [exe, *map(str, args)] if ranks == 1 else \
        [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks), exe, *map(str, args)]
    log.info("  $ %s  (log: %s)", shlex.join(cmd), log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_child_env(), check=False)
    if proc.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {proc.returncode}); end of {log_file}:\n{tail}")


def _stage(run_dir: Path, args: list, ranks: int, log_file: Path, inputs: str) -> str:
    """Run ``qa-scale ARGS`` into ``run_dir`` unless it holds a finished run of this very command.

    ``inputs`` names what the command reads (data settings, the backbone's own stage key), so a
    stage is redone when anything upstream changed. Returns this stage's key for its dependents.
    """
    key = json.dumps({"args": [str(a) for a in args], "ranks": ranks, "inputs": inputs}, ensure_ascii=False)
    stamp, summary = run_dir / "demo_stage.json", run_dir / "summary.json"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == key and summary.exists() \
            and json.loads(summary.read_text(encoding="utf-8")).get("finished", False):
        log.info("  reusing %s", run_dir)
        return key
    if run_dir.exists():  # another configuration, or an unfinished run: start over
        shutil.rmtree(run_dir)
    _qa_scale(args, ranks, log_file)
    stamp.write_text(key, encoding="utf-8")
    return key


def _member_overrides(cfg: DemoConfig, paths: dict, backbone: Path, mode: str, seed: int, out: Path) -> list[str]:
    w = cfg.windows()
    values = {
        "mode": mode, "model.name_or_path": backbone, "data.train_file": paths["squad_train"],
        "data.dev_file": paths["squad_dev"], "data.strategy": cfg.strategy,
        "data.windows.max_seq_len": w.max_seq_len, "data.windows.max_question_len": w.max_question_len,
        "data.windows.doc_overlap": w.doc_overlap, "data.cache_dir": out.parent / "cache",
        "optim.lr": cfg.lora_lr if mode == "lora" else cfg.member_lr, "optim.max_steps": cfg.member_steps,
        "optim.micro_batch_size": cfg.batch_size // cfg.ranks, "optim.global_batch_size": cfg.batch_size,
        "optim.warmup_ratio": 0.06, "optim.weight_decay": 0.01, "lora.r": cfg.lora_r, "lora.alpha": 2 * cfg.lora_r,
        "lora.dropout": 0.0, "run.seed": seed, "run.output_dir": out, "run.precision": "fp32",
        "run.deepspeed": ds_config.SHIPPED / "zero2_bf16.json", "run.eval_every": max(1, cfg.member_steps // 4),
        "run.save_every": cfg.member_steps, "run.log_every": 20, "run.tensorboard": "false",
        "decode.max_answer_len": 32,
    }
    return [f"{k}={v}" for k, v in values.items()]


def run_demo(out_dir: str | Path, config: DemoConfig | None = None) -> dict:
    """Run the embedded-default job into ``out_dir`` and return its report."""
    from .ensemble import ensemble
    from .logits_store import open_store
    from .predict import run as predict

    cfg, out, t0 = config or DemoConfig(), Path(out_dir).resolve(), time.perf_counter()
    if cfg.batch_size % cfg.ranks:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of ranks {cfg.ranks}")
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    log.info("1/7 sample data → %s", out / "data")
    sample = sample_data.SampleConfig(seed=cfg.seed, train_paragraphs=cfg.train_paragraphs,
                                      dev_paragraphs=cfg.dev_paragraphs, paragraph_chars=tuple(cfg.paragraph_chars))
    paths = sample_data.write_all(sample, out / "data")
    data_key = json.dumps({"sample": asdict(sample), "vocab_size": cfg.vocab_size})
    log.info("2/7 character vocabulary and oracle fidelity of the dev windows")
    lines = paths["corpus"].read_text(encoding="utf-8").splitlines()
    tok = build_char_vocab(lines, out / "tokenizer", vocab_size=cfg.vocab_size)
    dev = data.load(paths["squad_dev"], "strict")
    report: dict = {"config": asdict(cfg), "windows": {**vars(cfg.windows()), "stride": cfg.windows().stride()},
                    "dev_oracle": oracle.oracle_fidelity(dev.examples, tok, cfg.windows()).to_dict(max_listed=10)}
    t = lap("data", t0)

    backbone_run = out / "backbone"
    log.info("3/7 masked-LM backbone (%d layers, hidden %d, %d steps, %d ranks)", cfg.layers, cfg.hidden_size,
             cfg.backbone_steps, cfg.ranks)
    backbone_args = ["backbone", paths["corpus"], "--tokenizer", out / "tokenizer", "--out", backbone_run,
                     "--hidden-size", cfg.hidden_size, "--layers", cfg.layers, "--heads", cfg.heads,
                     "--seq-len", cfg.backbone_seq_len, "--steps", cfg.backbone_steps, "--lr", cfg.backbone_lr,
                     "--batch-size", cfg.batch_size, "--seed", cfg.seed]
    backbone_key = _stage(backbone_run, backbone_args, cfg.ranks, out / "logs" / "backbone.log", data_key)
    report["backbone"] = json.loads((backbone_run / "summary.json").read_text(encoding="utf-8"))
    t = lap("backbone", t)

    members = []
    for i, spec in enumerate(cfg.members):
        mode, _, seed = spec.partition(":")
        name = f"{mode}_s{seed}"
        run_dir = out / "members" / name
        log.info("4/7 reader %d/%d: %s fine-tuning, seed %s", i + 1, len(cfg.members), mode, seed)
        _stage(run_dir, ["train", *_member_overrides(cfg, paths, backbone_run / "model", mode, int(seed), run_dir)],
               cfg.ranks, out / "logs" / f"{name}.log", backbone_key)
        members.append((name, run_dir))
        t = lap(f"train_{name}", t)

    log.info("5/7 logits stores: every reader × dev and test")
    truth = json.loads(paths["hw7_test_answers"].read_text(encoding="utf-8"))
    refs = {"dev": data.load_references(paths["squad_dev"]), "test": {k: [v] for k, v in truth.items()}}
    files = {"dev": paths["squad_dev"], "test": paths["hw7_test"]}
    stores: dict[str, list] = {"dev": [], "test": []}
    for name, run_dir in members:
        for split in ("dev", "test"):
            store_dir = run_dir / f"{split}_store"
            if not (store_dir / "store.json").exists():
                predict(run_dir / "model", files[split], store_dir, batch_size=64)
            stores[split].append(open_store(store_dir))
    t = lap("predict", t)

    log.info("6/7 ensemble: mean of %d readers' logits, one decode", len(members))
    report["members"], report["ensemble"] = {}, {}
    for split in ("dev", "test"):
        result = ensemble(stores[split], nbest=False).decoded
        hw7 = split == "test"
        for (name, _), store in zip(members, stores[split]):
            s = metrics.evaluate(store.predictions(), refs[split], hw7=hw7)
            report["members"].setdefault(name, {})[split] = _scores(s)
        s = metrics.evaluate(result.predictions, refs[split], hw7=hw7)
        report["ensemble"][split] = _scores(s)
        if split == "dev":
            write_json(out / "dev_predictions.json", result.predictions)
            metrics.write_error_file(s, out / "dev_errors.jsonl")
        else:
            log.info("7/7 submissions")
            ids = list(data.load_references(paths["hw7_test"]))
            submit.write_hw7_csv(result.predictions, ids, out / "submission.csv")
            submit.write_prediction_json(result.predictions, ids, out / "test_predictions.json")
    best = max(report["members"], key=lambda n: report["members"][n]["dev"]["em"])
    report["ensemble_vs_best_member"] = {
        "best_member": best,
        "dev_em_gain": round(report["ensemble"]["dev"]["em"] - report["members"][best]["dev"]["em"], 3),
        "dev_f1_gain": round(report["ensemble"]["dev"]["f1"] - report["members"][best]["dev"]["f1"], 3)}
    train = data.load(paths["squad_train"], "strict").examples
    report["baselines"] = trivial_baselines(train, dev.examples, refs["dev"])
    lap("ensemble_and_submit", t)
    report["files"] = {name: str(out / name) for name in
                       ("submission.csv", "test_predictions.json", "dev_predictions.json", "dev_errors.jsonl")}
    report["seconds"] = {**timings, "total": round(time.perf_counter() - t0, 1)}
    write_json(out / "report.json", report)
    return report


def _scores(s: metrics.Scores) -> dict:
    out = {"em": round(s.em, 3), "f1": round(s.f1, 3)}
    if s.hw7_accuracy is not None:
        out["hw7_accuracy"] = round(s.hw7_accuracy, 5)
    return out
