"""`qa-scale predict`: logits stores hold what the model computes; settings default to the training
config; 2 CPU ranks under the deepspeed launcher give the same logits as one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runs import qa_scale

from qa_scale import data, synthetic
from qa_scale.data.tokenization import build_char_vocab
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.evaluation.decode import DecodeConfig, decode
from qa_scale.inference import logits_store
from qa_scale.inference.forward import predict_logits
from qa_scale.inference.options import ReaderOptions
from qa_scale.inference.predict import StoreOptions, predict_to_store
from qa_scale.inference.reader import Reader, reader_settings
from qa_scale.modeling.model import load_qa_model
from qa_scale.training.recipe import dump_recipe, load_recipe

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
WINDOWS = WindowConfig(max_seq_len=128, max_question_len=32, doc_overlap=32)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Sample data, a character vocabulary, and a tiny model exported as runs/tiny/model with its
    training config beside it (as `qa-scale train` leaves them)."""
    root = tmp_path_factory.mktemp("predict")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=2, dev_paragraphs=6, test_paragraphs=2),
                                  root / "data")
    tok = build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    model = load_qa_model(None, tiny=TINY, vocab_size=max(tok.get_vocab().values()) + 1, seed=0).eval()
    run = root / "runs" / "tiny"
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    config = load_recipe(None, ["model.tiny={}", f"model.tokenizer={root / 'tok'}", "data.windows.max_seq_len=128",
                                "data.windows.max_question_len=32", "data.windows.doc_overlap=32",
                                "decode.max_answer_len=20"])
    (run / "config.yaml").write_text(dump_recipe(config), encoding="utf-8")
    return {"root": root, "paths": paths, "tok": tok, "model": model, "model_dir": run / "model"}


def test_store_holds_the_models_logits_windows_and_answers(work, tmp_path):
    examples = data.load(work["paths"]["squad_dev"], "lenient").examples
    refs = data.load_references(work["paths"]["squad_dev"])
    summary = predict_to_store(Reader.of(work["model"], work["tok"], WINDOWS), examples, tmp_path / "store",
                               StoreOptions(batch_size=5, references=refs, model_info={"path": "m"}, progress=False))
    store = logits_store.open_store(tmp_path / "store")
    ws = build_windows(examples, work["tok"], WINDOWS)
    start, end = predict_logits(work["model"], ws, batch_size=5)
    got_start, got_end = store.logits()
    np.testing.assert_array_equal(got_start, start)
    np.testing.assert_array_equal(got_end, end)
    assert store.fingerprint == json.loads(json.dumps(ws.fingerprint()))
    np.testing.assert_array_equal(store.windows.input_ids, ws.input_ids)
    np.testing.assert_array_equal(store.windows.start_positions, ws.start_positions)  # labels travel (weight search)
    assert store.examples == examples
    decoded = decode(ws, start, end, examples, nbest=True)
    assert store.predictions() == decoded.predictions
    assert store.nbest() == json.loads(json.dumps(decoded.nbest))
    assert summary["windows"] == len(ws) == store.shape[0] and store.meta["metrics"]["total"] == len(refs)
    assert store.nbytes == 2 * start.nbytes
    rows = np.concatenate([block.copy() for _, block in store.iter_rows("end_logits", chunk_rows=7)])
    np.testing.assert_array_equal(rows, end)


def test_fp16_store_decodes_what_it_stores(work, tmp_path):
    examples = data.load(work["paths"]["hw7_dev"], "lenient").examples
    predict_to_store(Reader.of(work["model"], work["tok"], WINDOWS), examples, tmp_path / "s16",
                     StoreOptions(precision="fp16", progress=False))
    store = logits_store.open_store(tmp_path / "s16")
    start, end = store.logits()
    assert start.dtype == np.float16 and store.meta["logits"]["dtype"] == "fp16"
    assert store.predictions() == decode(store.windows, start, end, examples).predictions


def test_fp16_overflow_is_refused():
    with pytest.raises(ValueError, match="fp16 range"):
        logits_store.cast(np.array([[1e5, -np.inf]], np.float32), "fp16")


def test_not_a_store_is_named(tmp_path):
    with pytest.raises(logits_store.StoreError, match="is not a logits store"):
        logits_store.open_store(tmp_path)


def test_settings_default_to_the_training_config(work):
    settings = reader_settings(work["model_dir"])
    assert settings.windows == WINDOWS and settings.decoding == DecodeConfig(max_answer_len=20)
    assert settings.tokenizer == str(work["model_dir"]) and settings.name == "tiny"  # its own tokenizer files
    given = ReaderOptions(windows={"doc_step": 50}, decoding={"n_best_size": 5})
    settings = reader_settings(work["model_dir"], given)
    assert (settings.windows.doc_step, settings.windows.doc_overlap, settings.windows.max_seq_len) == (50, None, 128)
    assert (settings.decoding.n_best_size, settings.decoding.max_answer_len) == (5, 20)
    root = work["root"]
    (root / "tok_only").mkdir(exist_ok=True)
    work["tok"].save_pretrained(root / "tok_only")
    assert reader_settings(root / "tok_only").windows == WindowConfig()  # no training config: the defaults


def test_a_stride_given_replaces_the_saved_one():
    assert WindowConfig.layered({"doc_overlap": 32}, {"doc_step": 50}) == WindowConfig(doc_step=50)
    assert WindowConfig.layered({"doc_step": 50}, {"max_seq_len": 128}) == WindowConfig(doc_step=50, max_seq_len=128)
    assert WindowConfig.layered({"doc_step": 50}, {"doc_overlap": 8}) == WindowConfig(doc_overlap=8)
    with pytest.raises(ValueError, match="not both"):
        WindowConfig.layered({}, {"doc_step": 50, "doc_overlap": 8})


@pytest.mark.slow
@pytest.mark.distributed
def test_two_cpu_ranks_give_the_same_logits_as_one_process(work):
    root, dev = work["root"], work["paths"]["squad_dev"]
    args = ["predict", work["model_dir"], dev, "--batch-size", "3", "--references", dev, "--json"]
    qa_scale([*args, "--out", root / "plain"], None, root)
    qa_scale([*args, "--out", root / "ranks2"], 2, root)
    one, two = logits_store.open_store(root / "plain"), logits_store.open_store(root / "ranks2")
    assert one.meta["windows"]["doc_overlap"] == 32 and one.meta["decode"]["max_answer_len"] == 20  # config.yaml
    assert two.meta["predict"]["world_size"] == 2 and one.meta["predict"]["world_size"] == 1
    assert one.fingerprint == two.fingerprint
    for a, b in zip(one.logits(), two.logits()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # same batches either way: equal in practice
    assert one.predictions() == two.predictions() and one.meta["metrics"] == two.meta["metrics"]


def test_auto_batch_size_backs_off_on_out_of_memory(work, tmp_path):
    """--batch-size auto (accelerate's find_executable_batch_size): halves on OOM, same logits in the end."""
    examples = data.load(work["paths"]["squad_dev"], "lenient").examples
    tried = []

    def model(**batch):
        tried.append(len(batch["input_ids"]))
        if len(batch["input_ids"]) > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return work["model"](**batch)

    summary = predict_to_store(Reader.of(model, work["tok"], WINDOWS), examples, tmp_path / "auto",
                               StoreOptions(batch_size="auto", progress=False))
    store = logits_store.open_store(tmp_path / "auto")
    assert store.meta["predict"]["batch_size"] == 16 and summary["windows"] == store.shape[0]
    assert tried[0] == min(256, store.shape[0]) and max(tried[-3:]) <= 16
    ws = build_windows(examples, work["tok"], WINDOWS)
    want, _ = predict_logits(work["model"], ws, batch_size=16)
    np.testing.assert_allclose(store.logits()[0], want, rtol=1e-5, atol=1e-5)


def test_one_options_object_from_the_command_line():
    """predict, answer and serve register the same reader flags and build one ReaderOptions from them."""
    from qa_scale.cli.app import build_parser

    parser = build_parser()
    for command in (["predict", "m", "d", "--out", "s"], ["answer", "m", "--context", "x"], ["serve", "m"]):
        args = parser.parse_args([*command, "--batch-size", "7", "--compute", "bf16", "--doc-step", "9",
                                  "--n-best-size", "3", "--tokenizer", "vocab.txt"])
        options = ReaderOptions.from_arguments(args)
        assert options == ReaderOptions(tokenizer="vocab.txt", compute="bf16", batch_size=7,
                                        windows={"doc_step": 9}, decoding={"n_best_size": 3}), command
        assert ReaderOptions.from_arguments(parser.parse_args(command)) == ReaderOptions()  # nothing given
    assert ReaderOptions.from_arguments(parser.parse_args(["predict", "m", "d", "--out", "s", "--batch-size",
                                                           "auto"])).batch_size == "auto"
    from qa_scale.common.settings import FieldError

    for bad in (["--batch-size", "0"], ["--batch-size", "many"], ["--compute", "fp8"], ["--device", "tpu"]):
        with pytest.raises((SystemExit, FieldError)) as refused:  # the parser, or the options' own check
            ReaderOptions.from_arguments(parser.parse_args(["predict", "m", "d", "--out", "s", *bad]))
        assert refused.type is FieldError or refused.value.code == 2, bad


def test_reader_options_check_themselves():
    from qa_scale.common.settings import FieldError
    from qa_scale.serving.readers import load_panel

    for bad in ({"batch_size": 0}, {"batch_size": "many"}, {"compute": "fp8"}, {"device": "tpu"}):
        with pytest.raises(FieldError, match=next(iter(bad))):
            ReaderOptions(**bad)
    with pytest.raises(ValueError, match="auto is for predict"):  # before any model is read
        load_panel(["does-not-exist"], ReaderOptions(batch_size="auto"))
