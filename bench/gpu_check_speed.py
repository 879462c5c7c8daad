"""The ``speed`` and ``predict_speed`` stages of ``bench/gpu_check.py``.

``speed``: ``qa-scale train`` (the real command, a plain process: on a GPU a one-rank ``nccl`` group
running the very collectives of an 8-GPU run) on the MacBERT-large shape (24 layers, hidden 1024, 16
heads, 4096 FFN, the real 21,128-entry vocabulary, random weights), ``random_answer`` windows (full
windows: 700–900-character paragraphs): bf16 ZeRO-2 at 512 tokens and micro-batches 32, 16, 8 and the
8-GPU layout's 4, at 384 tokens and micro-batches 32 and 4; the speed levers ZeRO off (stage 0, fused
AdamW) and ``run.compile``, bf16 ZeRO-3, LoRA (ZeRO-2) and fp16 ZeRO-2 at 512 tokens and micro-batch 32. Tokens/s and MFU are the medians of the log rows (the first step is
warm-up: the trainer leaves it, evaluations and saves out of its rates); peak memory is CUDA max
allocated. Before them, in one child, the plain PyTorch loop of ``plain_loop.py`` on every bf16
ZeRO-2 configuration: each of those runs gets ``baseline_tokens_per_s`` and ``engine_over_baseline``.
Runs go most wanted first, so a spent budget cuts the tail: those runs are
recorded as "not run" with the reason (and listed in ``not_run``), not as failures. Each run's folder (a MacBERT-large
checkpoint is ~4.7 GB) is removed once its figures are read.

``predict_speed``: windows/s of the library's sharded forward (one rank) in bf16 on the GPU, in a
child (``python bench/gpu_check_speed.py predict SPEC_JSON``).

On the CPU dry run: the tiny shape, 128/96 tokens, micro-batches a quarter as large, fp32 for bf16,
and of the six bf16 ZeRO-2 configurations only the two corners (512 tokens × 32, 384 × 4).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from gpu_check_common import DS, LARGE, ROOT, TINY, Budget, Context, Steps, metric_rows, overrides, read_json

SEED = 42  # the recipe's default run.seed: the baseline cuts the engine's windows and batches with it


def _windows(dry: bool) -> dict[int, dict]:
    """Window settings by nominal length (512, 384): the real ones, or the dry run's small ones."""
    if dry:
        return {512: {"seq": 128, "question": 32, "overlap": 32}, 384: {"seq": 96, "question": 32, "overlap": 32}}
    return {512: {"seq": 512, "question": 64, "overlap": 128}, 384: {"seq": 384, "question": 64, "overlap": 128}}


def engine_runs(dry: bool) -> list[dict]:
    """Every engine measurement, most wanted first; ``baseline``: the plain loop measures it too."""
    w, scale = _windows(dry), 4 if dry else 1
    runs = []
    # the dry run keeps the two corners (its command lines differ from the others' only in numbers): 2 cores
    grid = ((512, 32), (384, 4)) if dry else ((512, 32), (512, 4), (384, 32), (384, 4), (512, 16), (512, 8))
    for nominal, micro in grid:
        win = w[nominal]
        runs.append({"name": f"zero2_bf16_s{win['seq']}_mb{micro // scale}", **win, "micro": micro // scale,
                     "deepspeed": "zero2_bf16.json", "mode": "full", "precision": "bf16", "baseline": True})
    top, win = 32 // scale, w[512]
    # the speed levers of docs/training.md at the top configuration: ZeRO off with a fused AdamW (one GPU has
    # nothing to partition) and run.compile (its compilation has a timeout of its own: speed.compile)
    levers = [{"name": f"zero0_bf16_s{win['seq']}_mb{top}", **win, "micro": top, "deepspeed": "zero0_bf16.json",
               "mode": "full", "precision": "bf16", "baseline": False},
              {"name": f"compiled_zero2_bf16_s{win['seq']}_mb{top}", **win, "micro": top,
               "deepspeed": "zero2_bf16.json", "mode": "full", "precision": "bf16", "baseline": False, "compile": True}]
    runs[4:4] = levers  # after the corners: on the GPU before the 512-token micro-batches 16 and 8
    runs += [{"name": f"zero3_bf16_s{win['seq']}_mb{top}", **win, "micro": top, "deepspeed": "zero3_bf16.json",
              "mode": "full", "precision": "bf16", "baseline": False},
             {"name": f"lora_zero2_bf16_s{win['seq']}_mb{top}", **win, "micro": top, "deepspeed": "zero2_bf16.json",
              "mode": "lora", "precision": "bf16", "baseline": False},
             {"name": f"zero2_fp16_s{win['seq']}_mb{top}", **win, "micro": top, "deepspeed": "zero2_fp16.json",
              "mode": "full", "precision": "fp16", "baseline": False}]
    return runs


def steps(dry: bool) -> tuple[int, int]:
    """(steps, log_every) of every speed run, engine and baseline alike."""
    return (4, 1) if dry else (30, 5)


def _engine(ctx: Context, run: dict, budget: Budget):
    """One ``qa-scale train`` measurement: (child, check)."""
    out = ctx.work / "speed" / run["name"]
    n_steps, every = steps(ctx.dry)
    precision = run["precision"] if run["precision"] == "fp16" or not ctx.dry else "fp32"
    values = {"mode": run["mode"], "model.tokenizer": ctx.data.vocab, "model.tiny": TINY if ctx.dry else LARGE,
              "data.train_file": ctx.data.speed_train, "data.strategy": "random_answer",
              "data.windows.max_seq_len": run["seq"], "data.windows.max_question_len": run["question"],
              "data.windows.doc_overlap": run["overlap"], "optim.lr": 3e-4 if run["mode"] == "lora" else 2e-5,
              "optim.warmup_ratio": 0.1, "optim.max_steps": n_steps, "optim.micro_batch_size": run["micro"],
              "optim.global_batch_size": run["micro"], "run.output_dir": out, "run.precision": precision,
              "run.device": ctx.device, "run.deepspeed": DS / run["deepspeed"], "run.seed": SEED,
              "run.log_every": every, "run.save_every": 10**6, "run.eval_every": 10**6, "run.export": "false",
              "run.tensorboard": "false", "run.compile": str(run.get("compile", False)).lower()}
    env = {"QA_SCALE_CPU_FP16": "1"} if ctx.dry and precision == "fp16" else None
    child = ctx.runner.qa_scale(f"speed_{run['name']}", ["train", *overrides(values)], budget,
                                ctx.caps["speed.compile" if run.get("compile") else "speed.engine"], env)

    def check(_child):
        s = read_json(out / "summary.json")
        rows = metric_rows(out, "train")
        timed = [r for r in rows if r.get("tokens_per_s")]

        def median(key):
            values = [r[key] for r in timed if r.get(key) is not None]
            return round(statistics.median(values), 4) if values else None

        figures = {"seq": run["seq"], "micro_batch": run["micro"], "mode": run["mode"], "precision": precision,
                   "deepspeed": run["deepspeed"], "compiled": s.get("compiled"), "steps": s["steps"], "tokens_per_s": median("tokens_per_s"),
                   "samples_per_s": median("samples_per_s"), "mfu": median("mfu"),
                   "peak_memory_gib": round(s["peak_memory"]["bytes"] / 2**30, 2),
                   "peak_memory_kind": s["peak_memory"]["kind"], "skipped_steps": s["skipped_steps"],
                   "final_loss_scale": next((r["loss_scale"] for r in reversed(rows) if r.get("loss_scale")), None),
                   "parameters": s["parameters"], "wall_seconds": _child.seconds}
        ok = s["steps"] == n_steps and (figures["tokens_per_s"] or 0) > 0
        return figures, [] if ok else [f"{s['steps']} of {n_steps} steps, tokens/s {figures['tokens_per_s']}"]

    return child, check, out


def _baseline(ctx: Context, runs: list[dict], budget: Budget):
    n_steps, every = steps(ctx.dry)
    spec = {"vocab": str(ctx.data.vocab), "train_file": str(ctx.data.speed_train), "shape": TINY if ctx.dry else LARGE,
            "configs": [{k: r[k] for k in ("name", "seq", "question", "overlap", "micro")} for r in runs],
            "steps": n_steps, "log_every": every, "seed": SEED, "lr": 2e-5, "warmup_ratio": 0.1,
            "weight_decay": 0.01, "device": ctx.device, "dtype": "fp32" if ctx.dry else "bf16"}
    return ctx.runner.run("speed_baseline", [sys.executable, ROOT / "bench" / "plain_loop.py", json.dumps(spec)],
                          budget, ctx.caps["speed.baseline"])


def run_speed(ctx: Context, budget: Budget) -> tuple[dict, list[str]]:
    """The speed stage: (figures, errors)."""
    record, runs = Steps(), engine_runs(ctx.dry)
    wanted = [r for r in runs if r["baseline"]]
    base: dict[str, dict] = {}

    def baseline_check(child):
        out = child.json()
        base.update({r["name"]: r for r in out["runs"]})
        return out, [f"{r['name']}: no tokens/s" for r in out["runs"] if not (r["tokens_per_s"] or 0) > 0]

    record.check("baseline", _baseline(ctx, wanted, budget), baseline_check)
    not_run = []
    for run in runs:
        child, check, out = _engine(ctx, run, budget)
        if child.not_started:  # the stage's budget is spent: the tail (least wanted) is said, not failed
            record.record[run["name"]] = {"status": "not run", "why": child.not_started}
            not_run.append(run["name"])
            continue
        record.check(run["name"], child, check)
        shutil.rmtree(out, ignore_errors=True)  # a MacBERT-large checkpoint: ~4.7 GB of a 64 GiB disk
        entry = record.record[run["name"]]
        if run["baseline"] and entry["status"] == "passed":
            b = base.get(run["name"])
            entry["baseline_tokens_per_s"] = b and b["tokens_per_s"]
            entry["baseline_mfu"] = b and b["mfu"]
            entry["engine_over_baseline"] = round(entry["tokens_per_s"] / b["tokens_per_s"], 3) if b else None
            if not b:
                record.errors.append(f"{run['name']}: no baseline to compare with")
    return {"shape": TINY if ctx.dry else LARGE, "steps": steps(ctx.dry)[0], "log_every": steps(ctx.dry)[1],
            "runs": record.record, "not_run": not_run}, record.errors


def run_predict_speed(ctx: Context, budget: Budget) -> tuple[dict, list[str]]:
    """The predict_speed stage: (figures, errors)."""
    spec = {"vocab": str(ctx.data.vocab), "train_file": str(ctx.data.speed_train), "dry": ctx.dry}
    child = ctx.runner.run("predict_speed", [sys.executable, __file__, "predict", json.dumps(spec)], budget,
                           ctx.caps["predict_speed"])
    if not child.ok:
        return {}, [child.error()]
    out = child.json()
    return out, [] if out["windows_per_s"] > 0 else ["no windows/s"]


def predict_throughput(spec: dict) -> dict:
    """Windows/s of the sharded forward (one rank) in bf16 on the GPU (fp32 on the CPU dry run)."""
    import torch

    from qa_scale import data
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.data.windows import WindowConfig, build_windows
    from qa_scale.inference.forward import predict_logits
    from qa_scale.modeling.model import load_qa_model
    from qa_scale.runtime.distributed import single

    dry = spec["dry"]
    tok = load_tokenizer(spec["vocab"])
    device = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    model = load_qa_model(None, vocab_size=max(tok.get_vocab().values()) + 1, tiny=TINY if dry else LARGE, seed=0)
    model = model.to(device=device, dtype=dtype).eval()
    examples = data.load(Path(spec["train_file"]), "lenient").examples[: 32 if dry else 512]
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


if __name__ == "__main__" and sys.argv[1:2] == ["predict"]:
    print(json.dumps(predict_throughput(json.loads(sys.argv[2]))))
