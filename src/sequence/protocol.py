"""The runner protocol's wire types, shared by the coordinator and the runner.

A leaf: it imports nothing from the package's rooms, so both sides — the
coordinator's :mod:`sequence.api.services` and the runner daemon — build and
read the same shapes (docs/runner-protocol.md):

* :class:`ClaimSpec` — one claimed run, as ``POST /v1/runners/{id}/poll`` hands it out
  (:class:`PollAnswer`);
* the **log batch** — :func:`encode_logs` (runner) and :func:`decode_logs`
  (coordinator) of the columnar body of ``POST …/runs/{run_id}/logs``;
* the watch constants (``WATCH_*``) both sides keep;
* :class:`ExitReport` — how a run ended, the body of ``POST …/runs/{run_id}/exit``
  (with the run's ``epoch``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

INT64_MAX = 2**63 - 1

# The watch connection (``GET /v1/runners/{id}/watch``), a faster signal than a lease:
# a runner SIGKILLed closes it at once. The coordinator then ends that runner's leases
# WATCH_GRACE_S after it saw the close; the runner, if alive, kills its runs once its
# watch has been down for WATCH_FENCE_S without a new one open — before the coordinator
# can expire them. See docs/design.md ("Fast failover") for the argument.
#: Seconds between the coordinator's keep-alive newlines on an open watch.
WATCH_KEEPALIVE_S = 0.5
#: A runner whose watch is down this long (and not refused: the coordinator is down) kills its runs.
WATCH_FENCE_S = 1.0
#: After a watch closes, its runner's leases end this many seconds later.
WATCH_GRACE_S = 2.0
#: At most this many lines in one log batch.
MAX_LOG_BATCH = 100_000
#: A line's stream: the strategy's stdout or stderr, or ``system`` (lines the runner
#: itself adds: rate-limit notices, egress refusals, the exit reason).
STREAMS = ("stdout", "stderr", "system")
#: The one-letter codes of the columnar batch's ``streams`` string.
STREAM_CODE = {"stdout": "o", "stderr": "e", "system": "s"}
_CODE_STREAM = {c: s for s, c in STREAM_CODE.items()}
_NUMBER_TYPES = frozenset({float, int})  # exactly: a bool is not a time
_STR_TYPE = frozenset({str})
_BATCH_FIELDS = frozenset({"epoch", "first_seq", "ts", "streams", "lines", "partial"})


#: Artifacts up to this size ride in the claim spec (``artifact_base64``); bigger ones are
#: fetched. A poll answers at most the runner's start slots, so an answer stays small.
INLINE_ARTIFACT_MAX = 256 * 1024


class ClaimSpec(TypedDict):
    """A claimed run: everything the runner needs to start it."""

    run_id: str
    epoch: int
    strategy_id: str
    client_id: str
    name: str
    entrypoint: str
    env: dict[str, str]
    secrets: dict[str, str]
    manifest: dict[str, Any]
    memory_mb: int
    disk_mb: int
    egress: str
    log_rate_lines: int
    log_burst_lines: int
    stop_timeout_s: float
    is_sandbox: bool
    api_key: str
    api_url: str
    artifact_sha256: str
    artifact_size: int
    # The artifact itself when it is at most INLINE_ARTIFACT_MAX bytes (one round trip fewer on
    # the deploy path); absent or null: fetch it from .../artifact. The runner checks its hash either way.
    artifact_base64: NotRequired[str | None]
    # The dependency layer: {layer_id, target, size_bytes, wheels: [{filename, sha256, size}]}, or None.
    layer: dict[str, Any] | None


class PollAnswer(TypedDict):
    """A poll's answer: runs to start, and runs of this runner to stop."""

    claims: list[ClaimSpec]
    stop: list[str]
    # Seconds from the poll's arrival to the claims (a long poll waits): the runner dates the
    # claims' leases from its request's sending plus this, so a claim delivered late (a
    # partition that healed) is known stale, not taken as freshly renewed.
    waited_s: NotRequired[float]


class ExitReport(TypedDict):
    """How a run ended (the exit body without its ``epoch``)."""

    code: int | None
    signal: int | None
    oom: bool
    reason: str | None
    peak_rss_bytes: NotRequired[int | None]
    cpu_seconds: NotRequired[float | None]
    # The runner itself was shutting down (not the strategy's doing): re-queued at once.
    runner_shutdown: NotRequired[bool]


@dataclass(slots=True)
class LogBatch:
    """A decoded log batch: consecutive lines ``first_seq, first_seq + 1, …`` of one run.

    ``streams`` holds stream names (:data:`STREAMS`), one per line; ``partial``
    the indexes of lines that continue in the next line of their stream.
    """

    epoch: int
    first_seq: int
    ts: list[float]
    streams: list[str]
    lines: list[str]
    partial: list[int]


class BadBatch(ValueError):
    """A log batch that is not what :func:`encode_logs` makes; ``field`` names the culprit.

    ``not_json``: the body is not JSON at all.
    """

    def __init__(self, field: str, message: str, *, not_json: bool = False) -> None:
        super().__init__(message)
        self.field, self.message, self.not_json = field, message, not_json


def encode_logs(epoch: int, records: Sequence[Mapping[str, Any]]) -> bytes:
    """The columnar batch body of consecutive line records
    (``{"seq", "ts", "stream", "line", "partial"?}``)::

        {"epoch": 7, "first_seq": 17, "ts": [...], "streams": "oeo", "lines": [...], "partial": [1]}
    """
    return json.dumps({
        "epoch": epoch, "first_seq": records[0]["seq"] if records else 1,
        "ts": [x["ts"] for x in records],
        "streams": "".join(STREAM_CODE[x["stream"]] for x in records),
        "lines": [x["line"] for x in records],
        "partial": [i for i, x in enumerate(records) if x.get("partial")],
    }, separators=(",", ":"), ensure_ascii=False).encode()


def decode_logs(raw: bytes | str) -> LogBatch:
    """Check and decode a batch made by :func:`encode_logs`; :class:`BadBatch` otherwise.

    Checked by hand, not per line by a schema library: that would cost more than
    storing the lines.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadBatch("body", "request body is not valid JSON", not_json=True) from None
    if not isinstance(body, dict):
        raise BadBatch("body", "body must be a JSON object")
    epoch, lines = body.get("epoch"), body.get("lines")
    if type(epoch) is not int or not 0 <= epoch <= INT64_MAX:
        raise BadBatch("epoch", "epoch must be an integer")
    if not isinstance(lines, list) or len(lines) > MAX_LOG_BATCH:
        raise BadBatch("lines", f"lines must be a list of at most {MAX_LOG_BATCH}")
    if set(body) - _BATCH_FIELDS:
        raise BadBatch("body", "unknown fields in a columnar log batch")
    first, ts, streams, partial = body.get("first_seq"), body.get("ts"), body.get("streams"), body.get("partial", [])
    n = len(lines)
    if type(first) is not int or not 1 <= first <= INT64_MAX - n:
        raise BadBatch("first_seq", "first_seq must be an integer >= 1")
    # set(map(type, …)) runs in C: the per-line checks cost a hash, not a Python frame.
    if not isinstance(ts, list) or len(ts) != n or not set(map(type, ts)) <= _NUMBER_TYPES:
        raise BadBatch("ts", "ts must be a list of numbers, one per line")
    if not all(map(math.isfinite, ts)):  # NaN / Infinity parse as floats; no reader could take them back
        raise BadBatch("ts", "ts must be finite numbers")
    if not isinstance(streams, str) or len(streams) != n or not set(streams) <= _CODE_STREAM.keys():
        raise BadBatch("streams", "streams must be a string of 'o'/'e'/'s', one per line")
    if not set(map(type, lines)) <= _STR_TYPE:
        raise BadBatch("lines", "lines must be strings")
    if not isinstance(partial, list) or not all(type(i) is int and 0 <= i < n for i in partial):
        raise BadBatch("partial", "partial must list line indexes")
    return LogBatch(epoch, first, ts, list(map(_CODE_STREAM.__getitem__, streams)), lines, partial)


__all__ = ["INT64_MAX", "MAX_LOG_BATCH", "STREAMS", "STREAM_CODE", "BadBatch", "ClaimSpec", "ExitReport",
           "LogBatch", "PollAnswer", "decode_logs", "encode_logs"]
