"""Test helpers: a real coordinator on loopback, artifact builders."""

from __future__ import annotations

import base64
import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sequence.api.app import build_core, create_app
from sequence.api.server import CoordinatorServer
from sequence.api.state import Core
from sequence.bundle import sha256_hex
from sequence.settings import Settings


def make_tar(files: Mapping[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def create_body(name: str = "demo", files: Mapping[str, bytes | str] | None = None, **extra: Any) -> dict[str, Any]:
    art = make_tar(files or {"main.py": "print('hi')\n"})
    body: dict[str, Any] = {"name": name, "runtime": "python", "entrypoint": "main.py",
                            "artifact_base64": base64.b64encode(art).decode(), "artifact_sha256": sha256_hex(art)}
    body.update(extra)
    return body


def free_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


@dataclass
class LiveServer:
    """A real uvicorn coordinator in a background thread."""

    settings: Settings
    core: Core
    url: str
    live_key: str
    test_key: str
    client_id: str
    _server: uvicorn.Server
    _thread: threading.Thread
    _sock: socket.socket
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.live_key}"} if key != "" else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30.0), **kw)

    def new_client(self, name: str = "other") -> tuple[str, str]:
        cid = self.core.store.create_client(name)
        _r, key = self.core.store.create_api_key(cid, "live", "k")
        return cid, key

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()
        self.core.store.db.dispose()


def start_server(data_dir: Path, database_url: str | None = None, environ: Mapping[str, str] | None = None,
                 **settings_kw: Any) -> LiveServer:
    sock = free_socket()
    port = sock.getsockname()[1]
    env = dict(environ or {})
    settings = Settings.from_env(env, data_dir=data_dir, database_url=database_url, port=port, **settings_kw)
    core = build_core(settings, env)
    cid = core.store.create_client("test client")
    _r, live = core.store.create_api_key(cid, "live", "live")
    _r, test = core.store.create_api_key(cid, "test", "test")
    app = create_app(settings, core=core)
    server = CoordinatorServer(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3),
                               core)
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not th.is_alive():
            raise RuntimeError("coordinator did not start")
        time.sleep(0.02)
    return LiveServer(settings, core, f"http://127.0.0.1:{port}", live, test, cid, server, th, sock)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
