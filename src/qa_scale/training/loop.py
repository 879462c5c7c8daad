"""``qa-scale train``: setup → fit (step, log, maybe evaluate, maybe save) → finish, on DeepSpeed.

The same code runs under ``deepspeed --num_gpus N`` (GPUs, or CPU ranks on gloo), across nodes
with a hostfile, and as a plain single process (a process group of one). Rank 0 alone writes
logs, exports and summaries; every rank writes its own checkpoint shards (:mod:`.checkpoint`).

Per micro-step nothing waits for the device: the loss, right predictions and counts are added
into a tensor on the device, token counts come from the window lengths on the host, and batches
reach a GPU through pinned memory without blocking; a micro-batch without padding goes without an
attention mask, which transformers would otherwise check on the device. The host reads the device once per
optimizer step in bf16/fp32 (the non-finite guard, a one-element all-reduce), and the counters
once per log step (one all-reduce).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..common.inputs import iter_jsonl, read_text
from ..common.outputs import atomic_open, note_input, workdir, write_json
from ..common.progress import progress
from ..data.batches import collate, drop_full_mask, global_batches, rank_micro_batches, to_device
from ..runtime import distributed
from . import checkpoint, ds_config
from .flops import Throughput, flops_per_token_fn, mfu, peak_memory
from .monitor import Monitor
from .auto_lengths import unresolved_auto
from .recipe import TrainConfig, dump_recipe
from .tasks import QATask, Task

log = logging.getLogger(__name__)
LossHook = Callable[[int, torch.Tensor], torch.Tensor]


class TrainingDiverged(RuntimeError):
    """Non-finite losses or repeated fp16 overflows: the run stops and saves nothing further."""


@dataclass
class TrainState:
    """Where a run is: saved in every checkpoint, restored exactly on resume."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # next global batch of the epoch
    best_em: float | None = None
    best_tag: str | None = None
    overflow_run: int = 0  # consecutive fp16 overflow-skipped steps


@dataclass
class Timing:
    """Wall time of this invocation's loop, and what throughput leaves out."""

    loop_start: float = field(default_factory=time.perf_counter)
    first_step: float = 0.0  # warm-up: kernels, allocator, ZeRO buckets
    evaluation: float = 0.0
    saving: float = 0.0

    def excluded(self) -> float:
        return self.first_step + self.evaluation + self.saving


class Trainer:
    """One training run on this rank. ``Trainer(config).run()`` = setup → fit → finish."""

    def __init__(self, config: TrainConfig, make_task: Callable[..., Task] = QATask,
                 loss_hook: LossHook | None = None):
        self.config, self.run_cfg, self.loss_hook = config, config.run, loss_hook
        # Before anything heavy: a bad path, a folder that is not a run of this kind, or one inside
        # something the recipe reads, fails at once.
        for path in recipe_inputs(config):
            note_input(path)
        self.out = workdir(config.run.output_dir, getattr(make_task, "output_kind", "train"))
        if config.data.cache_dir:  # a window cache shared by runs (the demo's members)
            workdir(config.data.cache_dir, "cache")
        self.d = distributed.init(config.run.device, config.run.timeout_minutes)
        distributed.check_shared({"run.output_dir": self.out, "data.cache_dir": config.data.cache_dir}, self.d)
        self.ckpt_dir = self.out / "checkpoints"
        self.state = TrainState()
        self.setup(make_task)

    # ------------------------------------------------------------------ setup
    def setup(self, make_task: Callable[..., Task]) -> None:
        """Tokenizer, task, model, optimizer, schedule, engine; resume; run files; monitor."""
        from transformers import set_seed

        from ..data.tokenization import load_tokenizer
        from .optimizer import build_engine

        c, d = self.config, self.d
        set_seed(c.run.seed)  # the same initialisation on every rank
        self.tok = load_tokenizer(c.model.tokenizer or c.model.name_or_path)
        self.task = make_task(c, self.tok, Path(c.data.cache_dir or self.out / "cache"), d)
        # The run's config from here on (config.yaml, summary): the task's, its "auto" lengths resolved.
        c = self.config = self.task.config
        self.auto_resolved = getattr(self.task, "auto_resolved", {})
        left = unresolved_auto(c)
        if left:  # predict/answer/serve read config.yaml beside the model: it must hold numbers
            raise ValueError(f"{', '.join(left)}: still 'auto' after the task was built (this task does not "
                             "resolve them): give numbers")
        model = self.task.build_model()
        seed_rank(c.run.seed, d.rank)  # dropout (and masked-LM masks): each rank draws its own
        self.per_epoch = len(global_batches(self.task.windows(0).lengths, c.optim.global_batch_size, 0, 0, False))
        if self.per_epoch == 0:
            raise ValueError(f"{len(self.task.windows(0).lengths)} training rows make no global batch of "
                             f"{c.optim.global_batch_size}")
        self.total = c.optim.max_steps or math.ceil(c.optim.epochs * self.per_epoch)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.ds = ds_config.resolve(c.run.deepspeed, c, d.world_size, hidden_size=model.config.hidden_size,
                                    trainable_params=trainable)
        self.micro, self.accumulation, self.global_batch = ds_config.batch_plan(c, d.world_size)
        self.engine, self.scheduler = build_engine(model, c, self.ds, d.device, self.total)
        self.resume()
        self.write_run_files()
        self.monitor = Monitor(self.out, enabled=d.main, tensorboard=c.run.tensorboard)
        self.flops, self.peak = flops_per_token_fn(self.engine, self.ds, d.device)
        self.counters = torch.zeros(3, dtype=torch.float32, device=d.device)  # loss, right, predictions
        self.logged_steps, self.last_eval = 0, None

    def resume(self) -> None:
        """Load the checkpoint ``run.resume`` names, or start at step 0; either way, the log rows, committed
        checkpoints, export and summary of later steps (an abandoned future, or another run in this folder) are
        moved out of the way: :func:`checkpoint.save` skips a step already committed, so they would pass for this
        run's."""
        tag = checkpoint.find(self.ckpt_dir, self.run_cfg.resume) if self.run_cfg.resume else None
        if tag:
            client = checkpoint.load(self.engine, self.ckpt_dir, tag, self.d.rank, self.d.world_size)
            self.state = TrainState(**client["qa_scale"])
        if self.d.main:
            truncate_log(self.out, self.state.step)
            checkpoint.abandon_later(self.ckpt_dir, self.state.step)  # so that redone steps are saved
            if tag:
                log.info("resumed from %s (step %d)", tag, self.state.step)
        distributed.barrier()  # no rank looks at the checkpoints before they are moved aside

    def write_run_files(self) -> None:
        if self.d.main:
            for key, choice in self.auto_resolved.items():
                log.info("%s: auto → %d (the %gth percentile of %d training lengths is %d; at least %d, at most %d; "
                         "covers %.2f%%)", key, choice["value"], choice["percentile"], choice["lengths"]["count"],
                         choice["percentile_length"], choice["floor"], choice["cap"], choice["covered_percent"])
            with atomic_open(self.out / "config.yaml") as fh:
                fh.write(dump_recipe(self.config))
            write_json(self.out / "ds_config.json", self.ds)
            log.info("%d ranks × %d windows × %d accumulation = %d windows per step; %d steps (%d per epoch)",
                     self.d.world_size, self.micro, self.accumulation, self.global_batch, self.total, self.per_epoch)
            warning = ds_config.small_batch_warning(self.config, self.d.world_size)  # once, not once per rank
            if warning:
                log.warning(warning)
        distributed.barrier()

    # ------------------------------------------------------------------ fit
    def fit(self) -> dict:
        """Train until the schedule ends (or ``run.stop_after``); return the cost figures."""
        s, started = self.state, self.state.step
        self.bar = progress(self.total, self.d.main, "train")
        self.bar.update(s.step)
        self.rate, self.timing = Throughput(), Timing()
        self.skipped_before = self.engine.skipped_steps
        self.engine.train()
        stop = False
        while s.step < self.total and not stop:
            rows = self.task.windows(s.epoch)
            arrays = self.task.arrays(rows)
            batches = global_batches(rows.lengths, self.global_batch, self.run_cfg.seed, s.epoch,
                                     self.run_cfg.length_grouping)
            for b in range(s.batch, len(batches)):
                t0 = time.perf_counter()
                self.step(rows, arrays, batches[b])
                s.epoch, s.batch = (s.epoch, b + 1) if b + 1 < len(batches) else (s.epoch + 1, 0)
                if s.step == started + 1:  # warm-up is not throughput
                    self.timing.first_step = time.perf_counter() - t0
                    self.rate.reset()
                self.log()
                new_best = self.maybe_evaluate()
                stop = self.run_cfg.stop_after is not None and s.step - started >= self.run_cfg.stop_after
                self.maybe_save(new_best, stop)
                if stop or s.step >= self.total:
                    break
        self.bar.close()
        seconds = time.perf_counter() - self.timing.loop_start
        timed_steps = max(s.step - started - 1, 0)
        return {"train_seconds": round(seconds, 3), "eval_seconds": round(self.timing.evaluation, 3),
                "save_seconds": round(self.timing.saving, 3),
                "samples_per_s": round(timed_steps * self.global_batch / max(seconds - self.timing.excluded(), 1e-9), 3),
                "peak_memory": self.peak_memory()}

    def step(self, rows, arrays: dict[str, np.ndarray], batch: np.ndarray) -> None:
        """One optimizer step: this rank's micro-batches of the global ``batch``, accumulated."""
        s, engine = self.state, self.engine
        micro_batches = rank_micro_batches(batch, self.micro, self.d.world_size, self.d.rank)
        guard = not engine.fp16_enabled()  # fp16: DeepSpeed's loss scaler skips overflowing steps
        bad = torch.zeros((), device=self.d.device)
        for k, idx in enumerate(micro_batches):
            prepared = self.task.prepare(collate(arrays, rows.lengths, idx, rows.pad_id))
            inputs = to_device(drop_full_mask(prepared, rows.lengths[idx]), self.d.device)
            outputs = self.task.forward(engine, inputs)
            loss = outputs.loss if self.loss_hook is None else self.loss_hook(s.step + 1, outputs.loss)
            bad += ~torch.isfinite(loss.detach())
            engine.backward(loss)
            if k == len(micro_batches) - 1 and guard and distributed.any_rank(bad):
                raise TrainingDiverged(f"non-finite loss at step {s.step + 1} in {self.run_cfg.precision}: "
                                       f"stopping before the update; checkpoints in {self.ckpt_dir} are intact")
            engine.step()  # applies the update after the last micro-batch only
            right, seen = self.task.correct(outputs, inputs)
            self.counters += torch.stack([loss.detach().float(), right.float(), seen.float()])
        s.step += 1
        self.logged_steps += 1
        skipped = engine.skipped_steps - self.skipped_before
        self.skipped_before = engine.skipped_steps
        s.overflow_run = s.overflow_run + 1 if skipped else 0
        self.rate.update(len(batch), int(rows.lengths[batch].sum()))
        self.bar.update(1)
        if s.overflow_run >= self.run_cfg.max_nonfinite_steps:
            raise TrainingDiverged(f"{s.overflow_run} consecutive fp16 overflow steps up to step {s.step} "
                                   f"(loss scale {self.loss_scale()}): stopping; checkpoints in {self.ckpt_dir} "
                                   "are intact")

    def log(self) -> None:
        """Every ``log_every`` steps (and the first and last): one all-reduce of the counters."""
        step = self.state.step
        if not (step % self.run_cfg.log_every == 0 or step == self.total or step == 1):
            return
        loss, right, seen = distributed.all_sum_(self.counters).tolist()
        micro_steps = self.accumulation * self.d.world_size * self.logged_steps
        metrics = {"loss": loss / micro_steps, "acc": right / max(seen, 1), "lr": max(self.scheduler.get_last_lr()),
                   "epoch": step / self.per_epoch, "skipped_steps": self.engine.skipped_steps,
                   "loss_scale": self.loss_scale()}
        samples, tokens = self.rate.samples, self.rate.tokens
        if samples:  # none right after the warm-up step, whose rate means nothing
            metrics.update(self.rate.rates())
            if self.peak and samples:  # model FLOPs utilisation per GPU, at the mean window length
                metrics["mfu"] = mfu(metrics["tokens_per_s"] / self.d.world_size, self.flops(tokens / samples),
                                     self.peak)
        self.counters.zero_()
        self.logged_steps = 0
        self.monitor.log(step, metrics)
        self.bar.set_postfix_str(self.monitor.console(step, metrics))

    def maybe_evaluate(self) -> bool:
        """Dev EM/F1 every ``eval_every`` steps and at the end; True when it is a new best."""
        s = self.state
        if not self.task.has_dev or not (s.step % self.run_cfg.eval_every == 0 or s.step == self.total):
            return False
        t0 = time.perf_counter()
        self.last_eval, answers = self.task.evaluate(self.engine, self.d)
        self.monitor.log(s.step, self.last_eval, prefix="dev")
        new_best = self.run_cfg.select_best and (s.best_em is None or self.last_eval["em"] > s.best_em)
        if new_best:
            s.best_em, s.best_tag = self.last_eval["em"], checkpoint.tag_of(s.step)
            if self.d.main:  # the best model's answers, for comparisons and error analysis
                write_json(self.out / "dev_predictions.json", answers)
        self.timing.evaluation += time.perf_counter() - t0
        self.rate.reset()  # evaluation time is not training throughput
        return new_best

    def maybe_save(self, new_best: bool, stop: bool) -> None:
        s = self.state
        if not (new_best or s.step % self.run_cfg.save_every == 0 or s.step == self.total or stop):
            return
        t0 = time.perf_counter()
        checkpoint.save(self.engine, self.ckpt_dir, s.step,
                        {"qa_scale": asdict(s), "meta": {"precision": self.run_cfg.precision}},
                        self.d.rank, self.d.world_size)
        if self.d.main:
            checkpoint.prune(self.ckpt_dir, self.run_cfg.keep_checkpoints, {s.best_tag} if s.best_tag else set())
        distributed.barrier()
        self.timing.saving += time.perf_counter() - t0
        self.rate.reset()  # nor is saving

    # ------------------------------------------------------------------ finish
    def finish(self, cost: dict) -> dict:
        """Export the best (or last) checkpoint and write the summary (rank 0, behind barriers)."""
        from ..modeling.lora import parameter_counts

        c, s = self.config, self.state
        n_total, n_trainable = parameter_counts(self.engine.module)
        summary = {"mode": c.mode, "steps": s.step, "total_steps": self.total, "finished": s.step >= self.total,
                   "best_dev_em": s.best_em, "best_checkpoint": s.best_tag, "last_dev": self.last_eval,
                   "world_size": self.d.world_size, "precision": c.run.precision,
                   "zero_stage": ds_config.zero_stage(self.ds), "compiled": bool(self.engine.is_compiled),
                   "skipped_steps": self.engine.skipped_steps, "windows_per_step": c.optim.global_batch_size,
                   "train_files": getattr(self.task, "train_counts", None),
                   "auto_resolved": self.auto_resolved,  # the recipe's "auto" lengths and how they were chosen
                   **getattr(self.task, "facts", {}),  # what else the task says about itself (a teacher's stores)
                   **cost, "parameters": {"total": n_total, "trainable": n_trainable,
                                          "trainable_percent": round(100 * n_trainable / n_total, 4)}}
        distributed.barrier()
        if self.d.main:
            if summary["finished"] and c.run.export:
                summary.update(self.export(s.best_tag or checkpoint.tag_of(s.step)))
                if c.run.clean_checkpoints != "none":  # only after the export succeeded
                    keep = {s.best_tag or checkpoint.tag_of(s.step)} if c.run.clean_checkpoints == "keep_best" else set()
                    summary["checkpoints_removed"] = checkpoint.clean(self.ckpt_dir, keep)
            write_json(self.out / "summary.json", summary)
            self.monitor.close()
        distributed.barrier()
        return summary

    def export(self, tag: str) -> dict[str, str]:
        """The Hugging Face model directory (and, in LoRA mode, the adapter directory) of ``tag``."""
        from ..modeling.lora import is_peft
        from .export import export_checkpoint, export_lora_checkpoint

        module, out = self.engine.module, self.out
        if is_peft(module):
            base = module.get_base_model()
            export_lora_checkpoint(self.ckpt_dir, tag, base.config, self.config.lora, out / "model", out / "adapter",
                                   tokenizer=self.tok, base_class=type(base),
                                   base_name=self.config.model.name_or_path)
            return {"model": str(out / "model"), "adapter": str(out / "adapter")}
        # a training variant of a transformers class (the masked-LM backbone) is exported as that class
        model_class = next(c for c in type(module).__mro__ if c.__module__.startswith("transformers."))
        export_checkpoint(self.ckpt_dir, tag, module.config, out / "model", tokenizer=self.tok,
                          model_class=model_class)
        return {"model": str(out / "model")}

    # ------------------------------------------------------------------ helpers
    def loss_scale(self) -> float | None:
        if not self.engine.fp16_enabled():
            return None
        opt = self.engine.optimizer
        return float(getattr(opt, "cur_scale", getattr(opt, "loss_scale", float("nan"))))

    def peak_memory(self) -> dict:
        """The largest peak over ranks: GPU max allocated on CUDA, else the process's peak RSS."""
        kind, value = peak_memory(self.d.device)
        return {"bytes": int(distributed.max_float(value, self.d)), "kind": kind}

    def run(self) -> dict:
        return self.finish(self.fit())


RANK_SEED_STRIDE = 1000  # rank r draws from seed + 1000·r: apart from the neighbouring seeds of other runs


def seed_rank(seed: int, rank: int) -> None:
    """Seed torch's RNG (CPU and every GPU) for what a rank draws on its own: dropout masks, masked-LM masks.

    Called once the model is built, so the initialisation (``set_seed(seed)`` before it) is the same on
    every rank, and before a resume restores each rank's saved state. The data order has its own
    generator seeded from ``seed`` alone (:func:`~qa_scale.data.batches.global_batches`), so it stays
    global. Rank 0 gets ``seed`` itself: a full fine-tuning build leaves the global stream as
    ``set_seed`` left it (it seeds under ``fork_rng``), so such a one-process run draws what it drew
    before ranks were seeded apart.
    """
    torch.manual_seed(seed + RANK_SEED_STRIDE * rank)


def recipe_input_keys(config: TrainConfig) -> list[tuple[str, Path]]:
    """(key, path) of every local path a recipe reads (data, model, tokenizer, DeepSpeed template, a teacher's
    stores and recipe); hub names are not paths."""
    named = [*(("data.train_file", f) for f in config.data.train_files()), ("data.dev_file", config.data.dev_file),
             ("model.name_or_path", config.model.name_or_path), ("model.tokenizer", config.model.tokenizer),
             ("run.deepspeed", config.run.deepspeed), *(("distill.stores", s) for s in config.distill.stores),
             ("distill.teacher", config.distill.teacher)]
    return [(key, Path(p)) for key, p in named if p and Path(p).exists()]


def recipe_inputs(config: TrainConfig) -> list[Path]:
    """The local paths a recipe reads (see :func:`recipe_input_keys`)."""
    return [path for _, path in recipe_input_keys(config)]


def truncate_log(out: Path, step: int) -> None:
    """Before training from ``step`` (a resume, or 0 for a fresh start), drop the log rows of later steps."""
    path = out / "metrics.jsonl"
    if path.exists():
        lines = read_text(path).splitlines()
        rows = [lines[n - 1] for n, record in iter_jsonl("\n".join(lines), str(path)) if record.get("step", 0) <= step]
        with atomic_open(path) as fh:
            fh.writelines(r + "\n" for r in rows)
        (out / "metrics.csv").unlink(missing_ok=True)  # output-layer: derived from the JSONL, rebuilt by the monitor


def run(config: TrainConfig, loss_hook: LossHook | None = None, make_task: Callable[..., Task] = QATask) -> dict:
    """Train as the recipe says; return the summary (rank 0 also writes it to ``summary.json``).

    Args:
        config: the validated run config.
        loss_hook: optional ``(step, loss) → loss`` applied before backward (tests inject
            non-finite losses with it).
        make_task: ``(config, tokenizer, cache_dir, dist) → task``: the QA task, or the
            masked-LM task of the offline backbone (same engine, same loop).
    """
    return Trainer(config, make_task, loss_hook).run()
