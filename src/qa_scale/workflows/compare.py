"""``qa-scale compare``: LoRA against full fine-tuning, same backbone, data and seed.

It runs the two trainings (``RECIPE`` with ``mode=full`` and with ``mode=lora``, each through the
same launcher), or collects two finished run folders, and writes ``comparison.md``,
``comparison.json`` and ``comparison.png``: trainable parameters, peak memory, samples/s, wall
time, dev EM/F1 with bootstrap confidence intervals and the paired difference.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..common.inputs import read_mapping
from ..common.outputs import atomic_open, note_input, workdir, write_json
from ..runtime import processes

log = logging.getLogger(__name__)
MODES = ("full", "lora")
# Settings two runs must share for their comparison to mean anything.
SHARED = (("model", "name_or_path"), ("model", "tiny"), ("data", "train_file"), ("data", "dev_file"),
          ("data", "windows"), ("data", "strategy"), ("run", "seed"), ("optim", "global_batch_size"))
# What the comparison reads of each run's summary.json.
SUMMARY_KEYS = (("precision",), ("peak_memory", "kind"))
SUMMARY_NUMBERS = (("parameters", "trainable"), ("parameters", "total"), ("parameters", "trainable_percent"),
                   ("world_size",), ("steps",), ("peak_memory", "bytes"), ("samples_per_s",), ("train_seconds",))


class CompareError(ValueError):
    """Runs that cannot be compared (unfinished, no dev set, or different settings)."""


def run_pair(recipe: Path | None, overrides: list[str], out: Path, launcher: str = "",
             lora_overrides: list[str] = (), full_overrides: list[str] = ()) -> dict[str, dict]:
    """Train ``out/full`` and ``out/lora`` (a finished run is reused, an unfinished one resumed)."""
    runs = {}
    for mode in MODES:
        run_dir = out / mode
        if _finished(run_dir):
            log.info("%s: finished run found, reusing it", run_dir)
            runs[mode] = {"dir": str(run_dir), "process_seconds": None}
            continue
        extra = list(lora_overrides if mode == "lora" else full_overrides)
        cmd = processes.command(["train", *([str(recipe)] if recipe else []), *overrides, *extra,
                                 f"mode={mode}", f"run.output_dir={run_dir}", "run.resume=auto"], launcher)
        log.info("%s run: %s", mode, shlex.join(cmd))
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=processes.child_env(), check=False, stdout=sys.stderr)  # our stdout: the table alone
        if proc.returncode != 0:
            raise CompareError(f"the {mode} run failed (exit {proc.returncode}): {shlex.join(cmd)}")
        runs[mode] = {"dir": str(run_dir), "process_seconds": round(time.perf_counter() - started, 1)}
    return runs


def _finished(run_dir: Path) -> bool:
    path = run_dir / "summary.json"
    return path.exists() and bool(read_mapping(path, "run summary").get("finished", False))


def _load_run(run_dir: Path) -> tuple[dict, dict, dict]:
    for name in ("summary.json", "config.yaml", "dev_predictions.json"):
        if not (run_dir / name).exists():
            hint = " (a run without data.dev_file has no dev scores)" if name == "dev_predictions.json" else ""
            raise CompareError(f"{run_dir}: no {name}{hint}")
    summary = read_mapping(run_dir / "summary.json", "run summary")
    if not summary.get("finished"):
        raise CompareError(f"{run_dir}: the run has not finished ({summary.get('steps')} of "
                           f"{summary.get('total_steps')} steps)")
    config = read_mapping(run_dir / "config.yaml", "run config")
    _require(summary, run_dir / "summary.json", SUMMARY_KEYS)
    _require(summary, run_dir / "summary.json", SUMMARY_NUMBERS, positive=True)  # ratios divide by them
    _require(config, run_dir / "config.yaml", (*SHARED, ("mode",)))
    predictions = read_mapping(run_dir / "dev_predictions.json", "predictions file")
    return summary, config, predictions


def _require(mapping: dict, path: Path, keys: tuple[tuple[str, ...], ...], positive: bool = False) -> None:
    """Refuse a run file that lacks a key the comparison reads (or, with ``positive``, whose value is
    not a finite number > 0), naming the file and the key."""
    for key in keys:
        obj = mapping
        for depth, part in enumerate(key):
            if not isinstance(obj, dict) or part not in obj:
                where = ".".join(key[: depth + 1])
                raise CompareError(f"{path}: no {where} (written by training; the file is damaged or from "
                                   "another tool)")
            obj = obj[part]
        if positive and (isinstance(obj, bool) or not isinstance(obj, (int, float)) or not 0 < obj < float("inf")):
            raise CompareError(f"{path}: {'.'.join(key)} must be a number > 0, got {obj!r}")


def _check_same_setup(configs: dict[str, dict], dirs: dict) -> None:
    a, b = (configs[m] for m in MODES)
    files = " vs ".join(f"{Path(dirs[m]) / 'config.yaml'}" for m in MODES)
    for section, key in SHARED:
        if a[section][key] != b[section][key]:
            raise CompareError(f"the runs differ in {section}.{key}: {a[section][key]!r} (full) vs "
                               f"{b[section][key]!r} (lora) ({files}); compare runs on the same backbone, data "
                               "and seed")
    if a["mode"] != "full" or b["mode"] != "lora":
        raise CompareError(f"expected a full and a LoRA run, got modes {a['mode']!r} and {b['mode']!r} ({files})")


def bootstrap_ci(values: np.ndarray, other: np.ndarray | None = None, confidence: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (scipy) of the mean of ``values``, or of the mean paired
    difference ``values - other`` (questions resampled together), in the values' units."""
    from scipy.stats import bootstrap

    data = values if other is None else values - other
    if np.all(data == data[0]):  # every resample gives the same mean
        return float(data[0]), float(data[0])
    res = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def collect(dirs: dict[str, Path], resamples: int = 2000, seed: int = 0,
            process_seconds: dict[str, float | None] | None = None) -> dict:
    """The comparison of two finished runs (``{"full": dir, "lora": dir}``) as a JSON-able dict."""
    from .. import data
    from ..evaluation import metrics

    loaded = {m: _load_run(Path(dirs[m])) for m in MODES}
    _check_same_setup({m: loaded[m][1] for m in MODES}, dirs)
    dev_file = loaded["full"][1]["data"]["dev_file"]
    refs = data.load_references(dev_file, skip_bad=True)  # the runs read it leniently too
    ids = sorted(set(loaded["full"][2]) & set(loaded["lora"][2]))
    if not ids:
        raise CompareError(f"the two runs have no dev question in common: {dirs['full']}/dev_predictions.json vs "
                           f"{dirs['lora']}/dev_predictions.json")
    per = {}
    result: dict = {"dev_file": dev_file, "questions": len(ids), "confidence": 0.95, "bootstrap_resamples": resamples,
                    "runs": {}}
    for mode in MODES:
        summary, config, predictions = loaded[mode]
        scores = metrics.evaluate(predictions, [(i, refs[i]) for i in ids])
        em = np.array([q.em for q in scores.per_question]) * 100
        f1 = np.array([q.f1 for q in scores.per_question]) * 100
        per[mode] = (em, f1)
        params = summary["parameters"]
        result["runs"][mode] = {
            "dir": str(dirs[mode]), "backbone": config["model"]["name_or_path"] or "tiny (random)",
            "precision": summary["precision"], "world_size": summary["world_size"], "steps": summary["steps"],
            "trainable_parameters": params["trainable"], "total_parameters": params["total"],
            "trainable_percent": params["trainable_percent"], "peak_memory_bytes": summary["peak_memory"]["bytes"],
            "peak_memory_kind": summary["peak_memory"]["kind"], "samples_per_s": summary["samples_per_s"],
            "train_seconds": summary["train_seconds"],
            "process_seconds": (process_seconds or {}).get(mode),
            "dev_em": float(em.mean()), "dev_em_ci": bootstrap_ci(em, resamples=resamples, seed=seed),
            "dev_f1": float(f1.mean()), "dev_f1_ci": bootstrap_ci(f1, resamples=resamples, seed=seed),
        }
    (em_full, f1_full), (em_lora, f1_lora) = per["full"], per["lora"]
    result["lora_minus_full"] = {
        "dev_em": float((em_lora - em_full).mean()), "dev_em_ci": bootstrap_ci(em_lora, em_full, resamples=resamples, seed=seed),
        "dev_f1": float((f1_lora - f1_full).mean()), "dev_f1_ci": bootstrap_ci(f1_lora, f1_full, resamples=resamples, seed=seed),
        "trainable_share": result["runs"]["lora"]["trainable_parameters"] / result["runs"]["full"]["trainable_parameters"],
        "peak_memory_ratio": result["runs"]["lora"]["peak_memory_bytes"] / result["runs"]["full"]["peak_memory_bytes"],
        "speed_ratio": result["runs"]["lora"]["samples_per_s"] / result["runs"]["full"]["samples_per_s"],
    }
    return result


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def markdown(result: dict) -> str:
    """The comparison as a Markdown table (what the README shows)."""
    full, lora, diff = result["runs"]["full"], result["runs"]["lora"], result["lora_minus_full"]
    kind = "GPU max allocated" if full["peak_memory_kind"] == "cuda_max_allocated" else "peak RSS, largest rank"

    def ci(run, key):
        lo, hi = run[f"{key}_ci"]
        return f"{run[key]:.2f} [{lo:.2f}, {hi:.2f}]"

    def secs(run):
        return f"{run['train_seconds']:.0f} s" + (f" ({run['process_seconds']:.0f} s with start-up)"
                                                  if run.get("process_seconds") else "")
    rows = [
        ("trainable parameters", f"{full['trainable_parameters']:,} ({full['trainable_percent']:.2f}%)",
         f"{lora['trainable_parameters']:,} ({lora['trainable_percent']:.2f}%)", f"× {diff['trainable_share']:.4f}"),
        (f"peak memory ({kind})", _mib(full["peak_memory_bytes"]), _mib(lora["peak_memory_bytes"]),
         f"× {diff['peak_memory_ratio']:.2f}"),
        ("training samples/s", f"{full['samples_per_s']:.1f}", f"{lora['samples_per_s']:.1f}", f"× {diff['speed_ratio']:.2f}"),
        ("wall time (training loop)", secs(full), secs(lora), ""),
        ("dev EM [95% CI]", ci(full, "dev_em"), ci(lora, "dev_em"), ci(diff, "dev_em")),
        ("dev F1 [95% CI]", ci(full, "dev_f1"), ci(lora, "dev_f1"), ci(diff, "dev_f1")),
    ]
    head = (f"Backbone `{full['backbone']}`, {full['precision']}, {full['world_size']} rank(s), "
            f"{full['steps']} steps each; {result['questions']} dev questions of `{result['dev_file']}`; "
            f"intervals: percentile bootstrap ({result['bootstrap_resamples']} resamples), the last column "
            "paired by question.\n\n")
    lines = ["| | full fine-tuning | LoRA | LoRA vs full |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return head + "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> Path:
    """Four bar panels (trainable %, peak memory, samples/s, dev EM/F1 with CI whiskers) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [result["runs"][m] for m in MODES]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    colors = ["#4c72b0", "#dd8452"]
    panels = [("trainable parameters (%)", [r["trainable_percent"] for r in runs]),
              ("peak memory (MiB)", [r["peak_memory_bytes"] / 2**20 for r in runs]),
              ("training samples/s", [r["samples_per_s"] for r in runs])]
    for ax, (title, values) in zip(axes, panels):
        ax.bar(MODES, values, color=colors)
        ax.set_title(title, fontsize=10)
    ax = axes[3]
    x = np.arange(2)
    for k, (metric, offset) in enumerate((("dev_em", -0.2), ("dev_f1", 0.2))):
        means = [r[metric] for r in runs]
        err = np.array([[m - r[f"{metric}_ci"][0], r[f"{metric}_ci"][1] - m] for m, r in zip(means, runs)]).T
        ax.bar(x + offset, means, 0.4, yerr=err, capsize=4, color=colors, alpha=1.0 if k == 0 else 0.55,
               label=metric.replace("dev_", "").upper())
    ax.set_xticks(x, MODES)
    ax.set_title("dev EM (solid) / F1, 95% CI", fontsize=10)
    fig.tight_layout()
    with atomic_open(path, binary=True) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict, out: Path) -> dict[str, Path]:
    files = {"json": out / "comparison.json", "markdown": out / "comparison.md", "chart": out / "comparison.png"}
    write_json(files["json"], result)
    with atomic_open(files["markdown"]) as fh:
        fh.write(markdown(result))
    chart(result, files["chart"])
    return files


def _note_recipe_inputs(recipe: Path | None, overrides: list[str]) -> None:
    """Note what the two runs will read, so that ``--out`` inside any of it is refused before they start.

    A recipe that does not load is left to the runs, which refuse it naming the problem.
    """
    from ..training.loop import recipe_inputs
    from ..training.recipe import load_recipe

    try:
        config = load_recipe(recipe, overrides)
    except ValueError:
        return
    for path in recipe_inputs(config):
        note_input(path)


def compare(recipe: Path | None, overrides: list[str], out: Path, launcher: str = "", lora_set: list[str] = (),
            full_set: list[str] = (), collect_dirs: list[Path] | None = None, resamples: int = 2000,
            seed: int = 0) -> dict:
    """``qa-scale compare``: train both runs (or take ``collect_dirs``), compare, write the outputs.

    Returns the comparison with ``files`` (what was written) and ``text`` (the Markdown table).
    """
    seconds = None
    if not collect_dirs:
        overrides = list(overrides)
        if recipe is not None and not Path(recipe).exists() and "=" in str(recipe):  # only overrides
            recipe, overrides = None, [str(recipe), *overrides]
        _note_recipe_inputs(recipe, [*overrides, *full_set, "mode=full"])
    workdir(out, "compare")  # new, empty or an earlier comparison's: runs and tables are written there
    if collect_dirs:
        dirs = dict(zip(MODES, collect_dirs))
    else:
        runs = run_pair(recipe, overrides, out, launcher, lora_set, full_set)
        dirs = {m: Path(r["dir"]) for m, r in runs.items()}
        seconds = {m: r["process_seconds"] for m, r in runs.items()}
    result = collect(dirs, resamples=resamples, seed=seed, process_seconds=seconds)
    files = write_outputs(result, out)
    result["files"] = {k: str(v) for k, v in files.items()}
    result["text"] = markdown(result) + f"\nwrote {', '.join(map(str, files.values()))}"
    return result
