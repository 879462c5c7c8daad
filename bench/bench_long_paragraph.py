"""Benchmark: answering long paragraphs in process — latency vs paragraph length and questions per
request, and throughput against Hugging Face's question-answering pipeline on the same reader.

Readers (randomly initialised: latency does not depend on the weights): the shape of
``qa-scale demo``'s readers, built by ``bench_serve.readers`` (BERT, 2 layers, hidden 128, 4 heads,
FFN 512, a character vocabulary of the sample corpus; windows of 64 tokens, question ≤ 32 tokens,
overlap 16; ``save_reader`` seeds the weights with 0). Paragraphs of exactly 1,000 / 2,500 / 5,000 /
10,000 characters (``--sizes``) are the sample dev paragraphs concatenated in order (each source
paragraph at most once per paragraph), cut to the size; a request's questions are the dev questions
about the source paragraphs, then those of the following paragraphs when more are needed.

1. ``latency``: one request = one paragraph and 1, 8 or 32 questions (``--questions``), answered by
   a panel of ``--readers`` (4) readers — the same model directory 4 times, i.e. 4 separately loaded
   copies of one reader (the cost of a 4-reader panel; their mean logits equal one reader's) —
   through ``qa_scale.serving.readers.load_panel`` and ``qa_scale.serving.answering.answer(...,
   nbest=True)``, windows ``--batch-size`` (32) per forward pass. One untimed warm-up request, then
   ``--repeats`` (3) timed requests per cell, fewer when a cell's timed runs pass ``--cell-budget-s``
   (at least one). Recorded: every run (wall, process CPU and forward-pass time), the median, windows
   per request and forward passes per request (counted by forward hooks on every model, all readers
   together), and the load average after each cell (the machine is shared).
2. ``pipeline``: the same reader (one model directory) answering the same requests (``--compare-sizes``
   × ``--compare-questions`` questions) through ``answer()`` and through transformers 4.x's
   ``pipeline("question-answering")`` (``max_seq_len`` 64, ``doc_stride`` 16 = our overlap,
   ``max_question_len`` 32, ``max_answer_len`` = our decode's, ``top_k`` 1,
   ``handle_impossible_answer`` False, the same ``batch_size``, one pipeline call per request). The
   pipeline side runs in a subprocess of ``--tf4-python`` (``tools/bench_tf4_env.sh`` creates it):
   this file with ``--pipeline-worker``. Each side: one untimed warm-up request (the workload's
   first), then ``--compare-repeats`` timed passes over the workload; the sides alternate over
   ``--rounds`` (3), the first side changing every round. Questions/s = questions of the workload /
   wall time of a pass; the median pass of each side is reported, with the ratio ours / pipeline and
   each side's time inside the model's forward passes (the same hooks on both sides).
   Answer agreement (information): the share of questions with the same answer text on both sides —
   the decoders differ (ours: best start + end logit over all of a question's windows; the
   pipeline: best product of per-window softmax probabilities, spans widened to whole words).

Checks (exit status 1 if one fails): every question of every request answered, and every answer
and n-best entry of ours slices its text from the paragraph (``context[start:end]``); the model
directory saved by transformers 5 loads in 4.x with no missing, unexpected or mismatched tensor and
a fast tokenizer, and gives the same input ids and logits (max abs difference ≤ 1e-4) on a window;
both sides cut every request into the same number of windows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import emit, header  # noqa: E402


# ---- every call into qa_scale is in these two functions (its serving API is being refactored) ----

def load_readers(model_dirs: list[Path], batch_size: int):
    """(panel, its settings ``{"windows": …, "decode": …}``, a forward-pass counter on its models), on the CPU."""
    import inspect

    from qa_scale.serving.readers import load_panel

    models = [str(m) for m in model_dirs]
    if "options" in inspect.signature(load_panel).parameters:  # the typed-options form
        from qa_scale.inference.options import ReaderOptions

        # fp32, as the 4.x pipeline computes: like for like (answer/serve default to bf16 on CPUs with bf16 units)
        panel = load_panel(models, options=ReaderOptions(device="cpu", batch_size=batch_size, compute="fp32"))
    else:
        panel = load_panel(models, device="cpu", batch_size=batch_size)
    info = panel.info()
    return panel, {"windows": info["windows"], "decode": info["decode"]}, Forwards([r.model for r in panel.readers])


def ask(panel, context: str, questions: list[str]) -> list[dict]:
    """One request: answers (``answer``, ``start``, ``end``, ``nbest``, …) to ``questions`` about ``context``."""
    from qa_scale.serving.answering import Query, answer

    return answer(panel, [Query(context, q) for q in questions], nbest=True)


# ---- shared by both sides (the pipeline worker runs under transformers 4.x and imports no qa_scale) ----

class Forwards:
    """Counts the forward passes of models (hooks): windows, padded width and wall time of every batch."""

    def __init__(self, models: list) -> None:
        self.calls: list[tuple[int, int, int, float]] = []  # (model index, windows, width, seconds)
        self._started: dict[int, tuple[int, int, float]] = {}
        for n, m in enumerate(models):
            m.register_forward_pre_hook(self._pre(n), with_kwargs=True)
            m.register_forward_hook(self._post(n))

    def _pre(self, n: int):
        def hook(module, args, kwargs):
            ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            self._started[n] = (int(ids.shape[0]), int(ids.shape[1]), time.perf_counter())
        return hook

    def _post(self, n: int):
        def hook(module, args, output):
            windows, width, t = self._started.pop(n)
            self.calls.append((n, windows, width, time.perf_counter() - t))
        return hook

    def take(self) -> dict:
        """Since the last take: forward passes and their seconds (all models), windows and padded tokens
        (those of the first model)."""
        calls, self.calls = self.calls, []
        return {"forward_passes": len(calls), "windows": sum(w for n, w, _, _ in calls if n == 0),
                "padded_tokens": sum(w * t for n, w, t, _ in calls if n == 0),
                "forward_s": sum(s for *_, s in calls)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- the pipeline side: ``python bench_long_paragraph.py --pipeline-worker IN.json OUT.json`` ----

def pipeline_worker(job_path: str, out_path: str) -> None:
    """Load the model directory in transformers 4.x, warm up, time the workload; write JSON."""
    t0 = time.perf_counter()
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    transformers.logging.set_verbosity_error()
    job = json.loads(Path(job_path).read_text("utf-8"))
    if job["torch_threads"]:
        torch.set_num_threads(job["torch_threads"])
    model, loading = AutoModelForQuestionAnswering.from_pretrained(job["model"], output_loading_info=True)
    tok = AutoTokenizer.from_pretrained(job["model"])
    model.eval()
    pipe = pipeline("question-answering", model=model, tokenizer=tok, device="cpu")
    forwards = Forwards([pipe.model])
    kw = dict(job["pipeline_kwargs"])
    startup = time.perf_counter() - t0

    def request(context: str, questions: list[str]) -> list[dict]:
        out = pipe(question=questions, context=[context] * len(questions), **kw)
        return [out] if isinstance(out, dict) else list(out)

    check = job["check"]  # the same window through tokenizer and model, compared with transformers 5's
    enc = tok(check["question"], check["context"], truncation="only_second", max_length=kw["max_seq_len"],
              return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc)
    forwards.take()
    warm = job["workload"][0]
    request(warm["context"], warm["questions"])
    forwards.take()
    passes, forward_s = [], []
    for _ in range(job["repeats"]):
        answers, counts, t = [], [], time.perf_counter()
        for r in job["workload"]:
            answers.append(request(r["context"], r["questions"]))
            counts.append(forwards.take())
        passes.append(time.perf_counter() - t)
        forward_s.append(sum(c["forward_s"] for c in counts))
    result = {
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "torch_threads": torch.get_num_threads(),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "startup_s": round(startup, 2),
        "loading": {k: [str(x) for x in v] for k, v in loading.items()},
        "tokenizer": {"class": type(tok).__name__, "is_fast": bool(tok.is_fast)},
        "check": {"input_ids": enc["input_ids"][0].tolist(), "start_logits": logits.start_logits[0].tolist(),
                  "end_logits": logits.end_logits[0].tolist()},
        "passes_s": passes,
        "forward_s": forward_s,
        "per_request": counts,
        "answers": [[{k: a[k] for k in ("answer", "start", "end", "score")} for a in req] for req in answers],
    }
    Path(out_path).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")


def run_pipeline(python: Path, job: dict, tmp: Path, log) -> dict:
    (tmp / "job.json").write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(python), __file__, "--pipeline-worker", str(tmp / "job.json"), str(tmp / "out.json")],
                   check=True, cwd=tmp, env=env, stdout=log, stderr=log)
    return json.loads((tmp / "out.json").read_text("utf-8"))


# ---- our side, and the parts both use ----

def paragraphs(pairs: list[tuple[str, str]], sizes: list[int], n_questions: int) -> dict[int, dict]:
    """size → {"context": exactly ``size`` characters, "questions": ``n_questions``, how many are about it}."""
    contexts = list(dict.fromkeys(c for c, _ in pairs))
    if sum(map(len, contexts)) < max(sizes):
        raise SystemExit(f"the sample paragraphs hold {sum(map(len, contexts))} characters, fewer than {max(sizes)}")
    out = {}
    for size in sizes:
        used, total = 0, 0
        while total < size:
            total += len(contexts[used])
            used += 1
        about = [q for c, q in pairs if contexts.index(c) < used]
        others = [q for c, q in pairs if contexts.index(c) >= used]
        questions = (about + others) * (1 + n_questions // len(pairs))
        out[size] = {"context": "".join(contexts[:used])[:size], "questions": questions[:n_questions],
                     "source_paragraphs": used, "questions_about_it": min(len(about), n_questions)}
    return out


def bad_spans(context: str, questions: list[str], answers: list[dict]) -> list[str]:
    """What is wrong with our answers to one request (empty: nothing)."""
    bad = [] if len(answers) == len(questions) else [f"{len(answers)} answers to {len(questions)} questions"]
    for q, a in zip(questions, answers):
        if a.get("question", q) != q:
            bad.append(f"answer to {a.get('question')!r} in the place of {q!r}")
        spans = ([("answer", a["answer"], a["start"], a["end"])] if a["answer"] else []) + \
            [("nbest", e["text"], e["start"], e["end"]) for e in a.get("nbest", [])]
        bad += [f"{q!r}: {kind} {text!r} at [{s}, {e}) reads {context[s:e]!r}"
                for kind, text, s, e in spans if s is None or context[s:e] != text]
    return bad


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def latency(panel, forwards, paras: dict, args, bad: list) -> list[dict]:
    first = paras[min(paras)]
    ask(panel, first["context"], first["questions"][:max(args.questions)])  # warm-up, untimed
    forwards.take()
    rows = []
    for size, p in sorted(paras.items()):
        for nq in args.questions:
            questions, runs, cpu, counts = p["questions"][:nq], [], [], []
            while len(runs) < args.repeats and (not runs or sum(runs) < args.cell_budget_s):
                t, c = time.perf_counter(), time.process_time()
                answers = ask(panel, p["context"], questions)
                runs.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                counts.append(forwards.take())
                bad += bad_spans(p["context"], questions, answers)
            med = statistics.median(runs)
            fixed = [{k: v for k, v in c.items() if k != "forward_s"} for c in counts]
            rows.append({"chars": size, "questions": nq, **fixed[0],
                         "same_counts_every_run": all(c == fixed[0] for c in fixed),
                         "runs_ms": [ms(r) for r in runs], "median_ms": ms(med), "min_ms": ms(min(runs)),
                         "runs_cpu_ms": [ms(c) for c in cpu],
                         "runs_forward_ms": [ms(c["forward_s"]) for c in counts],
                         "ms_per_window": round(med * 1000 / counts[0]["windows"], 3),
                         "load_average_after": load_average(),
                         "questions_per_s": round(nq / med, 2)})
            print(f"latency {size:>6} chars × {nq:>2} questions: {rows[-1]['median_ms']:>9} ms "
                  f"({counts[0]['windows']} windows, {counts[0]['forward_passes']} forward passes)", file=sys.stderr)
    return rows


def ours_pass(panel, forwards, workload: list[dict], bad: list) -> tuple[float, list, list]:
    answers, counts, t = [], [], time.perf_counter()
    for r in workload:
        answers.append(ask(panel, r["context"], r["questions"]))
        counts.append(forwards.take())
    took = time.perf_counter() - t
    for r, a in zip(workload, answers):
        bad += bad_spans(r["context"], r["questions"], a)
    return took, answers, counts


def reference_window(model_dir: Path, check: dict, max_seq_len: int) -> dict:
    """The check window through transformers 5 directly (what the 4.x worker computes too)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
    enc = tok(check["question"], check["context"], truncation="only_second", max_length=max_seq_len,
              return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                    attention_mask=enc["attention_mask"])
    return {"input_ids": enc["input_ids"][0].tolist(), "start_logits": out.start_logits[0].tolist(),
            "end_logits": out.end_logits[0].tolist()}


def compare(model_dir: Path, settings: dict, paras: dict, args, tmp: Path, bad: list) -> tuple[dict, dict]:
    """(the pipeline comparison's results, its checks)."""
    import numpy as np

    panel, _, forwards = load_readers([model_dir], args.batch_size)
    workload = [{"context": paras[s]["context"], "questions": paras[s]["questions"][:args.compare_questions]}
                for s in args.compare_sizes]
    n_questions = sum(len(r["questions"]) for r in workload)
    w, d = settings["windows"], settings["decode"]
    check = {"question": workload[0]["questions"][0], "context": workload[0]["context"]}
    job = {"model": str(model_dir), "workload": workload, "repeats": args.compare_repeats, "check": check,
           "torch_threads": args.torch_threads,
           "pipeline_kwargs": {"max_seq_len": w["max_seq_len"], "doc_stride": w["doc_overlap"],
                               "max_question_len": w["max_question_len"], "max_answer_len": d["max_answer_len"],
                               "top_k": 1, "handle_impossible_answer": False, "batch_size": args.batch_size}}
    ours, pipe, log_path = [], [], tmp / "pipeline_worker.log"
    with open(log_path, "w") as log:
        for k in range(args.rounds):
            for side in (("ours", "pipeline") if k % 2 == 0 else ("pipeline", "ours")):
                if side == "ours":
                    ask(panel, workload[0]["context"], workload[0]["questions"])  # warm-up, untimed
                    forwards.take()
                    passes = [ours_pass(panel, forwards, workload, bad) for _ in range(args.compare_repeats)]
                    ours.append({"passes_s": [p[0] for p in passes], "answers": passes[-1][1],
                                 "forward_s": [sum(c["forward_s"] for c in p[2]) for p in passes],
                                 "per_request": passes[-1][2], "load_average": load_average()})
                else:
                    try:
                        pipe.append({**run_pipeline(args.tf4_python, job, tmp, log), "load_average": load_average()})
                    except subprocess.CalledProcessError as e:
                        log.flush()
                        raise SystemExit(f"the pipeline worker failed ({e}); its log:\n{log_path.read_text()[-3000:]}")
                last = (ours if side == "ours" else pipe)[-1]
                print(f"round {k + 1} {side}: {[round(x, 2) for x in last['passes_s']]} s", file=sys.stderr)
    ours_passes = [x for r in ours for x in r["passes_s"]]
    pipe_passes = [x for r in pipe for x in r["passes_s"]]
    ours_qps = n_questions / statistics.median(ours_passes)
    pipe_qps = n_questions / statistics.median(pipe_passes)
    a_ours = [a for req in ours[-1]["answers"] for a in req]
    a_pipe = [a for req in pipe[-1]["answers"] for a in req]
    same_text = [x["answer"] == y["answer"] for x, y in zip(a_ours, a_pipe)]
    same_span = [x["answer"] and (x["start"], x["end"]) == (y["start"], y["end"]) for x, y in zip(a_ours, a_pipe)]
    in_nbest = [y["answer"] in {e["text"] for e in x.get("nbest", [])} for x, y in zip(a_ours, a_pipe)]
    contexts = [r["context"] for r in workload for _ in r["questions"]]
    pipe_slices = sum(c[y["start"]:y["end"]] == y["answer"] for c, y in zip(contexts, a_pipe))
    reference = reference_window(model_dir, check, w["max_seq_len"])
    got = pipe[-1]["check"]
    same_ids = got["input_ids"] == reference["input_ids"]
    diff = (max(float(np.abs(np.subtract(got[k], reference[k])).max()) for k in ("start_logits", "end_logits"))
            if same_ids else None)
    windows_ours = [c["windows"] for c in ours[-1]["per_request"]]
    windows_pipe = [c["windows"] for c in pipe[-1]["per_request"]]
    first = pipe[0]
    results = {
        "reader": "one model directory (the demo-shaped reader above)",
        "workload": {"requests": [{"chars": len(r["context"]), "questions": len(r["questions"])} for r in workload],
                     "questions": n_questions, "windows_per_request": windows_ours},
        "pipeline_kwargs": job["pipeline_kwargs"],
        "pipeline_environment": {**first["versions"], "python_executable": str(args.tf4_python),
                                 "torch_threads": first["torch_threads"],
                                 "tokenizers_parallelism": first["tokenizers_parallelism"],
                                 "tokenizer": first["tokenizer"],
                                 "startup_s (import + load, untimed)": [r["startup_s"] for r in pipe]},
        "ours_environment": {"torch_threads": _torch_threads(),
                             "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM")},
        "ours": {"questions_per_s": round(ours_qps, 2), "median_pass_s": round(statistics.median(ours_passes), 3),
                 "passes_s_by_round": [[round(x, 3) for x in r["passes_s"]] for r in ours],
                 "forward_s_by_round": [[round(x, 3) for x in r["forward_s"]] for r in ours],
                 "median_forward_s": round(statistics.median([x for r in ours for x in r["forward_s"]]), 3),
                 "forward_passes_per_pass": sum(c["forward_passes"] for c in ours[-1]["per_request"]),
                 "padded_tokens_per_pass": sum(c["padded_tokens"] for c in ours[-1]["per_request"])},
        "pipeline": {"questions_per_s": round(pipe_qps, 2), "median_pass_s": round(statistics.median(pipe_passes), 3),
                     "passes_s_by_round": [[round(x, 3) for x in r["passes_s"]] for r in pipe],
                     "forward_s_by_round": [[round(x, 3) for x in r["forward_s"]] for r in pipe],
                 "median_forward_s": round(statistics.median([x for r in pipe for x in r["forward_s"]]), 3),
                 "forward_passes_per_pass": sum(c["forward_passes"] for c in pipe[-1]["per_request"]),
                     "padded_tokens_per_pass": sum(c["padded_tokens"] for c in pipe[-1]["per_request"]),
                     "answers_that_slice_their_text": f"{pipe_slices}/{len(a_pipe)}"},
        "throughput_ours_over_pipeline": round(ours_qps / pipe_qps, 2),
        "throughput_ratio_by_round": [round(statistics.median(p["passes_s"]) / statistics.median(o["passes_s"]), 2)
                                      for o, p in zip(ours, pipe)],
        "load_average_by_round": {"ours": [r["load_average"] for r in ours],
                                  "pipeline": [r["load_average"] for r in pipe]},
        "agreement": {"same_answer_text": round(sum(same_text) / len(same_text), 3),
                      "same_span": round(sum(map(bool, same_span)) / len(same_span), 3),
                      "pipeline_answer_in_our_nbest": round(sum(in_nbest) / len(in_nbest), 3),
                      "questions": len(same_text),
                      "examples_differing": [{"ours": x["answer"], "pipeline": y["answer"]}
                                             for x, y, s in zip(a_ours, a_pipe, same_text) if not s][:5]},
        "model_dir_in_transformers_4": {"loading_info": first["loading"], "same_input_ids": same_ids,
                                        "max_abs_logit_difference": diff,
                                        "fix_up": "none needed: the directory saved by transformers 5 is loaded as is"},
    }
    checks = {
        "tf4_loads_every_tensor": not any(first["loading"].get(k) for k in
                                          ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")),
        "tf4_fast_tokenizer": first["tokenizer"]["is_fast"],
        "tf4_same_window_ids_and_logits": bool(same_ids and diff is not None and diff <= 1e-4),
        "same_windows_both_sides": windows_ours == windows_pipe,
        "pipeline_answered_every_question": all(len(a) == len(r["questions"])
                                                for p in pipe for a, r in zip(p["answers"], workload)),
    }
    if not checks["same_windows_both_sides"]:
        results["windows_per_request_pipeline"] = windows_pipe
    return results, checks


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--pipeline-worker":
        pipeline_worker(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000],
                    help="paragraph lengths, characters")
    ap.add_argument("--questions", type=int, nargs="+", default=[1, 8, 32], help="questions per request")
    ap.add_argument("--readers", type=int, default=4,
                    help="readers of the latency panel (one directory, loaded n times)")
    ap.add_argument("--batch-size", type=int, default=32, help="windows per forward pass, both sides")
    ap.add_argument("--repeats", type=int, default=3, help="timed requests per latency cell (at most)")
    ap.add_argument("--cell-budget-s", type=float, default=10.0,
                    help="no further repeat of a latency cell once its timed runs took this long")
    ap.add_argument("--compare-sizes", type=int, nargs="+", default=None,
                    help="paragraph lengths of the pipeline comparison's requests (default: --sizes)")
    ap.add_argument("--compare-questions", type=int, default=8, help="questions per request in the comparison")
    ap.add_argument("--compare-repeats", type=int, default=1, help="timed passes over the workload per side and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the comparison, sides alternating")
    ap.add_argument("--tf4-python", type=Path, default=Path("/tmp/tf4venv/bin/python"),
                    help="python of a transformers 4.x environment (tools/bench_tf4_env.sh)")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads on both sides (default 0: torch's own default, as the server runs)")
    ap.add_argument("--skip-pipeline", action="store_true", help="latency only")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()
    args.compare_sizes = args.compare_sizes or args.sizes
    if not args.skip_pipeline and not args.tf4_python.exists():
        ap.error(f"{args.tf4_python} not found: run `bash tools/bench_tf4_env.sh` (or give --skip-pipeline)")

    import tokenizers
    import torch
    import transformers

    import bench_serve

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    started, load_start = time.perf_counter(), load_average()
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, pairs = bench_serve.readers(Path(tmp))["demo"]
        paras = paragraphs(pairs, sorted(set(args.sizes) | set(args.compare_sizes)),
                           max(max(args.questions), args.compare_questions))
        panel, settings, forwards = load_readers([model_dir] * args.readers, args.batch_size)
        rows = latency(panel, forwards, {s: paras[s] for s in args.sizes}, args, bad)
        del panel, forwards
        results, checks = {"latency": rows}, {}
        if not args.skip_pipeline:
            results["pipeline"], checks = compare(model_dir, settings, paras, args, Path(tmp), bad)
    checks = {"our_answers_answered_and_slice_their_text": not bad, **checks}
    summary = {"latency_median_ms": {str(s): {str(r["questions"]): r["median_ms"] for r in rows if r["chars"] == s}
                                     for s in args.sizes},
               "windows_per_request": {str(s): {str(r["questions"]): r["windows"] for r in rows if r["chars"] == s}
                                       for s in args.sizes}}
    if "pipeline" in results:
        p = results["pipeline"]
        summary.update(questions_per_s_ours=p["ours"]["questions_per_s"],
                       questions_per_s_pipeline=p["pipeline"]["questions_per_s"],
                       throughput_ours_over_pipeline=p["throughput_ours_over_pipeline"],
                       same_answer_text=p["agreement"]["same_answer_text"])
    result = {
        **header("long_paragraph", torch=torch.__version__, transformers=transformers.__version__,
                 tokenizers=tokenizers.__version__),
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
                     "reader": "BERT 2 layers, hidden 128, 4 heads, FFN 512, character vocabulary (bench_serve "
                               "demo shape), random weights (seed 0)",
                     "latency_panel": f"the same model directory {args.readers} times (separately loaded copies)",
                     **settings, "torch_threads": torch.get_num_threads(),
                     "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
                     "paragraphs": {str(s): {k: v for k, v in p.items() if k not in ("context", "questions")}
                                    for s, p in paras.items()}},
        "load_average": {"start": load_start, "end": load_average()},
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summary,
        "results": results,
        "checks": checks, "failures": bad[:10],
        "passed": all(checks.values()),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
