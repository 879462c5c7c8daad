"""A BERT masked-LM whose vocabulary projection runs on the masked tokens only.

``BertForMaskedLM`` projects every position onto the whole vocabulary, then ignores all but the
~15% that were masked. With the 21,128-entry Chinese vocabulary that projection is most of the
compute of a small backbone (hidden 128: 2.7M multiply-adds a token against ~0.4M for two encoder
layers), so pre-training was slow for nothing. This class gathers the masked positions first;
the loss is the same mean cross-entropy over them, and its weights and config are exactly
``BertForMaskedLM``'s, so it saves and loads as one.
"""

from __future__ import annotations

import torch
from transformers import BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput


class MaskedOnlyBertForMaskedLM(BertForMaskedLM):
    """``BertForMaskedLM`` for training: logits (and loss) of the positions whose label is set."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if labels is None:  # inference: every position, as the parent class does
            return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids, **kwargs)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        keep = labels != -100
        logits = self.cls(hidden[keep])  # [masked tokens, vocab]
        if logits.shape[0] == 0:  # nothing masked in this batch: a zero loss that still has a graph
            return MaskedLMOutput(loss=hidden.sum() * 0.0, logits=logits)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[keep])
        return MaskedLMOutput(loss=loss, logits=logits)
