"""pandas-signal: numpy and pandas in a hosted strategy, from its requirements.txt.

What it shows (docs/configuration.md, "Dependencies"):

* ``requirements.txt`` beside ``main.py``: ``sequence strategy deploy`` resolves it
  with pip for the runners' interpreter (wheels only), uploads the wheels once, and the
  runner puts them on ``sys.path`` inside the sandbox — no pip, no network at run time;
* prices from the live stream (``seq.stream``) into a pandas frame: mid, spread,
  a rolling mean and a z-score of the last mid.

Log records: boot (the versions imported), sample (rows collected), signal, done.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from sequence_markets import Sequence


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str), flush=True)


def main() -> int:
    symbol = os.environ.get("SIGNAL_SYMBOL", "BTC-USD")
    seconds = float(os.environ.get("SIGNAL_SECONDS", "6"))
    log("boot", numpy=np.__version__, pandas=pd.__version__, symbol=symbol)
    seq = Sequence()  # SEQUENCE_API_KEY and SEQUENCE_API_URL are injected by the runner
    rows = []
    for msg in seq.stream([f"prices:{symbol}"], duration_s=seconds, max_msgs=200):
        d = msg["data"]
        if d.get("bid") is not None and d.get("ask") is not None:
            rows.append({"t": time.time(), "bid": float(d["bid"]), "ask": float(d["ask"])})
    if not rows:
        q = seq.quote(symbol)["nbbo"]  # a quiet market: one quote still makes a row
        rows.append({"t": time.time(), "bid": float(q["bid"]), "ask": float(q["ask"])})
    df = pd.DataFrame(rows)
    df["mid"] = (df["bid"] + df["ask"]) / 2
    df["spread"] = df["ask"] - df["bid"]
    window = min(len(df), 10)
    mean = df["mid"].rolling(window, min_periods=1).mean()
    std = df["mid"].rolling(window, min_periods=1).std(ddof=0).fillna(0.0)
    last_std = float(std.iloc[-1])
    z = 0.0 if last_std == 0 else float((df["mid"].iloc[-1] - mean.iloc[-1]) / last_std)
    log("sample", rows=len(df), first_mid=round(float(df["mid"].iloc[0]), 4),
        last_mid=round(float(df["mid"].iloc[-1]), 4))
    log("signal", mean=round(float(mean.iloc[-1]), 4), std=round(last_std, 6), zscore=round(z, 3),
        mean_spread=round(float(np.mean(df["spread"].to_numpy())), 6),
        side="buy" if z < -1 else "sell" if z > 1 else "flat")
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
