"""``qa-scale backbone``: a small Chinese BERT pre-trained with masked-LM, offline.

Where no hub is reachable, this is the embedded default backbone and the stand-in for
pretrained weights in tests and demos. It reuses the training engine of :mod:`train`
unchanged: only the task differs (text blocks and masked tokens instead of QA windows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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

    has_dev = False

    def __init__(self, config: TrainConfig, tok, cache_dir: Path):
        from transformers import DataCollatorForLanguageModeling

        self.config, self.tok = config, tok
        lines = [ln.strip() for ln in Path(config.data.train_file).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"{config.data.train_file}: the corpus is empty")
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
        from .model import build_mlm_model, tiny_bert_config

        m = self.config.model
        return build_mlm_model(tiny_bert_config(max(self.tok.get_vocab().values()) + 1, **(m.tiny or {})),
                               seed=self.config.run.seed)

    def windows(self, epoch: int) -> Blocks:
        return self.blocks

    @staticmethod
    def arrays(blocks: Blocks) -> dict[str, np.ndarray]:
        return {"input_ids": blocks.input_ids, "token_type_ids": blocks.token_type_ids}

    def prepare(self, batch: dict) -> dict:
        """Mask tokens (the random draws come from torch's RNG, which checkpoints restore)."""
        ids = batch["input_ids"].cpu()
        special = torch.tensor([self.tok.get_special_tokens_mask(row, already_has_special_tokens=True)
                                for row in ids.tolist()], dtype=torch.bool) | (batch["attention_mask"].cpu() == 0)
        inputs, labels = self.collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
        device = batch["input_ids"].device
        return {**batch, "input_ids": inputs.to(device), "labels": labels.to(device)}

    @staticmethod
    def correct(out, batch) -> tuple[int, int]:
        """(masked tokens predicted right, masked tokens)."""
        mask = batch["labels"] != -100
        return int((out.logits.argmax(-1)[mask] == batch["labels"][mask]).sum()), int(mask.sum())


def backbone_config(corpus: str, tokenizer: str, output_dir: str, *, hidden_size: int = 128, layers: int = 4,
                    heads: int = 4, intermediate_size: int = 512, seq_len: int = 128, steps: int = 300,
                    batch_size: int = 32, micro_batch_size: int | None = None, lr: float = 5e-4, seed: int = 0,
                    deepspeed: str = "ds_configs/zero2_bf16.json", precision: str = "fp32") -> TrainConfig:
    """The masked-LM run as a :class:`TrainConfig` (saved with the checkpoints like any run)."""
    return build(TrainConfig, {
        "model": {"tokenizer": tokenizer,
                  "tiny": {"hidden_size": hidden_size, "num_hidden_layers": layers, "num_attention_heads": heads,
                           "intermediate_size": intermediate_size, "max_position_embeddings": max(512, seq_len)}},
        "data": {"train_file": corpus, "windows": {"max_seq_len": seq_len, "max_question_len": 1, "doc_overlap": 0}},
        "optim": {"lr": lr, "max_steps": steps, "micro_batch_size": micro_batch_size or batch_size, "global_batch_size": batch_size,
                  "warmup_ratio": 0.06, "weight_decay": 0.01},
        "run": {"output_dir": output_dir, "seed": seed, "precision": precision, "deepspeed": deepspeed,
                "save_every": steps, "eval_every": steps, "log_every": max(steps // 20, 1), "length_grouping": False},
    })


def pretrain(config: TrainConfig) -> dict:
    """Run masked-LM pre-training on the engine; the backbone lands in ``<output_dir>/model``."""
    from .train import run

    return run(config, make_task=MLMTask)
