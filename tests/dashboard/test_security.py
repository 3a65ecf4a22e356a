"""Attacks on the dashboard, against the real ``sequence up``: CSRF, cross-site WebSocket
hijacking, another client's data, wrong and run-scoped keys, the key leaking into pages,
cookies or logs, open redirects."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.acceptance.harness import Platform
from tests.dashboard.conftest import TICKER, csrf_of, session_client, strategy_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def victim(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running strategy of the local client, and a signed-in session of that client."""
    folder = strategy_folder(tmp_path_factory.mktemp("victim"), "victim", TICKER)
    sid = platform.deploy(folder)["strategy_id"]
    platform.wait_for("victim", lambda s: s["status"] == "running", "running")
    client = session_client(platform)
    try:
        yield {"sid": sid, "client": client, "csrf": csrf_of(client.get("/dashboard").text)}
    finally:
        client.close()
        platform.cli("strategy", "delete", "victim", "--yes", check=False)


def _ws_url(platform: Platform) -> str:
    return platform.url.replace("http://", "ws://") + "/v1/stream"


def test_a_state_changing_request_without_the_csrf_token_is_refused(platform: Platform,
                                                                    victim: dict[str, Any]) -> None:
    c: httpx.Client = victim["client"]
    stop = f"/dashboard/strategies/{victim['sid']}/stop"
    no_token = c.post(stop)
    assert no_token.status_code == 403 and no_token.json()["error"]["details"]["field"] == "csrf_token"
    wrong = c.post(stop, data={"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    other_session = session_client(platform)  # a token of another session of the same key
    try:
        assert c.post(stop, data={"csrf_token": csrf_of(other_session.get("/dashboard").text)}).status_code == 403
    finally:
        other_session.close()
    # A right token from a page of another site (a forged form): refused on its Origin.
    forged = c.post(stop, data={"csrf_token": victim["csrf"]}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403
    # Sign-out and the kill switch are state-changing too.
    assert c.post("/dashboard/kill").status_code == 403
    assert c.post("/dashboard/risk", data={"max_order_notional": "1"}).status_code == 403
    assert c.post("/dashboard/logout").status_code == 403
    assert platform.inspect("victim")["desired_state"] == "running"  # nothing happened
    # Without a session at all: 401, whatever the token.
    anon = httpx.post(platform.url + stop, data={"csrf_token": victim["csrf"]})
    assert anon.status_code == 401
    for path in ("logs.json", "logs.ndjson"):
        assert httpx.get(f"{platform.url}/dashboard/strategies/{victim['sid']}/{path}").status_code == 401


def test_cross_site_websocket_hijacking_with_the_session_cookie_is_refused(platform: Platform,
                                                                          victim: dict[str, Any]) -> None:
    cookie = f"seq_session={victim['client'].cookies['seq_session']}"
    for origin in ("http://evil.example", "null", None, platform.url.replace("127.0.0.1", "localhost")):
        headers = {"Cookie": cookie} | ({"Origin": origin} if origin else {})
        with pytest.raises(InvalidStatus) as info:
            connect(_ws_url(platform), additional_headers=headers, open_timeout=10)
        assert info.value.response.status_code == 401, origin
    # From the dashboard's own origin the cookie works, for this client's channels only.
    with connect(_ws_url(platform), additional_headers={"Cookie": cookie, "Origin": platform.url},
                 open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["strategies"]}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "subscribed", "channels": ["strategies"]}
        snap = json.loads(ws.recv(timeout=10))
        assert snap["channel"] == "strategies" and snap["data"]["snapshot"] is True
        assert victim["sid"] in {s["strategy_id"] for s in snap["data"]["strategies"]}


def test_another_client_sees_none_of_it(platform: Platform, victim: dict[str, Any]) -> None:
    other = platform.cli_json("admin", "client", "create", "mallory", "--data-dir", str(platform.data_dir))
    c = session_client(platform, other["key"])
    try:
        page = c.get("/dashboard")
        assert page.status_code == 200 and "victim" not in page.text and victim["sid"] not in page.text
        assert c.get(f"/dashboard/strategies/{victim['sid']}").status_code == 404
        assert c.get("/dashboard/strategies/victim").status_code == 404  # by name either
        assert c.get(f"/dashboard/strategies/{victim['sid']}/logs.json").status_code == 404
        assert c.get(f"/dashboard/strategies/{victim['sid']}/logs.ndjson").status_code == 404
        csrf = csrf_of(page.text)
        for verb in ("stop", "delete"):
            r = c.post(f"/dashboard/strategies/{victim['sid']}/{verb}", data={"csrf_token": csrf})
            assert r.status_code == 404, (verb, r.text)
        assert platform.inspect("victim")["desired_state"] == "running"
        trading = c.get("/dashboard/trading").text
        assert "victim" not in trading
        cookie = f"seq_session={c.cookies['seq_session']}"
        with connect(_ws_url(platform), additional_headers={"Cookie": cookie, "Origin": platform.url},
                     open_timeout=10) as ws:
            ws.send(json.dumps({"op": "subscribe", "channels": [f"logs:{victim['sid']}", "strategies"]}))
            got = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
            errors = [m for m in got if m.get("type") == "error"]
            assert errors and errors[0]["code"] == "not_found", got
            snap = next(m for m in got if m.get("channel") == "strategies")
            assert snap["data"]["strategies"] == []
            # Changes to the victim's strategy never reach this client's channel.
            platform.cli("strategy", "stop", "victim")
            platform.cli("strategy", "start", "victim")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    msg = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                assert victim["sid"] not in json.dumps(msg), msg
    finally:
        c.close()


def test_wrong_and_run_scoped_keys_get_no_session(platform: Platform, victim: dict[str, Any],
                                                  tmp_path: Path) -> None:
    with httpx.Client(base_url=platform.url, follow_redirects=False) as c:
        for key in ("seq_live_nope", "", "x" * 5000, "seq_live_\x00", platform.api_key + " extra"):
            r = c.post("/dashboard/login", data={"api_key": key})
            assert r.status_code in (400, 401), (key[:20], r.status_code)
            assert "set-cookie" not in r.headers
        revoked = platform.cli_json("keys", "create", "--name", "short-lived")
        platform.cli("keys", "revoke", revoked["key_id"])
        r = c.post("/dashboard/login", data={"api_key": revoked["key"]})
        assert r.status_code == 401 and "set-cookie" not in r.headers
    # A strategy's run-scoped key (what a hostile strategy holds) cannot sign in. (It prints
    # the key reversed: the runner masks the key itself in logs.)
    folder = strategy_folder(tmp_path, "leaker", "import os, time\n"
                             "print('KEY', os.environ['SEQUENCE_API_KEY'][::-1], flush=True)\ntime.sleep(60)\n")
    platform.deploy(folder)
    key = _leaked_key(platform)
    with httpx.Client(base_url=platform.url, follow_redirects=False) as c:
        r = c.post("/dashboard/login", data={"api_key": key})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        assert "run-scoped" in r.text
    platform.cli("strategy", "delete", "leaker", "--yes")


def _leaked_key(platform: Platform) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = platform.cli("strategy", "logs", "leaker", "--raw", check=False).stdout
        m = re.search(r"KEY (\S+)", out)
        if m:
            return m.group(1)[::-1]
        time.sleep(0.3)
    raise AssertionError(f"the strategy printed no key:\n{platform.up_log()}")


def test_the_key_never_reaches_a_page_a_cookie_or_the_log(platform: Platform, victim: dict[str, Any]) -> None:
    c: httpx.Client = victim["client"]
    key = platform.api_key
    for path in ("/dashboard", f"/dashboard/strategies/{victim['sid']}", "/dashboard/trading",
                 "/dashboard/markets", "/dashboard/venues", f"/dashboard/strategies/{victim['sid']}/logs.json",
                 "/dashboard/book?symbol=BTC-USD", "/dashboard/trading/pnl.json"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert key not in r.text and key not in str(r.headers), path
        if r.headers["content-type"].startswith("text/html"):
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["x-frame-options"] == "DENY"
    login = httpx.post(platform.url + "/dashboard/login", data={"api_key": key})
    cookie = login.headers["set-cookie"]
    assert key not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert key not in platform.log_path.read_text(errors="replace")


def test_sign_in_redirects_only_to_the_dashboard(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, follow_redirects=False) as c:
        for target in ("https://evil.example/", "//evil.example", "/dashboard\\@evil", "/v1/keys",
                       "/dashboard/../v1/keys", "/dashboard/%2e%2e/v1/keys", "/dashboard/./../x", "/dashboardx",
                       # browsers read %2e as a dot: each of these is /v1/keys to them
                       "/dashboard/.%2e/v1/keys", "/dashboard/%2e./v1/keys", "/dashboard/%252e%252e/v1/keys",
                       "/dashboard/%2E%2e/v1/keys", "/dashboard/x/%2e%2e%2f%2e%2e/v1/keys", "/dashboard/%5c%5cevil"):
            r = c.post("/dashboard/login", data={"api_key": platform.api_key, "next": target})
            assert r.status_code == 303 and r.headers["location"] == "/dashboard", target
        r = c.post("/dashboard/login", data={"api_key": platform.api_key, "next": "/dashboard/venues"})
        assert r.headers["location"] == "/dashboard/venues"


def test_bad_input_is_a_4xx_naming_the_field(platform: Platform, victim: dict[str, Any]) -> None:
    c: httpx.Client = victim["client"]
    sid = victim["sid"]
    for path, field in ((f"/dashboard/strategies/{sid}/logs.json?after_seq=-1", "after_seq"),
                        (f"/dashboard/strategies/{sid}/logs.json?tail=abc", "tail"),
                        (f"/dashboard/strategies/{sid}/logs.json?limit=0", "limit"),
                        ("/dashboard/book", "symbol")):
        r = c.get(path)
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == field, (path, r.text)
    assert c.get("/dashboard/book?symbol=NOPE-NOPE").status_code == 404
    # A browser asking for a page gets a page saying so, not the JSON envelope.
    page = c.get(f"/dashboard/strategies/{'0' * 36}", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "strategy not found" in page.text and "<html" in page.text
    assert c.get("/dashboard/strategies/%00").status_code == 404
    r = c.post("/dashboard/risk", data={"csrf_token": victim["csrf"], "max_order_notional": "lots"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "max_order_notional"
    r = c.post("/dashboard/risk", data={"csrf_token": victim["csrf"], "max_order_notional": "nan"})
    assert r.status_code == 400


MARKUP = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script><b id=bold>bold</b>"
#: "Trojan Source": U+202E makes the rest read backwards ("pay 100 to mallory" shown as
#: "yrollam ot 001 yap"); the dashboard showed such lines and env values as the strategy chose.
BIDI = "balance ok \u202eyrollam ot 001 yap\u202c \x1b[2Jdone"
BIDI_SHOWN = "balance ok \\u202eyrollam ot 001 yap\\u202c \\x1b[2Jdone"


def test_markup_in_log_lines_and_env_is_shown_as_text(browser: Any, platform: Platform, tmp_path: Path) -> None:
    from tests.dashboard.conftest import VIEWPORT, sign_in

    code = f"import time\nprint({MARKUP!r}, flush=True)\nprint({BIDI!r}, flush=True)\ntime.sleep(60)\n"
    folder = strategy_folder(tmp_path, "markup", code)
    with (folder / "Sequence.toml").open("a") as f:  # TOML's own escapes: the file stays plain text
        f.write('\n[hosted.manifest]\nnote = "manifest \\u202e gnp.exe \\u2066 iso"\n')
    platform.deploy(folder, "--env", f"MARKUP={MARKUP}", "--env", f"BIDI={BIDI}")
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, platform, path="/dashboard/strategies/markup")
    page.wait_for_function("(m) => document.querySelector('#log-view .log-rows').textContent.includes(m)",
                           arg=MARKUP, timeout=60_000)
    assert page.locator("#bold").count() == 0  # neither the log line nor the env value became markup
    assert page.evaluate("() => window.__pwned") is None and not dialogs
    env_table = page.locator("#inspect-h + dl + h3 + table").inner_text()
    assert MARKUP in env_table
    # Bidi overrides and terminal controls are shown as escapes, in the live log view and the page.
    page.wait_for_function("(m) => document.querySelector('#log-view .log-rows').textContent.includes(m)",
                           arg=BIDI_SHOWN, timeout=60_000)
    shown = page.locator("#log-view .log-rows").inner_text()
    assert "\u202e" not in shown and "\x1b" not in shown
    assert BIDI_SHOWN in env_table and "\u202e" not in env_table
    html = page.content()  # the manifest too (its JSON was shown raw), and nothing else anywhere
    assert "manifest \\u202e gnp.exe \\u2066 iso" in html and "\u202e" not in html and "\u2066" not in html
    ctx.close()
    platform.cli("strategy", "delete", "markup", "--yes")


def test_an_open_stream_ends_when_its_key_is_revoked_or_its_session_ends(platform: Platform,
                                                                        victim: dict[str, Any]) -> None:
    """Keys and sessions were checked only when a stream opened: a revoked key's socket kept
    receiving, could subscribe to more, and a signed-out page kept following the logs."""
    with httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {platform.api_key}"}) as c:
        made = c.post("/v1/keys", json={"mode": "live", "name": "short-lived"}).json()
        with connect(_ws_url(platform), additional_headers={"Authorization": f"Bearer {made['key']}"},
                     open_timeout=10) as ws:
            ws.send(json.dumps({"op": "subscribe", "channels": ["prices:BTC-USD", "strategies"]}))
            assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
            assert c.delete(f"/v1/keys/{made['key_id']}").status_code == 200
            ended = None
            deadline = time.monotonic() + 20
            while ended is None and time.monotonic() < deadline:
                try:
                    msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                except ConnectionClosed as exc:  # the server closed it
                    ended = exc
                    break
                except TimeoutError:
                    break
                if msg.get("type") == "error":
                    assert msg["code"] == "unauthorized", msg
            assert ended is not None, "the revoked key's stream is still open"
            assert ws.close_code == 4401, ws.close_code
    # A signed-in page's socket and log feed end with its session.
    s = session_client(platform)
    try:
        token = csrf_of(s.get("/dashboard").text)
        cookie = f"seq_session={s.cookies['seq_session']}"
        with connect(_ws_url(platform), additional_headers={"Cookie": cookie, "Origin": platform.url},
                     open_timeout=10) as ws, \
                s.stream("GET", f"/dashboard/strategies/{victim['sid']}/logs.ndjson", params={"tail": 0}) as feed:
            ws.send(json.dumps({"op": "subscribe", "channels": ["strategies"]}))
            assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
            assert s.post("/dashboard/logout", data={"csrf_token": token}).status_code == 303
            deadline = time.monotonic() + 20
            with pytest.raises(ConnectionClosed):
                while time.monotonic() < deadline:
                    ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            assert ws.close_code == 4401, ws.close_code
            for _ in feed.iter_bytes():  # the feed ends (the victim runs on: only the session ended it)
                pass
        assert platform.inspect("victim")["status"] == "running"
    finally:
        s.close()
