"""/dashboard — the web dashboard the coordinator serves: server-rendered pages.

Every page reads through the same functions and store calls as the JSON
routes (:mod:`~sequence.api.routes.strategies`, ``trading``, ``controls``,
``keys``), scoped to the signed-in client; live parts subscribe to
``/v1/stream`` with the session cookie (``strategies``, ``logs:<id>``,
``fills``, ``graphs``, ``book:``/``prices:``). Sessions and CSRF are
:mod:`sequence.api.services.dashboard`'s. None of these routes is in
``/openapi.json``: they are pages, documented in docs/dashboard.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from sequence import __version__
from sequence.api import present
from sequence.api.errors import ApiError, bad_request, unavailable
from sequence.api.routes import controls, keys, strategies, trading
from sequence.api.services import dashboard as svc
from sequence.api.services import deploy, logs
from sequence.api.state import Core, core_of
from sequence.lifecycle import IllegalTransition
from sequence.market.errors import MarketError
from sequence.shown import escape_controls, escape_controls_keep_lines
from sequence.store.store import NotFound, Principal
from sequence.trading.risk import LIMIT_FIELDS

HERE = Path(__file__).resolve().parent.parent / "dashboard"
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Strategy-decided text (exit reasons, env values) with bidi and control characters escaped.
templates.env.filters["shown"] = escape_controls


class PageRoute(APIRoute):
    """A page that fails (no such strategy, a lifecycle move not allowed now, an unknown
    symbol) answers a page saying so to a browser; fragments, JSON and htmx requests keep
    the API's error envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiError, NotFound, MarketError, IllegalTransition) as exc:
                wants_page = (request.method == "GET" and "text/html" in request.headers.get("accept", "")
                              and not request.headers.get("hx-request"))
                if not wants_page:
                    raise
                status, message = _status_message(exc)
                return _render(_signed(request), request, "error.html", status, code=status, message=message)

        return route


def _status_message(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, MarketError):
        return exc.status, exc.message
    if isinstance(exc, IllegalTransition):
        return 409, str(exc)
    return 404, str(exc)


router = APIRouter(include_in_schema=False, route_class=PageRoute)
PREFIX = "/dashboard"
INT64_MAX = 2**63 - 1

# No inline script or style anywhere: the policy allows only this origin's files.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


# -- sessions -------------------------------------------------------------------------------------


class Signed:
    """The signed-in caller of a request: the session, its principal, the app's core."""

    def __init__(self, request: Request, session: svc.Session, principal: Principal) -> None:
        self.request, self.session, self.p = request, session, principal
        self.core: Core = core_of(request.app)


def _signed(request: Request) -> Signed | None:
    found = svc.sessions_of(request.app).principal(request.cookies.get(svc.SESSION_COOKIE))
    return None if found is None else Signed(request, *found)


def _page_user(request: Request) -> Signed:
    """A page's caller; not signed in: a redirect to the sign-in page."""
    who = _signed(request)
    if who is None:
        target = f"{PREFIX}/login?next={quote(request.url.path)}"
        raise StarletteHTTPException(303, "sign in first", headers={"Location": target})
    return who


def _data_user(request: Request) -> Signed:
    """A fragment's or JSON's caller: 401 when not signed in."""
    who = _signed(request)
    if who is None:
        raise ApiError(401, "unauthorized", "not signed in to the dashboard (or the session expired)")
    return who


async def _acting_user(request: Request) -> tuple[Signed, dict[str, str]]:
    """A state-changing request's caller and its form: signed in, from this origin, with the
    session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``)."""
    origin = request.headers.get("origin")
    if origin is not None and not svc.same_origin(origin, request.headers.get("host")):
        raise ApiError(403, "forbidden", "cross-origin request refused", {"field": "Origin"})
    who = _data_user(request)
    form = await _form(request)
    sent = request.headers.get(svc.CSRF_HEADER) or form.get(svc.CSRF_FIELD)
    if not svc.csrf_ok(who.session, sent):
        raise ApiError(403, "forbidden", "missing or wrong CSRF token", {"field": svc.CSRF_FIELD})
    return who, form


async def _form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "")
    if not (ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("multipart/form-data")):
        return {}
    try:
        form = await request.form(max_files=0, max_fields=50, max_part_size=64 * 1024)
    except Exception:
        raise bad_request("malformed form body", "body") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def script_json(value: Any) -> str:
    """JSON to embed in a ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    survives, so no value can close the element."""
    return (json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def _render(who: Signed | None, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
    ctx.update(user=None, csrf="", version=__version__, prefix=PREFIX)
    if who is not None:
        ctx.update(user={"client_id": who.p.client_id, "mode": who.p.mode}, csrf=who.session.csrf)
    resp = templates.TemplateResponse(request, name, ctx, status_code=status)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _after_action(request: Request, who: Signed, message: str, back: str, ok: bool = True, **extra: Any) -> Response:
    """htmx (``HX-Request``): a status fragment; a plain form post: back to the page."""
    if request.headers.get("hx-request"):
        return _render(who, request, "_flash.html", message=message, ok=ok, **extra)
    return RedirectResponse(back, status_code=303)


def _hx_redirect(request: Request, target: str) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# -- sign in and out --------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only this dashboard's own paths (no open redirect)."""
    if target and target.startswith(PREFIX) and "//" not in target and "\\" not in target \
            and target.isprintable() and len(target) < 500:
        path = target.split("?", 1)[0].split("#", 1)[0]
        # "/dashboard/../v1/keys" would resolve, in the browser, outside the dashboard; so would
        # "/dashboard/.%2e/v1/keys" (browsers read %2e as a dot): segments are read decoded.
        decoded = path
        for _ in range(3):
            decoded = unquote(decoded)
        if not any(seg in ("..", ".") for seg in decoded.split("/")) and "\\" not in decoded \
                and "//" not in decoded and (path == PREFIX or path.startswith(PREFIX + "/")):
            return target
    return PREFIX


@router.get(PREFIX + "/login")
def login_page(request: Request, next: str | None = Query(None, max_length=500)) -> Response:
    if _signed(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _render(None, request, "login.html", next=_safe_next(next), error=None)


@router.post(PREFIX + "/login")
async def login(request: Request) -> Response:
    origin = request.headers.get("origin")
    if origin is not None and not svc.same_origin(origin, request.headers.get("host")):
        raise ApiError(403, "forbidden", "cross-origin sign-in refused", {"field": "Origin"})
    form = await _form(request)
    key = form.get("api_key", "").strip()
    target = _safe_next(form.get("next"))
    if not key:
        return _render(None, request, "login.html", 400, next=target, error="Enter an API key.")
    auth = request.app.state.auth
    p = auth.cached(key) if len(key) <= 200 else None
    if p is None and len(key) <= 200 and key.isprintable():
        p = await anyio.to_thread.run_sync(auth.resolve, key)
    if p is None:
        return _render(None, request, "login.html", 401, next=target,
                       error="That key is not valid: it is unknown or revoked.")
    if p.run_id is not None:
        return _render(None, request, "login.html", 403, next=target,
                       error="That is a strategy's run-scoped key: sign in with a client key (seq_live_… or seq_test_…).")
    token, _session = svc.sessions_of(request.app).open(key, p.client_id)
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(svc.SESSION_COOKIE, token, httponly=True, samesite="strict", path="/",
                    secure=request.url.scheme == "https", max_age=int(svc.IDLE_SECONDS))
    resp.headers.update(SECURITY_HEADERS)
    return resp


@router.post(PREFIX + "/logout")
async def logout(request: Request) -> Response:
    await _acting_user(request)
    svc.sessions_of(request.app).close(request.cookies.get(svc.SESSION_COOKIE))
    resp = RedirectResponse(PREFIX + "/login", status_code=303)
    resp.delete_cookie(svc.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return resp


# -- strategies -----------------------------------------------------------------------------------------


@router.get(PREFIX)
def strategies_page(request: Request) -> Response:
    who = _page_user(request)
    rows = who.core.store.list_strategies(who.p.client_id, limit=svc.SNAPSHOT_LIMIT)
    usage = svc.usage_of(who.core)
    return _render(who, request, "strategies.html", page="strategies",
                   strategies=[svc.summary(r, usage) for r in rows])


@router.get(PREFIX + "/strategies/{ident}")
def strategy_page(ident: str, request: Request) -> Response:
    who = _page_user(request)
    row = deploy.strategy_or_404(who.core, who.p, ident)
    s = strategies.render(who.core, row)
    runs = who.core.store.list_runs(who.p.client_id, row["strategy_id"], 20)
    return _render(who, request, "strategy.html", page="strategy", s=s,
                   summary=svc.summary(row, svc.usage_of(who.core)),
                   runs=[present.run(r) for r in runs],
                   manifest_json=escape_controls_keep_lines(json.dumps(s["manifest"], indent=2, ensure_ascii=False)[:20000]))


@router.get(PREFIX + "/strategies/{ident}/runs")
def runs_fragment(ident: str, request: Request) -> Response:
    """The runs table (htmx reloads it when the strategies channel says the run changed)."""
    who = _data_user(request)
    row = deploy.strategy_or_404(who.core, who.p, ident)
    runs = who.core.store.list_runs(who.p.client_id, row["strategy_id"], 20)
    return _render(who, request, "_runs.html", runs=[present.run(r) for r in runs])


@router.get(PREFIX + "/strategies/{ident}/logs.json")
async def strategy_logs(ident: str, request: Request, run_id: str | None = Query(None, max_length=64),
                        after_seq: int | None = Query(None, ge=0, le=INT64_MAX),
                        tail: int = Query(2000, ge=1, le=10000),
                        limit: int = Query(5000, ge=1, le=10000)) -> JSONResponse:
    """A run's lines for the log view: after ``after_seq``, or the last ``tail`` lines."""
    who = _data_user(request)
    sid, run = await logs.strategy_and_run(who.core, who.p, ident, run_id)
    if run is None:
        rid = await anyio.to_thread.run_sync(who.core.store.latest_run_id, sid)
        run = await anyio.to_thread.run_sync(who.core.store.get_run, rid) if rid else None
    if after_seq is None:
        after_seq = max(0, int(run["log_lines"]) - tail) if run else 0
        limit = tail
    out = await logs.page(who.core, sid, run, after_seq, limit)
    out["last_seq"] = int(run["log_lines"]) if run else 0
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


@router.get(PREFIX + "/strategies/{ident}/logs.ndjson")
async def strategy_logs_follow(ident: str, request: Request, run_id: str | None = Query(None, max_length=64),
                               after_seq: int | None = Query(None, ge=0, le=INT64_MAX),
                               tail: int = Query(2000, ge=0, le=10000)) -> StreamingResponse:
    """The log view's feed: the lines of ``run_id`` after ``after_seq`` (without them, the
    latest run's last ``tail`` lines), then every new line as it is stored, moving on to
    the next run on a restart — the NDJSON of ``logs --follow`` — until the strategy
    stops for good or the page goes away."""
    who = _data_user(request)
    sid, run = await logs.strategy_and_run(who.core, who.p, ident, run_id)
    if run is None:
        rid = await anyio.to_thread.run_sync(who.core.store.latest_run_id, sid)
        run = await anyio.to_thread.run_sync(who.core.store.get_run, rid) if rid else None
        after_seq = max(0, int(run["log_lines"]) - tail) if run else 0
    start = run["run_id"] if run else None
    # Ends once the session does (signed out, or its key revoked), not when the page goes away.
    return StreamingResponse(logs.follow(who.core, sid, None, after_seq or 0, start_run=start,
                                         still_allowed=lambda: _signed(request) is not None),
                             media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


async def _lifecycle(request: Request, ident: str, verb: str) -> Response:
    who = (await _acting_user(request))[0]
    if verb == "delete":
        await deploy.delete(who.core, who.p, ident)
        return _hx_redirect(request, PREFIX)
    fn = {"start": deploy.start, "stop": deploy.stop}[verb]
    row = await anyio.to_thread.run_sync(fn, who.core, who.p, ident)
    word = {"start": "queued to start", "stop": "stopping"}[verb]
    return _after_action(request, who, f"{row['name']}: {word}", f"{PREFIX}/strategies/{quote(row['strategy_id'])}")


@router.post(PREFIX + "/strategies/{ident}/start")
async def start(ident: str, request: Request) -> Response:
    return await _lifecycle(request, ident, "start")


@router.post(PREFIX + "/strategies/{ident}/stop")
async def stop(ident: str, request: Request) -> Response:
    return await _lifecycle(request, ident, "stop")


@router.post(PREFIX + "/strategies/{ident}/delete")
async def delete(ident: str, request: Request) -> Response:
    return await _lifecycle(request, ident, "delete")


# -- trading -----------------------------------------------------------------------------------------------


def _trading_ready(core: Core) -> None:
    if core.trading is None:
        raise unavailable("trading is not enabled on this coordinator")


def pnl_series(fills: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Realized P&L (average cost, net of fees) over time from fills, oldest first."""
    books: dict[tuple[str, bool], tuple[float, float]] = {}  # (symbol, sandbox) -> (qty, avg)
    total = 0.0
    out: list[tuple[float, float]] = []
    for f in fills:
        k = (f["symbol"], bool(f["sandbox"]))
        qty, avg = books.get(k, (0.0, 0.0))
        signed = f["qty"] if f["side"] == "buy" else -f["qty"]
        total -= f.get("fee") or 0.0
        if qty == 0 or (qty > 0) == (signed > 0):
            new = qty + signed
            avg = (avg * abs(qty) + f["price"] * abs(signed)) / abs(new) if new else 0.0
            qty = new
        else:
            closed = min(abs(qty), abs(signed))
            total += closed * (f["price"] - avg) * (1 if qty > 0 else -1)
            rest = signed + qty
            if rest == 0:
                qty, avg = 0.0, 0.0
            elif (rest > 0) == (qty > 0):
                qty = rest
            else:
                qty, avg = rest, f["price"]
        books[k] = (qty, avg)
        ts = f["ts"] if isinstance(f["ts"], int | float) else 0.0
        out.append((float(ts), round(total, 8)))
    return out


async def _trading_data(who: Signed) -> dict[str, Any]:
    req, p = who.request, who.p
    positions = (await trading.list_positions(req, p, sandbox=None, symbol=None))["positions"]
    fills = (await trading.list_fills(req, p, symbol=None, graph_id=None, limit="200", since=None,
                                      cursor=None))["fills"]
    return {"positions": positions, "fills": fills}


def _fill_ts(f: dict[str, Any]) -> float:
    from datetime import datetime
    ts = f.get("ts")
    if isinstance(ts, int | float):
        return float(ts)
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


async def _pnl(who: Signed, positions: list[dict[str, Any]], fills: list[dict[str, Any]]) -> dict[str, Any]:
    oldest_first = [{**f, "ts": _fill_ts(f)} for f in reversed(fills)]
    series = pnl_series(oldest_first)
    unrealized = sum(float(x.get("unrealized_pnl") or 0.0) for x in positions)
    total = sum(float(x.get("total_pnl") or 0.0) for x in positions)
    return {"realized": series, "unrealized_now": round(unrealized, 8), "total_now": round(total, 8)}


@router.get(PREFIX + "/trading")
async def trading_page(request: Request) -> Response:
    who = _page_user(request)
    _trading_ready(who.core)
    data = await _trading_data(who)
    graphs = (await trading.list_graphs(request, who.p, status=None, limit="15", cursor=None))["graphs"]
    detailed = []
    for g in graphs:
        full = await who.core.trading.graph(who.p.client_id, g["graph_id"]) if who.core.trading else None
        detailed.append(full or g)
    risk = await anyio.to_thread.run_sync(lambda: controls.get_risk(request, None, who.p))
    kill = await anyio.to_thread.run_sync(lambda: controls.kill_status(request, who.p))
    pnl = await _pnl(who, data["positions"], data["fills"])
    return _render(who, request, "trading.html", page="trading", graphs=detailed, fills=data["fills"][:50],
                   positions=data["positions"], risk=risk, kill=kill["engaged"], limit_fields=LIMIT_FIELDS,
                   pnl_json=script_json(pnl))


@router.get(PREFIX + "/trading/positions")
async def positions_fragment(request: Request) -> Response:
    who = _data_user(request)
    _trading_ready(who.core)
    data = await _trading_data(who)
    return _render(who, request, "_positions.html", positions=data["positions"])


@router.get(PREFIX + "/trading/pnl.json")
async def pnl_json(request: Request) -> JSONResponse:
    who = _data_user(request)
    _trading_ready(who.core)
    data = await _trading_data(who)
    return JSONResponse(await _pnl(who, data["positions"], data["fills"]), headers={"Cache-Control": "no-store"})


@router.post(PREFIX + "/kill")
async def kill(request: Request) -> Response:
    who = (await _acting_user(request))[0]
    _trading_ready(who.core)
    report = await controls.kill(request, {}, who.p)
    msg = (f"Kill switch engaged: {report['orders_cancelled']} order(s) cancelled, "
           f"{len(report['strategies_stopped'])} strategy(ies) stopped")
    return _after_action(request, who, msg, PREFIX + "/trading", kill_state=report.get("engaged_at") or "now")


@router.post(PREFIX + "/kill/release")
async def release(request: Request) -> Response:
    who = (await _acting_user(request))[0]
    _trading_ready(who.core)
    await controls.release(request, None, who.p)
    return _after_action(request, who, "Kill switch released (strategies stay stopped until started)",
                         PREFIX + "/trading", kill_state=None)


@router.post(PREFIX + "/risk")
async def put_risk(request: Request) -> Response:
    who, form = await _acting_user(request)
    _trading_ready(who.core)
    body: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        raw = form.get(name)
        if raw is None:
            continue
        raw = raw.strip()
        if raw == "":
            body[name] = None
            continue
        try:
            value = float(raw)
        except ValueError:
            raise bad_request(f"{name} must be a number (or empty for no limit)", name) from None
        if not math.isfinite(value):
            raise bad_request(f"{name} must be a finite number", name)
        body[name] = int(value) if name == "max_open_orders" and value.is_integer() else value
    if not body:
        raise bad_request("no limit given", "body")
    await anyio.to_thread.run_sync(lambda: controls.put_risk(request, body, None, who.p))
    return _after_action(request, who, "Risk limits saved", PREFIX + "/trading")


# -- markets ---------------------------------------------------------------------------------------------------


def _market(core: Core) -> Any:
    if core.market is None:
        raise unavailable("the market is not enabled on this coordinator")
    return core.market


def _search(core: Core, q: str | None, venue: str | None) -> list[dict[str, Any]]:
    try:
        out = _market(core).markets(venue=venue or None, limit=50, order="volume", active=None, expand="outcomes",
                                    q=q or None, cursor=None)
    except MarketError as exc:
        raise ApiError(exc.status, exc.code, exc.message, dict(exc.details)) from None
    rows: list[dict[str, Any]] = out["markets"]
    for r in rows:
        r["quote_symbol"] = r.get("symbol") or r.get("yes_token_id")
    return rows


@router.get(PREFIX + "/markets")
def markets_page(request: Request, q: str | None = Query(None, max_length=200),
                 venue: str | None = Query(None, max_length=40)) -> Response:
    who = _page_user(request)
    return _render(who, request, "markets.html", page="markets", q=q or "", venue=venue or "",
                   markets=_search(who.core, q, venue), venues=list(_market(who.core).venue_status()))


@router.get(PREFIX + "/markets/search")
def markets_search(request: Request, q: str | None = Query(None, max_length=200),
                   venue: str | None = Query(None, max_length=40)) -> Response:
    who = _data_user(request)
    return _render(who, request, "_markets.html", markets=_search(who.core, q, venue))


@router.get(PREFIX + "/book")
async def book_page(request: Request, symbol: str = Query(min_length=1, max_length=200)) -> Response:
    who = _page_user(request)
    svc_ = _market(who.core)
    try:
        if not svc_.ensure(symbol):
            await svc_.require_ready(symbol)
        book = svc_.quote(symbol, 20)
    except MarketError as exc:
        raise ApiError(exc.status, exc.code, exc.message, dict(exc.details)) from None
    return _render(who, request, "book.html", page="book", symbol=symbol, book=book, book_json=script_json(book))


# -- venues and health ------------------------------------------------------------------------------------------


@router.get(PREFIX + "/venues")
def venues_page(request: Request) -> Response:
    who = _page_user(request)
    core = who.core
    venues = keys.list_venues(request, who.p)["venues"]
    live_within = core.settings.lease_seconds * 2
    runners = core.store.list_runners()
    load = core.store.runner_loads([r["runner_id"] for r in runners])
    now = core.store.clock()
    rows = [{"name": r["name"], "runner_id": r["runner_id"], "region": r["region"], "capacity": r["capacity"],
             "active": load.get(r["runner_id"], 0), "connected": now - r["last_seen_at"] <= live_within,
             "last_seen_s": round(now - r["last_seen_at"], 1),
             "isolation": (r.get("isolation") or {}).get("level", "unknown")} for r in runners]
    return _render(who, request, "venues.html", page="venues", venues=venues, runners=rows)


# -- wiring -------------------------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The pages, and the vendored static files at ``/dashboard/static``."""
    app.include_router(router)
    app.mount(PREFIX + "/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static")


__all__ = ["install", "pnl_series", "router", "script_json"]
