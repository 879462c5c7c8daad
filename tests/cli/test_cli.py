"""The console script: every subcommand has --help; whole commands on the sample data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qa_scale.cli import COMMANDS, build_parser, main


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    assert main(["sample-data", "--out", str(out), "--train-paragraphs", "3", "--dev-paragraphs", "8",
                 "--test-paragraphs", "4", "--questions-per-paragraph", "2", "4"]) == 0
    assert main(["vocab", str(out / "corpus.txt"), "--out", str(out / "tok"), "--vocab-size", "3000"]) == 0
    return out


def test_console_script_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "qa_scale.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("check-data", "evaluate", "submit", "windows", "sample-data", "vocab"):
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0 and "usage: qa-scale " + name in capsys.readouterr().out


def test_check_data_json(sample, tmp_path, capsys):
    args = ["check-data", str(sample / "hw7_dev.json"), "--tokenizer", str(sample / "tok"),
            "--max-seq-len", "128", "--max-question-len", "32", "--doc-step", "48", "--json", "--out", str(tmp_path / "r.json")]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["data"]["format"] == "hw7" and report["windows"]["stride"]["doc_step"] == 48
    assert report["oracle"]["em_any_reference"] == 100.0 and report["oracle"]["windows"] > report["oracle"]["examples"]


def test_evaluate_and_submit_round_trip(sample, tmp_path, capsys):
    refs = {q["id"]: q["answers"][0]["text"] for a in json.loads((sample / "squad_dev.json").read_text("utf-8"))["data"]
            for p in a["paragraphs"] for q in p["qas"]}
    preds = dict(refs)
    wrong = next(iter(preds))
    preds[wrong] = "错"
    (tmp_path / "p.json").write_text(json.dumps(preds, ensure_ascii=False), encoding="utf-8")
    assert main(["evaluate", str(sample / "squad_dev.json"), str(tmp_path / "p.json"), "--json",
                 "--errors", str(tmp_path / "errors.jsonl")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["em"] == pytest.approx(100 * (len(refs) - 1) / len(refs)) and scores["hw7_accuracy"] is None
    assert json.loads((tmp_path / "errors.jsonl").read_text("utf-8").splitlines()[0])["id"] == wrong

    test_ids = [str(q["id"]) for q in json.loads((sample / "hw7_test.json").read_text("utf-8"))["questions"]]
    answers = json.loads((sample / "hw7_test_answers.json").read_text("utf-8"))
    (tmp_path / "t.json").write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
    assert main(["submit", str(sample / "hw7_test.json"), str(tmp_path / "t.json"), "--out", str(tmp_path / "s.csv")]) == 0
    rows = (tmp_path / "s.csv").read_text("utf-8").splitlines()
    assert rows[0] == "ID,Answer" and [r.split(",")[0] for r in rows[1:]] == test_ids


def test_windows_command_writes_a_dataset(sample, tmp_path):
    from qa_scale.data.window_store import load_windows
    assert main(["windows", str(sample / "squad_dev.json"), "--tokenizer", str(sample / "tok"), "--max-seq-len", "96",
                 "--doc-overlap", "16", "--out", str(tmp_path / "w")]) == 0
    ws = load_windows(tmp_path / "w")
    assert len(ws) > 8 and ws.start_positions is not None and ws.config.max_seq_len == 96


def test_errors_are_reported_not_raised(sample, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{oops", encoding="utf-8")
    assert main(["check-data", str(tmp_path / "bad.json"), "--tokenizer", str(sample / "tok")]) == 2
    assert "bad.json: invalid JSON at line 1" in capsys.readouterr().err
    assert main(["check-data", str(sample / "squad_dev.json"), "--tokenizer", str(sample / "tok"),
                 "--doc-overlap", "5", "--doc-step", "5"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["check-data", str(sample / "squad_dev.json"), "--tokenizer", "no-such-org/no-such-model"]) == 2
    assert "cannot load tokenizer 'no-such-org/no-such-model'" in capsys.readouterr().err




def test_train_leaves_its_process_group_before_exiting(sample, tmp_path):
    # Left to interpreter shutdown, gloo's threads can abort the process after a finished run.
    # A child process: DeepSpeed caches its groups, so this process must never lose its own.
    from cli_runs import clean_env
    args = ["train", f"model.tokenizer={sample / 'tok'}",
            "model.tiny={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}",
            f"data.train_file={sample / 'squad_train.json'}", "data.dev_file=null", "optim.max_steps=2",
            "optim.micro_batch_size=2", "optim.global_batch_size=2", f"run.output_dir={tmp_path / 'run'}",
            "run.precision=fp32", "run.export=false", "run.tensorboard=false"]
    script = ("import sys, torch.distributed as dist\nfrom qa_scale.cli import main\n"
              f"code = main({args!r})\nprint('code', code, 'initialized', dist.is_initialized())")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=clean_env(), check=True)
    assert proc.stdout.splitlines()[-1] == "code 0 initialized False", proc.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["finished"]


HEAVY = ("torch", "transformers", "datasets", "deepspeed", "fastapi")


def test_no_help_imports_torch():
    """`qa-scale --help` and every `qa-scale COMMAND --help` answer without torch or the model stack."""
    code = ("import contextlib, io, sys\n"
            "from qa_scale.cli import COMMANDS, main\n"
            "for argv in [['--help'], *[[name, '--help'] for name in COMMANDS]]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_check_data_reports_lengths_and_the_ceiling_at_auto(sample, capsys):
    args = ["check-data", str(sample / "squad_dev.json"), "--tokenizer", str(sample / "tok"), "--max-seq-len", "128",
            "--max-question-len", "32", "--doc-overlap", "32", "--json"]
    assert main([*args, "--max-answer-len", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    answers, questions, oracle = report["answer_lengths"], report["question_lengths"], report["oracle"]
    assert {"count", "p50", "p90", "p99", "max", "auto", "unit"} <= answers.keys() and answers["unit"] == "tokens"
    assert answers["count"] == oracle["examples"] and answers["p50"] <= answers["p90"] <= answers["p99"] <= answers["max"]
    assert answers["auto"]["value"] >= 30 and answers["auto"]["covered_percent"] >= 99.9
    assert {"count", "p50", "p90", "p99", "max", "auto", "longer_than_max_question_len"} <= questions.keys()
    assert questions["auto"]["value"] == 62  # its floor 64 capped: 128 - 3 special tokens - 63 of context
    # a 2-token limit loses answers that the ceiling without a limit keeps; both are reported
    assert oracle["max_answer_len"] == 2 and oracle["max_answer_len_given"] == 2
    assert oracle["windowing_only"]["em_any_reference"] == 100.0 > oracle["em_any_reference"]
    assert oracle["answers_longer_than_max_answer_len"] > 0 and answers["max"] > 2
    assert main([*args, "--max-answer-len", "auto"]) == 0
    at_auto = json.loads(capsys.readouterr().out)
    assert at_auto["oracle"]["max_answer_len"] == answers["auto"]["value"]
    assert at_auto["oracle"]["max_answer_len_given"] == "auto" and at_auto["oracle"]["em_any_reference"] == 100.0
    assert main(args[:-1] + ["--max-answer-len", "auto"]) == 0
    text = capsys.readouterr().out
    assert f"answers ≤ {answers['auto']['value']} tokens (auto): EM 100.000" in text
    assert "windowing alone (no length limit): EM 100.000" in text
    assert f"decode.max_answer_len: auto would choose {answers['auto']['value']}" in text
    assert "data.windows.max_question_len: auto would choose 62" in text
    with pytest.raises(SystemExit):
        main([*args, "--max-answer-len", "long"])
    assert "expected a whole number" in capsys.readouterr().err


def test_check_data_measures_the_windows_a_recipe_with_question_len_auto_would_cut(sample, capsys):
    base = ["check-data", str(sample / "squad_dev.json"), "--tokenizer", str(sample / "tok"), "--max-seq-len", "128",
            "--doc-overlap", "32", "--json"]
    assert main([*base, "--max-question-len", "auto"]) == 0
    auto = json.loads(capsys.readouterr().out)
    chosen = auto["question_lengths"]["auto"]["value"]
    assert auto["windows"]["max_question_len"] == chosen and auto["windows"]["max_question_len_given"] == "auto"
    assert main([*base, "--max-question-len", str(chosen)]) == 0  # the same as giving that number
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["windows"]["max_question_len_given"] == chosen
    assert {k: v for k, v in fixed.items() if k != "windows"} == {k: v for k, v in auto.items() if k != "windows"}
    assert main(base[:-1] + ["--max-question-len", "auto"]) == 0
    assert f"longer than {chosen} (auto) are cut" in capsys.readouterr().out
    assert main([*base, "--max-question-len", "126"]) == 2  # no room left for context: refused, not a traceback
    assert "leaves no room for context" in capsys.readouterr().err


def test_train_saves_the_auto_lengths_as_numbers(sample, tmp_path):
    """config.yaml beside the model holds numbers (predict/answer/serve read it); the summary says how they came."""
    import yaml
    from cli_runs import qa_scale

    from qa_scale.inference.reader import reader_settings
    args = ["train", f"model.tokenizer={sample / 'tok'}",
            "model.tiny={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}",
            f"data.train_file={sample / 'squad_train.json'}", "data.dev_file=null", "optim.max_steps=1",
            "optim.micro_batch_size=2", "optim.global_batch_size=2", f"run.output_dir={tmp_path / 'run'}",
            "data.windows.max_seq_len=96", "data.windows.doc_overlap=16", "data.windows.max_question_len=auto",
            "decode.max_answer_len=auto", "run.precision=fp32", "run.tensorboard=false"]
    qa_scale(args, None, tmp_path)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text("utf-8"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text("utf-8"))
    auto = summary["auto_resolved"]
    assert saved["decode"]["max_answer_len"] == auto["decode.max_answer_len"]["value"] >= 30
    assert saved["data"]["windows"]["max_question_len"] == auto["data.windows.max_question_len"]["value"] == 46  # 96 - 3 - 47
    settings = reader_settings(tmp_path / "run" / "model")  # what predict/answer/serve start from
    assert settings.decoding.max_answer_len == saved["decode"]["max_answer_len"]
    assert settings.windows.max_question_len == 46


def test_an_error_echoing_a_lone_surrogate_is_printed_not_raised(monkeypatch, tmp_path, capsys):
    """A library's message may quote damaged input (a lone surrogate): still exit 2 with the message."""
    from qa_scale.cli import COMMANDS

    def fails(_args):
        raise ValueError("damaged: got '\udc00x'")

    monkeypatch.setattr(COMMANDS["sample-data"], "handler", fails)
    assert main(["sample-data", "--out", str(tmp_path / "s")]) == 2
    assert "damaged: got '\\udc00x'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "distill"])
def test_overrides_after_an_option_are_still_overrides(command, monkeypatch, tmp_path, capsys):
    """argparse leaves positionals after an option over; `train R --resume auto k=v` must still set k."""
    from qa_scale.cli import training

    seen = {}

    def fake_train(args, extra, distill=False):
        seen.update(overrides=list(args.overrides), resume=args.resume, stores=getattr(args, "stores", None))
        return 0

    monkeypatch.setattr(training, "_train", fake_train)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("{}")
    store = tmp_path / "s"
    store.mkdir()
    extra = ["--store", str(store)] if command == "distill" else []
    assert main([command, str(recipe), "a.b=1", "--resume", "auto", *extra, "c.d=2", "e=[1, 2]"]) == 0
    assert seen["overrides"] == ["a.b=1", "c.d=2", "e=[1, 2]"] and seen["resume"] == "auto"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # anything that is not KEY=VALUE is still refused by argparse
        main([command, str(recipe), "--resume", "auto", "stray"])
    assert stop.value.code == 2 and "unrecognized arguments: stray" in capsys.readouterr().err


def test_a_refused_output_names_the_recipe_key_that_made_it_an_input(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{tiny: {{}}, tokenizer: {tmp_path}}}\ndata: {{train_file: {recipe}, dev_file: {tmp_path}}}\n")
    assert main(["train", str(recipe), f"run.output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert f"lies inside {tmp_path} (model.tokenizer of {recipe})" in err or \
        f"lies inside {tmp_path} (data.dev_file of {recipe})" in err, err
