"""`qa-scale serve`'s contract with any client: whatever is sent, the answer is 2xx or a 4xx JSON error
naming the field — never a 500 — and it conforms to the OpenAPI document, which declares the request
body, its limits and every error. Fuzzed in process (hypothesis over raw bodies and content types;
schemathesis over the schema; no network address), on a tiny reader saved as `train` exports it.
Also: a 405 names the allowed methods, and `serve` refuses a bad --port/--host, or a port in use,
before any model loads."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reader_runs import save_reader

from qa_scale import synthetic
from qa_scale.cli import main
from qa_scale.data.tokenization import build_char_vocab
from qa_scale.serving.app import create_app
from qa_scale.serving.batcher import BatchSettings
from qa_scale.serving.limits import Limits, RequestError, check_media_type, parse_request, read_body
from qa_scale.inference.options import ReaderOptions
from qa_scale.serving.readers import load_panel

LIMITS = Limits(max_context_chars=300, max_question_chars=40, max_questions=4, max_body_bytes=300_000)
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=1, dev_paragraphs=1, test_paragraphs=1),
                                root / "data")
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    return save_reader(root / "runs" / "m0", root / "tok", 0)


@pytest.fixture(scope="module")
def panel(model):
    return load_panel([model], ReaderOptions(device="cpu"))


@pytest.fixture(scope="module")
def app(panel):
    return create_app(panel, LIMITS, BatchSettings(max_batch_wait_ms=0))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:  # a 500 is a status here, to assert on
        yield c


def check_reply(r, body: bytes, content_type: str | None) -> None:
    """2xx with one answer per question, or a 4xx JSON error naming what is wrong; never a 5xx."""
    assert r.status_code < 500, (r.status_code, r.text, body[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    reply = r.json()
    try:
        check_media_type(content_type)
        if len(body) > LIMITS.max_body_bytes:
            raise RequestError(413, "request body over the limit")
        queries, _ = parse_request(body, LIMITS)
    except RequestError as err:
        assert r.status_code == err.status, (r.text, body[:300])
        assert set(reply) == {"error", "details"} and isinstance(reply["details"], list), reply
        named = " ".join([reply["error"], *reply["details"]])
        assert any(w in named for w in ("request body", "context", "questions", "nbest", "unknown field")), reply
        return
    # Accepted by the checks: the readers must answer it (a 4xx here would hide a bug as the client's fault).
    assert r.status_code == 200, (r.text, body[:300])
    assert [a["question"] for a in reply["answers"]] == [q.question for q in queries]


def post(client, body: bytes, content_type: str | None = "application/json"):
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post("/answer", content=body, headers=headers)


# ------------------------------------------------------------------ what clients send

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.one_of(st.text(max_size=60), st.text(st.one_of(st.characters(), surrogates), min_size=1, max_size=20),
                  st.sampled_from(["", " ", "\u3000", "\x00", "北京是中国的首都。", "\ud800", "a\udfffb",
                                   "北" * 301]))
numbers = st.one_of(st.integers(), st.floats(), st.integers(10**99, 10**200))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
                      max_leaves=20)
requests = st.fixed_dictionaries(
    {"context": st.one_of(texts, values), "questions": st.one_of(st.lists(texts, max_size=6), values)},
    optional={"nbest": st.one_of(st.booleans(), values), "question": values, "\ud800": values})
valid = st.fixed_dictionaries(  # what the checks accept: the readers must answer any of it
    {"context": st.text(min_size=1, max_size=300).filter(str.strip),
     "questions": st.lists(st.text(min_size=1, max_size=40).filter(str.strip), min_size=1, max_size=4)},
    optional={"nbest": st.booleans()})
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(101, 6000).map(lambda n: b'{"context": "a", "questions": ["b"], "nbest": ' + b"9" * n + b"}"),
    st.sampled_from([b"", b"   ", b"null", b"1e5000", b'{"context": "a", "questions": ["b"], "nbest": 1e5000}',
                     b'{"context": "a", "questions": ["b"], "nbest": NaN}', b'{"context": "a", "context": "b"}',
                     b'{"context": "\\ud800", "questions": ["b"]}', b'{"context": "a", "questions": ["\\udc00"]}',
                     '{"context": "北京", "questions": ["哪？"]}'.encode("gbk"), b"\xef\xbb\xbf{}",
                     b'{"context": "a", "questions": ["b"]' + b" " * 300_000 + b"}"]))
content_types = st.one_of(st.just("application/json"), st.sampled_from([
    "application/json; charset=utf-8", "application/problem+json", None, "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data", "", "application/xml", "*/*"]))


def encode(obj) -> bytes:
    """JSON as a client might send it: surrogates escaped, NaN/Infinity as Python writes them."""
    return json.dumps(obj).encode()


@FUZZ
@given(obj=st.one_of(valid, requests, values), content_type=content_types)
def test_any_json_document_gets_an_answer_or_a_4xx_naming_the_field(client, obj, content_type):
    body = encode(obj)
    check_reply(post(client, body, content_type), body, content_type)


@FUZZ
@given(body=raw_bodies, content_type=content_types)
def test_any_bytes_get_an_answer_or_a_4xx(client, body, content_type):
    check_reply(post(client, body, content_type), body, content_type)


@pytest.mark.parametrize("body, status, message", [
    (b'{"context": "\\ud800", "questions": ["b"]}', 400,
     "request body: context: invalid text: a lone surrogate U+D800"),
    (b'{"context": "a", "questions": ["b\\udfff"]}', 400, "request body: questions[0]: invalid text"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "request body: nested deeper than 100 levels"),
    (b'{"context": "a", "questions": ["b"], "nbest": 1e5000}', 400, "nbest: not a finite number"),
    (b'{"context": "a", "questions": ["b"], "nbest": ' + b"7" * 5000 + b"}", 400, "a number of 5000 characters"),
    (b'{"context": "a", "context": "b", "questions": ["b"]}', 400, "key 'context' appears twice"),
    (b'{"context": "\xff\xfe", "questions": ["?"]}', 400, "request body: not UTF-8 text (line 1, byte 13"),
    (b"", 400, "request body: empty"),
])
def test_what_crashed_the_service_is_a_400_naming_it(client, body, status, message):
    r = post(client, body)
    assert r.status_code == status and message in r.json()["error"], r.text


class FakeRequest:
    def __init__(self, headers: dict, body: bytes = b"{}"):
        self.headers, self.body = headers, body

    async def stream(self):
        yield self.body


@pytest.mark.parametrize("length, status", [("²", None), ("1" * 5000, 413), ("9" * 19, 413), (" 12 ", None),
                                            ("-5", None), ("300001", 413)])
def test_any_content_length_header_is_read_safely(length, status):
    request = FakeRequest({"content-length": length, "content-type": "application/json"})
    try:
        assert asyncio.run(read_body(request, LIMITS.max_body_bytes)) == b"{}" and status is None
    except RequestError as err:
        assert err.status == status and "request body of" in err.message, err.message


def test_wrong_media_type_is_415_and_none_is_read_as_json(client):
    good = encode({"context": "北京是中国的首都。", "questions": ["中国的首都是哪里？"]})
    r = post(client, good, "text/plain")
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]
    assert post(client, good, None).status_code == 200


def test_a_server_bug_is_a_logged_json_500_not_a_4xx(panel, monkeypatch, caplog):
    def broken(_items):
        raise KeyError("a bug")

    app = create_app(panel, LIMITS)
    monkeypatch.setattr(app.state.batcher, "answer_all", broken)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        r = post(c, encode({"context": "北京。", "questions": ["哪？"]}))
    assert r.status_code == 500 and "internal error" in r.json()["error"] and r.json()["details"] == []
    assert any(rec.exc_info and rec.exc_info[0] is KeyError for rec in caplog.records)


def test_a_readers_refusal_of_the_input_is_422(panel, monkeypatch):
    def refuse(_items):
        raise ValueError("window of 700 positions; the model has 512")

    app = create_app(panel, LIMITS)
    monkeypatch.setattr(app.state.batcher, "answer_all", refuse)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = post(c, encode({"context": "北京。", "questions": ["哪？"]}))
    assert r.status_code == 422 and "cannot answer: window of 700 positions" in r.json()["error"]


def test_the_app_answers_again_after_its_lifespan_restarts(panel):
    app = create_app(panel, LIMITS)
    for _ in range(2):  # e.g. a test client opened twice, or a server restarted in the same process
        with TestClient(app, raise_server_exceptions=False) as c:
            assert post(c, encode({"context": "北京。", "questions": ["哪？"]})).status_code == 200


# ------------------------------------------------------------------ the OpenAPI document


def test_the_schema_declares_the_body_its_limits_and_the_errors(client):
    post_answer = client.get("/openapi.json").json()["paths"]["/answer"]["post"]
    schema = post_answer["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False and schema["required"] == ["context", "questions"]
    props = schema["properties"]
    assert props["context"]["maxLength"] == 300 and props["questions"]["maxItems"] == 4
    assert props["questions"]["items"]["maxLength"] == 40 and props["nbest"]["type"] == "boolean"
    assert {"400", "413", "415", "422"} <= set(post_answer["responses"])
    assert post_answer["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_schemathesis_finds_no_server_error_and_no_nonconformance(app):
    import schemathesis
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # in process: no address is contacted
    seen = set()
    for found in schema.get_all_operations():
        op = found.ok()
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if op.label == "POST /answer" else [])
        for mode in modes:
            @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                response = case.call_and_validate()  # not_a_server_error, status codes, content types, schemas
                seen.add((op.label, mode.value, response.status_code // 100))

            run()
    assert ("POST /answer", "positive", 2) in seen and ("POST /answer", "negative", 4) in seen, seen


# ------------------------------------------------------------------ methods and paths


def test_405_names_the_allowed_methods_and_404_is_json(client):
    r = client.get("/answer")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"] == "Method Not Allowed"
    r = client.put("/health")
    assert r.status_code == 405 and "GET" in r.headers["allow"].split(", ")
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "Not Found", "details": []}


# ------------------------------------------------------------------ serve's flags, before any model loads


@pytest.mark.parametrize("flags, message", [
    (["--port", "70000"], "argument --port: expected a port number from 1 to 65535, got '70000'"),
    (["--port", "0"], "argument --port"),
    (["--port", "-1"], "argument --port"),
    (["--port", "８０"], "argument --port"),
    (["--host", "999.999.1.1"], "argument --host: expected an IP address or a host name, got '999.999.1.1'"),
    (["--host", "bad host"], "argument --host"),
    (["--host", "1::2::3"], "argument --host"),
])
def test_bad_port_or_host_is_refused_by_the_parser(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        main(["serve", str(tmp_path / "never-loaded"), *flags])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_the_models_load(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path / "never-loaded"), "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in err, err
    assert "never-loaded" not in err and "Traceback" not in err

