"""Models: QA readers from local checkpoints or tiny configs, and their optimizer groups.

Hub names are read from the local Hugging Face cache only when the hub is unreachable; a
name that is neither a local directory nor cached fails at once with what to pass instead.
A BERT masked-LM checkpoint (the offline backbone of ``qa-scale backbone``) loads as a QA
reader with a newly initialised span head only when asked (``new_head=True``, what training
does); a reader loaded to answer (``predict``, ``answer``, ``serve``, the ensembler) must have
weights for every tensor of the model, and none over: anything else is refused, naming the
folder and the tensors, rather than answered with randomly initialised layers.

The tiny configurations and their checks are in ``tiny`` (re-exported here), ``ModelLoadError``
in ``errors``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.windows import MATCH_TYPE, WindowConfig
from .errors import ModelLoadError
from .tiny import check_tiny, tiny_bert_config, tiny_config_keys  # noqa: F401 - tiny_config_keys: re-exported

if TYPE_CHECKING:
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

log = logging.getLogger(__name__)


def _attn_for(model_class: type, attn_implementation: str) -> str:
    # Only a class that cannot run SDPA falls back; any other unknown value is the caller's
    # error and is left for transformers to report.
    if attn_implementation == "sdpa" and not getattr(model_class, "_supports_sdpa", False):
        log.warning("%s does not support SDPA attention; using eager attention", model_class.__name__)
        return "eager"
    return attn_implementation


def _from_config(model_class: type, config, attn_implementation: str, seed: int | None):
    # fork_rng keeps the caller's random stream untouched: seeding a model build must not
    # change, say, the data order drawn afterwards.
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return model_class._from_config(config, attn_implementation=_attn_for(model_class, attn_implementation))


def build_mlm_model(config: BertConfig, seed: int | None = None,
                    attn_implementation: str = "sdpa") -> BertForMaskedLM:
    """A randomly initialised BERT masked-LM (for pre-training the offline backbone).

    It is a :class:`~.masked_lm.MaskedOnlyBertForMaskedLM`: the vocabulary projection runs on the
    masked tokens only; it saves and loads as a ``BertForMaskedLM``.

    Args:
        config: the architecture, e.g. from :func:`tiny_bert_config`.
        seed: seeds the initialisation; the global random state is left as it was.
        attn_implementation: ``"sdpa"`` (default) or ``"eager"``.
    """
    from .masked_lm import MaskedOnlyBertForMaskedLM

    return _from_config(MaskedOnlyBertForMaskedLM, config, attn_implementation, seed)


def load_config(name_or_path: str):
    """A model's ``transformers`` config from a local directory or the local hub cache."""
    from transformers import AutoConfig

    from ..data.tokenization import looks_local

    is_dir = Path(name_or_path).is_dir()
    if not Path(name_or_path).exists() and looks_local(name_or_path):
        raise ModelLoadError(f"model {name_or_path!r} not found: no such folder. Pass a local directory saved "
                             "with save_pretrained, or pre-train an offline backbone with `qa-scale backbone`.")
    if is_dir:  # through the input layer first: a damaged config.json is named with its line or key
        from ..common.inputs import read_mapping

        read_mapping(Path(name_or_path) / "config.json", "model config")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
        _build_on_meta(config)
        return config
    except Exception as err:  # noqa: BLE001 - transformers' own validators raise many types; the file is named
        if is_dir:
            raise ModelLoadError(f"cannot load a model config from directory {name_or_path!r}: {err}") from None
        raise ModelLoadError(
            f"model {name_or_path!r} is not a local directory and is not in the local Hugging Face "
            "cache (the hub is unreachable or disabled by HF_HUB_OFFLINE). Pass a local directory "
            "saved with save_pretrained, or pre-train an offline backbone with `qa-scale backbone` "
            "and pass its output directory."
        ) from None


def _build_on_meta(config) -> None:
    """Build the model of ``config`` as shapes only: a value of the wrong kind (a ``dtype`` that is a number,
    a size that is text) fails here, where the folder is named, not deep inside a later load.

    Skipped for a family without a question-answering head (refused later with its own message) and
    under ZeRO-3, whose ``zero.Init`` would partition even a meta model over the process group.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering
    from transformers.integrations import is_deepspeed_zero3_enabled
    from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING

    if is_deepspeed_zero3_enabled() or type(config) not in MODEL_FOR_QUESTION_ANSWERING_MAPPING:
        return
    with torch.device("meta"):
        AutoModelForQuestionAnswering.from_config(config)


def _check_weight_files(name_or_path: str) -> None:
    """Every ``*.safetensors`` of a local model folder is whole (its header and all its bytes)."""
    from ..common.inputs import check_safetensors

    folder = Path(name_or_path)
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            check_safetensors(path)


def _listed(names: list[str], limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def check_coverage(name_or_path: str, model: PreTrainedModel, info: dict, new_head: bool = False) -> None:
    """Refuse weights that do not cover ``model``: tensors the checkpoint lacks (transformers would
    initialise them at random) or holds over (they would be dropped), and shapes that differ.

    Args:
        name_or_path: the folder or name, for the message.
        model: the model the weights were loaded into.
        info: ``from_pretrained(..., output_loading_info=True)``'s second value.
        new_head: training from a backbone: the span head (every tensor outside the base model,
            ``model.base_model_prefix``) may be missing, and the checkpoint's own heads (tensors
            outside the base model) may be left over; the encoder must still be complete.

    Raises:
        ModelLoadError: naming the folder and up to 5 tensors of each kind.
    """
    prefix = f"{model.base_model_prefix}."
    missing = list(info.get("missing_keys") or [])
    # A pre-trained encoder's pooler (``bert.pooler.*`` of hub checkpoints) is left out of QA models
    # by design (add_pooling_layer=False): its tensors are not the model's, and not a loss.
    unexpected = [k for k in info.get("unexpected_keys") or [] if not k.startswith(f"{prefix}pooler.")]
    mismatched = [str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys") or []]
    if new_head:
        head = [k for k in missing if not k.startswith(prefix)]
        missing = [k for k in missing if k.startswith(prefix)]
        unexpected = [k for k in unexpected if k.startswith(prefix)]
        if head:
            log.info("%s: newly initialised: %s", name_or_path, ", ".join(sorted(head)))
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model are not in its weights ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) of its weights are not in the model ({_listed(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) have another shape ({_listed(mismatched)})")
    if not problems:
        return
    head_only = not new_head and missing and all(not k.startswith(prefix) for k in missing)
    hint = ("it is a backbone without a trained span head: train a reader from it (qa-scale train, "
            "model.name_or_path) and use the exported model" if head_only else
            "the weights belong to another model or architecture, or were saved wrongly: export the model again")
    raise ModelLoadError(f"{name_or_path}: its weights do not cover the {type(model).__name__} of its config.json: "
                         f"{'; '.join(problems)}; {hint}")


def _load_pretrained(name_or_path: str, attn_implementation: str, seed: int | None,
                     new_head: bool = False) -> PreTrainedModel:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_QUESTION_ANSWERING_MAPPING,
    )

    config = load_config(name_or_path)
    try:
        model_class = MODEL_FOR_QUESTION_ANSWERING_MAPPING[type(config)]
    except KeyError:
        raise ModelLoadError(f"{name_or_path!r} is a {config.model_type!r} model, which has no "
                             "question-answering head in transformers") from None
    _check_weight_files(name_or_path)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            # Tensors of another shape are loaded as new ones and reported in ``info``: the coverage
            # check below then refuses them by name (transformers' own error names no tensor).
            # fp32 always: transformers 5 loads a checkpoint in the dtype it was saved in, and a
            # half-precision hub checkpoint would otherwise be trained (master weights), read and
            # exported in fp16/bf16; mixed precision is the engine's or autocast's business.
            model, info = model_class.from_pretrained(
                name_or_path, config=config, output_loading_info=True, ignore_mismatched_sizes=True,
                attn_implementation=_attn_for(model_class, attn_implementation), dtype=torch.float32)
        except (OSError, RuntimeError, ValueError) as err:  # e.g. a directory holding a config but no weights
            raise ModelLoadError(f"cannot load model weights from {name_or_path!r}: {err}") from None
    check_coverage(name_or_path, model, info, new_head)
    return model


def load_qa_model(name_or_path: str | None, *, vocab_size: int | None = None, tiny: dict | None = None,
                  gradient_checkpointing: bool = False, attn_implementation: str = "sdpa",
                  seed: int | None = None, new_head: bool = False) -> PreTrainedModel:
    """Build or load an extractive QA model (start/end logits over the tokens).

    Args:
        name_or_path: a local directory saved with ``save_pretrained`` (a QA checkpoint, or with
            ``new_head`` a BERT masked-LM / encoder checkpoint whose span head is then newly
            initialised), or a hub name present in the local cache; loaded in fp32 whatever dtype
            it was saved in. Ignored when ``tiny`` is given.
        vocab_size: embedding rows of a tiny model (required with ``tiny``).
        tiny: build a randomly initialised BERT from :func:`tiny_bert_config` with these
            overrides (``{}`` for the defaults) instead of loading anything.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        attn_implementation: ``"sdpa"`` (default; falls back to ``"eager"`` with a warning for
            model classes without SDPA support), ``"eager"``, or another transformers value.
        seed: seeds the random initialisation (of a tiny model, or of a new span head).
        new_head: training only: the checkpoint may lack the span head (a masked-LM or encoder
            backbone), which is then newly initialised. Otherwise (reading, answering) the weights
            must cover the model exactly.

    Raises:
        ModelLoadError: the model is not local nor cached, has no QA head, its weights do not
            cover it (see :func:`check_coverage`), or ``tiny`` lacks ``vocab_size`` or holds an
            unknown key or a bad size (see :func:`check_tiny`).
        InputError: a ``.safetensors`` file of the folder is truncated or damaged (naming it).
    """
    from transformers import BertForQuestionAnswering

    if tiny is not None:
        if vocab_size is None:
            raise ModelLoadError("a tiny model needs vocab_size (the tokenizer's largest id + 1)")
        check_tiny(tiny)
        if name_or_path:
            log.info("building a tiny model; model name %r is ignored", name_or_path)
        model = _from_config(BertForQuestionAnswering, tiny_bert_config(vocab_size, **tiny),
                             attn_implementation, seed)
    elif not name_or_path:
        raise ModelLoadError("no model given: pass a local model directory, a cached hub name, or tiny={}")
    else:
        model = _load_pretrained(name_or_path, attn_implementation, seed, new_head)
    if gradient_checkpointing:
        enable_checkpointing(model)
    return model


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in the backward pass (transformers 4 and 5 spell it differently)."""
    # Non-reentrant checkpointing works with frozen embeddings (LoRA) and with ZeRO-3's
    # parameter hooks, where the reentrant variant needs work-arounds.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _token_type_embeddings(model: PreTrainedModel) -> torch.nn.Embedding:
    emb = getattr(getattr(model.base_model, "embeddings", None), "token_type_embeddings", None)
    if not isinstance(emb, torch.nn.Embedding):
        raise ModelLoadError(f"{type(model).__name__} has no token type embeddings, so it cannot read the "
                             "match marks of data.windows.mark_matches")
    return emb


def extend_token_types(model: PreTrainedModel, n: int, like: int) -> None:
    """Give the model at least ``n`` token types; a new type's embedding starts as a copy of type
    ``like``'s, so the model's outputs do not change until training tells the types apart.

    ``resize_token_embeddings`` of ``transformers`` covers only the word embeddings; this is its
    counterpart for the token types (a model is extended before the engine partitions it).
    """
    emb = _token_type_embeddings(model)
    old = emb.num_embeddings
    if old >= n:
        return
    new = torch.nn.Embedding(n, emb.embedding_dim, dtype=emb.weight.dtype, device=emb.weight.device)
    with torch.no_grad():
        new.weight[:old] = emb.weight
        new.weight[old:] = emb.weight[like]
    model.base_model.embeddings.token_type_embeddings = new
    model.config.type_vocab_size = n
    log.info("token types extended from %d to %d (new ones start as type %d)", old, n, like)


def check_inputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, windows: WindowConfig) -> None:
    """Fail when the windows can hold ids, token types or positions the model has no embedding for.

    Raises:
        ModelLoadError: naming both sizes.
    """
    check_vocab(model, tokenizer)
    check_positions(model, windows)
    if windows.mark_matches and (have := _token_type_embeddings(model).num_embeddings) <= MATCH_TYPE:
        raise ModelLoadError(f"the windows mark question matches with token type {MATCH_TYPE} "
                             f"(data.windows.mark_matches) but the model has {have} token types: use a model "
                             "trained with mark_matches, or turn it off")


_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")  # positions start after padding_idx


def max_positions(config) -> int | None:
    """The longest input a model's position embeddings cover (None: no absolute positions)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "model_type", None) in _OFFSET_POSITIONS:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


def check_positions(model: PreTrainedModel, windows: WindowConfig) -> None:
    """Fail when ``windows.max_seq_len`` is longer than the model's position embeddings cover.

    Raises:
        ModelLoadError: naming both lengths (``--max-seq-len`` / ``data.windows.max_seq_len``).
    """
    limit = max_positions(model.config)
    if limit is not None and windows.max_seq_len > limit:
        raise ModelLoadError(
            f"max_seq_len {windows.max_seq_len} is longer than the model's position embeddings cover "
            f"(max_position_embeddings: {limit} tokens): give --max-seq-len (data.windows.max_seq_len) "
            f"≤ {limit}")


def check_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Fail when the tokenizer can produce ids the model has no embedding for.

    The largest id counts, not the number of entries: the Chinese BERT ``vocab.txt`` has
    21,128 lines but 53 duplicates, so ``len(get_vocab())`` is 21,075 while ids reach 21,127.

    Raises:
        ModelLoadError: naming both sizes.
    """
    needed = max(tokenizer.get_vocab().values()) + 1
    rows = model.get_input_embeddings().num_embeddings
    if needed > rows:
        raise ModelLoadError(
            f"the tokenizer's ids go up to {needed - 1} (needs {needed} embedding rows) but the model's "
            f"embedding matrix has {rows} rows: use the tokenizer the model was trained with")


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; shared tensors count once.

    Under ZeRO-3 a parameter's local tensor is an empty shard; its full size is ``ds_numel``.
    """
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def config_of_shape(name: str):
    """The ``transformers`` config of a named shape of a registered family (``families.shapes()``)."""
    from transformers import AutoConfig

    from .families import shapes

    known = shapes()
    if name not in known:
        raise ModelLoadError(f"unknown shape {name!r}; known: {', '.join(sorted(known))}")
    family, values = known[name]
    return AutoConfig.for_model(family.model_types[0], **values)
