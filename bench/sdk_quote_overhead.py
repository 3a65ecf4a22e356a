"""How much does the SDK add to a quote() call?

Runs a keep-alive HTTP/1.1 server (stdlib, fixed quote JSON) in a separate
process, then times sequential ``Sequence.quote()`` calls against a raw
``http.client`` keep-alive loop doing the same GET + ``json.loads``.
Rounds alternate between the two so drift (CPU frequency, other load) hits
both alike. Prints a table and writes bench/results/sdk_quote_overhead.json.

    .venv/bin/python bench/sdk_quote_overhead.py [--calls 1000] [--rounds 7] [--check]

Target: SDK median per-call overhead <= 0.5 ms above raw. ``--check`` exits 1
if it is missed.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sequence_markets import Sequence, __version__  # noqa: E402

TARGET_US = 500.0
SYMBOL = "BTC-USD"
PATH = f"/v1/quotes?symbol={SYMBOL}&depth=1"
API_KEY = "seq_test_bench"

SERVER = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUOTE = json.dumps({
    "symbol": "BTC-USD", "venue": "coinbase", "instrument_type": "spot",
    "tick_size": 0.01, "ts": 1700000000.123,
    "nbbo": {"bid": 64000.01, "ask": 64000.02, "mid": 64000.015,
             "bid_size": 1.25, "ask_size": 0.75},
    "bids": [{"price": 64000.01, "size": 1.25}],
    "asks": [{"price": 64000.02, "size": 0.75}],
}).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(QUOTE)).encode() + b"\r\n\r\n" + QUOTE
)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.wfile.write(RESPONSE)  # one write: no Nagle/delayed-ACK stalls
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def time_sdk(seq: Sequence, calls: int) -> list[float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        quote = seq.quote(SYMBOL, depth=1)
        samples.append((clock() - start) / 1000.0)
    assert quote["nbbo"]["bid"] == 64000.01
    return samples


def time_raw(conn: http.client.HTTPConnection, calls: int) -> list[float]:
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        conn.request("GET", PATH, headers=headers)
        response = conn.getresponse()
        quote = json.loads(response.read())
        samples.append((clock() - start) / 1000.0)
    assert response.status == 200 and quote["nbbo"]["bid"] == 64000.01
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(rounds: list[list[float]]) -> dict[str, Any]:
    every = [s for r in rounds for s in r]
    return {
        "median_us": statistics.median(every),
        "p99_us": percentile(every, 0.99),
        "mean_us": statistics.fmean(every),
        "round_medians_us": [statistics.median(r) for r in rounds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per client (default 7)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls first")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "sdk_quote_overhead.json"
    )
    args = parser.parse_args(argv)

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        base_url = f"http://127.0.0.1:{port}"
        raw = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with Sequence(API_KEY, base_url) as seq:
            time_sdk(seq, args.warmup)
            time_raw(raw, args.warmup)
            sdk_rounds: list[list[float]] = []
            raw_rounds: list[list[float]] = []
            for n in range(args.rounds):
                # Alternate who goes first so neither always runs "warmer".
                if n % 2 == 0:
                    sdk_rounds.append(time_sdk(seq, args.calls))
                    raw_rounds.append(time_raw(raw, args.calls))
                else:
                    raw_rounds.append(time_raw(raw, args.calls))
                    sdk_rounds.append(time_sdk(seq, args.calls))
        raw.close()
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()

    sdk, rawc = summarize(sdk_rounds), summarize(raw_rounds)
    overhead = sdk["median_us"] - rawc["median_us"]
    ratio = sdk["median_us"] / rawc["median_us"]
    passed = overhead <= TARGET_US

    print(
        f"quote() over keep-alive HTTP/1.1: {args.rounds} rounds x {args.calls} calls, "
        f"Python {platform.python_version()}"
    )
    print()
    print(f"| {'client':<18} | {'median µs':>10} | {'p99 µs':>10} | {'mean µs':>10} |")
    print(f"|{'-' * 20}|{'-' * 12}|{'-' * 12}|{'-' * 12}|")
    for label, row in (("raw http.client", rawc), ("sequence_markets", sdk)):
        print(
            f"| {label:<18} | {row['median_us']:>10.1f} | {row['p99_us']:>10.1f} | "
            f"{row['mean_us']:>10.1f} |"
        )
    print()
    print(f"ratio (sdk / raw median): {ratio:.2f}x")
    print(
        f"overhead per call (median): {overhead:.1f} µs "
        f"(target <= {TARGET_US:.0f} µs: {'PASS' if passed else 'FAIL'})"
    )

    result: dict[str, Any] = {
        "benchmark": "sdk_quote_overhead",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sdk_version": __version__,
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "raw": rawc,
        "sdk": sdk,
        "ratio": ratio,
        "overhead_us": overhead,
        "target_us": TARGET_US,
        "pass": passed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
