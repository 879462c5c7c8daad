"""The one-GPU rehearsal: the whole path, its tests and its speed, staged, in ≤ 9 minutes on one H200.

Five stages run in order; each is recorded in one JSON with its status (passed, failed; ``pytest_gpu``
also skipped), seconds, budget, figures and errors. A failing stage does not stop the later ones; the
exit status is 1 when any stage failed. Every command is a child process under a timeout (the time
table below), and the JSON is written again after each stage, so a killed run still leaves one.

1. ``imports``: deepspeed, datasets, nltk (the lent machine gets them from the carried wheels), the
   other packages, then every ``qa_scale`` module (pkgutil walk); one line names the first failure.
   Then the DeepSpeed ops a process group loads are built once (on the CPU its shared-memory
   all-reduce, 30-90 s; nothing on a GPU), so that no training child pays for a build.
2. ``path``: the whole path, small but real, through ``qa-scale`` as a user types it: member A (bf16
   ZeRO-2, dev evaluation during training) stopped halfway then resumed (the step count must
   continue), member B (LoRA on bf16 ZeRO-3), an fp16 ZeRO-3 run, exports, ``predict`` stores of dev
   for A and B, ``ensemble`` of the two, ``answer`` on A's model (``gpu_check_path.py``).
3. ``pytest_gpu``: ``pytest -m gpu tests/test_gpu.py`` with its counts; with no CUDA device (the dry
   run) its tests skip, and the stage says skipped, not passed.
4. ``speed``: the MacBERT-large shape through ``qa-scale train``: bf16 ZeRO-2 at 512 tokens (micro-
   batches 32, 16, 8, 4) and 384 tokens (32, 4), bf16 ZeRO-3, LoRA, fp16: tokens/s, MFU, peak memory;
   and the plain PyTorch loop of ``plain_loop.py`` (same model, windows and batches, bf16 autocast,
   fused AdamW) on each bf16 ZeRO-2 configuration, with the ratio engine / baseline
   (``gpu_check_speed.py``).
5. ``predict_speed``: windows/s of the library's bf16 forward (one rank) on the MacBERT-large shape.

JSON (``OUT/gpu_<device>.json``, ``gpu_dryrun.json`` for the dry run): ``environment``, ``time_table``,
``stages`` (name → ``status``, ``seconds``, ``budget_s``, ``granted_s`` (with what earlier stages left),
``figures``, ``errors``), ``passed``, ``total_seconds``. A table is printed at the end.

    bash bench/gpu_check.sh --out "$OUT"         # on the GPU machine (installs the carried wheels first)
    bash bench/gpu_check.sh --dry-run --out /tmp/gpu_dry   # the same stages, tiny shape, CPU, gloo (CI)

The work folder (data, runs, stores, logs) is made under ``/tmp`` (or ``--work``) and removed at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

from gpu_check_common import ROOT, SHARED_VOCAB, Budget, Context, Runner, make_data
from gpu_check_path import run_path
from gpu_check_speed import run_predict_speed, run_speed

# The time table, in seconds: (on one H200, on the CPU dry run). A stage's children share its budget
# plus what earlier stages left unspent; each child's timeout is its own line here, cut to what is left
# of that, and no child starts with under 3 s left. The GPU stage budgets add up to 510 s: with the wheel
# install and the sample data (≈ 20 s) the rehearsal ends within 9 minutes whatever its children do.
TIME_TABLE = {
    # stage, or stage.child     GPU   dry
    "imports":                  (40,  210),
    "imports.packages":         (30,  60),
    "imports.ops":              (15,  150),  # DeepSpeed's CPU all-reduce op: built once here, not in a train child
    "path":                     (145, 240),
    "path.train":               (40,  60),   # each: member A to its stop, A resumed, member B, fp16 ZeRO-3
    "path.predict":             (25,  45),   # each: the dev store of A, of B
    "path.ensemble":            (15,  30),
    "path.answer":              (20,  45),
    "pytest_gpu":               (60,  60),
    "speed":                    (235, 330),
    "speed.baseline":           (60,  60),   # the plain loop: every bf16 ZeRO-2 configuration, one child
    "speed.engine":             (45,  60),   # each of the 10 other engine runs (6 on the dry run)
    "speed.compile":            (90,  120),  # the run.compile run: inductor compiles the model first
    "predict_speed":            (30,  60),
}
STAGES = ("imports", "path", "pytest_gpu", "speed", "predict_speed")


def run_imports(ctx: Context, budget: Budget):
    script = ROOT / "bench" / "gpu_check_imports.py"
    figures: dict = {}
    for name, args in (("packages", []), ("ops", ["--ops"])):
        child = ctx.runner.run(f"imports_{name}", [sys.executable, script, *args], budget, ctx.caps[f"imports.{name}"])
        try:
            out = child.json()
        except (json.JSONDecodeError, OSError):
            out = {}
        if not child.ok:
            return figures, [out.get("error") or child.error()]
        figures.update(out if name == "packages" else {"ops": out})
    return figures, []


def _python_for_tests(work: Path) -> tuple[str, str]:
    """(python, how): ``tests/cli_runs.py`` runs the ``qa-scale`` beside ``sys.executable``. Where none is
    installed (the GPU machine runs the source tree from PYTHONPATH), a folder with a link to this python
    and a ``qa-scale`` script that runs ``python -m qa_scale``."""
    if (Path(sys.executable).parent / "qa-scale").exists():
        return sys.executable, "installed console script"
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = bin_dir / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    script = bin_dir / "qa-scale"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m qa_scale "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return str(python), f"{script} (python -m qa_scale)"


def run_pytest_gpu(ctx: Context, budget: Budget):
    python, how = _python_for_tests(ctx.work)
    xml = ctx.work / "pytest_gpu.xml"
    child = ctx.runner.run("pytest_gpu", [python, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-p",
                                          "no:cacheprovider", f"--junitxml={xml}"], budget, ctx.caps["pytest_gpu"])
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in counts}
    lines = child.text().strip().splitlines()
    figures = {"exit_status": child.rc, **counts, "passed": counts["tests"] - counts["failures"] - counts["errors"]
               - counts["skipped"], "summary": lines[-1] if lines else None, "qa_scale": how}
    if not child.ok or counts["failures"] or counts["errors"]:
        return figures, [child.error() if not child.ok else f"{counts['failures']} failed, {counts['errors']} errors"]
    if counts["tests"] == 0:
        return figures, ["no test ran"]
    if counts["skipped"]:
        if ctx.dry and counts["skipped"] == counts["tests"]:
            return figures, [], "skipped"  # no CUDA device: skipped, which is not passed
        return figures, [f"{counts['skipped']} of {counts['tests']} gpu tests skipped on a GPU machine"]
    return figures, []


RUNNERS = {"imports": run_imports, "path": run_path, "pytest_gpu": run_pytest_gpu, "speed": run_speed,
           "predict_speed": run_predict_speed}
NEEDS_DATA = {"path", "speed", "predict_speed"}


def environment(dry: bool) -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        cuda = torch.version.cuda
    except Exception:  # noqa: BLE001 - the imports stage says what is wrong
        gpu = cuda = None
    return {"device": gpu or f"CPU ({os.cpu_count()} cores)", "dry_run": dry, "cuda": cuda,
            **{name: version(name) for name in ("torch", "deepspeed", "transformers", "datasets", "nltk", "peft")},
            "python": platform.python_version(), "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run_stage(name: str, ctx: Context, seconds: float, granted: float, setup_error: str | None) -> dict:
    t0, budget = time.perf_counter(), Budget(granted)
    status = None
    if name in NEEDS_DATA and setup_error:
        figures, errors = {}, [f"no sample data: {setup_error}"]
    else:
        try:
            figures, errors, *rest = RUNNERS[name](ctx, budget)
            status = rest[0] if rest else None
        except Exception as exc:  # noqa: BLE001 - a stage that breaks is a failed stage, the others go on
            figures, errors = {}, [f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"]
    return {"status": status or ("failed" if errors else "passed"), "seconds": round(time.perf_counter() - t0, 1),
            "budget_s": seconds, "granted_s": round(granted, 1), "figures": figures, "errors": errors}


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if x is not None else "n/a"


def table(result: dict) -> str:
    lines = ["| stage | status | seconds | budget | first error |", "|---|---|---:|---:|---|"]
    for name, s in result["stages"].items():
        first = s["errors"][0].splitlines()[0][:120] if s["errors"] else ""
        lines.append(f"| {name} | {s['status']} | {s['seconds']} | {s['granted_s']} | {first} |")
    speed = result["stages"].get("speed", {}).get("figures", {}).get("runs", {})
    if speed:
        lines += ["", "| run | tokens/s | MFU | baseline tokens/s | baseline MFU | engine/baseline | peak memory | "
                      "skipped |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in speed.items():
            if name == "baseline" or r["status"] != "passed":
                if name != "baseline":
                    lines.append(f"| {name} | {r['status']} | | | | | | |")
                continue
            b = r.get("baseline_tokens_per_s")
            lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {_pct(r['mfu'])} | {f'{b:,.0f}' if b else ''} | "
                         f"{_pct(r.get('baseline_mfu')) if b else ''} | {r.get('engine_over_baseline') or ''} | "
                         f"{r['peak_memory_gib']} GiB | {r['skipped_steps']} |")
    p = result["stages"].get("predict_speed", {}).get("figures", {})
    if p.get("windows_per_s"):
        lines.append(f"\npredict ({p['dtype']}, batch {p['batch_size']}): {p['windows_per_s']:,} windows/s, "
                     f"{p['tokens_per_s']:,} tokens/s over {p['windows']} windows")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shape on the CPU: the same stages, no GPU")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()),
                        help="the work folder is made inside this one (default: the temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs, stores, logs)")
    parser.add_argument("--vocab", type=Path, default=SHARED_VOCAB, help="the Chinese BERT vocab.txt")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    args = parser.parse_args()
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    if unknown := set(wanted) - set(STAGES):
        parser.error(f"unknown stages {sorted(unknown)}: choose from {', '.join(STAGES)}")
    t0, col = time.perf_counter(), 1 if args.dry_run else 0
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_", dir=args.work))
    env = environment(args.dry_run)
    device = "dryrun" if args.dry_run else env["device"].split()[-1].lower().replace("/", "_")
    path = args.out / f"gpu_{device}.json"
    runner = Runner(work / "logs", work / "torch_extensions")
    ctx = Context(args.dry_run, work, None, runner, {k: v[col] for k, v in TIME_TABLE.items()})
    result = {"environment": env, "time_table": {k: v[col] for k, v in TIME_TABLE.items()}, "work": str(work),
              "stages": {}, "passed": None, "total_seconds": None}
    setup_error, carry = None, 0.0
    try:
        for name in [s for s in STAGES if s in wanted]:
            if name in NEEDS_DATA and ctx.data is None and setup_error is None:
                try:
                    ctx.data = make_data(work, args.vocab, args.dry_run)
                except Exception as exc:  # noqa: BLE001 - recorded in every stage that needs the data
                    setup_error = f"{type(exc).__name__}: {exc}"
            seconds = TIME_TABLE[name][col]
            stage = result["stages"][name] = run_stage(name, ctx, seconds, seconds + carry, setup_error)
            carry = max(0.0, stage["granted_s"] - stage["seconds"])
            first = f": {stage['errors'][0].splitlines()[0]}" if stage["errors"] else ""
            print(f"[{name}] {stage['status']} in {stage['seconds']} s (of {stage['granted_s']}){first}", flush=True)
            result["passed"] = all(s["status"] != "failed" for s in result["stages"].values())
            result["total_seconds"] = round(time.perf_counter() - t0, 1)
            path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    print(f"wrote {path} ({result['total_seconds']} s){f'; work folder kept: {work}' if args.keep else ''}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
