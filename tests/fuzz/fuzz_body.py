"""Coverage-guided fuzzing of the MCP / JSON-RPC / tool-call body parser (atheris; ``make fuzz``).

Any input is a request body on both routes: :func:`authz.server.wire.parse_request` must return parsed
messages or a protocol error, never raise; :func:`authz.server.body.load_bounded` may raise only
BodyError, and whatever its orjson fast path accepts, the checked json parse reads the same.
"""

from __future__ import annotations

import contextlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from tests.fuzz._harness import instrumented, main

with instrumented(active=__name__ == "__main__"):
    from envoy.service.auth.v3 import external_auth_pb2

    from authz.server import body as body_limits
    from authz.server import wire


def _request(body: bytes, route: str) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method = ("/v1/mcp", "POST") if route == "mcp" else ("/v1/tool-call", "POST")
    req.attributes.context_extensions["route"] = route
    http.headers["authorization"] = "Bearer t"
    http.raw_body = body
    return req


def one_input(data: bytes) -> None:
    for route in ("mcp", "tool-call"):
        parsed = wire.parse_request(_request(data, route), deadline=None)
        assert (parsed.protocol_error is None) == bool(parsed.messages), parsed
    with contextlib.suppress(body_limits.BodyError):
        body_limits.load_bounded(data, wire.DEFAULT_LIMITS)
    fast = body_limits._load_fast(data, wire.DEFAULT_LIMITS.max_keys)
    if fast is not body_limits._UNDECIDED:  # proven by the key count: the checked parse must agree
        assert repr(fast) == repr(body_limits._load_checked(data, wire.DEFAULT_LIMITS)), data


SEEDS = {
    "seed-call": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_invoice",'
    b'"arguments":{"invoice_id":"INV-1"},"_meta":{"tessera/intent-prompt":"show invoice"}}}',
    "seed-batch": b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"}]',
    "seed-tool-call": b'{"tool":"read_invoice","arguments":{"a":[1,2.5,null,true]}}',
}

if __name__ == "__main__":
    for corpus in (a for a in sys.argv[1:] if not a.startswith("-") and os.path.isdir(a)):
        for name, seed in SEEDS.items():
            with open(os.path.join(corpus, name), "wb") as out:
                out.write(seed)
    main(one_input)
