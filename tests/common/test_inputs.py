"""The input layer (common/inputs.py): whatever the bytes, a document or an InputError naming the place."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_scale.common import inputs
from qa_scale.common.inputs import InputError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4), max_leaves=20)


def _mutations(doc: str) -> st.SearchStrategy[bytes]:
    """Bytes near a valid document: cut, spliced with hostile fragments, re-encoded."""
    data = doc.encode("utf-8")
    hostile = st.sampled_from([b'"\\ud800"', b"9" * 5000, b"NaN", b"-Infinity", b"1e999", b"[" * 3000, b"\xff\xfe",
                               "中文".encode("gbk"), b"\xef\xbb\xbf", b'{"a":1,"a":2}', b"", b"\x00"])
    cut = st.integers(0, len(data)).map(lambda n: data[:n])
    splice = st.tuples(st.integers(0, len(data)), hostile).map(lambda t: data[: t[0]] + t[1] + data[t[0]:])
    return cut | splice | st.binary(max_size=200)


@FAST
@given(data=JSON_VALUES.map(lambda v: json.dumps(v)).flatmap(_mutations))
def test_any_bytes_give_a_checked_document_or_an_error_naming_the_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("in") / "x.json"
    path.write_bytes(data)
    try:
        doc = inputs.read_json(path)
    except InputError as err:
        assert str(err).startswith(str(path)), err
        return
    inputs.check_document(doc, "again")  # what was accepted holds no surrogate, no deep nesting, no inf


@FAST
@given(value=JSON_VALUES)
def test_valid_documents_round_trip(value):
    text = json.dumps(value, ensure_ascii=False)
    surrogate = any("\ud800" <= ch <= "\udfff" for ch in text)
    if surrogate:
        with pytest.raises(InputError, match="lone surrogate"):
            inputs.parse_json(json.dumps(value), "doc")
    else:
        assert inputs.parse_json(text, "doc") == value
        assert inputs.parse_json_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"), "doc") == value  # a BOM is fine


@pytest.mark.parametrize("text,needle", [
    ('{"data": [{"q": "\\ud800"}]}', "doc: data[0].q: invalid text: a lone surrogate U+D800 at character 0"),
    ("[" * 100_000, "nested deeper than 100"),
    ('{"n": ' + "7" * 5000 + "}", "a number of 5000 characters"),
    ('{"n": NaN}', "NaN is not a number JSON allows"),
    ('{"n": 1e400}', "n: not a finite number"),
    ('{"a": 1, "a": 2}', "key 'a' appears twice"),
    ('{"a": 1', "invalid JSON at line 1"),
])
def test_each_check_names_the_place(text, needle):
    with pytest.raises(InputError) as err:
        inputs.parse_json(text, "doc")
    assert str(err.value).startswith("doc") and needle in str(err.value)


def test_jsonl_yaml_text_and_stdin_name_the_line(tmp_path):
    with pytest.raises(InputError, match=r"f line 3: invalid JSON"):
        list(inputs.iter_jsonl('{"a": 1}\n\n{"a": \n', "f"))
    (tmp_path / "r.yaml").write_bytes(b"a: 1\nb: [\n")
    with pytest.raises(InputError, match=r"r.yaml: invalid YAML at line 3"):
        inputs.read_yaml(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_bytes(b"- 1\n- 2\n")
    with pytest.raises(InputError, match="expected a mapping of settings at the top level, got list"):
        inputs.read_mapping(tmp_path / "r.yaml")
    (tmp_path / "g.txt").write_bytes("第一行\n".encode() + "第二行".encode("gbk"))
    with pytest.raises(InputError, match=r"g.txt: not UTF-8 text \(line 2"):
        inputs.read_text(tmp_path / "g.txt")
    import io
    lines = inputs.stdin_lines(io.BytesIO("好\n".encode() + "坏".encode("gbk") + b"\n"))
    assert next(lines) == (1, "好")
    with pytest.raises(InputError, match=r"<stdin> line 2: not UTF-8"):
        next(lines)


def test_arrays_and_weights_files_that_are_cut_short_are_named(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(100, dtype=np.float32))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"a.npy: damaged array file"):
        inputs.load_npy(tmp_path / "a.npy")
    from safetensors.numpy import save_file

    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    assert set(inputs.check_safetensors(tmp_path / "m.safetensors")) == {"w"}
    data = (tmp_path / "m.safetensors").read_bytes()
    for cut in (4, 40, len(data) - 1):
        (tmp_path / "m.safetensors").write_bytes(data[:cut])
        with pytest.raises(InputError, match=r"m.safetensors"):
            inputs.check_safetensors(tmp_path / "m.safetensors")


def test_arguments_from_undecodable_bytes_are_refused_naming_the_flag():
    with pytest.raises(InputError, match="argument --question: invalid text"):
        inputs.check_arguments({"question": ["fine", "bad\udcff"]})
    inputs.check_arguments({"question": ["好"], "batch_size": 3})
