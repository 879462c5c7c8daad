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


def main(argv: list[str]) -> None:
    spec, *overrides = [a for a in argv if not a.startswith("--local_rank")]  # the launcher adds it
    spec = json.loads(spec)
    trainer = Trainer(load_recipe(None, overrides), loss_hook=loss_hook(spec))
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
    distributed.leave(True)
    if trainer.d.main:
        print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
