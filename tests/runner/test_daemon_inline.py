"""The claim's inline artifact, as the runner daemon reads it."""

from __future__ import annotations

import base64
from typing import Any

from sequence.runner.daemon import _inline_artifact


def test_inline_artifact_is_decoded_and_anything_else_means_fetch() -> None:
    spec: dict[str, Any] = {"run_id": "r1", "artifact_base64": base64.b64encode(b"tar bytes").decode()}
    assert _inline_artifact(spec) == b"tar bytes"  # type: ignore[arg-type]
    for bad in (None, 42, "not base64!", "QUJD\n"):  # absent, wrong type, not strict base64
        assert _inline_artifact({"run_id": "r1", "artifact_base64": bad}) is None  # type: ignore[typeddict-item]
    assert _inline_artifact({"run_id": "r1"}) is None  # type: ignore[typeddict-item]  # an older coordinator
