"""A sandboxed run's only ways out: the API forwarder and the egress proxy.

A run has its own network namespace with nothing but loopback.  Its
supervisor binds listening sockets on ``127.0.0.1`` *inside* that namespace
and hands them to the runner over a unix socket (SCM_RIGHTS); the runner,
outside, accepts on them — a socket belongs to the namespace it was created
in, whoever holds it — and serves:

``api``
    every connection is forwarded to the coordinator URL the claim names
    (TCP, or TLS when it is ``https``).  The strategy's ``SEQUENCE_API_URL`` is
    ``http://127.0.0.1:<port>``.
``egress`` (only when the strategy allows public egress)
    an HTTP proxy (``CONNECT host:port`` and absolute-form ``GET http://…``):
    the runner resolves the name itself and connects only to public
    addresses (:func:`egress_allowed`), so loopback, private ranges,
    link-local (cloud metadata at 169.254.169.254 included), CGNAT,
    multicast and reserved addresses are unreachable whatever the name
    resolves to (no DNS rebinding: the checked address is the one used).
    ``HTTP(S)_PROXY`` point at it, so urllib, requests, httpx and most
    clients use it without code changes.  Raw TCP to arbitrary hosts and UDP
    are not available.

Nothing else exists in the namespace: the host's loopback services (a
database, Redis, the runner itself) are not routable from inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "EgressPolicy",
    "RunNetwork",
    "egress_allowed",
    "receive_listeners",
    "sandbox_ports",
]

log = logging.getLogger("sequence.runner")

_Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
_BUF = 256 * 1024
_HEAD_MAX = 16 * 1024
_HEAD_TIMEOUT_S = 15.0
_CONNECT_TIMEOUT_S = 10.0
DEFAULT_API_PORT = 8700
DEFAULT_EGRESS_PORT = 3128
# Open connections a run may hold on each listener. Each costs the runner two file
# descriptors (and the coordinator one): without a cap one strategy's processes (up to
# 256, 1,024 descriptors each) exhausted the runner's and failed every other run's start.
# The SDK holds a handful; a connection over the cap is closed at once, with a notice.
MAX_CONNECTIONS = 128
# The runner's and the run's notices (egress refused, connections over the cap): a burst,
# then one a second; the rest are counted and said with the next one that is written.
NOTICE_BURST = 20
NOTICE_RATE = 1.0

# Not "public" whatever ipaddress.is_global says about them.
_ALWAYS_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "169.254.0.0/16",  # link-local, cloud metadata
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",
        "255.255.255.255/32",
        "64:ff9b::/96",  # NAT64: embeds an IPv4 address
        "2002::/16",  # 6to4: embeds an IPv4 address
        "ff00::/8",
        "fe80::/10",
        "fc00::/7",
        "fec0::/10",  # site-local (deprecated, still routed privately)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    )
)


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations the egress proxy connects to.

    Public addresses only, plus *allow* (networks an operator opens on
    purpose, e.g. a database in their VPC; SEQUENCE_RUNNER_EGRESS_ALLOW).
    """

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> EgressPolicy:
        nets = []
        for part in (text or "").replace(";", ",").split(","):
            if part.strip():
                nets.append(ipaddress.ip_network(part.strip(), strict=False))
        return cls(tuple(nets))

    def allows(self, addr: str) -> bool:
        return egress_allowed(addr, self.allow)


def egress_allowed(
    addr: str, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in n for n in allow):
        return True
    if any(ip.version == n.version and ip in n for n in _ALWAYS_BLOCKED):
        return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def sandbox_ports(api_url: str) -> tuple[int, int]:
    """(api port, egress port) inside the sandbox: the coordinator's own port when it
    is unprivileged (so the URL looks familiar), else 8700."""
    try:
        port = urlsplit(api_url).port
    except ValueError:
        port = None
    api = port if port is not None and 1024 <= port <= 65535 else DEFAULT_API_PORT
    egress = DEFAULT_EGRESS_PORT if api != DEFAULT_EGRESS_PORT else DEFAULT_EGRESS_PORT + 1
    return api, egress


async def receive_listeners(ctrl: socket.socket, timeout: float) -> dict[str, socket.socket]:
    """The listening sockets the supervisor sends over *ctrl* (name -> socket)."""
    loop = asyncio.get_running_loop()
    ctrl.setblocking(False)
    fut: asyncio.Future[tuple[bytes, list[int]]] = loop.create_future()

    def readable() -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 1024, 16)
        except BlockingIOError:
            return
        except OSError as exc:
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result((msg, fds))
        else:
            for fd in fds:
                with contextlib.suppress(OSError):
                    socket.close(fd)

    loop.add_reader(ctrl.fileno(), readable)
    try:
        msg, fds = await asyncio.wait_for(asyncio.shield(fut), timeout)
    except BaseException:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            for fd in fut.result()[1]:  # received just as we gave up: do not leak them
                with contextlib.suppress(OSError):
                    socket.close(fd)
        raise
    finally:
        loop.remove_reader(ctrl.fileno())
    names = msg.decode(errors="replace").split(",") if msg else []
    if len(names) != len(fds):
        for fd in fds:
            with contextlib.suppress(OSError):
                socket.close(fd)
        raise ConnectionError("the supervisor sent a malformed listener message")
    return {n: socket.socket(fileno=fd) for n, fd in zip(names, fds, strict=True)}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_BUF):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _splice(
    r1: asyncio.StreamReader,
    w1: asyncio.StreamWriter,
    r2: asyncio.StreamReader,
    w2: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))
    finally:
        for w in (w1, w2):
            w.close()
        for w in (w1, w2):
            with contextlib.suppress(Exception):
                await w.wait_closed()


@dataclass
class RunNetwork:
    """Serves one run's listening sockets until :meth:`close`."""

    run_id: str
    api_url: str
    egress: EgressPolicy | None  # None: the run has no egress
    on_notice: Callable[[str], None] | None = None  # a line for the run's logs
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _open: dict[str, int] = field(default_factory=dict)  # listener -> connections being served
    _closed: bool = False
    _notice_tokens: float = NOTICE_BURST
    _notice_at: float | None = None
    _notices_dropped: int = 0

    async def serve(self, ctrl: socket.socket, timeout: float = 30.0) -> None:
        """Receive the listeners from the supervisor and start serving them."""
        try:
            listeners = await receive_listeners(ctrl, timeout)
        finally:
            ctrl.close()
        pending = dict(listeners)
        try:
            for name, sock in listeners.items():
                if self._closed:
                    break
                if name == "api":
                    handler = self._forward_api
                elif name == "egress" and self.egress is not None:
                    handler = self._proxy
                else:
                    continue
                sock.setblocking(False)
                server = await asyncio.start_server(self._track(name, handler), sock=sock)
                del pending[name]
                self._servers.append(server)
                if self._closed:
                    server.close()
        finally:
            for sock in pending.values():  # not served (closed meanwhile, or unknown)
                sock.close()

    def _track(self, name: str, handler: _Handler) -> _Handler:
        async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if self._open.get(name, 0) >= MAX_CONNECTIONS:
                self._notice(f"{name}: a new connection was closed: the run already holds {MAX_CONNECTIONS} "
                             "open connections (close the ones it no longer uses)")
                w.close()
                return
            self._open[name] = self._open.get(name, 0) + 1
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await handler(r, w)
            except asyncio.CancelledError:
                # The run's network is closing. End the task normally: on Python 3.11 asyncio's
                # stream callback calls task.exception() on a cancelled connection task and logs
                # a spurious "Exception in callback … CancelledError" traceback.
                w.close()
            except Exception:
                log.debug("run %s: connection handler failed", self.run_id, exc_info=True)
                w.close()
            finally:
                self._open[name] -= 1
                if task is not None:
                    self._tasks.discard(task)

        return run

    async def _forward_api(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        u = urlsplit(self.api_url)
        tls = u.scheme == "https"
        host = u.hostname or "127.0.0.1"
        port = u.port or (443 if tls else 80)
        try:
            ur, uw = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=ssl.create_default_context() if tls else None,
                    server_hostname=host if tls else None,
                ),
                _CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            self._notice(f"cannot reach the coordinator at {self.api_url}: {exc}", logging.WARNING)
            w.close()
            return
        await _splice(r, w, ur, uw)

    async def _proxy(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        policy = self.egress
        assert policy is not None
        try:
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            w.close()
            return
        if len(head) > _HEAD_MAX:
            await _refuse(w, 431, "request head too large")
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            await _refuse(w, 400, "malformed request line")
            return
        if method.upper() == "CONNECT":
            host, _, port_s = target.rpartition(":")
            host = host.strip("[]")
            rest = b""
        else:
            u = urlsplit(target)
            if u.scheme != "http" or not u.hostname:
                await _refuse(w, 400, "use CONNECT for https, or an absolute http:// URL")
                return
            host, port_s = u.hostname, str(u.port or 80)
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            kept = [h for h in lines[1:] if h and not h.lower().startswith(("proxy-", "connection:"))]
            rest = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode(
                "latin-1"
            )
        try:
            port = int(port_s)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            await _refuse(w, 400, "bad port")
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            await _refuse(w, 502, f"cannot resolve {host}: {exc}")
            return
        addrs = [str(i[4][0]) for i in infos]
        allowed = [a for a in addrs if policy.allows(a)]
        if not allowed:
            why = f"egress to {host}:{port} is blocked: {', '.join(sorted(set(addrs)))} is not a public address"
            self._notice(why)
            await _refuse(w, 403, why)
            return
        last: Exception | None = None
        for addr in allowed:
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(addr, port), _CONNECT_TIMEOUT_S)
                break
            except (OSError, TimeoutError) as exc:
                last = exc
        else:
            await _refuse(w, 502, f"cannot connect to {host}:{port}: {last}")
            return
        if rest:
            uw.write(rest)
        else:
            w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _splice(r, w, ur, uw)

    def _notice(self, text: str, level: int = logging.INFO) -> None:
        """Say *text* in the runner's log and the run's, at most ``NOTICE_RATE`` a second after
        a burst: a strategy asking for refused things in a loop must not fill the host's disk."""
        now = asyncio.get_running_loop().time()
        if self._notice_at is not None:
            self._notice_tokens = min(NOTICE_BURST, self._notice_tokens + (now - self._notice_at) * NOTICE_RATE)
        self._notice_at = now
        if self._notice_tokens < 1:
            self._notices_dropped += 1
            return
        self._notice_tokens -= 1
        if self._notices_dropped and "were not logged" not in text:
            text += f" ({self._notices_dropped} more notice(s) not logged)"
        self._notices_dropped = 0
        log.log(level, "run %s: %s", self.run_id, text)
        if self.on_notice is not None:
            with contextlib.suppress(Exception):
                self.on_notice(text)

    def close(self) -> None:
        """Stop serving and drop open connections (the run is over)."""
        if self._notices_dropped and not self._closed:
            self._notice_tokens = 1
            self._notice(f"{self._notices_dropped} more notice(s) were not logged (after a burst of {NOTICE_BURST}, one a second)")
        self._closed = True
        for srv in self._servers:
            srv.close()
        for task in list(self._tasks):
            task.cancel()
        self._servers.clear()


async def _refuse(w: asyncio.StreamWriter, status: int, why: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large",
              502: "Bad Gateway"}.get(status, "Error")
    body = (why + "\n").encode()
    w.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(Exception):
        await w.drain()
    w.close()
