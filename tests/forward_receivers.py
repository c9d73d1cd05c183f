"""Real HTTP receivers on 127.0.0.1 for the forwarder tests: each request is checked by a per-vendor
``check`` function and answered with what that vendor documents (or a scripted failure first)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (status, headers, body) a receiver answers; None from a check means "accept".
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """``check(request) -> Answer | None`` validates the vendor's format; ``script`` answers the first
    requests (after the check passed) with scripted failures; ``accepted`` keeps what was acknowledged."""

    check: Callable[[Received], Answer | None]
    ok: Answer = (200, {"content-type": "application/json"}, b"{}")
    port: int = 0
    script: list[Answer] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    refused: list[tuple[Received, int]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                request = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
                )
                with lock:
                    answer = receiver.check(request)
                    if answer is None and receiver.script:
                        answer = receiver.script.pop(0)
                    if answer is None:
                        receiver.accepted.append(request)
                        answer = receiver.ok
                    else:
                        receiver.refused.append((request, answer[0]))
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
