"""A stand-in OPA server for tests: OPA's REST API over the ``regorus`` engine (``opa-eval`` on PyPI).

No OPA binary is reachable here (no registry ships one, and ``opa-golib-python-bindings`` has no wheel
for this platform), so tests that need "an OPA server" start this one. It implements the part of OPA's
REST API that Tessera uses, with OPA's shapes:

- ``GET /health`` → 200 ``{}``
- ``PUT /v1/policies/{id}`` (text/plain Rego) → 200 ``{}``, or 400 ``{"code": "invalid_parameter",
  "errors": [...]}`` when the module does not parse
- ``POST /v1/data/{path}`` with ``{"input": ...}`` → 200 ``{"result": <value>}``, or ``{}`` when the
  document is undefined; 500 ``{"code": "internal_error"}`` when evaluation fails

``regorus`` is a Rego implementation independent of the embedded ``regopy`` (rego-cpp), so the policy
parity suite compares two engines. ``delay_s`` and ``fail_with`` let a test make it slow or failing.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import opa_eval

_PACKAGE_RE = re.compile(r"^[ \t]*package[ \t]+([A-Za-z0-9_.]+)", re.MULTILINE)


class OpaStandIn:
    def __init__(self, tls: tuple[str, str] | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        """``tls``: (certificate file, key file) to serve HTTPS instead of HTTP; ``host``/``port``: where
        to listen (another loopback address stands for an OPA server that moved)."""
        self.policies: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.inputs: list[Any] = []
        self.delay_s = 0.0
        self.fail_with: int | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="opa-standin-")
        self._evaluators: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self) -> OpaStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._dir.cleanup()

    # -- the engine --------------------------------------------------------------------------------
    def _file(self, source: str) -> Path:
        path = Path(self._dir.name) / (hashlib.sha256(source.encode()).hexdigest() + ".rego")
        if not path.exists():
            path.write_text(source)
        return path

    def put_policy(self, policy_id: str, source: str) -> None:
        opa_eval.OpaEval(str(self._file(source)), query="data")  # raises RuntimeError when it does not parse
        with self._lock:
            self.policies[policy_id] = source

    def query(self, path: str, input_doc: Any) -> dict[str, Any]:
        package = ".".join(path.split("/"))
        with self._lock:
            sources = [s for s in self.policies.values() if _owns(s, package)]
        if len(sources) != 1:
            return {}  # no module defines the document: undefined, as OPA answers
        key = (hashlib.sha256(sources[0].encode()).hexdigest(), package)
        evaluator = self._evaluators.get(key)
        if evaluator is None:
            evaluator = opa_eval.OpaEval(str(self._file(sources[0])), query=f"data.{package}")
            self._evaluators[key] = evaluator
        out = evaluator.evaluate(json.dumps(input_doc))
        value = json.loads(out)
        return {} if value == "<undefined>" else {"result": value}

    # -- HTTP ------------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        opa = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _gate(self) -> bool:
                opa.requests.append((self.command, self.path))
                if opa.delay_s:
                    threading.Event().wait(opa.delay_s)
                if opa.fail_with is not None:
                    self._send(opa.fail_with, {"code": "internal_error", "message": "stand-in failure"})
                    return False
                return True

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/health" and self._gate():
                    self._send(200, {})
                elif not self.path.startswith("/health"):
                    self._send(404, {"code": "resource_not_found"})

            def do_PUT(self) -> None:
                source = self._body().decode()
                if not self._gate():
                    return
                if not self.path.startswith("/v1/policies/"):
                    self._send(404, {"code": "resource_not_found"})
                    return
                try:
                    opa.put_policy(self.path[len("/v1/policies/") :], source)
                except RuntimeError as exc:
                    error = {"code": "rego_parse_error", "message": str(exc)}
                    self._send(400, {"code": "invalid_parameter", "message": "error(s)", "errors": [error]})
                    return
                self._send(200, {})

            def do_POST(self) -> None:
                raw = self._body()
                if not self._gate():
                    return
                if not self.path.startswith("/v1/data/"):
                    self._send(404, {"code": "resource_not_found"})
                    return
                try:
                    doc = json.loads(raw or b"{}")
                    opa.inputs.append(doc.get("input"))
                    result = opa.query(self.path[len("/v1/data/") :].split("?")[0], doc.get("input"))
                except Exception as exc:
                    self._send(500, {"code": "internal_error", "message": str(exc)})
                    return
                self._send(200, result)

        return Handler


def _owns(source: str, package_path: str) -> bool:
    match = _PACKAGE_RE.search(source)
    return bool(match) and (package_path == match.group(1) or package_path.startswith(match.group(1) + "."))
