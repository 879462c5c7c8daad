"""`qa-scale train` through the library's Trainer, with what tests need and the command line cannot give:
a loss hook and the engine's own dev logits. Run plainly or under the launcher (``cli_runs.train_script``):

    python tests/train_script.py HOOKS_JSON section.key=value ...
    deepspeed --num_gpus 2 tests/train_script.py HOOKS_JSON section.key=value ...

HOOKS_JSON keys (all optional):
    inf_steps: optimizer steps whose loss is multiplied by inf (an fp16 overflow that DeepSpeed's
        loss scaler skips; in bf16/fp32 a non-finite loss that stops the run).
    ascend_after: the loss of every later step is negated (gradient ascent: the reader unlearns,
        so a later dev evaluation scores below an earlier one).
    logits: after the run every rank forwards the dev windows through the engine as it is then;
        rank 0 saves the start and end logits to OUTPUT_DIR/engine_logits.npz.
    report: rank 0 writes OUTPUT_DIR/report.json: its training forwards counted by the attention mask
        the model got (none, all ones, with padding), whether the engine compiled its module and how
        many graphs dynamo compiled, and the optimizer DeepSpeed steps (class, fused, foreach) in its wrapper.

The last line printed is the summary as JSON, or ``DIVERGED <message>`` when the run stopped.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from qa_scale.inference.forward import predict_logits
from qa_scale.runtime import distributed
from qa_scale.training.loop import Trainer, TrainingDiverged
from qa_scale.training.recipe import load_recipe


def loss_hook(spec: dict):
    inf_steps, ascend_after = set(spec.get("inf_steps", ())), spec.get("ascend_after")

    def hook(step, loss):
        if step in inf_steps:
            return loss * float("inf")
        return -loss if ascend_after is not None and step > ascend_after else loss

    return hook


def count_masks(module) -> dict[str, int]:
    """Counts of the training forwards of ``module`` by the attention mask they got, kept up to date."""
    counts = {"none": 0, "all_ones": 0, "padded": 0}

    def record(_, args, kwargs):
        mask = kwargs.get("attention_mask")
        if module.training:
            counts["none" if mask is None else "all_ones" if bool(mask.all()) else "padded"] += 1

    module.register_forward_pre_hook(record, with_kwargs=True)
    return counts


def report(engine, masks: dict[str, int]) -> dict:
    from torch._dynamo.utils import counters

    basic = engine.basic_optimizer
    return {"masks": masks, "compiled": engine.is_compiled, "graphs": counters["stats"]["unique_graphs"],
            "optimizer": {"class": type(basic).__name__, "fused": basic.defaults.get("fused"),
                          "foreach": basic.defaults.get("foreach"), "wrapper": type(engine.optimizer).__name__}}


def main(argv: list[str]) -> None:
    spec, *overrides = [a for a in argv if not a.startswith("--local_rank")]  # the launcher adds it
    spec = json.loads(spec)
    trainer = Trainer(load_recipe(None, overrides), loss_hook=loss_hook(spec))
    masks = count_masks(trainer.engine.module) if spec.get("report") else None
    try:
        summary = trainer.run()
    except TrainingDiverged as err:
        if trainer.d.main:
            print("DIVERGED", err)
        distributed.leave(False)
        return
    if spec.get("logits"):
        trainer.engine.eval()
        logits = predict_logits(trainer.engine, trainer.task.dev_windows, trainer.config.run.eval_batch_size,
                                trainer.d)
        if trainer.d.main:
            np.savez(trainer.out / "engine_logits.npz", start=logits[0], end=logits[1])
    if masks is not None and trainer.d.main:
        (trainer.out / "report.json").write_text(json.dumps(report(trainer.engine, masks)))
    distributed.leave(True)
    if trainer.d.main:
        print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
