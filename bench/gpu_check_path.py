"""The ``path`` stage of ``bench/gpu_check.py``: the whole path, small but real, through the commands a
user types, each a child process under its timeout.

* member A, full fine-tuning, bf16 ZeRO-2, evaluated on dev during training, with accumulation (2
  micro-batches a step): stopped halfway (``run.stop_after``, which saves), then ``run.resume=auto``,
  which must continue from that step to the end; exported at the end;
* member B, LoRA on bf16 ZeRO-3, evaluated on dev during training, exported (adapter and merged model);
* an fp16 ZeRO-3 short run (dynamic loss scaling), exported;
* ``qa-scale predict`` of dev into a logits store for A and B, ``qa-scale ensemble`` of the two stores,
  ``qa-scale answer`` with one question on A's exported model.

Each sub-step is recorded with its status, seconds and figures; one that needs a failed one is "not run".
On the GPU the members have 4 layers of width 256 with the real vocabulary and 256-token windows; on
the CPU dry run 2 layers of width 64 and 128-token windows, fp32 for bf16.
"""

from __future__ import annotations

import math
import re

from gpu_check_common import DS, SMALL, TINY, Context, Budget, Steps, metric_rows, overrides, read_json

STEPS_A, STOP_A, STEPS_B, STEPS_FP16 = 8, 4, 6, 6
CONTEXT = "张伟于1987年出生在杭州，2010年毕业于浙江大学，后来在上海的一家银行工作了十年。"
QUESTION = "张伟在哪里出生？"


def _base(ctx: Context) -> dict:
    d = ctx.data
    return {"model.tokenizer": d.vocab, "model.tiny": TINY if ctx.dry else SMALL, "data.train_file": d.path_train,
            "data.dev_file": d.path_dev, "data.windows.max_seq_len": 128 if ctx.dry else 256,
            "data.windows.max_question_len": 32, "data.windows.doc_overlap": 32 if ctx.dry else 64,
            "optim.lr": 1e-3, "optim.warmup_ratio": 0.1, "optim.micro_batch_size": 4 if ctx.dry else 8,
            "optim.global_batch_size": 8 if ctx.dry else 16, "run.device": ctx.device, "run.precision": ctx.half,
            "run.log_every": 1, "run.tensorboard": "false"}


def _trained(run_dir, steps: int, dev: bool, files: tuple[str, ...]):
    """The check of a finished training run: summary, losses, dev rows, exported files."""

    def check(_child):
        s = read_json(run_dir / "summary.json")
        train, dev_rows = metric_rows(run_dir, "train"), metric_rows(run_dir, "dev")
        figures = {"steps": s["steps"], "finished": s["finished"], "skipped_steps": s["skipped_steps"],
                   "precision": s["precision"], "last_dev": s.get("last_dev"), "dev_rows": len(dev_rows),
                   "final_loss": train[-1]["loss"] if train else None, "peak_memory": s["peak_memory"],
                   "parameters": s["parameters"]}
        problems = []
        if not (s["finished"] and s["steps"] == steps):
            problems.append(f"{s['steps']} of {steps} steps, finished={s['finished']}")
        if not train or not math.isfinite(train[-1]["loss"]):
            problems.append(f"no finite last training loss in {run_dir / 'metrics.jsonl'}")
        if dev and not (dev_rows and all(r.get("em") is not None and r.get("f1") is not None for r in dev_rows)):
            problems.append("no dev EM/F1 rows: no evaluation during training")
        problems += [f"not exported: {run_dir / f} missing" for f in files if not (run_dir / f).exists()]
        return figures, problems

    return check


def _stopped(run_dir):
    def check(_child):
        s = read_json(run_dir / "summary.json")
        ok = s["steps"] == STOP_A and not s["finished"]
        return {"steps": s["steps"], "finished": s["finished"]}, \
            [] if ok else [f"run.stop_after={STOP_A} ended at step {s['steps']} (finished={s['finished']})"]
    return check


def resume_figures(run_dir, stopped_at: int, resumed_log: str) -> dict:
    """Did the resumed run continue the stopped one? Its log's "resumed from … (step N)", the summary,
    and the training rows of metrics.jsonl (each step once, 1 … total: a restart would log 1 … again)."""
    found = re.search(r"resumed from \S+ \(step (\d+)\)", resumed_log)
    s = read_json(run_dir / "summary.json")
    logged = [r["step"] for r in metric_rows(run_dir, "train")]
    continued = (found is not None and int(found.group(1)) == stopped_at == STOP_A and s["finished"]
                 and s["steps"] == STEPS_A and logged == list(range(1, STEPS_A + 1)))
    return {"stop_after": STOP_A, "stopped_at": stopped_at, "resumed_from": int(found.group(1)) if found else None,
            "final_steps": s["steps"], "total_steps": STEPS_A, "train_steps_logged": logged, "continued": continued}


def _store(store_dir):
    def check(child):
        out = child.json()
        figures = {"windows": out["windows"], "examples": out["examples"], "metrics": out.get("metrics"),
                   "predict_seconds": out.get("seconds")}
        problems = [] if (store_dir / "store.json").exists() and out["windows"] > 0 else [f"no store in {store_dir}"]
        if (out.get("metrics") or {}).get("f1") is None:
            problems.append("predict --references gave no metrics")
        return figures, problems
    return check


def _ensembled(ens_dir):
    def check(child):
        out = child.json()
        figures = {"members": [m["name"] for m in out["members"]], "weights": out["weights"],
                   "metrics": out.get("metrics"), "member_metrics": [m.get("metrics") for m in out["members"]]}
        problems = [] if len(out["members"]) == 2 and (ens_dir / "predictions.json").exists() else \
            [f"ensemble of {len(out['members'])} members, predictions.json in {ens_dir}: "
             f"{(ens_dir / 'predictions.json').exists()}"]
        if (out.get("metrics") or {}).get("f1") is None:
            problems.append("ensemble --references gave no metrics")
        return figures, problems
    return check


def _answered(child):
    out = child.json()
    a = out["answers"][0]
    figures = {"question": a["question"], "answer": a["answer"], "start": a["start"], "end": a["end"],
               "probability": a["probability"], "device": out.get("device"), "compute": out.get("compute")}
    ok = len(out["answers"]) == 1 and CONTEXT[a["start"]:a["end"]] == a["answer"]
    return figures, [] if ok else [f"the answer {a['answer']!r} is not context[{a['start']}:{a['end']}]"]


def run_path(ctx: Context, budget: Budget) -> tuple[dict, list[str]]:
    """The path stage: (figures, errors)."""
    steps, run, base, root = Steps(), ctx.runner, _base(ctx), ctx.work / "path"
    cap, dev = ctx.caps["path.train"], ctx.data.path_dev
    a, b, h = root / "member_a", root / "member_b", root / "fp16_zero3"
    a_values = {**base, "run.deepspeed": DS / "zero2_bf16.json", "optim.max_steps": STEPS_A, "run.eval_every": STOP_A,
                "run.save_every": STOP_A, "run.output_dir": a}
    child = run.qa_scale("path_a_stop", ["train", *overrides({**a_values, "run.stop_after": STOP_A})], budget, cap)
    if steps.check("member_a_stop", child, _stopped(a)):
        child = run.qa_scale("path_a_resume", ["train", *overrides({**a_values, "run.resume": "auto"})], budget, cap)
        if steps.check("member_a_resume", child, _trained(a, STEPS_A, True, ("model/model.safetensors",))):
            resume = resume_figures(a, steps.record["member_a_stop"]["steps"], child.text() + child.log.read_text())
            steps.record["member_a_resume"]["resume"] = resume
            if not resume["continued"]:
                steps.record["member_a_resume"]["status"] = "failed"
                steps.errors.append(f"member_a_resume: did not continue the stopped run: {resume}")
    else:
        steps.skip("member_a_resume", "member_a_stop")
    b_values = {**base, "mode": "lora", "optim.lr": 3e-3, "run.deepspeed": DS / "zero3_bf16.json",
                "optim.max_steps": STEPS_B, "run.eval_every": STEPS_B // 2, "run.save_every": STEPS_B, "run.output_dir": b}
    steps.check("member_b_lora_zero3", run.qa_scale("path_b", ["train", *overrides(b_values)], budget, cap),
                _trained(b, STEPS_B, True, ("model/model.safetensors", "adapter")))
    h_values = {**base, "data.dev_file": "null", "run.precision": "fp16", "run.deepspeed": DS / "zero3_fp16.json",
                "optim.max_steps": STEPS_FP16, "run.save_every": STEPS_FP16, "run.output_dir": h}
    env = {"QA_SCALE_CPU_FP16": "1"} if ctx.dry else None
    if steps.check("fp16_zero3", run.qa_scale("path_fp16", ["train", *overrides(h_values)], budget, cap, env),
                   _trained(h, STEPS_FP16, False, ("model/model.safetensors",))):
        last = metric_rows(h, "train")[-1]
        steps.record["fp16_zero3"]["loss_scale"] = last.get("loss_scale")
        if last.get("loss_scale") is None:
            steps.record["fp16_zero3"]["status"] = "failed"
            steps.errors.append("fp16_zero3: no loss scale logged: the fp16 loss scaler did not run")
    readers = ["--device", ctx.device, "--compute", ctx.half, "--batch-size", 32]
    for name, member, trained in (("a", a, "member_a_resume"), ("b", b, "member_b_lora_zero3")):
        if not steps.ok(trained):
            steps.skip(f"predict_{name}", trained)
            continue
        store = root / f"store_{name}"
        child = run.qa_scale(f"path_predict_{name}", ["predict", member / "model", dev, "--out", store, "--references",
                                                      dev, *readers, "--json"], budget, ctx.caps["path.predict"])
        steps.check(f"predict_{name}", child, _store(store))
    if steps.ok("predict_a") and steps.ok("predict_b"):
        ens = root / "ensemble"
        child = run.qa_scale("path_ensemble", ["ensemble", root / "store_a", root / "store_b", "--references", dev,
                                               "--out", ens, "--json"], budget, ctx.caps["path.ensemble"])
        steps.check("ensemble", child, _ensembled(ens))
    else:
        steps.skip("ensemble", "predict_a or predict_b")
    if steps.ok("member_a_resume"):
        child = run.qa_scale("path_answer", ["answer", a / "model", *readers, "--context", CONTEXT, "--question",
                                             QUESTION, "--json"], budget, ctx.caps["path.answer"])
        steps.check("answer", child, _answered)
    else:
        steps.skip("answer", "member_a_resume")
    return {"steps": steps.record}, steps.errors
