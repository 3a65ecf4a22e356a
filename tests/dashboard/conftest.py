"""The dashboard against the real ``sequence up`` (tests/acceptance/harness.py) and a real
headless Chromium: Debian's ``chromium`` package (scripts/test-deps.sh installs it), driven by
Playwright with ``executable_path`` — ``playwright install`` is never needed.

Screenshots of the main pages are always taken; with ``SEQUENCE_DASHBOARD_SCREENSHOTS=docs/img``
they are written where docs/dashboard.md shows them (otherwise to a temporary folder).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import ROOT, Platform

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("dash") / "platform").start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/test-deps.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="package")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: docs/img with SEQUENCE_DASHBOARD_SCREENSHOTS=docs/img."""
    target = os.environ.get("SEQUENCE_DASHBOARD_SCREENSHOTS")
    if target:
        path = (ROOT / target) if not os.path.isabs(target) else Path(target)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


def sign_in(page: Any, platform: Platform, key: str | None = None, path: str = "/dashboard") -> None:
    """The sign-in form, as a person fills it."""
    page.goto(platform.url + path)
    page.get_by_label("API key").fill(key or platform.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/dashboard(?!/login).*"))


def session_client(platform: Platform, key: str | None = None) -> httpx.Client:
    """An HTTP client signed in through the form (holds the session cookie), no redirects."""
    c = httpx.Client(base_url=platform.url, timeout=30, follow_redirects=False)
    r = c.post("/dashboard/login", data={"api_key": key or platform.api_key, "next": "/dashboard"})
    assert r.status_code == 303, r.text
    return c


def csrf_of(html: str) -> str:
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def strategy_folder(root: Path, name: str, code: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(code)
    (folder / "Sequence.toml").write_text(
        f'[strategy]\nname = "{name}"\nruntime = "python"\n\n[hosted]\nentrypoint = "main.py"\n')
    return folder


#: A strategy that prints a numbered line every 50 ms, every fifth one on stderr.
TICKER = """\
import sys, time
i = 0
while True:
    i += 1
    out = sys.stderr if i % 5 == 0 else sys.stdout
    print(f"tick {i} {'oops' if out is sys.stderr else 'ok'}", file=out, flush=True)
    time.sleep(0.05)
"""
