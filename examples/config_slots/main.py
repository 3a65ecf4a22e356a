"""Read all three config slots: env, secrets, manifest.

Deploy with the secrets file (kept out of the artifact and out of git):

    cp secrets.json.example secrets.json        # then edit the values
    sequence strategy deploy . --secrets-file secrets.json --start
    sequence strategy logs config-slots --follow

By the time the code runs, [hosted.env] and secrets are both plain
environment variables (a secret wins over a same-named env entry); the
manifest is a JSON file you load yourself. SEQUENCE_* names are reserved:
the runner sets them and nothing can shadow them.

Never log a secret's value. This example logs that it is present and its
length, nothing more.

Log records: boot, env, secrets, manifest, quote (one per manifest market), done.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sequence_markets import Sequence, SequenceError

SECRET_NAMES = ("SLACK_WEBHOOK", "GCP_CALLBACK_TOKEN")


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str), flush=True)


def main() -> int:
    log("boot", strategy_id=os.environ.get("SEQUENCE_STRATEGY_ID"), run_id=os.environ.get("SEQUENCE_RUN_ID"),
        client_id=os.environ.get("SEQUENCE_CLIENT_ID"), sandbox=os.environ.get("SEQUENCE_IS_SANDBOX"))

    # 1. [hosted.env] (+ --env overrides): plain strings.
    log_level = os.environ.get("LOG_LEVEL", "info")
    threshold = int(os.environ.get("THRESHOLD", "0"))
    # GREETING is also a secret when secrets.json is used: the secret wins, and
    # printing it shows "***" — the platform masks secret values in your logs.
    log("env", LOG_LEVEL=log_level, THRESHOLD=threshold, GREETING=os.environ.get("GREETING"),
        GREETING_is_the_env_value=os.environ.get("GREETING") == "from [hosted.env]")

    # 2. secrets ([hosted.secrets] + --secrets-file): env vars too, sealed at rest.
    log("secrets", present={n: n in os.environ for n in SECRET_NAMES},
        lengths={n: len(os.environ[n]) for n in SECRET_NAMES if n in os.environ})

    # 3. the manifest: structured values, already lists and objects.
    path = os.environ["SEQUENCE_STRATEGY_MANIFEST"]
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    pairs = manifest.get("PRED_ARB_PAIRS_JSON", [])  # from [hosted.env]: already a list, not a string
    log("manifest", path=path, keys=sorted(manifest), markets=manifest.get("markets"),
        limits=manifest.get("limits"), pairs=pairs)

    seq = Sequence()
    for symbol in manifest.get("markets", []):
        q = seq.quote(symbol)
        log("quote", symbol=symbol, bid=q["nbbo"]["bid"], ask=q["nbbo"]["ask"])
    log("done", markets=len(manifest.get("markets", [])))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (SequenceError, OSError, KeyError, ValueError) as exc:
        log("crash", error=f"{type(exc).__name__}: {exc}")
        sys.exit(1)
