"""`qa-scale serve`: the JSON API through the ASGI test client (answers, n-best, the ensemble, every
limit and bad input as a 4xx JSON error, never a 500) and the micro-batcher's shared forward passes."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from fastapi.testclient import TestClient
from reader_runs import make_readers

from qa_scale import data
from qa_scale.serving.answering import Query, answer
from qa_scale.serving.app import create_app
from qa_scale.serving.batcher import BatchSettings, MicroBatcher
from qa_scale.serving.limits import Limits
from qa_scale.inference.options import ReaderOptions
from qa_scale.serving.readers import load_panel

LIMITS = Limits(max_context_chars=2000, max_question_chars=50, max_questions=8, max_body_bytes=100_000)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = make_readers(tmp_path_factory.mktemp("serve"))
    work["dev"] = data.load(work["paths"]["squad_dev"], "lenient").examples
    work["panel"] = load_panel(work["models"], ReaderOptions(device="cpu"))
    return work


@pytest.fixture(scope="module")
def client(work):
    with TestClient(create_app(work["panel"], LIMITS, BatchSettings(max_batch_wait_ms=50))) as c:
        yield c


def test_answers_spans_and_nbest(work, client):
    ex = work["dev"][3]
    questions = [ex.question, work["dev"][4].question]
    r = client.post("/answer", json={"context": ex.context, "questions": questions})
    assert r.status_code == 200, r.text
    body = r.json()
    want = answer(work["panel"], [Query(ex.context, q) for q in questions], nbest=True)
    assert [a["answer"] for a in body["answers"]] == [w["answer"] for w in want]
    assert body["readers"] == ["m0", "m1", "m2"]
    for a in body["answers"]:
        assert ex.context[a["start"]:a["end"]] == a["answer"] and a["nbest"][0]["text"] == a["answer"]
        assert abs(sum(c["probability"] for c in a["nbest"]) - 1) < 1e-9 and a["probability"] == a["nbest"][0]["probability"]
        assert len(a["nbest"]) == work["panel"].decoding.n_best_size
    r = client.post("/answer", json={"context": ex.context, "questions": [ex.question], "nbest": False})
    assert r.status_code == 200 and "nbest" not in r.json()["answers"][0]


def test_the_ensemble_answers_as_qa_scale_ensemble_wrote(work, client):
    for ex in work["dev"][:10]:
        r = client.post("/answer", json={"context": ex.context, "questions": [ex.question], "nbest": False})
        assert r.json()["answers"][0]["answer"] == work["ensemble"][ex.id], ex.id


def test_health_info_and_page(work, client):
    assert client.get("/health").json() == {"status": "ok", "readers": 3}
    info = client.get("/info").json()
    assert [r["weight"] for r in info["readers"]] == pytest.approx([1 / 3] * 3)
    assert info["windows"]["max_seq_len"] == 64 and info["decode"]["max_answer_len"] == 20  # training config
    assert info["limits"]["max_questions"] == 8 and info["batching"]["max_batch_wait_ms"] == 50
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="context"' in page.text and "<mark" not in page.text.split("<script>")[0]


GOOD = {"context": "北京是中国的首都。", "questions": ["中国的首都是哪里？"]}


@pytest.mark.parametrize("body, status, message", [
    ({**GOOD, "context": ""}, 422, "context: is empty"),
    ({**GOOD, "context": "  \n"}, 422, "context: is empty"),
    ({"questions": ["谁？"]}, 422, "context: required"),
    ({"context": "北京。"}, 422, "questions: required"),
    ({**GOOD, "questions": []}, 422, "questions: required"),
    ({**GOOD, "questions": "谁？"}, 422, "questions: required"),
    ({**GOOD, "questions": ["谁？", ""]}, 422, "questions[1]: must be a non-empty string"),
    ({**GOOD, "questions": ["谁？", 3]}, 422, "questions[1]: must be a non-empty string"),
    ({**GOOD, "context": 12}, 422, "context: must be a string"),
    ({**GOOD, "nbest": "yes"}, 422, "nbest: must be true or false"),
    ({**GOOD, "question": "谁？"}, 422, "unknown field 'question'"),
    ({**GOOD, "questions": ["谁？"] * 1000}, 422, "questions: 1,000 questions; the limit is 8 per request"),
    ({**GOOD, "context": "北" * 2001}, 422, "context: 2,001 characters; the limit is 2,000"),
    ({**GOOD, "questions": ["谁" * 51]}, 422, "questions[0]: 51 characters; the limit is 50"),
    ([GOOD], 422, "expected a JSON object"),
])
def test_bad_requests_get_a_4xx_json_error(client, body, status, message):
    r = client.post("/answer", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert message in err["error"] or any(message in d for d in err["details"]), err


@pytest.mark.parametrize("content, headers, status, message", [
    (b'{"context": "\xff\xfe", "questions": ["?"]}', {}, 400, "request body: not UTF-8 text (line 1, byte 13"),
    (b'{"context": "x", "questions": [', {}, 400, "request body: invalid JSON at line 1 column 32"),
    (b"", {}, 400, "request body: empty"),
    (b'{"context": "\\ud800", "questions": ["?"]}', {}, 400, "request body: context: invalid text: a lone surrogate"),
    (b"[" * 100_000, {}, 400, "request body: nested deeper than 100 levels"),
    (b'{"context": "x", "questions": ["?"], "nbest": 1e5000}', {}, 400, "request body: nbest: not a finite number"),
    (b'{"context": "x", "questions": ["?"]}', {"content-type": "text/plain"}, 415, "send JSON with Content-Type"),
    (b"x" * 10_000_000, {}, 413, "request body of 10,000,000 bytes; the limit is 100,000"),
])
def test_bodies_that_are_not_utf8_json_or_too_big(client, content, headers, status, message):
    r = client.post("/answer", content=content, headers={"content-type": "application/json", **headers})
    assert r.status_code == status and message in r.json()["error"], r.text


def test_a_streamed_body_is_cut_off_at_the_limit(client):
    sent = []

    def chunks():  # no Content-Length: the size is only known while it streams in
        for _ in range(200):
            sent.append(1)
            yield b"x" * 10_000

    r = client.post("/answer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 100,000 bytes" in r.json()["error"]


def test_wrong_paths_and_methods_are_4xx_json(client):
    r = client.get("/answer")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"] == "Method Not Allowed"
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "Not Found"


def test_concurrent_requests_share_forward_passes(work):
    app = create_app(work["panel"], LIMITS, BatchSettings(max_batch_wait_ms=300, max_batch_questions=64))
    exs = work["dev"][:8]
    results = [None] * len(exs)
    with TestClient(app) as c:
        def ask(n: int) -> None:
            results[n] = c.post("/answer", json={"context": exs[n].context, "questions": [exs[n].question]})

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(exs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = app.state.batcher.calls
    assert all(r.status_code == 200 for r in results)
    assert calls < len(exs), calls  # gathered: fewer answering calls than requests
    assert [r.json()["answers"][0]["answer"] for r in results] == [work["ensemble"][ex.id] for ex in exs]


def run_batcher(settings: BatchSettings, requests: list[list], answer_all) -> tuple[list, MicroBatcher]:
    async def main():
        batcher = MicroBatcher(answer_all, settings)
        await batcher.start()
        try:
            out = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        finally:
            await batcher.stop()
        return out, batcher

    return asyncio.run(main())


def test_batcher_gathers_splits_back_and_isolates_failures():
    seen = []

    def answer_all(items):
        seen.append(list(items))
        if "bad" in items:
            raise ValueError("cannot answer 'bad'")
        return [f"answer to {x}" for x in items]

    requests = [["a", "b"], ["c"], ["d", "e", "f"]]
    out, batcher = run_batcher(BatchSettings(max_batch_wait_ms=200), requests, answer_all)
    assert out == [["answer to a", "answer to b"], ["answer to c"], ["answer to d", "answer to e", "answer to f"]]
    assert seen == [["a", "b", "c", "d", "e", "f"]] and batcher.calls == 1
    seen.clear()
    out, batcher = run_batcher(BatchSettings(batching=False), requests, answer_all)
    assert len(seen) == 3 and out[2] == ["answer to d", "answer to e", "answer to f"]  # unbatched: one call each
    seen.clear()
    out, _ = run_batcher(BatchSettings(max_batch_wait_ms=200), [["a"], ["bad"], ["c"]], answer_all)
    assert out[0] == ["answer to a"] and out[2] == ["answer to c"] and isinstance(out[1], ValueError)
    seen.clear()
    out, _ = run_batcher(BatchSettings(max_batch_wait_ms=200, max_batch_questions=3), requests, answer_all)
    assert seen == [["a", "b", "c"], ["d", "e", "f"]]  # a request that does not fit starts the next call
    seen.clear()
    out, _ = run_batcher(BatchSettings(max_batch_wait_ms=0), requests, answer_all)
    assert seen == [["a", "b", "c", "d", "e", "f"]]  # no timer: what was already waiting is still gathered


def test_limits_and_batch_settings_are_checked():
    with pytest.raises(ValueError, match="limits must be ≥ 1"):
        Limits(max_questions=0)
    with pytest.raises(ValueError, match="max_batch_wait_ms ≥ 0"):
        BatchSettings(max_batch_wait_ms=-1)
    assert json.loads(json.dumps(Limits().__dict__))["max_body_bytes"] == 1_000_000
