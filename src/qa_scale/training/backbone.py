"""``qa-scale backbone``: a small Chinese BERT pre-trained with masked-LM, offline.

Where no hub is reachable, this is the embedded default backbone and the stand-in for
pretrained weights in tests and demos. It reuses the training engine of :mod:`.loop`
unchanged: only the task differs (text blocks and masked tokens instead of QA windows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..runtime.distributed import Dist
from .backbone_options import BackboneOptions
from .recipe import TrainConfig, build

log = logging.getLogger(__name__)
MLM_PROBABILITY = 0.15  # BERT's masking rate (80% [MASK], 10% random, 10% kept)


@dataclass
class Blocks:
    """Corpus text as fixed-size ``[CLS] … [SEP]`` blocks (what the engine loop iterates over)."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    lengths: np.ndarray
    pad_id: int


class MLMTask:
    """Masked-LM over the lines of a text corpus (``data.train_file``)."""

    output_kind = "backbone"  # the run folder's kind for the output layer

    has_dev = False

    def __init__(self, config: TrainConfig, tok, cache_dir: Path, d: Dist):
        from transformers import DataCollatorForLanguageModeling

        self.config, self.tok = config, tok
        from ..data.tokenization import corpus_lines

        lines = list(corpus_lines(config.data.train_files()))
        if not lines:
            raise ValueError(f"{', '.join(config.data.train_files())}: the corpus is empty")
        ids = np.concatenate([np.asarray(x, np.int32) for x in tok(lines, add_special_tokens=False)["input_ids"]])
        width = config.data.windows.max_seq_len
        body = width - 2
        n = max(len(ids) // body, 1)
        blocks = np.full((n, width), tok.pad_token_id, np.int32)
        chunk = ids[: n * body].reshape(n, -1) if len(ids) >= body else ids[None, :]
        blocks[:, 0], blocks[:, 1:1 + chunk.shape[1]] = tok.cls_token_id, chunk
        blocks[:, 1 + chunk.shape[1]] = tok.sep_token_id
        self.blocks = Blocks(blocks, np.zeros_like(blocks, np.int8), np.full(n, chunk.shape[1] + 2, np.int32),
                             tok.pad_token_id)
        self.collator = DataCollatorForLanguageModeling(tok, mlm_probability=MLM_PROBABILITY)
        log.info("masked-LM corpus: %d lines, %d tokens, %d blocks of %d", len(lines), len(ids), n, width)

    def build_model(self):
        from ..modeling.model import build_mlm_model, tiny_bert_config

        m = self.config.model
        return build_mlm_model(tiny_bert_config(max(self.tok.get_vocab().values()) + 1, **(m.tiny or {})),
                               seed=self.config.run.seed)

    def windows(self, epoch: int) -> Blocks:
        return self.blocks

    @staticmethod
    def arrays(blocks: Blocks) -> dict[str, np.ndarray]:
        return {"input_ids": blocks.input_ids, "token_type_ids": blocks.token_type_ids}

    @staticmethod
    def forward(engine, batch: dict):
        """The masked-LM loss of the masked tokens (the model's own)."""
        return engine(**batch)

    def prepare(self, batch: dict) -> dict:
        """Mask tokens of a CPU batch (the draws come from torch's CPU RNG, which checkpoints restore)."""
        ids = batch["input_ids"]
        special = torch.tensor([self.tok.get_special_tokens_mask(row, already_has_special_tokens=True)
                                for row in ids.tolist()], dtype=torch.bool) | (batch["attention_mask"] == 0)
        inputs, labels = self.collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
        return {**batch, "input_ids": inputs, "labels": labels}

    @staticmethod
    def correct(out, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked tokens predicted right, masked tokens); the logits are those of the masked tokens."""
        mask = batch["labels"] != -100
        return (out.logits.argmax(-1) == batch["labels"][mask]).sum(), mask.sum()

    def evaluate(self, engine, d: Dist) -> tuple[dict, dict | None]:
        raise NotImplementedError("the masked-LM task has no dev evaluation")


def backbone_config(corpus: str, tokenizer: str, output_dir: str, opts: BackboneOptions | None = None,
                    world_size: int = 1) -> TrainConfig:
    """The masked-LM run as a :class:`TrainConfig` (saved with the checkpoints like any run)."""
    o = opts or BackboneOptions()
    return build(TrainConfig, {
        "model": {"tokenizer": tokenizer,
                  "tiny": {"hidden_size": o.hidden_size, "num_hidden_layers": o.layers, "num_attention_heads": o.heads,
                           "intermediate_size": 4 * o.hidden_size, "max_position_embeddings": max(512, o.seq_len)}},
        "data": {"train_file": corpus, "windows": {"max_seq_len": o.seq_len, "max_question_len": 1, "doc_overlap": 0}},
        "optim": {"lr": o.lr, "max_steps": o.steps, "micro_batch_size": max(o.batch_size // world_size, 1),
                  "global_batch_size": o.batch_size, "warmup_ratio": 0.06, "weight_decay": 0.01},
        "run": {"output_dir": output_dir, "seed": o.seed, "precision": o.precision, "deepspeed": o.deepspeed,
                "device": o.device, "save_every": o.steps, "eval_every": o.steps,
                "log_every": max(o.steps // 20, 1), "length_grouping": False},
    })


def pretrain(config: TrainConfig) -> dict:
    """Run masked-LM pre-training on the engine; the backbone lands in ``<output_dir>/model``."""
    from .loop import run

    return run(config, make_task=MLMTask)


def run_backbone(corpus: Path, out: Path, opts: BackboneOptions) -> dict:
    """``qa-scale backbone``: a vocabulary (unless given), then masked-LM pre-training into ``out``."""
    import os

    from ..data.tokenization import build_char_vocab, corpus_lines

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    tokenizer = opts.tokenizer
    if tokenizer is None:
        if world_size > 1:  # ranks would race to write it
            raise ValueError("under the launcher, build the vocabulary first (`qa-scale vocab`) and pass --tokenizer")
        tokenizer = str(out / "tokenizer")
        if not (out / "tokenizer" / "vocab.txt").exists():
            lines = list(corpus_lines([corpus]))  # through the input layer: errors name the file and line
            build_char_vocab(lines, tokenizer, vocab_size=opts.vocab_size)
    return pretrain(backbone_config(str(corpus), tokenizer, str(out), opts, world_size))
