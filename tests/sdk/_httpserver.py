"""A real keep-alive HTTP/1.1 server (stdlib) that answers with a handler."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sequence_markets import Request, Response

#: Response header telling the server to drop the connection after answering,
#: without saying so (what an idle-timeout on a real server looks like).
DROP_AFTER = "x-test-drop-after"


class LocalHTTPServer:
    def __init__(
        self, handler: Callable[[Request], Response], *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with outer._lock:
                    outer.connections += 1
                    outer._sockets.append(self.request)
                    outer._threads.append(threading.current_thread())

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                request = Request(
                    self.command,
                    f"http://{self.headers.get('Host')}{self.path}",
                    headers=dict(self.headers.items()),
                    content=body,
                )
                with outer._lock:
                    outer.requests.append(request)
                response = outer.handler(request)
                drop = response.headers.pop(DROP_AFTER, None) is not None
                lines = [f"HTTP/1.1 {response.status} {response.reason or 'X'}"]
                headers = {"content-length": str(len(response.content)), **response.headers}
                lines += [f"{k}: {v}" for k, v in headers.items()]
                self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + response.content)
                if drop or headers.get("connection", "").lower() == "close":
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        scheme = "https" if ssl_context is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wake handlers blocked on keep-alive reads
            except OSError:
                pass
        for thread in threads:
            thread.join(5)
        self._thread.join(5)

    def __enter__(self) -> LocalHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
