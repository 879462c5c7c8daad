"""DeepSpeed's estimate of the model-state memory of every shipped large-model recipe.

For each recipe in ``launch/recipes/`` whose backbone has a known shape, the model is built on
PyTorch's meta device (nothing is allocated or downloaded), its parameters are counted, and
DeepSpeed's own estimators (``estimate_zero2_model_states_mem_needs`` /
``estimate_zero3_model_states_mem_needs``) give the per-GPU and per-node CPU memory of the
parameters, gradients and optimizer states for the recipe's ZeRO stage and offload, on 1 and 8
GPUs. Activations are not included: they depend on the micro-batch and are measured by
``bench/gpu_check.py`` on a GPU.

    python bench/memory_estimates.py --out bench/results/memory_estimates.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def count(shape: str, mode: str) -> tuple[int, int, int]:
    """(total, trainable, largest layer) parameters of the shape, LoRA applied in LoRA mode."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    from qa_scale.modeling.lora import LoraSection, apply_lora, parameter_counts
    from qa_scale.modeling.model import config_of_shape

    with torch.device("meta"):
        model = AutoModelForQuestionAnswering.from_config(config_of_shape(shape))
        largest = max(p.numel() for p in model.parameters())
        if mode == "lora":
            model = apply_lora(model, LoraSection())
        total, trainable = parameter_counts(model)
    return total, trainable, largest


def estimate(recipe_path: Path, gpus: int) -> dict | None:
    from qa_scale.modeling.families import shape_of_checkpoint
    from qa_scale.training import ds_config
    from qa_scale.training.recipe import load_recipe

    config = load_recipe(recipe_path)
    shape = shape_of_checkpoint(config.model.name_or_path or "")
    if shape is None:
        return None
    template = json.loads(ds_config.find_template(config.run.deepspeed).read_text(encoding="utf-8"))
    zero = template.get("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    offload_opt = zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    offload_param = zero.get("offload_param", {}).get("device", "none") not in ("none", None)
    total, trainable, largest = count(shape, config.mode)
    with contextlib.redirect_stdout(sys.stderr):
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import (
            estimate_zero2_model_states_mem_needs,
        )
        if stage == 3:
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(total, largest, gpus, 1, offload_opt, offload_param,
                                                                True, 1.5)
        else:
            # DeepSpeed's estimator assumes every parameter trains; in LoRA mode only the adapters and
            # the head have gradients and optimizer states, so the frozen rest costs its fp16/bf16 copy.
            cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, gpus, 1, offload_opt, 1.5)
            gpu += 2 * (total - trainable)
    return {"recipe": recipe_path.name, "mode": config.mode, "backbone": config.model.name_or_path, "shape": shape,
            "deepspeed": Path(config.run.deepspeed).name, "zero_stage": stage, "gpus": gpus,
            "parameters": total, "trainable": trainable,
            "micro_batch_per_gpu": config.optim.micro_batch_size,
            "gpu_gib": round(gpu / GIB, 2), "cpu_gib": round(cpu / GIB, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args()
    rows = [row for recipe in sorted((ROOT / "launch" / "recipes").glob("*.yaml")) for gpus in (1, 8)
            if (row := estimate(recipe, gpus)) is not None]
    print("| recipe | ZeRO | GPUs | parameters (trainable) | model states per GPU | CPU per node |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['recipe']}` | {r['zero_stage']} | {r['gpus']} | {r['parameters'] / 1e6:.1f}M "
              f"({r['trainable'] / 1e6:.2f}M) | {r['gpu_gib']} GiB | {r['cpu_gib']} GiB |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "method": "deepspeed estimate_zero{2,3}_model_states_mem_needs, "
                                        "additional_buffer_factor 1.5; model states only"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
