"""The one-GPU check: MacBERT-large-shaped training and prediction figures on the GPU at hand.

Every training figure comes from the real command (``qa-scale train`` as a plain process, which
on a GPU joins a one-rank ``nccl`` group and runs the very collectives of an 8-GPU run) on a
MacBERT-large shape (24 layers, hidden 1024, 16 heads, 4096 FFN, the real 21,128-entry
vocabulary, random weights) at 512-token windows:

* bf16 ZeRO-2 at micro-batches 8, 16 and 32 (one GPU: the micro-batch is the global batch);
* bf16 ZeRO-3 and LoRA (ZeRO-2) at micro-batch 32; fp16 ZeRO-2 with dynamic loss scaling;
* ``predict`` throughput in bf16 (the library's sharded forward on one rank).

Throughput and MFU are the medians of the log rows after the first (the warm-up step is not
throughput: the trainer leaves it, evaluations and saves out of its rates). Peak memory is the
CUDA max allocated. Results: ``bench/results/gpu_<device>.json`` and a table on stdout.

    bash bench/gpu_check.sh                      # on a GPU machine (installs what it lacks first)
    python bench/gpu_check.py --dry-run --out /tmp/gpu_dry   # the same path, tiny shape, CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_VOCAB = ROOT.parent / "shared" / "data" / "bert-base-chinese-vocab.txt"
LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def runs(dry: bool) -> list[tuple[str, dict]]:
    """(name, overrides) of every training measurement."""
    ds = ROOT / "ds_configs"
    z2, z3, z2h = ds / "zero2_bf16.json", ds / "zero3_bf16.json", ds / "zero2_fp16.json"
    micro = [2, 4] if dry else [8, 16, 32]
    top = micro[-1]
    out = [(f"zero2_bf16_mb{m}", {"run.deepspeed": z2, "optim.micro_batch_size": m}) for m in micro]
    out += [(f"zero3_bf16_mb{top}", {"run.deepspeed": z3, "optim.micro_batch_size": top}),
            (f"lora_zero2_bf16_mb{top}", {"run.deepspeed": z2, "optim.micro_batch_size": top, "mode": "lora",
                                          "optim.lr": 3e-4}),
            (f"zero2_fp16_mb{top}", {"run.deepspeed": z2h, "optim.micro_batch_size": top, "run.precision": "fp16"})]
    return out


def make_data(work: Path, vocab: Path | None) -> tuple[Path, Path]:
    """Sample data with 700–900-character paragraphs (512-token windows are full) and a tokenizer."""
    from qa_scale import synthetic
    from qa_scale.data.tokenization import build_char_vocab

    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=60, dev_paragraphs=20, test_paragraphs=1,
                                                       paragraph_chars=(700, 900)), work / "data")
    if vocab is None or not vocab.exists():
        build_char_vocab(paths["corpus"].read_text(encoding="utf-8").splitlines(), work / "tok", vocab_size=3000)
        vocab = work / "tok"
    return paths["squad_train"], vocab


def train(name: str, extra: dict, work: Path, train_file: Path, vocab: Path, dry: bool) -> dict:
    """One `qa-scale train` run; its figures from metrics.jsonl and summary.json."""
    out = work / name
    precision = extra.get("run.precision", "fp32" if dry else "bf16")
    steps = 4 if dry else 30
    values = {"model.tokenizer": vocab, "model.tiny": json.dumps(TINY if dry else LARGE),
              "data.train_file": train_file, "data.strategy": "random_answer",
              "data.windows.max_seq_len": 128 if dry else 512, "data.windows.max_question_len": 32 if dry else 64,
              "data.windows.doc_overlap": 32 if dry else 128, "optim.lr": 2e-5, "optim.warmup_ratio": 0.1,
              "optim.max_steps": steps, "optim.global_batch_size": extra["optim.micro_batch_size"],
              "run.output_dir": out, "run.precision": precision, "run.device": "cpu" if dry else "cuda",
              "run.log_every": 1 if dry else 5, "run.save_every": 10**6, "run.eval_every": 10**6,
              "run.export": "false", "run.tensorboard": "false", **extra}
    values["run.precision"] = precision
    # a clean environment: a process group of this process (its MASTER_PORT) must not leak into the child
    from qa_scale.runtime.processes import child_env

    env = child_env({"QA_SCALE_CPU_FP16": "1"} if dry else None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qa_scale", "train", *(f"{k}={v}" for k, v in values.items())],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return {"name": name, "error": proc.stderr[-3000:]}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    timed = [r for r in rows if r.get("split") == "train" and r.get("tokens_per_s")]

    def median(key):
        values = [r[key] for r in timed if r.get(key) is not None]
        return round(statistics.median(values), 4) if values else None

    return {"name": name, "mode": extra.get("mode", "full"), "precision": precision,
            "deepspeed": Path(str(extra["run.deepspeed"])).name, "micro_batch": extra["optim.micro_batch_size"],
            "steps": summary["steps"], "tokens_per_s": median("tokens_per_s"), "samples_per_s": median("samples_per_s"),
            "mfu": median("mfu"), "peak_memory_gib": round(summary["peak_memory"]["bytes"] / 2**30, 2),
            "peak_memory_kind": summary["peak_memory"]["kind"], "skipped_steps": summary["skipped_steps"],
            "final_loss_scale": next((r["loss_scale"] for r in reversed(rows) if r.get("loss_scale")), None),
            "parameters": summary["parameters"], "wall_seconds": round(time.perf_counter() - t0, 1)}


def predict_throughput(train_file: Path, vocab: Path, dry: bool) -> dict:
    """Windows/s of the sharded forward (one rank) in bf16 on the GPU (fp32 on the CPU dry run)."""
    import torch

    from qa_scale import data
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.data.windows import WindowConfig, build_windows
    from qa_scale.inference.forward import predict_logits
    from qa_scale.modeling.model import load_qa_model
    from qa_scale.runtime.distributed import single

    tok = load_tokenizer(vocab)
    device = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    model = load_qa_model(None, vocab_size=max(tok.get_vocab().values()) + 1, tiny=TINY if dry else LARGE, seed=0)
    model = model.to(device=device, dtype=dtype).eval()
    examples = data.load(train_file, "lenient").examples[: 32 if dry else 512]
    ws = build_windows(examples, tok, WindowConfig(max_seq_len=128 if dry else 512, max_question_len=64,
                                                   doc_overlap=32 if dry else 128), labels=False)
    batch = 16 if dry else 64
    predict_logits(model, ws, batch, single(device))  # warm-up
    times = []
    for _ in range(1 if dry else 3):
        if not dry:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        predict_logits(model, ws, batch, single(device))
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"windows": len(ws), "batch_size": batch, "dtype": str(dtype).removeprefix("torch."),
            "windows_per_s": round(len(ws) / best, 1), "tokens_per_s": round(int(ws.lengths.sum()) / best, 1),
            "repeats": len(times)}


def environment(dry: bool) -> dict:
    import deepspeed
    import torch
    import transformers

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"device": gpu or f"CPU ({os.cpu_count()} cores)", "dry_run": dry, "torch": torch.__version__,
            "cuda": torch.version.cuda, "deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(result: dict) -> str:
    lines = ["| run | micro-batch | tokens/s | MFU | peak memory | skipped |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["train"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][-120:]!r} | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['name']} | {r['micro_batch']} | {r['tokens_per_s']:,.0f} | {mfu} | "
                     f"{r['peak_memory_gib']} GiB | {r['skipped_steps']} |")
    p = result["predict"]
    lines.append(f"\npredict ({p['dtype']}, batch {p['batch_size']}): {p['windows_per_s']:,} windows/s, "
                 f"{p['tokens_per_s']:,} tokens/s over {p['windows']} windows")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shape on the CPU: the same path, no GPU needed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    parser.add_argument("--work", type=Path, help="scratch folder (default: OUT/gpu_check_work)")
    parser.add_argument("--vocab", type=Path, default=SHARED_VOCAB, help="the Chinese BERT vocab.txt")
    args = parser.parse_args()
    work = args.work or args.out / "gpu_check_work"
    work.mkdir(parents=True, exist_ok=True)
    train_file, vocab = make_data(work, args.vocab)
    result = {"environment": environment(args.dry_run), "shape": TINY if args.dry_run else LARGE,
              "window_tokens": 128 if args.dry_run else 512, "train": [], "predict": None}
    for name, extra in runs(args.dry_run):
        result["train"].append(train(name, extra, work, train_file, vocab, args.dry_run))
        print(json.dumps(result["train"][-1]), flush=True)
    result["predict"] = predict_throughput(train_file, vocab, args.dry_run)
    device = "dryrun" if args.dry_run else result["environment"]["device"].split()[-1].lower().replace("/", "_")
    path = args.out / f"gpu_{device}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(result))
    print(f"wrote {path}")
    return 1 if any("error" in r for r in result["train"]) else 0


if __name__ == "__main__":
    sys.exit(main())
