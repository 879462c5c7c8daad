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
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from .. import data, synthetic
from ..common.files import write_json
from ..data.tokenization import build_char_vocab
from ..ensemble.combine import ensemble
from ..evaluation import metrics, oracle, submit
from ..evaluation.baselines import trivial_baselines
from ..inference.logits_store import open_store
from ..inference.predict import run as predict
from ..runtime import processes
from ..training import ds_config
from .demo_config import DemoConfig

log = logging.getLogger(__name__)


def _qa_scale(args: list, ranks: int, log_file: Path) -> None:
    """Run ``qa-scale ARGS`` under the deepspeed launcher (``ranks`` > 1) or plainly; log to a file."""
    cmd = processes.command(args, ranks=ranks)
    log.info("  $ %s  (log: %s)", shlex.join(cmd), log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=processes.child_env(), check=False)
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


def run_demo(out_dir: str | Path, config: DemoConfig | None = None) -> dict:
    """Run the embedded-default job into ``out_dir`` and return its report."""
    cfg, out, clock = config or DemoConfig(), Path(out_dir).resolve(), _Clock()
    if cfg.batch_size % cfg.ranks:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of ranks {cfg.ranks}")
    paths, data_key, report = _data_stage(cfg, out)
    clock.lap("data")
    backbone_run, backbone_key = _backbone_stage(cfg, out, paths, data_key, report)
    clock.lap("backbone")
    members = []
    for i, spec in enumerate(cfg.members):
        mode, _, seed = spec.partition(":")
        name, run_dir = f"{mode}_s{seed}", out / "members" / f"{mode}_s{seed}"
        log.info("4/7 reader %d/%d: %s fine-tuning, seed %s", i + 1, len(cfg.members), mode, seed)
        _stage(run_dir, ["train", *_member_overrides(cfg, paths, backbone_run / "model", mode, int(seed), run_dir)],
               cfg.ranks, out / "logs" / f"{name}.log", backbone_key)
        members.append((name, run_dir))
        clock.lap(f"train_{name}")
    stores = _store_stage(members, paths)
    clock.lap("predict")
    _ensemble_stage(cfg, out, paths, members, stores, report)
    clock.lap("ensemble_and_submit")
    report["files"] = {name: str(out / name) for name in
                       ("submission.csv", "test_predictions.json", "dev_predictions.json", "dev_errors.jsonl")}
    report["seconds"] = clock.total()
    write_json(out / "report.json", report)
    return report


def _data_stage(cfg: DemoConfig, out: Path) -> tuple[dict, str, dict]:
    log.info("1/7 sample data → %s", out / "data")
    sample = synthetic.SampleConfig(seed=cfg.seed, train_paragraphs=cfg.train_paragraphs,
                                    dev_paragraphs=cfg.dev_paragraphs, paragraph_chars=tuple(cfg.paragraph_chars))
    paths = synthetic.write_all(sample, out / "data")
    data_key = json.dumps({"sample": asdict(sample), "vocab_size": cfg.vocab_size})
    log.info("2/7 character vocabulary and oracle fidelity of the dev windows")
    lines = paths["corpus"].read_text(encoding="utf-8").splitlines()
    tok = build_char_vocab(lines, out / "tokenizer", vocab_size=cfg.vocab_size)
    dev = data.load(paths["squad_dev"], "strict")
    report: dict = {"config": asdict(cfg), "windows": {**vars(cfg.windows()), "stride": cfg.windows().stride()},
                    "dev_oracle": oracle.oracle_fidelity(dev.examples, tok, cfg.windows()).to_dict(max_listed=10)}
    return paths, data_key, report


def _backbone_stage(cfg: DemoConfig, out: Path, paths: dict, data_key: str, report: dict) -> tuple[Path, str]:
    backbone_run = out / "backbone"
    log.info("3/7 masked-LM backbone (%d layers, hidden %d, %d steps, %d ranks)", cfg.layers, cfg.hidden_size,
             cfg.backbone_steps, cfg.ranks)
    args = ["backbone", paths["corpus"], "--tokenizer", out / "tokenizer", "--out", backbone_run,
            "--hidden-size", cfg.hidden_size, "--layers", cfg.layers, "--heads", cfg.heads,
            "--seq-len", cfg.backbone_seq_len, "--steps", cfg.backbone_steps, "--lr", cfg.backbone_lr,
            "--batch-size", cfg.batch_size, "--seed", cfg.seed]
    key = _stage(backbone_run, args, cfg.ranks, out / "logs" / "backbone.log", data_key)
    report["backbone"] = json.loads((backbone_run / "summary.json").read_text(encoding="utf-8"))
    return backbone_run, key


def _store_stage(members: list[tuple[str, Path]], paths: dict) -> dict[str, list]:
    log.info("5/7 logits stores: every reader × dev and test")
    files = {"dev": paths["squad_dev"], "test": paths["hw7_test"]}
    stores: dict[str, list] = {"dev": [], "test": []}
    for _, run_dir in members:
        for split in ("dev", "test"):
            store_dir = run_dir / f"{split}_store"
            if not (store_dir / "store.json").exists():
                predict(run_dir / "model", files[split], store_dir, batch_size=64)
            stores[split].append(open_store(store_dir))
    return stores


def _ensemble_stage(cfg: DemoConfig, out: Path, paths: dict, members: list, stores: dict, report: dict) -> None:
    log.info("6/7 ensemble: mean of %d readers' logits, one decode", len(members))
    truth = json.loads(paths["hw7_test_answers"].read_text(encoding="utf-8"))
    refs = {"dev": data.load_references(paths["squad_dev"]), "test": {k: [v] for k, v in truth.items()}}
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
    dev = data.load(paths["squad_dev"], "strict").examples
    report["baselines"] = trivial_baselines(train, dev, refs["dev"])


def _scores(s: metrics.Scores) -> dict:
    out = {"em": round(s.em, 3), "f1": round(s.f1, 3)}
    if s.hw7_accuracy is not None:
        out["hw7_accuracy"] = round(s.hw7_accuracy, 5)
    return out


def report_text(report: dict, out: Path) -> str:
    """The human summary of a demo report."""
    fid, ens = report["dev_oracle"], report["ensemble"]
    lines = [f"dev oracle fidelity: EM {fid['em_any_reference']:.2f} over {fid['windows']} windows",
             "trivial baselines (dev EM): " + ", ".join(f"{k} {v['em']:.2f}" for k, v in report["baselines"].items())]
    lines += [f"{name:>10}: dev EM {m['dev']['em']:6.2f}  F1 {m['dev']['f1']:6.2f} | test HW7 accuracy "
              f"{m['test']['hw7_accuracy']:.4f}" for name, m in report["members"].items()]
    gain = report["ensemble_vs_best_member"]
    lines += [f"{'ensemble':>10}: dev EM {ens['dev']['em']:6.2f}  F1 {ens['dev']['f1']:6.2f} | test HW7 accuracy "
              f"{ens['test']['hw7_accuracy']:.4f}",
              f"ensemble vs best member ({gain['best_member']}): dev EM {gain['dev_em_gain']:+.2f}, "
              f"F1 {gain['dev_f1_gain']:+.2f}",
              f"submission: {report['files']['submission.csv']}\nreport: {Path(out) / 'report.json'} "
              f"({report['seconds']['total']} s)"]
    return "\n".join(lines)
