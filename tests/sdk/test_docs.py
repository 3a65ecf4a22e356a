"""docs/sdk.md covers the whole public surface, and its code parses."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import sequence_markets
from sequence_markets import Sequence, Stream

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"

pytestmark = pytest.mark.skipif(not DOC.exists(), reason="docs/sdk.md not present")


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _public_methods(cls: type) -> list[str]:
    return [
        n
        for n, v in vars(cls).items()
        if not n.startswith("_") and (callable(v) or isinstance(v, (staticmethod, property)))
    ]


def test_every_export_is_documented() -> None:
    text = _text()
    missing = [name for name in sequence_markets.__all__ if name not in text]
    assert missing == []


@pytest.mark.parametrize("cls", [Sequence, Stream])
def test_every_public_method_is_documented(cls: type) -> None:
    text = _text()
    missing = [
        name for name in _public_methods(cls) if f"{name}(" not in text and f"`{name}`" not in text
    ]
    assert missing == []


def test_documented_signatures_match_the_code() -> None:
    text = _text()
    for name in ("markets", "quote", "node", "graph", "fills", "wait_for_fills", "stream"):
        params = list(inspect.signature(getattr(Sequence, name)).parameters)[1:]
        heading = re.search(rf"^#+ `{name}\((.*)\)", text, re.MULTILINE)
        assert heading, name
        documented = [p.strip().split("=")[0].lstrip("*") for p in heading.group(1).split(",")]
        assert [p for p in documented if p] == [p for p in params], name


def test_python_examples_parse() -> None:
    blocks = re.findall(r"```python\n(.*?)```", _text(), re.DOTALL)
    assert blocks
    for block in blocks:
        ast.parse(block)
