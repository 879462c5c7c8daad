"""Model building, loading, vocabulary checks and optimizer groups, on tiny models."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from qa_scale.modeling.model import (
    ModelLoadError,
    build_mlm_model,
    check_vocab,
    count_parameters,
    load_qa_model,
    tiny_bert_config,
)
from qa_scale.training.optimizer import param_groups


def tiny(vocab_size=100, seed=0, **kwargs):
    return load_qa_model(None, vocab_size=vocab_size, tiny={}, seed=seed, **kwargs)


def is_checkpointing(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_tiny_model_sizes_and_seed():
    before = torch.random.get_rng_state()
    model = tiny(vocab_size=120, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before), "a seeded build must not move the global RNG"
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.intermediate_size) == (120, 64, 2, 2, 128)
    assert model.get_input_embeddings().weight.shape == (120, 64)
    assert model.qa_outputs.weight.shape == (2, 64)
    assert len(model.bert.encoder.layer) == 2

    same, other = tiny(vocab_size=120, seed=3).state_dict(), tiny(vocab_size=120, seed=4).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, same[key]), key
    assert not torch.equal(model.qa_outputs.weight, other["qa_outputs.weight"])


def test_tiny_overrides_and_missing_vocab():
    model = load_qa_model(None, vocab_size=50, tiny={"hidden_size": 32, "num_hidden_layers": 1, "hidden_dropout_prob": 0.0})
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.hidden_dropout_prob) == (32, 1, 0.0)
    with pytest.raises(ModelLoadError, match="vocab_size"):
        load_qa_model(None, tiny={})
    with pytest.raises(ModelLoadError, match="no model given"):
        load_qa_model(None)


def test_masked_lm_checkpoint_loads_as_qa_model(tmp_path, caplog):
    mlm = build_mlm_model(tiny_bert_config(100), seed=1)
    mlm.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"not in its weights \(qa_outputs.bias, qa_outputs.weight\).*backbone"):
        load_qa_model(str(tmp_path), seed=0)  # to answer with: refused, its span head would be random
    with caplog.at_level(logging.INFO, logger="qa_scale.modeling.model"):
        qa = load_qa_model(str(tmp_path), seed=0, new_head=True)  # to train from: the head is new
    assert type(qa).__name__ == "BertForQuestionAnswering"
    mlm_state, qa_state = mlm.state_dict(), qa.state_dict()
    encoder_keys = [k for k in qa_state if k.startswith("bert.")]
    assert len(encoder_keys) == len([k for k in mlm_state if k.startswith("bert.")])
    for key in encoder_keys:
        assert torch.equal(qa_state[key], mlm_state[key]), key
    assert "newly initialised: qa_outputs.bias, qa_outputs.weight" in caplog.text
    assert qa.config._attn_implementation == "sdpa"
    assert torch.equal(load_qa_model(str(tmp_path), seed=0, new_head=True).qa_outputs.weight, qa.qa_outputs.weight)


def test_saved_qa_model_round_trips(tmp_path, caplog):
    model = tiny(seed=5)
    model.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="qa_scale.modeling.model"):
        loaded = load_qa_model(str(tmp_path), gradient_checkpointing=True)
    assert "newly initialised" not in caplog.text
    assert torch.equal(loaded.qa_outputs.weight, model.qa_outputs.weight)
    assert is_checkpointing(loaded)


@pytest.mark.parametrize("name", ["hfl/made-up-model-that-is-not-cached", "/no/such/model/dir"])
def test_unreachable_hub_name_fails_fast(name):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_qa_model(name)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert name in message
    # a hub name: not cached; a path: not there (said at once, without asking the hub)
    assert ("not in the local Hugging Face cache" if name.count("/") == 1 else "not found: no such folder") in message
    assert "save_pretrained" in message and "qa-scale backbone" in message


def test_model_type_without_qa_head_or_without_weights(tmp_path):
    from transformers import ViTConfig

    ViTConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2).save_pretrained(tmp_path / "vit")
    with pytest.raises(ModelLoadError, match="'vit' model, which has no question-answering head"):
        load_qa_model(str(tmp_path / "vit"))
    tiny_bert_config(100).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="cannot load model weights"):
        load_qa_model(str(tmp_path / "bert"))


class _Vocab:
    """A tokenizer stand-in with duplicate vocabulary lines: 3 entries, ids up to 20."""

    def get_vocab(self):
        return {"[PAD]": 0, "[UNK]": 1, "北": 20}


def test_check_vocab_uses_the_largest_id(char_tokenizer):
    check_vocab(tiny(vocab_size=21), _Vocab())
    with pytest.raises(ModelLoadError, match=r"ids go up to 20 \(needs 21 embedding rows\).* 10 rows"):
        check_vocab(tiny(vocab_size=10), _Vocab())  # len(get_vocab()) == 3 would have passed

    needed = max(char_tokenizer.get_vocab().values()) + 1
    check_vocab(tiny(vocab_size=needed), char_tokenizer)
    with pytest.raises(ModelLoadError, match=f"needs {needed} embedding rows.* {needed - 1} rows"):
        check_vocab(tiny(vocab_size=needed - 1), char_tokenizer)


def test_sdpa_by_default_eager_on_request_and_fallback(monkeypatch, caplog):
    from transformers import BertForQuestionAnswering

    assert tiny().config._attn_implementation == "sdpa"
    assert tiny(attn_implementation="eager").config._attn_implementation == "eager"
    monkeypatch.setattr(BertForQuestionAnswering, "_supports_sdpa", False)
    with caplog.at_level(logging.WARNING, logger="qa_scale.modeling.model"):
        assert tiny().config._attn_implementation == "eager"
    assert "does not support SDPA" in caplog.text


def test_gradient_checkpointing_flag_and_backward():
    assert not is_checkpointing(tiny())
    model = tiny(gradient_checkpointing=True)
    assert is_checkpointing(model)
    model.train()
    ids = torch.randint(5, 100, (2, 12))
    out = model(input_ids=ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
    out.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def _check_coverage(model, groups):
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(seen) == len(set(seen)), "a parameter is in two groups"
    assert set(seen) == set(trainable)
    assert all(g["params"] for g in groups)
    assert len({g["name"] for g in groups}) == len(groups)


@pytest.mark.parametrize("decay", [None, 0.5])
@pytest.mark.parametrize("kind", ["qa", "mlm"])
def test_param_groups_cover_every_trainable_parameter_once(kind, decay):
    model = tiny() if kind == "qa" else build_mlm_model(tiny_bert_config(100), seed=0)
    groups = param_groups(model, lr=1e-3, weight_decay=0.01, layer_lr_decay=decay)
    _check_coverage(model, groups)
    for group in groups:
        for name in _names(model, group):
            param = model.get_parameter(name)
            no_decay = param.ndim == 1 or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if no_decay else 0.01), name
    # AdamW takes the groups as they are (the extra "name" key included).
    torch.optim.AdamW(groups).step()


def _expected_lr(name: str, lr=1e-3) -> float:
    if ".embeddings." in name:
        return lr * 0.5 ** 3
    for i in range(2):
        if f".encoder.layer.{i}." in name:
            return lr * 0.5 ** (2 - i)
    return lr


def test_layer_wise_lr_decay_values():
    model = tiny()
    groups = param_groups(model, lr=1e-3, weight_decay=0.01, layer_lr_decay=0.5)
    assert {g["name"]: g["lr"] for g in groups} == pytest.approx({
        "embeddings.decay": 1.25e-4, "embeddings.no_decay": 1.25e-4,
        "layer_0.decay": 2.5e-4, "layer_0.no_decay": 2.5e-4,
        "layer_1.decay": 5e-4, "layer_1.no_decay": 5e-4,
        "head.decay": 1e-3, "head.no_decay": 1e-3,
    })
    for group in groups:
        for name in _names(model, group):
            assert group["lr"] == pytest.approx(_expected_lr(name)), name
    assert _names(model, next(g for g in groups if g["name"] == "head.decay")) == ["qa_outputs.weight"]
    flat = param_groups(model, lr=1e-3, weight_decay=0.01)
    assert sorted(g["name"] for g in flat) == ["decay", "no_decay"]
    assert all(g["lr"] == 1e-3 for g in flat)


def test_param_groups_of_a_peft_model():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny(), LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["qa_outputs"]))
    groups = param_groups(model, lr=1e-3, weight_decay=0.01, layer_lr_decay=0.5)
    _check_coverage(model, groups)
    names = [n for g in groups for n in _names(model, g)]
    assert names and all(n.startswith("base_model.model.") for n in names)
    assert not any("word_embeddings" in n for n in names), "frozen parameters are left out"
    assert any("lora_A" in n for n in names) and any("qa_outputs" in n for n in names)
    for group in groups:
        for name in _names(model, group):
            assert group["lr"] == pytest.approx(_expected_lr(name)), name


def test_layer_decay_needs_numbered_layers():
    with pytest.raises(ValueError, match="numbered layers"):
        param_groups(torch.nn.Linear(3, 3), lr=1e-3, weight_decay=0.0, layer_lr_decay=0.9)


def test_count_parameters():
    model = tiny()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == (total, total)
    model.bert.embeddings.requires_grad_(False)
    frozen = sum(p.numel() for p in model.bert.embeddings.parameters())
    assert count_parameters(model) == (total, total - frozen)
    mlm = build_mlm_model(tiny_bert_config(100), seed=0)
    # The output projection shares the word embeddings: counted once.
    assert count_parameters(mlm)[0] == sum(p.numel() for p in {id(p): p for p in mlm.parameters()}.values())


def test_a_new_model_family_is_one_entry():
    """Extending qa-scale: ELECTRA is one entry in modeling/families.py; LoRA, layer decay and shapes follow."""
    from transformers import ElectraConfig, ElectraForQuestionAnswering

    from qa_scale.modeling.families import family_of
    from qa_scale.modeling.lora import LoraSection, apply_lora
    from qa_scale.modeling.model import config_of_shape

    config = ElectraConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                           num_attention_heads=2, intermediate_size=64)
    model = ElectraForQuestionAnswering(config)
    assert family_of(model).name == "electra"
    groups = param_groups(model, lr=1.0, weight_decay=0.0, layer_lr_decay=0.5)
    lrs = {n: g["lr"] for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert lrs["qa_outputs.weight"] == 1.0
    assert lrs["electra.encoder.layer.2.output.dense.weight"] == 0.5
    assert lrs["electra.embeddings.word_embeddings.weight"] == 0.5 ** 4
    peft = apply_lora(model, LoraSection(r=2))
    lora_layers = {n.rsplit(".lora_A", 1)[0] for n, _ in peft.named_parameters() if ".lora_A." in n}
    assert any(n.endswith("attention.self.query") for n in lora_layers)
    assert not any("embeddings_project" in n for n in lora_layers)
    assert config_of_shape("chinese-electra-large").model_type == "electra"


def test_masked_only_mlm_has_the_loss_and_gradients_of_bert_for_masked_lm():
    """Projecting only the masked positions changes the cost, not the loss or its gradients."""
    from transformers import BertForMaskedLM

    from qa_scale.modeling.model import build_mlm_model, tiny_bert_config

    config = tiny_bert_config(300, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours = build_mlm_model(config, seed=0)
    theirs = BertForMaskedLM(config)
    theirs.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (4, 24), generator=g)
    labels = torch.where(torch.rand(4, 24, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    a, b = ours(input_ids=ids, labels=labels), theirs(input_ids=ids, labels=labels)
    assert torch.allclose(a.loss, b.loss, atol=1e-6) and a.logits.shape == (int((labels != -100).sum()), 300)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert type(ours).__mro__[1] is BertForMaskedLM  # saves and loads as BertForMaskedLM
