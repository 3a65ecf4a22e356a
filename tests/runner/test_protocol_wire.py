"""The log batch of sequence.protocol: what the runner encodes, the coordinator decodes."""

from __future__ import annotations

import json

import pytest

from sequence.protocol import BadBatch, LogBatch, decode_logs, encode_logs


def test_a_batch_round_trips() -> None:
    records = [{"seq": 7, "ts": 1.5, "stream": "stdout", "line": "a"},
               {"seq": 8, "ts": 2, "stream": "stderr", "line": "é" * 3, "partial": True},
               {"seq": 9, "ts": 2.5, "stream": "system", "line": "run ended"}]
    body = encode_logs(3, records)
    assert json.loads(body) == {"epoch": 3, "first_seq": 7, "ts": [1.5, 2, 2.5], "streams": "oes",
                                "lines": ["a", "ééé", "run ended"], "partial": [1]}
    assert decode_logs(body) == LogBatch(3, 7, [1.5, 2, 2.5], ["stdout", "stderr", "system"],
                                         ["a", "ééé", "run ended"], [1])


def test_an_empty_batch_is_one_that_starts_at_one() -> None:
    assert decode_logs(encode_logs(0, [])) == LogBatch(0, 1, [], [], [], [])


@pytest.mark.parametrize(("body", "field", "not_json"), [
    (b"{", "body", True),
    (b"[]", "body", False),
    (b'{"epoch": -1, "first_seq": 1, "ts": [], "streams": "", "lines": []}', "epoch", False),
    (b'{"epoch": 1, "lines": [{"seq": 1, "ts": 1, "stream": "stdout", "line": "x"}]}', "first_seq", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [], "streams": "", "lines": [], "extra": 1}', "body", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [1], "streams": "x", "lines": ["a"]}', "streams", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [1], "streams": "o", "lines": ["a"], "partial": [1]}', "partial", False),
    # A checked batch is stored as it came (store/logs.py): every element's type is checked.
    (b'{"epoch": 1, "first_seq": 1, "ts": [true], "streams": "o", "lines": ["a"]}', "ts", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": ["1"], "streams": "o", "lines": ["a"]}', "ts", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [1, null], "streams": "oo", "lines": ["a", "b"]}', "ts", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [NaN], "streams": "o", "lines": ["a"]}', "ts", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [1e400], "streams": "o", "lines": ["a"]}', "ts", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [-Infinity], "streams": "o", "lines": ["a"]}', "ts", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [1, 2], "streams": "oo", "lines": ["a", 1]}', "lines", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [1], "streams": "o", "lines": [["a"]]}', "lines", False),
    (b'{"epoch": 1, "first_seq": 1, "ts": [1], "streams": "o", "lines": ["a"], "partial": [true]}', "partial", False),
])
def test_a_malformed_batch_names_its_field(body: bytes, field: str, not_json: bool) -> None:
    with pytest.raises(BadBatch) as info:
        decode_logs(body)
    assert info.value.field == field and info.value.not_json is not_json
