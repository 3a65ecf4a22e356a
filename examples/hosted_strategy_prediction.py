"""End-to-end hosted-strategy smoke.

 1. Boot + log injected env (verifies runner injection works)
 2. Health check the API
 3. Discover an active Kalshi market via /v1/markets
 4. Discover an active Polymarket market via /v1/markets?expand=outcomes
 5. WS-subscribe to `prices:{symbol}` for each (raw stdlib socket — no
    `websockets` dep needed in the slim runner image)
 6. Walk each book via /v1/quotes (top 5 bids + asks per side)
 7. Submit one limit-buy graph per venue, deliberately priced below the
    market so it rests harmlessly and won't fill
 8. Sleep, then check graph status
 9. Cancel both graphs
10. Exit 0

Records (one JSON line each): boot, health_check, discovery_done, ws_msg,
book_level, graph_submit_intent, graph_status, graph_cancelled, done — or
fatal / crash. Deploying: docs/quickstart.md. The SDK has its own WebSocket
client (`seq.stream`); `ws_subscribe` shows the protocol by hand.
"""
import base64
import json
import os
import socket
import ssl
import struct
import sys
import time
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional, Tuple

from sequence_markets import Sequence, SequenceError


def log(event: str, **fields: Any) -> None:
    """One JSON line per logical event. Easy to grep in `strategy logs`."""
    rec = {"ts": round(time.time(), 3), "event": event, **fields}
    print(json.dumps(rec, default=str, sort_keys=False), flush=True)


# --------------------------------------------------------------------------
# Raw-stdlib WebSocket (RFC 6455): handshake, masked client frames, a frame
# loop that answers pings, reassembles fragments and honours the close
# handshake. Bounded by time and by message count.
# --------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One FIN frame, masked as RFC 6455 requires of every client frame."""
    head = bytearray([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += struct.pack("!H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", n)
    mask = os.urandom(4)
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _FrameReader:
    """Parses frames out of a receive buffer. A frame is consumed only once it
    is complete, so a socket timeout mid-frame loses nothing: the next call
    carries on where this one stopped."""

    def __init__(self, sock: socket.socket, initial: bytes = b"") -> None:
        self.sock, self.buf = sock, bytearray(initial)

    def _parse(self) -> Optional[Tuple[bool, int, bytes]]:
        buf = self.buf
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, n, pos = bool(buf[1] & 0x80), buf[1] & 0x7F, 2
        if n == 126:  # 16-bit extended length
            if len(buf) < 4:
                return None
            (n,), pos = struct.unpack("!H", buf[2:4]), 4
        elif n == 127:  # 64-bit extended length
            if len(buf) < 10:
                return None
            (n,), pos = struct.unpack("!Q", buf[2:10]), 10
        if n > 16 * 1024 * 1024:
            raise RuntimeError(f"WS frame too large: {n} bytes")
        mask = b""
        if masked:  # servers must not mask, but being liberal costs nothing
            if len(buf) < pos + 4:
                return None
            mask, pos = bytes(buf[pos:pos + 4]), pos + 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return fin, opcode, payload

    def read_frame(self) -> Tuple[bool, int, bytes]:
        """(fin, opcode, payload); raises socket.timeout when nothing
        complete arrived within the socket's timeout."""
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("WS closed by peer without a close frame")
            self.buf += chunk


def ws_subscribe(
    base_url: str,
    api_key: str,
    channels: List[str],
    *,
    duration_s: float,
    max_msgs: int,
) -> Iterator[Dict[str, Any]]:
    """Open a WS to /v1/stream, subscribe to `channels`, yield decoded JSON
    messages. Bounded by both `duration_s` and `max_msgs` so the strategy
    never streams indefinitely."""
    url = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/stream"
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "wss" else 80)
    raw = socket.create_connection((parsed.hostname, port), timeout=15)
    sock = ssl.create_default_context().wrap_socket(raw, server_hostname=parsed.hostname) \
        if parsed.scheme == "wss" else raw
    deadline = time.monotonic() + duration_s
    try:
        sock.settimeout(2)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall("\r\n".join([
            f"GET {parsed.path or '/'} HTTP/1.1",
            f"Host: {parsed.hostname}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Authorization: Bearer {api_key}",
            "", "",
        ]).encode())
        response = b""
        while b"\r\n\r\n" not in response:
            if time.monotonic() > deadline or len(response) > 65536:
                raise RuntimeError("WS handshake timed out")
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                raise RuntimeError("WS handshake failed: connection closed")
            response += chunk
        head, _, rest = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
            raise RuntimeError("WS handshake failed: " + head.split(b"\r\n", 1)[0].decode(errors="replace"))
        reader = _FrameReader(sock, rest)  # frames may arrive in the same packet as the 101

        sock.sendall(_ws_frame(OP_TEXT, json.dumps({"op": "subscribe", "channels": channels}).encode()))

        sent, fragments = 0, bytearray()
        frag_op = None  # type: Optional[int]
        while sent < max_msgs and time.monotonic() < deadline:
            try:
                fin, opcode, payload = reader.read_frame()
            except socket.timeout:
                continue  # no tick within 2 s: re-check the deadline
            if opcode == OP_PING:
                sock.sendall(_ws_frame(OP_PONG, payload))
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                sock.sendall(_ws_frame(OP_CLOSE, payload[:2]))  # echo the code back
                return
            if opcode in (OP_TEXT, OP_BINARY):
                fragments, frag_op = bytearray(payload), opcode
            elif opcode == OP_CONT and frag_op is not None:
                fragments += payload
            if not fin:
                continue  # wait for the rest of a fragmented message
            text, frag_op = bytes(fragments), None
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") == "error":
                raise RuntimeError(f"WS error: {msg.get('code')}: {msg.get('message')}")
            # Acks ({"type": "subscribed"}) and empty frames carry no data.
            if not msg.get("channel") or not msg.get("data"):
                continue
            sent += 1
            yield msg
        # Bound reached: say goodbye politely (status 1000).
        try:
            sock.sendall(_ws_frame(OP_CLOSE, struct.pack("!H", 1000)))
        except OSError:
            pass
    finally:
        sock.close()


# --------------------------------------------------------------------------
# Discovery — the YES/NO fallback trick
# --------------------------------------------------------------------------

def _probe_two_sided(seq, symbol):
    """Return the quote dict if the book has a real bid > 0, else None."""
    try:
        q = seq.quote(symbol, depth=3)
    except SequenceError:
        return None
    bid = ((q or {}).get("nbbo") or {}).get("bid") or 0
    return q if bid > 0 else None


def find_kalshi_tradable(seq):
    r = seq.markets(venue="kalshi", limit=30, order="volume", active=True)
    for m in (r or {}).get("markets", []):
        if (m.get("liquidity") or 0) < 100:
            continue
        for side, token_field in (("yes", "yes_token_id"), ("no", "no_token_id")):
            tok = m.get(token_field)
            if tok and _probe_two_sided(seq, tok) is not None:
                return {**m, "_chosen_side": side, "_chosen_symbol": tok}
    return None


def find_polymarket_tradable(seq):
    # `expand=outcomes` flattens multi-outcome events (e.g. "World Cup
    # Winner") into one row per outcome with `yes_token_id` populated.
    r = seq.markets(
        venue="polymarket", limit=200, order="volume", active=True,
        expand="outcomes",
    )
    for m in (r or {}).get("markets", []):
        if m.get("is_placeholder_outcome") or (m.get("liquidity") or 0) < 1000:
            continue
        tok = m.get("yes_token_id")
        if tok and _probe_two_sided(seq, tok) is not None:
            return {**m, "_chosen_side": "yes", "_chosen_symbol": tok}
    return None


# --------------------------------------------------------------------------
# Book walk — one `book_level` record per level, top 5 per side
# --------------------------------------------------------------------------

def walk_book(seq, venue: str, symbol: str, depth: int = 5) -> Dict[str, Any]:
    q = seq.quote(symbol, depth=depth) or {}
    for side in ("bids", "asks"):
        for level, lv in enumerate((q.get(side) or [])[:depth]):
            if lv.get("price") is None:  # an empty side: nothing to walk
                continue
            log("book_level", venue=venue, symbol=symbol[:60], side=side[:-1],
                level=level, price=lv.get("price"), size=lv.get("size"))
    return q


# --------------------------------------------------------------------------
# Order submission — half-bid limit, guaranteed not to cross
# --------------------------------------------------------------------------

def safe_resting_price(best_bid: float) -> float:
    """Half of best_bid, floored at 1¢, rounded down to whole cents.

    Both venues use 0.01 as their default tick — a 50% discount lands
    well below any cross even if the bid moves while submitting."""
    if best_bid is None or best_bid <= 0:
        return 0.01
    half_cents = int(best_bid * 100 / 2)
    return max(0.01, half_cents / 100.0)


def submit_test_graph(seq, venue, label, symbol, qty, best_bid):
    price = safe_resting_price(best_bid)
    log("graph_submit_intent", venue=venue, label=label, qty=qty,
        limit_price=price, best_bid=best_bid,
        notional_usd=round(qty * price, 4))
    node = seq.node(
        node_id="leg",
        symbol=symbol,
        side="buy",
        qty=qty,
        venue=venue,
        instrument_type="prediction",   # <- required for Kalshi & Polymarket
        limit_price=price,
    )
    return seq.graph([node]).get("graph_id")


def main() -> int:
    base_url = os.environ.get("SEQUENCE_API_URL", "https://api.sequencemkts.com").rstrip("/")
    api_key = os.environ.get("SEQUENCE_API_KEY")
    log("boot", sequence_api_url=base_url, has_api_key=bool(api_key),
        strategy_id=os.environ.get("SEQUENCE_STRATEGY_ID"),
        run_id=os.environ.get("SEQUENCE_RUN_ID"))
    if not api_key:
        log("fatal", reason="SEQUENCE_API_KEY not injected")
        return 1

    seq = Sequence(api_key, base_url)
    log("health_check", ok=seq.health())

    kalshi = find_kalshi_tradable(seq)
    poly = find_polymarket_tradable(seq)
    if not kalshi or not poly:
        log("fatal", reason="discovery_incomplete")
        return 1
    log("discovery_done",
        kalshi_slug=kalshi["slug"], kalshi_chosen_side=kalshi["_chosen_side"],
        polymarket_slug=poly["slug"], polymarket_outcome=poly.get("outcome_name"))

    # WS subscribe — bounded so the strategy stays finite
    for msg in ws_subscribe(base_url, api_key, [
        f"prices:{kalshi['_chosen_symbol']}",
        f"prices:{poly['_chosen_symbol']}",
    ], duration_s=12.0, max_msgs=8):
        ch, data = msg.get("channel") or "", msg.get("data") or {}
        if ch and data:
            log("ws_msg", channel=ch[:60], bid=data.get("bid"),
                ask=data.get("ask"), mid=data.get("mid"))

    # Walk both books (logs top-5 levels per side per venue)
    kalshi_q = walk_book(seq, "kalshi", kalshi["_chosen_symbol"])
    poly_q = walk_book(seq, "polymarket", poly["_chosen_symbol"])

    # Submit + cancel both graphs
    submitted = []
    for venue, mkt, q, qty in [
        ("kalshi", kalshi, kalshi_q, 1.0),
        ("polymarket", poly, poly_q, 5.0),
    ]:
        bid = (q.get("nbbo") or {}).get("bid") or 0
        if bid > 0:
            gid = submit_test_graph(seq, venue, mkt["slug"],
                                    mkt["_chosen_symbol"], qty, float(bid))
            if gid:
                submitted.append((venue, gid))

    time.sleep(4)
    for venue, gid in submitted:
        log("graph_status", venue=venue, graph_id=gid,
            status=(seq.graph_status(gid) or {}).get("status"))

    for venue, gid in submitted:
        seq.cancel(gid)
        log("graph_cancelled", venue=venue, graph_id=gid)

    log("done", graphs_submitted=len(submitted))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:
        log("crash", error=f"{type(exc).__name__}: {exc}")
        sys.exit(1)
