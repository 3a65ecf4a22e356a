"""Benchmark: the web dashboard — first page load with 500 strategies, and the log view
following a strategy that prints 10,000 lines a second.

Everything is real: `sequence up` (coordinator, simulated venues, a sandboxed runner) in a
subprocess, as in tests/acceptance/, and Debian's headless `chromium` driven by Playwright.

1. **First page load with 500 strategies.** 500 strategies are deployed through the API
   (a tiny artifact, not started: 500 processes would measure the machine, not the page).
   `server_ms` is the whole answer of `GET /dashboard` (the table rendered by the server),
   read with an HTTP client holding a session; in the browser, a fresh page per run:
   `response_ms` (the HTML fully received), `dom_ms` (DOMContentLoaded), `load_ms` (the load event: CSS, htmx, the script) and
   `live_ms` (until the `strategies` snapshot over `/v1/stream` has been applied to the
   table), each from the start of navigation.
2. **Log view at 10,000 lines/s for 30 s.** A strategy prints 100-line bursts every 10 ms
   (the runner's log rate limit is raised to 20,000 lines/s so that none is dropped); the
   strategy page is open from before its start. `lag` is, for every line the page drew as
   it arrived, the wall time it was drawn minus the time the runner captured it (so it
   includes the runner's batching and the store: stricter than "behind the stored
   lines"). `input` is the latency of a key typed into the filter box once a second
   during the run (`keydown` to the start of the next frame, measured in the page),
   and `event_max_ms` the longest Event Timing entry (input delay + handlers +
   presentation) Chromium recorded for those keys.

    .venv/bin/python bench/dashboard.py [--strategies 500] [--runs 5] [--seconds 30] [--rate 10000]

Prints a table and writes bench/results/dashboard.json. The medians are the figures; the
load average says how busy the (2-core) machine was.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bench._platform import host, table, write  # noqa: E402
from bench._procs import pct  # noqa: E402
from tests.acceptance.harness import Platform  # noqa: E402

CHROMIUM = "/usr/bin/chromium"

IDLE = "import time\ntime.sleep(3600)\n"


def chatty(rate: int, seconds: float) -> str:
    """A strategy printing *rate* lines a second in 100-line bursts, for *seconds*."""
    return f"""\
import sys, time
rate, seconds, burst = {rate}, {seconds}, 100
start = time.monotonic()
n = 0
while True:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    due = int(elapsed * rate) + burst
    if n < due:
        sys.stdout.write("".join(f"line {{n + i + 1}} of the dashboard bench, some padding text\\n"
                                 for i in range(burst)))
        sys.stdout.flush()
        n += burst
    else:
        time.sleep(0.002)
print(f"done {{n}}", flush=True)
time.sleep(3600)
"""


def artifact(code: str) -> tuple[str, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = code.encode()
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return base64.b64encode(raw).decode(), hashlib.sha256(raw).hexdigest()


def deploy(api: httpx.Client, name: str, code: str, start: bool = False) -> dict[str, Any]:
    b64, sha = artifact(code)
    r = api.post("/v1/strategies", json={"name": name, "runtime": "python", "entrypoint": "main.py",
                                         "artifact_base64": b64, "artifact_sha256": sha, "start": start})
    r.raise_for_status()
    return dict(r.json())


def session(platform: Platform) -> httpx.Client:
    c = httpx.Client(base_url=platform.url, timeout=60, follow_redirects=False)
    r = c.post("/dashboard/login", data={"api_key": platform.api_key})
    assert r.status_code == 303, r.text
    return c


def browser_context(browser: Any, platform: Platform, token: str) -> Any:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_cookies([{"name": "seq_session", "value": token, "url": platform.url}])
    return ctx


# -- 1. first page load ------------------------------------------------------------------------

def page_load(platform: Platform, browser: Any, n_strategies: int, runs: int) -> dict[str, Any]:
    with httpx.Client(base_url=platform.url, timeout=60,
                      headers={"Authorization": f"Bearer {platform.api_key}"}) as api:
        t0 = time.perf_counter()
        for i in range(n_strategies):
            deploy(api, f"bench-{i:03d}", IDLE)
        setup_s = time.perf_counter() - t0
    c = session(platform)
    server: list[float] = []
    size = 0
    for _ in range(runs + 1):
        t = time.perf_counter()
        r = c.get("/dashboard")
        server.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and r.text.count("data-sid=") >= n_strategies
        size = len(r.content)
    server = server[1:]  # the first warms the templates
    response, dom, load, live = [], [], [], []
    token = c.cookies["seq_session"]
    for _ in range(runs):
        ctx = browser_context(browser, platform, token)
        page = ctx.new_page()
        page.goto(platform.url + "/dashboard")
        page.wait_for_function("() => (window.seqDash.updates || 0) >= 1", timeout=60_000)
        nav = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                            " return {response: n.responseEnd, dom: n.domContentLoadedEventEnd,"
                            " load: n.loadEventEnd, live: window.seqDash.liveAt}; }")
        rows = page.locator("#strategies tbody tr").count()
        assert rows >= n_strategies, rows
        response.append(nav["response"])
        dom.append(nav["dom"])
        load.append(nav["load"])
        live.append(nav["live"])
        ctx.close()
    c.close()
    return {"strategies": n_strategies, "setup_s": round(setup_s, 1), "html_bytes": size,
            "server_ms": _stats(server), "response_ms": _stats(response), "dom_ms": _stats(dom), "load_ms": _stats(load), "live_ms": _stats(live)}


# -- 2. the log view at 10,000 lines/s ------------------------------------------------------------

INPUT_PROBE = """() => {
  const box = document.getElementById('log-filter');
  window.__inputLat = [];
  window.__events = [];
  box.addEventListener('keydown', (e) => {
    const t0 = e.timeStamp;
    requestAnimationFrame(() => window.__inputLat.push(performance.now() - t0));
  });
  try {
    new PerformanceObserver((list) => {
      for (const en of list.getEntries()) if (en.name === 'keydown' || en.name === 'keyup' || en.name === 'keypress')
        window.__events.push(en.duration);
    }).observe({type: 'event', durationThreshold: 16, buffered: true});
  } catch (e) { /* no Event Timing */ }
}"""


def log_view(platform: Platform, browser: Any, rate: int, seconds: float) -> dict[str, Any]:
    with httpx.Client(base_url=platform.url, timeout=60,
                      headers={"Authorization": f"Bearer {platform.api_key}"}) as api:
        s = deploy(api, "chatty-bench", chatty(rate, seconds))
        sid = s["strategy_id"]
        c = session(platform)
        ctx = browser_context(browser, platform, c.cookies["seq_session"])
        page = ctx.new_page()
        page.goto(f"{platform.url}/dashboard/strategies/{sid}")
        page.locator("#live[data-state=on]").wait_for(timeout=60_000)
        page.evaluate(INPUT_PROBE)
        api.post(f"/v1/strategies/{sid}/start").raise_for_status()
        page.wait_for_function("() => window.seqDash.logView.stats.lastSeq > 0", timeout=60_000)
        t_start = time.monotonic()
        box = page.get_by_label("Filter")
        keys = "line"
        k = 0
        # A key a second into the filter box ("line" matches every line, so the view keeps
        # following all of them), then clear it, while the lines pour in.
        while time.monotonic() - t_start < seconds:
            time.sleep(1.0)
            if k < len(keys):
                box.press(keys[k])
                k += 1
            else:
                box.press("Control+a")
                box.press("Backspace")
                k = 0
        expected = int(seconds * rate) // 100 * 100
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = page.evaluate("() => window.seqDash.logView.stats.lastSeq")
            if got >= expected:
                break
            time.sleep(0.2)
        stats = page.evaluate("() => { const s = window.seqDash.logView.stats; return {received: s.received,"
                              " lastSeq: s.lastSeq, frames: s.frames, lags: s.lags}; }")
        lat = page.evaluate("() => window.__inputLat")
        events = page.evaluate("() => window.__events")
        run = api.get(f"/v1/strategies/{sid}/runs").json()["runs"][0]
        ctx.close()
        c.close()
        api.post(f"/v1/strategies/{sid}/stop")
    lags_ms = [x * 1000 for x in stats["lags"]]
    return {"rate": rate, "seconds": seconds, "stored_lines": run["log_lines"], "dropped_lines": run["dropped_lines"],
            "last_seq_shown": stats["lastSeq"], "received": stats["received"], "frames": stats["frames"], "lag_ms": _stats(lags_ms),
            "lag_samples": len(lags_ms), "input_ms": _stats(lat), "input_samples": len(lat),
            "event_max_ms": round(max(events), 1) if events else None, "slow_events": len(events)}


def _stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"median": None, "p99": None, "max": None}
    return {"median": round(statistics.median(xs), 1), "p99": round(pct(xs, 0.99), 1), "max": round(max(xs), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", type=int, default=500)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=10_000)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="sequence-bench-dashboard-"))
    platform = Platform(root / "platform")
    platform.env["SEQUENCE_LOG_RATE_LINES"] = str(max(20_000, 2 * args.rate))
    platform.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                load = page_load(platform, browser, args.strategies, args.runs)
                logs = log_view(platform, browser, args.rate, args.seconds)
            finally:
                browser.close()
    finally:
        platform.close()
    machine = host()

    table(f"First page load, {load['strategies']} strategies ({load['html_bytes']:,} bytes of HTML; "
          f"median of {args.runs})",
          [(name, str(load[key]["median"]), str(load[key]["p99"]))
           for name, key in (("server: GET /dashboard", "server_ms"), ("browser: response received", "response_ms"),
                             ("browser: DOMContentLoaded", "dom_ms"),
                             ("browser: load event", "load_ms"), ("browser: live (snapshot applied)", "live_ms"))],
          ("what", "median ms", "max-ish (p99) ms"))
    table(f"Log view, {logs['rate']:,} lines/s for {logs['seconds']:.0f} s",
          [("lines stored / shown", f"{logs['stored_lines']:,} / {logs['last_seq_shown']:,}"),
           ("lines received by the page", f"{logs['received']:,}"),
           ("lag captured → drawn, median / p99 / max ms",
            f"{logs['lag_ms']['median']} / {logs['lag_ms']['p99']} / {logs['lag_ms']['max']}"),
           ("input latency keydown → next frame, median / p99 / max ms",
            f"{logs['input_ms']['median']} / {logs['input_ms']['p99']} / {logs['input_ms']['max']}"),
           ("longest key event (Event Timing) ms", str(logs["event_max_ms"])),
           ("frames drawn", f"{logs['frames']:,}")],
          ("what", "value"))
    print(f"\nload average {machine['loadavg']} on {machine['cpus']} CPUs")
    write("dashboard", {"host": machine, "page_load": load, "log_view": logs,
                        "settings": {"SEQUENCE_LOG_RATE_LINES": platform.env["SEQUENCE_LOG_RATE_LINES"]}})
    os.sync()


if __name__ == "__main__":
    main()
