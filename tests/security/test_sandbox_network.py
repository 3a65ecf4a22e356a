"""Item 2: the host's loopback services were reachable (host network).

Before: the strategy logged in to the local PostgreSQL as superuser, ran
Redis commands and saw every listening port.  Now each run has its own
network namespace: the Sequence API through the runner's forwarder, public
egress only through its filtering proxy, nothing else.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from sequence.runner import Sandbox, SandboxConfig
from sequence.runner.network import egress_allowed
from tests.runner.helpers import run_code

pytestmark = pytest.mark.anyio


def _host_addresses() -> list[str]:
    """The host's own non-loopback IPv4 addresses (services may listen there too)."""
    out = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            out.add(str(info[4][0]))
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            out.add(s.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in out if not a.startswith("127."))


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A host service on 0.0.0.0 (so loopback and the host's addresses reach it)."""
    got: list[bytes] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.append(await r.read(100))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "0.0.0.0", 0)
    try:
        yield server.sockets[0].getsockname()[1], got
    finally:
        server.close()
        await server.wait_closed()


CONNECT = """
import json, socket
out = {}
for label, host, port in TARGETS:
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"ping")
        out[label] = "CONNECTED"
        s.close()
    except OSError as exc:
        out[label] = type(exc).__name__
print(json.dumps(out))
"""


async def test_host_loopback_services_are_unreachable(
    sandbox: Sandbox, echo_server: tuple[int, list[bytes]]
) -> None:
    port, got = echo_server
    targets = [
        ("postgres", "127.0.0.1", 5432),
        ("redis", "127.0.0.1", 6379),
        ("mariadb", "127.0.0.1", 3306),
        ("rabbitmq", "127.0.0.1", 5672),
        ("nats", "127.0.0.1", 4222),
        ("echo-loopback", "127.0.0.1", port),
        ("echo-v6", "::1", port),
        ("metadata", "169.254.169.254", 80),
    ] + [(f"echo-{a}", a, port) for a in _host_addresses()]
    r = await run_code(sandbox, f"TARGETS = {targets!r}\n" + CONNECT)
    out = json.loads(r.stdout[0])
    assert all(v != "CONNECTED" for v in out.values()), out
    assert got == [], "the host service saw a connection from the sandbox"


async def test_the_strategy_sees_only_its_own_listening_ports(sandbox: Sandbox) -> None:
    code = """
import json
def ports(path):
    out = []
    for line in open(path).readlines()[1:]:
        f = line.split()
        if f[3] == "0A":  # LISTEN
            out.append(int(f[1].split(":")[1], 16))
    return sorted(out)
print(json.dumps({"v4": ports("/proc/net/tcp"), "v6": ports("/proc/net/tcp6"),
                  "ifaces": [l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]]}))
"""
    out = json.loads((await run_code(sandbox, code, egress="none")).stdout[0])
    assert out["ifaces"] == ["lo"]
    assert out["v4"] == [8700], "only the API forwarder's socket"
    assert out["v6"] == []


async def test_the_api_is_reachable_only_through_the_forwarder(
    sandbox: Sandbox, echo_server: tuple[int, list[bytes]]
) -> None:
    port, got = echo_server
    code = """
import json, os, urllib.request
url = os.environ["SEQUENCE_API_URL"]
body = urllib.request.urlopen(url + "/v1/health", timeout=10).read().decode()
print(json.dumps({"url": url, "body": body}))
"""
    r = await run_code(sandbox, code, api_url=f"http://127.0.0.1:{port}", egress="none")
    out = json.loads(r.stdout[0])
    assert out == {"url": f"http://127.0.0.1:{port}", "body": "pong"}
    assert got and got[0].startswith(b"GET /v1/health")


PROXY = """
import json, os, urllib.request, urllib.error
out = {"proxy": os.environ.get("HTTPS_PROXY")}
# through the proxy even for loopback names: the proxy itself must refuse them
os.environ.pop("NO_PROXY", None); os.environ.pop("no_proxy", None)
for label, url in URLS:
    try:
        out[label] = urllib.request.urlopen(url, timeout=10).read().decode()
    except urllib.error.HTTPError as exc:
        out[label] = exc.code
    except OSError as exc:
        out[label] = type(exc).__name__
print(json.dumps(out))
"""


async def test_egress_proxy_refuses_private_loopback_and_metadata(
    sandbox: Sandbox, echo_server: tuple[int, list[bytes]]
) -> None:
    port, got = echo_server
    urls = [
        ("loopback", f"http://127.0.0.1:{port}/"),
        ("localhost", f"http://localhost:{port}/"),
        ("v6", f"http://[::1]:{port}/"),
        ("mapped", f"http://[::ffff:127.0.0.1]:{port}/"),
        ("metadata", "http://169.254.169.254/latest/meta-data/"),
        ("private", "http://10.0.0.1/"),
        ("decimal", f"http://2130706433:{port}/"),
    ] + [(f"host-{a}", f"http://{a}:{port}/") for a in _host_addresses()]
    r = await run_code(sandbox, f"URLS = {urls!r}\n" + PROXY, egress="public")
    out = json.loads(r.stdout[0])
    assert out.pop("proxy", "").startswith("http://127.0.0.1:")
    assert all(v in (403, 400, 502) for v in out.values()), out
    assert got == []
    refusals = [x for x in r.logs.records if x["stream"] == "system" and "egress" in x["line"]]
    assert refusals, "the refusal is explained in the run's log"


async def test_egress_reaches_what_the_operator_allows(
    tmp_path_factory: pytest.TempPathFactory, echo_server: tuple[int, list[bytes]]
) -> None:
    """The allowed path really works (no public internet here: the operator's allowlist
    stands in for a public address)."""
    port, got = echo_server
    sb = Sandbox(SandboxConfig(data_dir=tmp_path_factory.mktemp("egress"), egress_allow="127.0.0.1/32"))
    if not sb.check().bubblewrap:
        pytest.fail("bubblewrap is not usable here:\n" + sb.check().render())
    r = await run_code(sb, f"URLS = [('ok', 'http://127.0.0.1:{port}/')]\n" + PROXY, egress="public")
    assert json.loads(r.stdout[0])["ok"] == "pong"
    assert got and got[0].startswith(b"GET / HTTP/1.1")


async def test_without_egress_there_is_no_proxy(sandbox: Sandbox) -> None:
    urls = [("public", "http://93.184.215.14/")]
    r = await run_code(sandbox, f"URLS = {urls!r}\n" + PROXY, egress="none")
    out = json.loads(r.stdout[0])
    assert out["proxy"] is None
    assert out["public"] in ("URLError", "OSError")


@pytest.mark.parametrize(
    ("addr", "ok"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::a00:1", False),
        ("2002:a00:1::", False),
        ("fec0::1", False),
        ("192.88.99.1", False),
        ("not-an-ip", False),
    ],
)
def test_egress_policy(addr: str, ok: bool) -> None:
    assert egress_allowed(addr) is ok


HOARD = """
import json, os, socket, time
port = int(os.environ["SEQUENCE_API_URL"].rsplit(":", 1)[1])
held, cut = [], 0
for i in range(N):  # the strategy hoards connections to the API forwarder
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.append(s)
time.sleep(1.0)  # the forwarder has accepted (or refused) every one of them
for s in held:  # the ones over the cap were closed at once: they read EOF, the others wait
    s.settimeout(0.05)
    try:
        cut += s.recv(1) == b""
    except (TimeoutError, OSError):
        pass
for s in held:
    s.close()
time.sleep(0.5)
# Closed ones are given back: the API works again.
import urllib.request
body = urllib.request.urlopen(os.environ["SEQUENCE_API_URL"] + "/v1/health", timeout=10).read().decode()
print(json.dumps({"cut": cut, "body": body}))
"""


async def test_a_run_cannot_exhaust_the_runners_descriptors_by_hoarding_api_connections(
    sandbox: Sandbox,
) -> None:
    """One strategy holding thousands of idle API connections used to run the runner out of
    file descriptors (two per connection) and fail every other run's start. Each run may
    hold MAX_CONNECTIONS; the next ones are closed at once, and said in its log."""
    from sequence.runner.network import MAX_CONNECTIONS

    now = peak = 0

    async def api(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        try:
            head = await r.read(1000)
            if head:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await w.drain()
        finally:
            now -= 1
            w.close()

    server = await asyncio.start_server(api, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    n = MAX_CONNECTIONS + 72
    try:
        r = await run_code(sandbox, f"N = {n}\n" + HOARD, api_url=f"http://127.0.0.1:{port}", egress="none")
    finally:
        server.close()
    out = json.loads(r.stdout[0])
    assert out == {"cut": n - MAX_CONNECTIONS, "body": "ok"}, (out, r.logs.lines()[-5:])
    assert peak <= MAX_CONNECTIONS, peak  # what reached the coordinator
    said = [x["line"] for x in r.logs.records if x["stream"] == "system" and "open connections" in x["line"]]
    assert said and len(said) <= 21, said  # said, and not once per connection


async def test_refused_egress_in_a_loop_cannot_flood_the_logs(sandbox: Sandbox) -> None:
    """Every refused CONNECT wrote a line to the runner's log and the run's: ~420 KB/s from
    one strategy. A burst is said, then one a second, with the count of the rest."""
    code = """
import json, os, socket
port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
codes = []
for i in range(300):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\\r\\n\\r\\n" % (1000 + i))
    codes.append(s.recv(100).split(b" ")[1].decode())
    s.close()
print(json.dumps(sorted(set(codes))))
"""
    r = await run_code(sandbox, code, egress="public")
    assert json.loads(r.stdout[0]) == ["403"]
    said = [x["line"] for x in r.logs.records if x["stream"] == "system" and "egress to" in x["line"]]
    assert 1 <= len(said) <= 25, len(said)
    dropped = [x["line"] for x in r.logs.records if x["stream"] == "system" and "not logged" in x["line"]]
    assert dropped, "the count of what was not said is said"
