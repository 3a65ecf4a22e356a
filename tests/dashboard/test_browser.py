"""The dashboard in a real headless Chromium, against the real ``sequence up``: sign in,
watch a strategy deployed with the CLI appear and turn running without a reload, follow its
logs live, stop it from the page, see a paper fill arrive — and take the screenshots
docs/dashboard.md shows."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import Platform
from tests.dashboard.conftest import TICKER, VIEWPORT, sign_in, strategy_folder

pytestmark = pytest.mark.slow

WAIT_MS = 60_000  # a failsafe: only reached when something is broken


def _row(page: Any, name: str) -> Any:
    return page.locator("#strategies tbody tr", has=page.get_by_role("link", name=name, exact=True))


def test_a_wrong_key_is_refused_with_a_clear_error_and_no_session(browser: Any, platform: Platform,
                                                                  shots: Path) -> None:
    deadline = time.monotonic() + 30  # `sequence up` says where it is (its banner follows the runner's start)
    while f"dashboard: {platform.url}/dashboard" not in platform.up_log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"dashboard: {platform.url}/dashboard" in platform.up_log()
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    page.goto(platform.url + "/dashboard")
    assert "/dashboard/login" in page.url  # not signed in: the sign-in page
    page.get_by_label("API key").fill("seq_live_" + "x" * 40)
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    alert.wait_for(timeout=WAIT_MS)
    assert "not valid" in alert.inner_text()
    page.screenshot(path=str(shots / "dashboard-login.png"))
    assert ctx.cookies() == []  # no session of any kind
    page.goto(platform.url + "/dashboard")
    assert "/dashboard/login" in page.url
    ctx.close()


def test_deploy_watch_it_run_follow_its_logs_and_stop_it_from_the_page(
        browser: Any, platform: Platform, tmp_path: Path, shots: Path) -> None:
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, platform)
    # The session cookie is HttpOnly and SameSite=Strict; nothing readable by scripts holds the key.
    (cookie,) = ctx.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert platform.api_key not in json.dumps(ctx.storage_state())
    assert page.evaluate("document.cookie") == ""
    assert platform.api_key not in page.content()
    page.locator("#live[data-state=on]").wait_for(timeout=WAIT_MS)  # the stream is connected

    # Deploy with the CLI while the page is open: the row appears, then turns running.
    folder = strategy_folder(tmp_path, "ticker", TICKER)
    platform.deploy(folder)
    row = _row(page, "ticker")
    row.wait_for(timeout=WAIT_MS)
    row.locator("[data-col=status] .status-running").wait_for(timeout=WAIT_MS)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
    page.wait_for_function("() => document.querySelector('#strategies [data-col=usage]').textContent.includes('MB')",
                           timeout=WAIT_MS)  # memory and CPU of the run, from the runner's heartbeats
    page.screenshot(path=str(shots / "dashboard-strategies.png"))

    # Its page: the log view follows new lines as they arrive.
    row.get_by_role("link", name="ticker").click()
    page.wait_for_url(re.compile(r".*/dashboard/strategies/.+"))
    try:
        page.locator("#live[data-state=on]").wait_for(timeout=WAIT_MS)
    except Exception:
        raise AssertionError(f"{errors}\n{platform.up_log()}") from None
    page.wait_for_function("() => window.seqDash.logView && window.seqDash.logView.stats.lastSeq > 0", timeout=WAIT_MS)
    first = page.evaluate("window.seqDash.logView.stats.lastSeq")
    page.wait_for_function(f"() => window.seqDash.logView.stats.lastSeq >= {first + 20}", timeout=WAIT_MS)
    assert page.evaluate("window.seqDash.logView.stats.received") > 0  # live lines, not a reload
    last = page.evaluate("window.seqDash.logView.stats.lastSeq")
    view = page.get_by_role("log")
    page.wait_for_function("(n) => document.querySelector('#log-view .log-rows').textContent.includes('tick ' + n)",
                           arg=last - 1, timeout=WAIT_MS)  # the newest lines are the ones on screen

    # Filter by stream and text: only stderr lines are drawn.
    page.get_by_label("Stream").select_option("stderr")
    page.wait_for_function("() => document.getElementById('log-count').textContent.includes('matching')", timeout=WAIT_MS)
    shown = [t for t in view.locator(".log-row:not([hidden])").all_inner_texts() if t.strip()]
    assert shown and all("oops" in t for t in shown), shown
    page.get_by_label("Stream").select_option("")
    # The count drops "matching" once the stream filter is cleared; only then is a later
    # "matching" the text filter's (the stale label raced the debounced filter once in CI).
    page.wait_for_function("() => !document.getElementById('log-count').textContent.includes('matching')",
                           timeout=WAIT_MS)
    page.get_by_label("Filter").fill("tick 1")
    page.wait_for_function("() => document.getElementById('log-count').textContent.includes('matching')", timeout=WAIT_MS)
    shown = [t for t in view.locator(".log-row:not([hidden])").all_inner_texts() if t.strip()]
    assert shown and all("tick 1" in t for t in shown), shown
    page.get_by_label("Filter").fill("")

    # Pause: the view stops moving while lines keep arriving; resume catches up.
    page.get_by_role("button", name="Pause").click()
    page.wait_for_function("() => document.getElementById('log-count').textContent.includes('paused')", timeout=WAIT_MS)
    page.get_by_role("button", name="Resume").click()
    page.wait_for_function("() => !document.getElementById('log-count').textContent.includes('paused')", timeout=WAIT_MS)
    page.screenshot(path=str(shots / "dashboard-strategy.png"))

    # Stop it from the page, with the confirmation.
    dialogs: list[str] = []

    def accept(d: Any) -> None:
        dialogs.append(d.message)
        d.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Stop").click()
    page.locator("#status.status-stopped").wait_for(timeout=WAIT_MS)
    assert dialogs and "Stop ticker?" in dialogs[0]
    # The runs table reloads by itself with the run's exit reason.
    page.locator("#runs tbody tr", has_text="SIGTERM").wait_for(timeout=WAIT_MS)
    assert platform.inspect("ticker")["status"] == "stopped"
    assert not errors, errors
    ctx.close()


def test_a_paper_fill_appears_in_fills_and_the_trading_pages_render(
        browser: Any, platform: Platform, shots: Path) -> None:
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, platform, path="/dashboard/trading")
    page.locator("#live[data-state=on]").wait_for(timeout=WAIT_MS)
    before = page.locator("#fills tbody tr").count()

    with httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {platform.api_key}"}) as api:
        ask = api.get("/v1/quotes", params={"symbol": "BTC-USD"}).json()["nbbo"]["ask"]
        r = api.post("/v1/graphs", json={"nodes": [{"node_id": "take", "symbol": "BTC-USD", "side": "buy",
                                                    "qty": 0.001, "venue": "coinbase",
                                                    "limit_price": float(int(ask * 1.01)), "urgency": "high"}],
                                         "edges": [], "sandbox": True})
        assert r.status_code == 201, r.text
        gid = r.json()["graph_id"]
    page.wait_for_function(f"() => document.querySelectorAll('#fills tbody tr').length > {before}", timeout=WAIT_MS)
    newest = page.locator("#fills tbody tr").first.inner_text()
    assert "BTC-USD" in newest and "buy" in newest and "paper" in newest, newest
    # The graph's node turned filled on the page, and positions reloaded (htmx) with the symbol.
    page.locator(f'details.graph[data-gid="{gid}"] .status-n-filled').wait_for(timeout=WAIT_MS)
    page.locator("#positions", has_text="BTC-USD").wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(800)  # let the P&L chart redraw for the screenshot
    page.screenshot(path=str(shots / "dashboard-trading.png"), full_page=False)

    # Markets: search the catalogue (htmx), open a book with its depth chart, live.
    page.get_by_role("link", name="Markets").click()
    page.get_by_label("Search").fill("BTC-USD")
    page.locator("#markets tbody tr", has_text="BTC-USD").first.wait_for(timeout=WAIT_MS)
    page.screenshot(path=str(shots / "dashboard-markets.png"))
    page.goto(platform.url + "/dashboard/book?symbol=BTC-USD")
    page.wait_for_function("() => (window.seqDash.books || 0) > 1 && (window.seqDash.prices || 0) > 1", timeout=WAIT_MS)
    page.locator("#depth-chart canvas").wait_for(timeout=WAIT_MS)
    page.screenshot(path=str(shots / "dashboard-book.png"))

    # Venues and health: each venue's mode and state, the runner and its load.
    page.get_by_role("link", name="Venues & health").click()
    page.locator("#venues tbody tr", has_text="coinbase").wait_for(timeout=WAIT_MS)
    page.locator("#runners tbody tr", has_text="connected").wait_for(timeout=WAIT_MS)
    page.screenshot(path=str(shots / "dashboard-venues.png"))
    assert not errors, errors
    ctx.close()


def test_the_pages_fit_a_phone_screen(browser: Any, platform: Platform, shots: Path) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    sign_in(page, platform)
    for path in ("/dashboard", "/dashboard/trading", "/dashboard/venues", "/dashboard/markets"):
        page.goto(platform.url + path)
        # Nothing but the tables' own scrolling boxes is wider than the screen.
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, (path, overflow)
    page.goto(platform.url + "/dashboard")
    page.screenshot(path=str(shots / "dashboard-phone.png"))
    ctx.close()


def test_keyboard_reaches_every_control_and_sign_out_ends_the_session(browser: Any, platform: Platform) -> None:
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    sign_in(page, platform, path="/dashboard/trading")
    seen = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        seen.add(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    for control in ("btn-kill", "btn-release", "risk-max_order_notional", "Sign out"):
        assert control in seen, (control, seen)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/dashboard/login.*"))
    assert ctx.cookies() == [] or all(c["name"] != "seq_session" or not c["value"] for c in ctx.cookies())
    page.goto(platform.url + "/dashboard")
    assert "/dashboard/login" in page.url
    ctx.close()


UNLABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
  .filter((el) => !((el.labels && el.labels.length) || el.getAttribute('aria-label') ||
                    (el.tagName === 'BUTTON' && el.textContent.trim())))
  .map((el) => el.outerHTML.slice(0, 120))"""


def test_every_control_has_a_label_and_every_page_a_heading(browser: Any, platform: Platform) -> None:
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    page.goto(platform.url + "/dashboard/login")
    assert page.evaluate(UNLABELLED) == []
    sign_in(page, platform)
    with platform.http() as api:
        rows = api.get("/v1/strategies").json()["strategies"]
    sid = rows[0]["strategy_id"] if rows else None
    paths = ["/dashboard", "/dashboard/trading", "/dashboard/markets", "/dashboard/venues",
             "/dashboard/book?symbol=BTC-USD"] + ([f"/dashboard/strategies/{sid}"] if sid else [])
    for path in paths:
        page.goto(platform.url + path)
        assert page.evaluate(UNLABELLED) == [], path
        assert page.locator("h1").count() == 1, path
        assert page.evaluate("() => document.documentElement.lang") == "en"
    ctx.close()


def test_the_kill_switch_and_risk_limits_from_the_page(browser: Any, platform: Platform) -> None:
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    sign_in(page, platform, path="/dashboard/trading")
    page.on("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Engage kill switch").click()
    page.locator("#kill-state", has_text="engaged since").wait_for(timeout=WAIT_MS)
    with platform.http() as api:
        assert api.get("/v1/kill").json()["engaged"]
        page.get_by_role("button", name="Release").click()
        page.locator("#kill-state", has_text="not engaged").wait_for(timeout=WAIT_MS)
        assert api.get("/v1/kill").json()["engaged"] == []
        page.get_by_label("max order notional").fill("250")
        page.get_by_role("button", name="Save limits").click()
        page.locator("#risk-flash", has_text="saved").wait_for(timeout=WAIT_MS)
        assert api.get("/v1/risk").json()["limits"]["max_order_notional"] == 250.0
        page.get_by_label("max order notional").fill("lots")
        page.get_by_role("button", name="Save limits").click()
        page.locator("#risk-flash [role=alert]", has_text="must be a number").wait_for(timeout=WAIT_MS)
        api.delete("/v1/risk")
    ctx.close()
