"""The optimizer of a run: AdamW parameter groups (decay, layer-wise learning rates) and its class,
and the DeepSpeed engine built around it.

Layer names come from the model's family (``modeling/families.py``), so layer-wise LR decay
works for every registered architecture.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..modeling.families import GENERIC, ModelFamily, family_of


def _is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or "LayerNorm" in type(module).__name__


def _no_decay(name: str, param: torch.nn.Parameter, owner: torch.nn.Module) -> bool:
    # Decay shrinks weights towards zero; biases and normalisation gains are not weights of
    # that kind (a LayerNorm gain is centred on 1), hence every 1-D tensor is exempt.
    return (param.ndim <= 1 or name.endswith("bias") or _is_norm(owner)
            or "LayerNorm" in name or "layer_norm" in name)


def _depths(names: Iterable[str], family: ModelFamily) -> tuple[dict[str, int], int]:
    """Depth of each parameter: 0 embeddings, i + 1 encoder layer i, L + 1 the head."""
    names = list(names)
    layers = {n: int(m.group(1)) for n in names if (m := family.layer_re.search(n))}
    if not layers:
        raise ValueError("layer-wise LR decay needs an encoder with numbered layers (encoder.layer.N.)")
    n_layers = max(layers.values()) + 1
    depth = {n: 0 if family.embeddings_re.search(n) else layers[n] + 1 if n in layers else n_layers + 1 for n in names}
    return depth, n_layers


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float,
                 layer_lr_decay: float | None = None) -> list[dict]:
    """AdamW parameter groups: no decay for biases and norms, optional layer-wise LR decay.

    With ``layer_lr_decay`` the head (QA outputs, MLM head, anything after the encoder) gets
    ``lr``, encoder layer ``i`` of ``L`` gets ``lr * decay ** (L - i)`` and the embeddings get
    ``lr * decay ** (L + 1)``: the layers nearest the input, which hold the most general
    features, move least.

    Args:
        model: a BERT-like model, possibly peft-wrapped; only parameters with
            ``requires_grad`` are grouped.
        lr: peak learning rate (of the head).
        weight_decay: AdamW decay of the groups that decay.
        layer_lr_decay: factor per layer, e.g. 0.9; ``None`` for one learning rate.

    Returns:
        Non-empty groups ``{"params", "weight_decay", "lr", "name", "param_names"}``; every
        trainable parameter is in exactly one of them, named as ``model.named_parameters()`` names it.
    """
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    named = list(model.named_parameters())
    if layer_lr_decay is not None:
        # Layers are counted over every parameter, frozen ones too, so that LoRA's learning
        # rates match those of full fine-tuning.
        depth, n_layers = _depths((n for n, _ in named), family_of(model, default=GENERIC))
    groups: dict[str, dict] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        decay = not _no_decay(name, param, owners[id(param)])
        if layer_lr_decay is None:
            where, group_lr = "", lr
        else:
            d = depth[name]
            where = "embeddings" if d == 0 else f"layer_{d - 1}" if d <= n_layers else "head"
            group_lr = lr * layer_lr_decay ** (n_layers + 1 - d)
        key = f"{where}{'.' if where else ''}{'decay' if decay else 'no_decay'}"
        group = groups.setdefault(key, {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                        "lr": group_lr, "name": key, "param_names": []})
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, optim, cpu_offload: bool, zero_stage: int = 2,
                    device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`; DeepSpeed's CPU Adam when ZeRO offloads the optimizer.

    Args:
        model: the model (possibly peft-wrapped).
        optim: the recipe's ``optim`` section (lr, betas, eps, decay, layer-wise decay).
        cpu_offload: the DeepSpeed config offloads optimizer states to the CPU.
        zero_stage: the ZeRO stage of the resolved DeepSpeed config. Stage 0 gets a multi-tensor
            AdamW: ``fused`` on CUDA, ``foreach`` on the CPU.
        device: where the engine puts the parameters (this rank's device).
    """
    groups = param_groups(model, optim.lr, optim.weight_decay, optim.layer_lr_decay)
    kwargs = {"lr": optim.lr, "betas": (optim.adam_beta1, optim.adam_beta2), "eps": optim.adam_eps}
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        return DeepSpeedCPUAdam(_unnamed(groups), **kwargs)
    if zero_stage != 0:
        # ZeRO 1-3 hand this optimizer one flat fp32 partition per group: nothing for a multi-tensor
        # kernel to batch, and names that no longer match its tensors.
        return torch.optim.AdamW(_unnamed(groups), **kwargs)
    # ZeRO off: DeepSpeed steps this AdamW over the parameters themselves (fp32) or over one fp32 master
    # per parameter (bf16/fp16, its unfused wrapper): hundreds of tensors, one kernel each in torch's
    # per-tensor loop. fused=True updates them all in a few CUDA kernels; foreach batches them on the CPU.
    # The names stay in the groups, hence in the checkpoint: export maps the fp32 masters back by them.
    on_cuda = torch.device(device).type == "cuda"
    return torch.optim.AdamW(groups, **kwargs, fused=on_cuda or None, foreach=None if on_cuda else True)


def _unnamed(groups: list[dict]) -> list[dict]:
    return [{k: v for k, v in g.items() if k != "param_names"} for g in groups]


def build_engine(model: torch.nn.Module, config, ds: dict, device: torch.device, total_steps: int):
    """The DeepSpeed engine of a run and its learning-rate scheduler.

    AdamW (:func:`build_optimizer`, as the resolved config ``ds`` asks) and the recipe's schedule
    are passed to ``deepspeed.initialize`` (the client optimizer: templates have no optimizer
    block); with ``run.compile`` the engine's module is compiled.

    Args:
        model: the model to train.
        config: the run's :class:`~.recipe.TrainConfig`.
        ds: the DeepSpeed config, ``"auto"`` values filled (:func:`.ds_config.resolve`).
        device: this rank's device.
        total_steps: optimizer steps of the whole schedule.

    Returns:
        ``(engine, scheduler)``.
    """
    import deepspeed
    from transformers import get_scheduler

    from .ds_config import offloads_optimizer, zero_stage

    o = config.optim
    optimizer = build_optimizer(model, o, offloads_optimizer(ds), zero_stage(ds), device)

    def schedule(opt):
        return get_scheduler(o.scheduler, opt, num_warmup_steps=int(o.warmup_ratio * total_steps),
                             num_training_steps=total_steps)

    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=ds)
    if config.run.compile:
        # engine.compile() rather than torch.compile(model): it compiles the module in place
        # (nn.Module.compile), so the engine, its ZeRO hooks, checkpoints and export keep the same
        # module and state-dict keys (torch.compile's wrapper would add "_orig_mod."), and the engine
        # switches off its NVTX ranges, which would break the graph. Inductor, as torch.compile's default.
        engine.compile(backend="inductor", compile_kwargs={})
    return engine, scheduler
