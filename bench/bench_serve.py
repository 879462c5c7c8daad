"""Benchmark: ``qa-scale serve`` on localhost, batched vs unbatched, for two reader shapes on CPU.

What is measured, per reader and per mode:

* ``single``: p50/p95 latency of one question, sent one request at a time (``--sequential``
  requests, after ``--warmup`` untimed ones);
* ``concurrent``: 8 clients (``--clients``) each sending ``--per-client`` one-question requests
  back to back: throughput (requests/s over the wall time of the whole burst) and p50/p95 latency
  under that load.

Modes: ``batched`` (the default: requests that queue up while a forward pass runs, or arrive within
``--max-batch-wait-ms`` 2, share the next one) and ``unbatched`` (``--no-batching``: one forward
pass per request). Both run the same
server command, one process each (``qa-scale serve MODEL --device cpu``), started fresh, measured
with an ``httpx.AsyncClient`` from this process; requests cycle through the data's questions,
each with its own paragraph.

Each mode is measured in ``--rounds`` rounds, the modes alternating (a fresh server each time);
the round of median throughput is reported and every round's throughput and single-question p50
is recorded, since a shared 2-core machine has slow spells.

Readers (randomly initialised: latency does not depend on the weights):

* ``demo``: the shape of ``qa-scale demo``'s readers — BERT, 2 layers, hidden 128, 4 heads, FFN 512,
  a character vocabulary of the sample corpus, 64-token windows (question ≤ 32, overlap 16), on the
  sample dev data. (A ``demo/`` folder with trained readers was not used: latency is the same.)
* ``bert-base``: bert-base-chinese's shape — 12 layers, hidden 768, 12 heads, FFN 3072, the real
  21,128-entry vocabulary from ``../shared/data``, 384-token windows (question ≤ 64, overlap 128),
  on CMRC 2018 dev paragraphs and questions.

Check (exit status 1 if it fails): every request answered with status 200 and an answer whose span
slices its text from the paragraph.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from record import emit, header

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def save_reader(out: Path, tok, shape: dict, windows: dict) -> Path:
    """A random reader of ``shape`` saved like a training run: ``out/model`` + ``out/config.yaml``."""
    from qa_scale.modeling.model import load_qa_model
    from qa_scale.training.recipe import dump_recipe, load_recipe

    load_qa_model(None, tiny=shape, vocab_size=max(tok.get_vocab().values()) + 1, seed=0).save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    config = load_recipe(None, ["model.tiny={}", f"model.tokenizer={out / 'model'}",
                                *(f"data.windows.{k}={v}" for k, v in windows.items())])
    (out / "config.yaml").write_text(dump_recipe(config), encoding="utf-8")
    return out / "model"


def readers(tmp: Path) -> dict[str, tuple[Path, list[tuple[str, str]]]]:
    """name → (model directory, [(context, question), ...])."""
    from qa_scale import data, synthetic
    from qa_scale.data.tokenization import build_char_vocab, load_tokenizer

    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=2, dev_paragraphs=60, test_paragraphs=2),
                                tmp / "sample")
    tok = build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), tmp / "tok", vocab_size=1000)
    demo = save_reader(tmp / "demo", tok, {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                                           "intermediate_size": 512},
                       {"max_seq_len": 64, "max_question_len": 32, "doc_overlap": 16})
    base = save_reader(tmp / "bert_base", load_tokenizer(SHARED / "bert-base-chinese-vocab.txt"),
                       {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                        "intermediate_size": 3072},
                       {"max_seq_len": 384, "max_question_len": 64, "doc_overlap": 128})
    pairs = lambda path: [(ex.context, ex.question) for ex in data.load(path, "lenient").examples]  # noqa: E731
    return {"demo": (demo, pairs(paths["squad_dev"])), "bert-base": (base, pairs(SHARED / "cmrc2018_dev.json"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, batched: bool, port: int, log) -> subprocess.Popen:
    mode = ["--batching"] if batched else ["--no-batching"]
    cmd = [str(BIN / "qa-scale"), "serve", str(model), "--device", "cpu", "--port", str(port), *mode]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not come up in 300 s")


async def ask(client, url: str, pair: tuple[str, str], bad: list) -> float:
    t = time.perf_counter()
    r = await client.post(url, json={"context": pair[0], "questions": [pair[1]]})
    took = time.perf_counter() - t
    a = r.json()["answers"][0] if r.status_code == 200 else None
    if a is None or (a["answer"] and pair[0][a["start"]:a["end"]] != a["answer"]):
        bad.append(r.text[:200])
    return took


def stats(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "mean_ms": round(float(ms.mean()), 1)}


async def measure(port: int, pairs: list, args, bad: list) -> dict:
    import httpx

    url = f"http://127.0.0.1:{port}/answer"
    async with httpx.AsyncClient(timeout=600) as client:
        for n in range(args.warmup):
            await ask(client, url, pairs[n % len(pairs)], bad)
        single = [await ask(client, url, pairs[n % len(pairs)], bad) for n in range(args.sequential)]

        async def one_client(c: int) -> list[float]:
            return [await ask(client, url, pairs[(c * args.per_client + k) % len(pairs)], bad)
                    for k in range(args.per_client)]

        t = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(c) for c in range(args.clients)))
        wall = time.perf_counter() - t
        calls = (await client.get(url.replace("/answer", "/info"))).json()["calls"]
    loaded = [x for xs in per_client for x in xs]
    return {"single": stats(single),
            "concurrent": {"clients": args.clients, "requests": len(loaded), "wall_s": round(wall, 2),
                           "throughput_rps": round(len(loaded) / wall, 2), **stats(loaded)},
            "answering_calls": calls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", nargs="+", default=["demo", "bert-base"], choices=["demo", "bert-base"])
    ap.add_argument("--sequential", type=int, default=40, help="one-at-a-time requests timed (per reader, mode)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=10, help="requests each concurrent client sends")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="server starts per mode, alternating; the median "
                                                          "round (by throughput) is reported, all are recorded")
    ap.add_argument("--scale-bert-base", type=float, default=0.25,
                    help="bert-base runs this fraction of --sequential and --per-client (it is ~50× slower)")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()

    results, bad = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        built = readers(Path(tmp))
        for name in args.readers:
            model, pairs = built[name]
            run = argparse.Namespace(**vars(args))
            if name == "bert-base":
                run.sequential = max(5, int(args.sequential * args.scale_bert_base))
                run.per_client = max(2, int(args.per_client * args.scale_bert_base))
            results[name] = {"model": {"demo": "BERT 2 layers, hidden 128, 64-token windows",
                                       "bert-base": "BERT 12 layers, hidden 768, 384-token windows"}[name]}
            rounds = {"batched": [], "unbatched": []}
            for _ in range(args.rounds):  # modes alternate, so that a slow spell of the machine hits both
                for mode in rounds:
                    port = free_port()
                    with open(Path(tmp) / f"{name}_{mode}.log", "w") as log:
                        proc = start_server(model, mode == "batched", port, log)
                        try:
                            rounds[mode].append(asyncio.run(measure(port, pairs, run, bad)))
                        finally:
                            proc.terminate()
                            proc.wait(30)
            for mode, runs in rounds.items():  # the round of median throughput stands for the mode
                by_rps = sorted(runs, key=lambda r: r["concurrent"]["throughput_rps"])
                results[name][mode] = {**by_rps[len(by_rps) // 2],
                                       "rounds_throughput_rps": [r["concurrent"]["throughput_rps"] for r in runs],
                                       "rounds_single_p50_ms": [r["single"]["p50_ms"] for r in runs]}
            b, u = results[name]["batched"]["concurrent"], results[name]["unbatched"]["concurrent"]
            results[name]["throughput_batched_over_unbatched"] = round(b["throughput_rps"] / u["throughput_rps"], 2)
    result = {
        **header("serve"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "readers": results,
        "failed_requests": len(bad), "failures": bad[:5], "passed": not bad,
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
