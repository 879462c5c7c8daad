"""The ``README.md`` model card of an exported ``model/`` and of a LoRA run's ``adapter/``.

A card is what Hugging Face's Trainer leaves in a model folder: YAML front matter (library,
pipeline tag, language, base model, tags), then what the model is, what it was trained on and
with which settings, its dev scores, and how to load it. Everything in it comes from
:class:`CardFacts`: the run's recipe (``config.yaml``), the step of the exported checkpoint and
the dev EM/F1 training recorded for that step (``metrics.jsonl``). :func:`model_card` and
:func:`adapter_card` only render; ``export.py`` writes the text into the folder it stages.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..common.inputs import InputError, parse_json, read_text
from .recipe import TrainConfig, load_recipe

log = logging.getLogger(__name__)
CARD = "README.md"
TAGS = ["qa-scale", "extractive-question-answering", "deepspeed"]
EXAMPLE = ("北京是中国的首都。", "中国的首都是哪个城市？")  # the context and question of the command-line example


@dataclass
class CardFacts:
    """What a card says about the training behind a model: all optional, rendered when known."""

    recipe: TrainConfig | None = None  # the run's resolved recipe
    step: int | None = None  # optimizer step of the exported checkpoint
    dev: dict | None = None  # {"em": …, "f1": …} of that checkpoint, when the run evaluated it
    train_counts: list[dict] | None = None  # per training file: {"path", "examples_kept", …} (data.load_many)
    train_windows: int | None = None  # training windows per epoch
    lora_targets: list[str] | None = None  # the modules that got LoRA updates (the family's default resolved)

    @classmethod
    def of_run(cls, run_dir: Path, step: int | None) -> CardFacts:
        """The facts a run folder holds: ``config.yaml`` and the dev row of ``step`` in ``metrics.jsonl``.

        What cannot be read is left out of the card (with a warning), never a reason to fail an export.
        """
        facts = cls(step=step)
        config = run_dir / "config.yaml"
        if config.is_file():
            try:
                facts.recipe = load_recipe(config)
            except (InputError, ValueError) as err:
                log.warning("model card without the recipe: %s", err)
        metrics = run_dir / "metrics.jsonl"
        if step is not None and metrics.is_file():
            try:
                facts.dev = _dev_row(metrics, step)
            except InputError as err:  # e.g. a crash tore a character in two
                log.warning("model card without dev scores: %s", err)
        return facts


def _dev_row(path: Path, step: int) -> dict | None:
    """EM/F1 of the last ``dev`` row of ``step`` (a torn line, as a crash leaves one, is skipped)."""
    found = None
    for n, line in enumerate(read_text(path, "metrics file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = parse_json(line, f"{path} line {n}")
        except InputError:
            continue
        if isinstance(row, dict) and row.get("split") == "dev" and row.get("step") == step:
            found = {k: row[k] for k in ("em", "f1") if isinstance(row.get(k), (int, float))} or None
    return found


# ---------------------------------------------------------------- pieces


def base_model(recipe: TrainConfig | None) -> str | None:
    """The hub name or folder training started from; ``None`` for a random tiny model (or no recipe)."""
    if recipe is None or recipe.model.tiny is not None:
        return None
    return recipe.model.name_or_path or None


def _front_matter(library: str, base: str | None, lora: bool) -> str:
    meta = {"library_name": library, "pipeline_tag": "question-answering", "language": "zh"}
    if base:
        meta["base_model"] = base
    meta["tags"] = TAGS + (["lora", "peft"] if lora else [])
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _literal(path: str | Path) -> str:
    """A Python string literal of ``path`` (double quotes, characters kept)."""
    return json.dumps(str(path), ensure_ascii=False)


def _windows(recipe: TrainConfig) -> str:
    fields = dataclasses.asdict(recipe.data.windows)
    return ", ".join(f"{k} {v}" for k, v in fields.items() if v is not None and v is not False)


def _base_section(facts: CardFacts, base: str | None) -> list[str]:
    r = facts.recipe
    if base:
        text = f"`{base}`"
    elif r is not None and r.model.tiny is not None:
        sizes = ", ".join(f"{k} {v}" for k, v in r.model.tiny.items()) or "the tiny defaults"
        text = f"none: a randomly initialised BERT built from a config (`model.tiny`: {sizes}), trained from scratch"
    else:
        text = "not recorded (no training `config.yaml` beside the model at export)"
    return ["## Base model", "", text + ".", ""]


def _data_section(facts: CardFacts) -> list[str]:
    r = facts.recipe
    if r is None:
        return []
    counts = {str(c.get("path")): c for c in facts.train_counts or []}
    lines = ["## Training data", ""]
    for path in r.data.train_files():
        kept = counts.get(str(path), {}).get("examples_kept")
        lines.append(f"- `{path}`" + (f": {kept} examples" if kept is not None else ""))
    if facts.train_windows is not None:
        lines.append(f"- {facts.train_windows} training windows per epoch")
    lines.append(f"- windows: {_windows(r)}; strategy `{r.data.strategy}`")
    if r.data.dev_file:
        lines.append(f"- dev (EM/F1, checkpoint choice): `{r.data.dev_file}`")
    return lines + [""]


def _settings_section(facts: CardFacts) -> list[str]:
    r = facts.recipe
    if r is None:
        return []
    o = r.optim
    length = f"max_steps {o.max_steps}" if o.max_steps else f"{o.epochs:g} epochs"
    step = f"{length}; the exported checkpoint is step {facts.step}" if facts.step is not None else length
    rows = [("mode", "LoRA" if r.mode == "lora" else "full fine-tuning"),
            ("learning rate", f"{o.lr:g} ({o.scheduler}, warm-up {o.warmup_ratio:g}, weight decay {o.weight_decay:g})"),
            ("optimizer steps", step),
            ("batch", f"{o.global_batch_size} windows per step (micro-batch {o.micro_batch_size})"),
            ("precision", r.run.precision), ("seed", str(r.run.seed))]
    if r.mode == "lora":
        lo = r.lora
        targets = ", ".join(facts.lora_targets or lo.target_modules or ["the model family's default"])
        rows.append(("LoRA", f"r {lo.r}, alpha {lo.alpha:g}, dropout {lo.dropout:g}, targets {targets}"))
    return ["## Training settings", "", "| setting | value |", "|---|---|",
            *(f"| {k} | {v} |" for k, v in rows), ""]


def _eval_section(facts: CardFacts) -> list[str]:
    r = facts.recipe
    if facts.dev:
        at = f" at step {facts.step}, the exported checkpoint" if facts.step is not None else ""
        on = f" on `{r.data.dev_file}`" if r is not None and r.data.dev_file else ""
        scores = ", ".join(f"{k.upper()} {v:.2f}" for k, v in facts.dev.items())
        return ["## Evaluation", "", f"Dev {scores}{on}{at} (CMRC 2018 evaluator).", ""]
    if r is not None and not r.data.dev_file:
        return ["## Evaluation", "", "This run had no dev file: it was not evaluated.", ""]
    return []


def _windows_note(facts: CardFacts, model_dir: Path) -> str:
    where = model_dir.parent / "config.yaml"
    settings = f" (`data.windows`: {_windows(facts.recipe)})" if facts.recipe is not None else ""
    return (f"The window settings live in `{where}` beside it{settings}: cut long paragraphs the same way, question "
            "first (token type 0), then the context (token type 1). `qa-scale answer` and `qa-scale predict` read "
            "them from there.")


def _cli(folder: Path) -> list[str]:
    context, question = EXAMPLE
    return ["```bash", f"qa-scale answer {shlex.quote(str(folder))} --context {shlex.quote(context)} "
            f"--question {shlex.quote(question)}", "```"]


# ---------------------------------------------------------------- cards


def _tokenizer(facts: CardFacts) -> str | None:
    """The tokenizer the recipe trained with (its own, else the base model's)."""
    r = facts.recipe
    return (r.model.tokenizer or r.model.name_or_path) if r is not None else None


def model_card(facts: CardFacts, model_dir: Path, lora: bool = False, tokenizer_saved: bool = True) -> str:
    """The card of an exported model folder (``lora``: the merged model of a LoRA run).

    Args:
        facts: what is known of the run.
        model_dir: the folder as it will be read (the final path, not a staging folder).
        lora: the weights are a LoRA adapter merged into its base.
        tokenizer_saved: the tokenizer is saved in ``model_dir``; else the recipe's is named.
    """
    base = base_model(facts.recipe)
    what = "LoRA adapters merged into the base weights" if lora else "full fine-tuning"
    tok = str(model_dir) if tokenizer_saved else (_tokenizer(facts) or str(model_dir))
    lines = [_front_matter("transformers", base, lora), f"# {model_dir.parent.name or model_dir.name}: a Chinese "
             "extractive question-answering reader", "",
             f"An extractive QA reader trained by qa-scale ({what}): given a paragraph and "
             "a question, it gives every token a start and an end logit; the answer is the best span of the "
             "paragraph.", "",
             *_base_section(facts, base), *_data_section(facts), *_settings_section(facts), *_eval_section(facts),
             "## How to use", "", "With transformers:", "", "```python",
             "from transformers import AutoModelForQuestionAnswering, AutoTokenizer", "",
             f"model = AutoModelForQuestionAnswering.from_pretrained({_literal(model_dir)})",
             f"tokenizer = AutoTokenizer.from_pretrained({_literal(tok)})", "```", "",
             _windows_note(facts, model_dir), "", "With qa-scale (windows, decoding and n-best as in training):", "",
             *_cli(model_dir), ""]
    return "\n".join(lines)


def adapter_card(facts: CardFacts, adapter_dir: Path, base: str, model_dir: Path | None = None,
                 saved_base: bool = False) -> str:
    """The card of a LoRA run's adapter folder.

    Args:
        facts: what is known of the run.
        adapter_dir: the folder as it will be read (the final path).
        base: the base model the adapter config names (hub name or folder).
        model_dir: the merged model exported beside it (its tokenizer too), when there is one.
        saved_base: ``base`` is the random initial model saved into ``adapter_dir/base``.
    """
    hub_base = None if saved_base else base
    base_dir = adapter_dir / "base" if saved_base else base
    tok = str(model_dir) if model_dir is not None else _tokenizer(facts)
    lines = [_front_matter("peft", hub_base, True), f"# {adapter_dir.parent.name or adapter_dir.name}: a LoRA adapter "
             "for Chinese extractive question answering", "",
             "LoRA adapters (and the span head, trained in full) of an extractive QA reader trained by qa-scale. "
             "Loaded onto their base model and merged, they give a reader that marks the answer's start and end "
             "in a paragraph.", "",
             *_base_section(facts, hub_base)]
    if saved_base:
        lines += [f"The base was built from a config, so it is saved here, in `{adapter_dir / 'base'}`: the exact "
                  "weights the adapter was trained on. `adapter_config.json` names it by its absolute path, so "
                  "that peft finds it offline; after moving this folder, load `base/` as below.", ""]
    lines += [*_data_section(facts), *_settings_section(facts), *_eval_section(facts), "## How to use", "",
              "Merge the adapter into its base first. With qa-scale, which loads the base, applies the adapter and "
              "merges:", "", *_cli(adapter_dir), "", "With peft and transformers:", "", "```python",
              "from peft import PeftModel", "from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
              "", f"base = AutoModelForQuestionAnswering.from_pretrained({_literal(base_dir)})",
              f"model = PeftModel.from_pretrained(base, {_literal(adapter_dir)}).merge_and_unload()",
              f"tokenizer = AutoTokenizer.from_pretrained({_literal(tok or base)})", "```", "",
              "peft's `AutoPeftModelForQuestionAnswering` wrapper (`PeftModelForQuestionAnswering`) drops "
              "`token_type_ids` before calling the model, so its start logits differ from the merged model's: the "
              "merged route above is the one to use (`AutoPeftModelForQuestionAnswering.from_pretrained(...)` is "
              "fine when followed by `.merge_and_unload()`).", ""]
    if model_dir is not None:
        lines += [f"The merged model is exported beside it, ready to load with transformers: `{model_dir}` (its "
                  f"card says how). {_windows_note(facts, adapter_dir)}", ""]
    return "\n".join(lines)
