"""``qa-scale train``: setup → train → cleanup on the DeepSpeed engine (ZeRO-2/3, bf16/fp16/fp32).

The same code runs under ``deepspeed --num_gpus N`` (GPUs, or CPU ranks on gloo), across nodes
with a hostfile, and as a plain single process (world size 1). Rank 0 alone writes logs,
exports and summaries; every rank writes its own checkpoint shards (see :mod:`checkpoint`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint, data, ds_config
from .batches import collate, global_batches, rank_micro_batches
from .decode import decode
from .files import atomic_open, write_json
from .metrics import evaluate as score
from .predict import predict_logits
from .recipe import TrainConfig, dump_recipe
from .window_store import cached_windows
from .windows import WindowSet, build_windows

log = logging.getLogger(__name__)
CPU_FP16_ENV = "QA_SCALE_CPU_FP16"  # tests: let DeepSpeed's fp16 path run on the CPU accelerator


class TrainingDiverged(RuntimeError):
    """Non-finite losses or repeated fp16 overflows: the run stops and saves nothing further."""


@dataclass
class Dist:
    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _logs_to_stderr() -> contextlib.AbstractContextManager:
    """DeepSpeed logs and prints to stdout; moved to stderr, stdout stays ours (``--json`` output)."""
    from deepspeed.utils import logger as ds_logger

    for handler in ds_logger.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    return contextlib.redirect_stdout(sys.stderr)


def _shm_buffer() -> Path:
    """This rank's shared-memory all-reduce buffer of DeepSpeed's CPU backend (csrc/cpu/comm/shm.cpp).

    DeepSpeed names it after the master address and port and never removes it: every CPU run
    would leave 69 MB per rank in /dev/shm, and a later run that gets the same port would find
    the old buffer, whose peers map it before its owner re-initialises it — a race that can
    corrupt the first all-reduces. Each rank removes its own name before and after joining.
    """
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_"
            f"{os.environ['MASTER_PORT']}_{os.environ['RANK']}")
    return Path("/dev/shm") / name


def share_cpu_threads() -> int:
    """Give each CPU rank its share of the cores, unless OMP_NUM_THREADS says otherwise.

    The deepspeed launcher starts every rank with PyTorch's default of one thread per core, so
    two CPU ranks on two cores run four busy threads and each step takes about twice as long
    as it would with one thread per rank.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(1, ranks_here)))
    return torch.get_num_threads()


def init_distributed() -> Dist:
    """Join the launcher's process group, or make a one-process group when run plainly."""
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed

    if "RANK" not in os.environ:  # plain `qa-scale train`: a world of one
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    if os.environ.get(CPU_FP16_ENV) == "1":
        from deepspeed.accelerator import get_accelerator
        get_accelerator().is_fp16_supported = lambda: True
    cuda = torch.cuda.is_available()
    if not cuda:  # a stale buffer under our name would be opened by the peers before we re-create it
        _shm_buffer().unlink(missing_ok=True)
    with _logs_to_stderr():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local)
    else:
        dist.barrier()  # every rank has mapped every buffer: the names can go, the memory stays
        _shm_buffer().unlink(missing_ok=True)
        share_cpu_threads()
    return Dist(dist.get_rank(), dist.get_world_size(), torch.device("cuda", local) if cuda else torch.device("cpu"))


class QATask:
    """Training windows with labels, dev windows and references."""

    def __init__(self, config: TrainConfig, tok, cache_dir: Path):
        d = config.data
        if not d.train_file:
            raise ValueError("data.train_file is required")
        self.config, self.tok, self.cache = config, tok, cache_dir
        self.train = data.load(d.train_file, d.mode).examples[: d.max_train_examples]
        self.train = [ex for ex in self.train if ex.answers]
        if not self.train:
            raise ValueError(f"{d.train_file}: no training example has an answer")
        self.dev, self.dev_windows, self.dev_refs = [], None, {}
        if d.dev_file:
            self.dev = data.load(d.dev_file, d.mode).examples[: d.max_dev_examples]
            refs = data.load_references(d.dev_file)
            self.dev_refs = {ex.id: refs.get(ex.id) or [a.text for a in ex.answers] for ex in self.dev}
            self.dev_windows = cached_windows(self.dev, tok, d.windows, cache_dir, labels=False)
        self._all = None

    def windows(self, epoch: int) -> WindowSet:
        d = self.config.data
        if d.strategy == "random_answer":  # a fresh placement every epoch, same on every rank
            return build_windows(self.train, self.tok, d.windows, "random_answer", self.config.run.seed + epoch)
        if self._all is None:
            self._all = cached_windows(self.train, self.tok, d.windows, self.cache)
        return self._all

    def build_model(self):
        from .model import check_vocab, load_qa_model

        m = self.config.model
        model = load_qa_model(m.name_or_path, vocab_size=max(self.tok.get_vocab().values()) + 1, tiny=m.tiny,
                              gradient_checkpointing=m.gradient_checkpointing,
                              attn_implementation=m.attn_implementation, seed=self.config.run.seed)
        check_vocab(model, self.tok)
        if self.config.mode == "lora":
            from .lora import apply_lora
            model = apply_lora(model, self.config.lora)
        return model

    @staticmethod
    def arrays(ws: WindowSet) -> dict[str, np.ndarray]:
        return {"input_ids": ws.input_ids, "token_type_ids": ws.token_type_ids,
                "start_positions": ws.start_positions, "end_positions": ws.end_positions}

    @staticmethod
    def prepare(batch: dict) -> dict:
        return batch

    @staticmethod
    def correct(out, batch) -> tuple[int, int]:
        """(spans with start and end both right, spans)."""
        ok = (out.start_logits.argmax(-1) == batch["start_positions"]) & (out.end_logits.argmax(-1) == batch["end_positions"])
        return int(ok.sum()), len(ok)

    @property
    def has_dev(self) -> bool:
        return self.dev_windows is not None

    def evaluate(self, engine, d: Dist) -> tuple[dict, dict | None]:
        """Dev EM/F1 with the shared decoder (all ranks forward, rank 0 decodes and scores).

        Returns ``(scores, predictions)``: the scores on every rank, the ``{id: answer}``
        predictions on rank 0 (None elsewhere).
        """
        engine.eval()
        logits = predict_logits(engine, self.dev_windows, self.config.run.eval_batch_size, d.rank, d.world_size,
                                d.device)
        engine.train()
        result, answers = [None], None
        if d.main:
            answers = decode(self.dev_windows, *logits, self.dev, self.config.decode).predictions
            s = score(answers, self.dev_refs)
            result = [{"em": s.em, "f1": s.f1}]
        if d.world_size > 1:
            dist.broadcast_object_list(result, src=0)
        return result[0], answers


def _all_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def _loss_scale(engine) -> float | None:
    if not engine.fp16_enabled():
        return None
    return float(getattr(engine.optimizer, "cur_scale", getattr(engine.optimizer, "loss_scale", float("nan"))))


def _setup(config: TrainConfig, d: Dist, make_task):
    """Tokenizer, task, model, optimizer, schedule and engine."""
    import deepspeed
    from transformers import get_scheduler, set_seed

    from .model import param_groups
    from .tokenization import load_tokenizer

    set_seed(config.run.seed)  # same initialisation on every rank
    out = Path(config.run.output_dir)
    tok = load_tokenizer(config.model.tokenizer or config.model.name_or_path)
    task = make_task(config, tok, Path(config.data.cache_dir or out / "cache"))
    model = task.build_model()
    steps_per_epoch = len(global_batches(task.windows(0).lengths, config.optim.global_batch_size, 0, 0, False))
    if steps_per_epoch == 0:
        raise ValueError(f"{len(task.windows(0))} training windows make no global batch of {config.optim.global_batch_size}")
    total = config.optim.max_steps or math.ceil(config.optim.epochs * steps_per_epoch)
    ds = ds_config.resolve(config.run.deepspeed, config, d.world_size, hidden_size=model.config.hidden_size)
    o = config.optim
    groups = param_groups(model, o.lr, o.weight_decay, o.layer_lr_decay)
    if ds_config.offloads_optimizer(ds):
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        optimizer = DeepSpeedCPUAdam(groups, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps)
    else:
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps)

    def schedule(opt):
        return get_scheduler(o.scheduler, opt, num_warmup_steps=int(o.warmup_ratio * total), num_training_steps=total)

    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=ds)
    return tok, task, engine, scheduler, ds, total, steps_per_epoch


def _flops_setup(engine, ds: dict, d: Dist):
    """(tokens-per-window → training FLOPs per token, peak FLOP/s of this GPU) or (None, None) on CPU."""
    from .monitor import encoder_flops_per_token, peak_flops

    if d.device.type != "cuda":
        return None, None
    precision = "bf16" if ds.get("bf16", {}).get("enabled") else "fp16" if ds.get("fp16", {}).get("enabled") else "fp32"
    cfg = engine.module.config
    n = sum(getattr(p, "ds_numel", p.numel()) for name, p in engine.module.named_parameters() if "embeddings" not in name)
    return (lambda seq: encoder_flops_per_token(n, cfg.num_hidden_layers, cfg.hidden_size, int(seq)),
            peak_flops(torch.cuda.get_device_name(), precision))


def _truncate_log(out: Path, step: int) -> None:
    """After a resume, drop log rows of steps that are about to be redone."""
    path = out / "metrics.jsonl"
    if path.exists():
        rows = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        with atomic_open(path) as fh:
            fh.writelines(r + "\n" for r in rows)
        (out / "metrics.csv").unlink(missing_ok=True)


def run(config: TrainConfig, loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        make_task=QATask) -> dict:
    """Train as the recipe says; return the summary (rank 0 also writes it to ``summary.json``).

    Args:
        config: the validated run config.
        loss_hook: optional ``(step, loss) → loss`` applied before backward (tests inject
            non-finite losses with it).
        make_task: ``(config, tokenizer, cache_dir) → task``: the QA task, or the masked-LM task
            of the offline backbone (same engine, same loop).
    """
    from .monitor import Monitor, Throughput, mfu, progress

    d = init_distributed()
    out, run_cfg = Path(config.run.output_dir), config.run
    ckpt_dir = out / "checkpoints"
    tok, task, engine, scheduler, ds, total, per_epoch = _setup(config, d, make_task)
    micro, accumulation, global_batch = ds_config.batch_plan(config, d.world_size)
    state = {"step": 0, "epoch": 0, "batch": 0, "best_em": None, "best_tag": None, "overflow_run": 0}
    tag = checkpoint.find(ckpt_dir, run_cfg.resume) if run_cfg.resume else None
    if tag:
        state.update(checkpoint.load(engine, ckpt_dir, tag, d.rank, d.world_size)["qa_scale"])
        if d.main:
            _truncate_log(out, state["step"])
            log.info("resumed from %s (step %d)", tag, state["step"])
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "config.yaml") as fh:
            fh.write(dump_recipe(config))
        write_json(out / "ds_config.json", ds)
        log.info("%d ranks × %d windows × %d accumulation = %d windows per step; %d steps (%d per epoch)",
                 d.world_size, micro, accumulation, global_batch, total, per_epoch)
    monitor = Monitor(out, enabled=d.main, tensorboard=run_cfg.tensorboard)
    bar = progress(total, d.main, "train")
    bar.update(state["step"])
    rate, started, last_eval, skipped_before = Throughput(), state["step"], None, engine.skipped_steps
    flops, peak = _flops_setup(engine, ds, d)

    def save(step: int) -> None:
        checkpoint.save(engine, ckpt_dir, step, {"qa_scale": dict(state), "meta": {"precision": run_cfg.precision}},
                        d.rank, d.world_size)
        if d.main:
            checkpoint.prune(ckpt_dir, run_cfg.keep_checkpoints, {state["best_tag"]} if state["best_tag"] else set())
        dist.barrier()

    engine.train()
    stop, loop_start, eval_seconds = False, time.perf_counter(), 0.0
    while state["step"] < total and not stop:
        ws = task.windows(state["epoch"])
        arrays = task.arrays(ws)
        batches = global_batches(ws.lengths, global_batch, run_cfg.seed, state["epoch"], run_cfg.length_grouping)
        for b in range(state["batch"], len(batches)):
            loss_sum, correct, count, tokens = 0.0, 0, 0, 0
            for idx in rank_micro_batches(batches[b], micro, d.world_size, d.rank):
                batch = task.prepare(collate(arrays, ws.lengths, idx, ws.pad_id, d.device))
                outputs = engine(**batch)
                loss = outputs.loss if loss_hook is None else loss_hook(state["step"] + 1, outputs.loss)
                finite = _all_sum([float(torch.isfinite(loss).item())])[0] == d.world_size
                if not finite and not engine.fp16_enabled():
                    raise TrainingDiverged(f"non-finite loss at step {state['step'] + 1} in {run_cfg.precision}: "
                                           f"stopping before the update; checkpoints in {ckpt_dir} are intact")
                engine.backward(loss)
                engine.step()
                loss_sum += loss.item() if finite else float("nan")
                c, n = task.correct(outputs, batch)
                correct, count, tokens = correct + c, count + n, tokens + int(batch["attention_mask"].sum())
            state["step"] += 1
            state["epoch"], state["batch"] = (state["epoch"], b + 1) if b + 1 < len(batches) else (state["epoch"] + 1, 0)
            skipped = engine.skipped_steps - skipped_before
            skipped_before = engine.skipped_steps
            state["overflow_run"] = state["overflow_run"] + 1 if skipped else 0
            loss_sum, correct, count, tokens = _all_sum([loss_sum, correct, count, tokens])
            rate.update(global_batch, int(tokens))
            bar.update(1)
            step = state["step"]
            if state["overflow_run"] >= run_cfg.max_nonfinite_steps:
                raise TrainingDiverged(f"{state['overflow_run']} consecutive fp16 overflow steps up to step {step} "
                                       f"(loss scale {_loss_scale(engine)}): stopping; checkpoints in {ckpt_dir} are intact")
            if step % run_cfg.log_every == 0 or step == total or step == 1:
                metrics = {"loss": loss_sum / (accumulation * d.world_size), "acc": correct / max(count, 1),
                           "lr": max(scheduler.get_last_lr()), "epoch": step / per_epoch,
                           "skipped_steps": engine.skipped_steps, "loss_scale": _loss_scale(engine), **rate.rates()}
                if peak:  # model FLOPs utilisation, per GPU, at this step's mean tokens per window
                    per_token = flops(tokens / global_batch)
                    metrics["mfu"] = mfu(metrics["tokens_per_s"] / d.world_size, per_token, peak)
                monitor.log(step, metrics)
                bar.set_postfix_str(monitor.console(step, metrics))
            new_best = False
            if task.has_dev and (step % run_cfg.eval_every == 0 or step == total):
                eval_start = time.perf_counter()
                last_eval, answers = task.evaluate(engine, d)
                rate.reset()  # evaluation time is not training throughput
                monitor.log(step, last_eval, prefix="dev")
                if state["best_em"] is None or last_eval["em"] > state["best_em"]:
                    state["best_em"], state["best_tag"], new_best = last_eval["em"], checkpoint.tag_of(step), True
                    if d.main:  # the best model's answers, for comparisons and error analysis
                        write_json(out / "dev_predictions.json", answers)
                eval_seconds += time.perf_counter() - eval_start
            stop = run_cfg.stop_after is not None and step - started >= run_cfg.stop_after
            if new_best or step % run_cfg.save_every == 0 or step == total or stop:
                save(step)
            if stop or step >= total:
                break
    bar.close()
    seconds = time.perf_counter() - loop_start  # the loop alone (evaluations included)
    cost = {"train_seconds": round(seconds, 3), "eval_seconds": round(eval_seconds, 3),
            "samples_per_s": round((state["step"] - started) * global_batch / max(seconds - eval_seconds, 1e-9), 3),
            "peak_memory": _peak_memory(d)}
    return _finish(config, engine, task, tok, state, d, out, total, monitor, last_eval, cost)


def _peak_memory(d: Dist) -> dict:
    """The largest peak over ranks: GPU max allocated on CUDA, else the process's peak RSS."""
    from .monitor import peak_memory

    kind, value = peak_memory(d.device)
    return {"bytes": int(_all_max(value)), "kind": kind}


def _all_max(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _finish(config, engine, task, tok, state, d, out, total, monitor, last_eval, cost) -> dict:
    """Export the best (or last) checkpoint and write the summary (rank 0)."""
    from .lora import parameter_counts

    done = state["step"] >= total
    final_tag = state["best_tag"] or checkpoint.tag_of(state["step"])
    n_total, n_trainable = parameter_counts(engine.module)
    summary = {"mode": config.mode, "steps": state["step"], "total_steps": total, "finished": done,
               "best_dev_em": state["best_em"], "best_checkpoint": state["best_tag"], "last_dev": last_eval,
               "world_size": d.world_size, "precision": config.run.precision, "skipped_steps": engine.skipped_steps,
               "windows_per_step": config.optim.global_batch_size, **cost,
               "parameters": {"total": n_total, "trainable": n_trainable,
                              "trainable_percent": round(100 * n_trainable / n_total, 4)}}
    dist.barrier()
    if d.main:
        if done and config.run.export:
            summary.update(_export(config, engine.module, out, final_tag, tok))
        write_json(out / "summary.json", summary)
        monitor.close()
    dist.barrier()
    return summary


def _export(config: TrainConfig, module, out: Path, tag: str, tok) -> dict[str, str]:
    """The Hugging Face model directory (and, in LoRA mode, the adapter directory) of ``tag``."""
    from .export import export_checkpoint
    from .lora import export_lora_checkpoint, is_peft

    if is_peft(module):
        base = module.get_base_model()
        export_lora_checkpoint(out / "checkpoints", tag, base.config, config.lora, out / "model", out / "adapter",
                               tokenizer=tok, base_class=type(base), base_name=config.model.name_or_path)
        return {"model": str(out / "model"), "adapter": str(out / "adapter")}
    export_checkpoint(out / "checkpoints", tag, module.config, out / "model", tokenizer=tok, model_class=type(module))
    return {"model": str(out / "model")}
