"""authz.intent.HttpExtractor against a real HTTP server (uvicorn + Starlette on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authz.errors import DependencyError, InvalidArgument, OutboundRefused
from authz.intent import HttpExtractor, Intent, judge_intent
from authz.outbound import OutboundClient, OutboundPolicy

#: The extractor in these tests listens on loopback, which only an operator allowlist permits.
LOOPBACK = OutboundPolicy.build(["127.0.0.0/8"])

GOOD_INTENT = {
    "summary": "read one invoice",
    "allowed_tools": ["read_invoice", "list_invoices"],
    "forbidden_tools": ["delete_invoice"],
    "confidence": 0.92,
    "rationale": "the user asked to see invoice 42",
}


class ExtractorServer:
    """A small extraction service with one behaviour per URL prefix; counts requests per prefix."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.base_url = ""
        app = Starlette(routes=[Route("/{mode}/v1/extract", self.extract, methods=["POST"])])
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test extractor server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def url(self, mode: str) -> str:
        return f"{self.base_url}/{mode}"

    async def extract(self, request: Request) -> Response:
        mode = request.path_params["mode"]
        self.hits[mode] += 1
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if mode.startswith("ok"):
            intent = dict(GOOD_INTENT, rationale=f"prompt was {body['prompt']!r}", extra_field="ignored")
            return JSONResponse({"intent": intent, "model": "test"})
        if mode == "slowok":
            await asyncio.sleep(0.3)
            return JSONResponse({"intent": GOOD_INTENT})
        if mode == "slow":
            await asyncio.sleep(3)
            return JSONResponse({"intent": GOOD_INTENT})
        if mode == "fail":
            return JSONResponse({"error": "model crashed"}, status_code=500)
        if mode == "notfound":
            return JSONResponse({"error": "no"}, status_code=404)
        if mode == "notjson":
            return Response("<html>surprise</html>", media_type="text/html")
        if mode == "truncated":
            return Response('{"intent": {"summary": ', media_type="application/json")
        if mode == "huge":
            return Response(b'{"intent": "' + b"x" * (2 * 1024 * 1024) + b'"}', media_type="application/json")
        if mode.startswith("shape-"):
            return Response(SHAPES[mode.removeprefix("shape-")], media_type="application/json")
        return JSONResponse({"error": "unknown mode"}, status_code=400)


SHAPES = {
    "list": json.dumps([GOOD_INTENT]),
    "nointent": json.dumps({"summary": "x"}),
    "intentstring": json.dumps({"intent": "read_invoice"}),
    "missing": json.dumps({"intent": {k: v for k, v in GOOD_INTENT.items() if k != "confidence"}}),
    "confidence_high": json.dumps({"intent": dict(GOOD_INTENT, confidence=1.5)}),
    "confidence_bool": json.dumps({"intent": dict(GOOD_INTENT, confidence=True)}),
    "confidence_str": json.dumps({"intent": dict(GOOD_INTENT, confidence="0.9")}),
    "tools_string": json.dumps({"intent": dict(GOOD_INTENT, allowed_tools="read_invoice")}),
    "tools_numbers": json.dumps({"intent": dict(GOOD_INTENT, forbidden_tools=[1, 2])}),
    "tools_empty_name": json.dumps({"intent": dict(GOOD_INTENT, allowed_tools=[""])}),
    "summary_null": json.dumps({"intent": dict(GOOD_INTENT, summary=None)}),
    "nan": '{"intent": {"summary": "", "allowed_tools": [], "forbidden_tools": [], "confidence": NaN, '
    '"rationale": ""}}',
}


@pytest.fixture(scope="module")
def server() -> Iterator[ExtractorServer]:
    srv = ExtractorServer()
    srv.start()
    yield srv
    srv.stop()


async def test_success(server):
    async with HttpExtractor(server.url("ok"), timeout=2, policy=LOOPBACK) as extractor:
        result = await extractor.extract("demo", "invoice-bot", "Show me invoice 42")
    assert result == Intent(
        allowed_tools=frozenset({"read_invoice", "list_invoices"}),
        forbidden_tools=frozenset({"delete_invoice"}),
        confidence=0.92,
        rationale="prompt was 'Show me invoice 42'",
        source="http",
        summary="read one invoice",
    )
    assert server.bodies[-1] == {"prompt": "Show me invoice 42", "agent_id": "invoice-bot"}
    assert server.headers[-1]["x-tessera-tenant"] == "demo"
    assert server.headers[-1]["content-type"] == "application/json"
    verdict = judge_intent(
        mode="enforce", require_prompt=True, prompt="p", intent=result, tool="delete_invoice"
    )
    assert not verdict.allowed


async def test_agent_may_be_absent_and_prompt_unicode(server):
    async with HttpExtractor(server.url("ok-unicode"), timeout=2, policy=LOOPBACK) as extractor:
        result = await extractor.extract("demo", None, "Zeig mir die Rechnung ✓ 请")
    assert server.bodies[-1] == {"prompt": "Zeig mir die Rechnung ✓ 请", "agent_id": None}
    assert "✓" in result.rationale


async def test_cache_hit_sends_one_request(server):
    async with HttpExtractor(server.url("ok-cache"), timeout=2, policy=LOOPBACK) as extractor:
        first = await extractor.extract("demo", "a1", "List my invoices")
        second = await extractor.extract("demo", "a1", "List my invoices")
        assert second is first
        assert server.hits["ok-cache"] == 1
        # another tenant, agent or prompt is another entry
        await extractor.extract("other", "a1", "List my invoices")
        await extractor.extract("demo", "a2", "List my invoices")
        await extractor.extract("demo", "a1", "List my invoices!")
        assert server.hits["ok-cache"] == 4
        extractor.clear_cache()
        await extractor.extract("demo", "a1", "List my invoices")
        assert server.hits["ok-cache"] == 5


async def test_cache_entries_expire(server):
    now = [1000.0]
    async with HttpExtractor(
        server.url("ok-ttl"), timeout=2, policy=LOOPBACK, cache_ttl=60, clock=lambda: now[0]
    ) as extractor:
        await extractor.extract("demo", None, "p")
        now[0] += 59
        await extractor.extract("demo", None, "p")
        assert server.hits["ok-ttl"] == 1
        now[0] += 2
        await extractor.extract("demo", None, "p")
        assert server.hits["ok-ttl"] == 2


async def test_cache_is_a_bounded_lru(server):
    async with HttpExtractor(server.url("ok-lru"), timeout=2, policy=LOOPBACK, cache_size=2) as extractor:
        for prompt in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
            await extractor.extract("demo", None, prompt)
        assert server.hits["ok-lru"] == 3
        await extractor.extract("demo", None, "a")
        assert server.hits["ok-lru"] == 3
        await extractor.extract("demo", None, "b")
        assert server.hits["ok-lru"] == 4


async def test_cache_can_be_disabled(server):
    async with HttpExtractor(server.url("ok-nocache"), timeout=2, policy=LOOPBACK, cache_size=0) as extractor:
        await extractor.extract("demo", None, "p")
        await extractor.extract("demo", None, "p")
    assert server.hits["ok-nocache"] == 2


async def test_concurrent_identical_requests_share_one_call(server):
    async with HttpExtractor(server.url("slowok"), timeout=2, policy=LOOPBACK) as extractor:
        results = await asyncio.gather(*(extractor.extract("demo", "a", "same prompt") for _ in range(8)))
    assert server.hits["slowok"] == 1
    assert all(r is results[0] for r in results)


async def test_a_cancelled_waiter_does_not_cancel_the_shared_call(server):
    async with HttpExtractor(server.url("slowok"), timeout=2, policy=LOOPBACK, cache_size=0) as extractor:
        before = server.hits["slowok"]
        first = asyncio.create_task(extractor.extract("demo", "a", "shared"))
        second = asyncio.create_task(extractor.extract("demo", "a", "shared"))
        await asyncio.sleep(0.05)
        first.cancel()
        result = await second
        assert result.allowed_tools == {"read_invoice", "list_invoices"}
        assert server.hits["slowok"] == before + 1
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_timeout_raises_dependency_error(server):
    async with HttpExtractor(server.url("slow"), timeout=0.2, policy=LOOPBACK) as extractor:
        start = time.monotonic()
        with pytest.raises(DependencyError, match=r"did not answer within 0\.2s") as caught:
            await extractor.extract("demo", None, "p")
        assert time.monotonic() - start < 1.5
    assert caught.value.metadata == {"dependency": "intent_extractor", "failure": "timeout"}
    assert caught.value.reason == "DEPENDENCY_FAILED"


@pytest.mark.parametrize(("mode", "status"), [("fail", 500), ("notfound", 404)])
async def test_non_2xx_raises_dependency_error(server, mode, status):
    async with HttpExtractor(server.url(mode), timeout=2, policy=LOOPBACK) as extractor:
        with pytest.raises(DependencyError, match=f"answered HTTP {status}"):
            await extractor.extract("demo", None, "p")
        with pytest.raises(DependencyError):  # failures are not cached
            await extractor.extract("demo", None, "p")
    assert server.hits[mode] == 2


@pytest.mark.parametrize("mode", ["notjson", "truncated"])
async def test_malformed_json_raises_dependency_error(server, mode):
    async with HttpExtractor(server.url(mode), timeout=2, policy=LOOPBACK) as extractor:
        with pytest.raises(DependencyError, match="reply is malformed: body is not JSON"):
            await extractor.extract("demo", None, "p")


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ("list", "expected an object with an 'intent' object"),
        ("nointent", "expected an object with an 'intent' object"),
        ("intentstring", "expected an object with an 'intent' object"),
        ("missing", "intent is missing confidence"),
        ("confidence_high", "confidence must be a number in [0, 1]"),
        ("confidence_bool", "confidence must be a number in [0, 1]"),
        ("confidence_str", "confidence must be a number in [0, 1]"),
        ("nan", "confidence must be a number in [0, 1]"),
        ("tools_string", "allowed_tools must be a list"),
        ("tools_numbers", "forbidden_tools must contain non-empty strings"),
        ("tools_empty_name", "allowed_tools must contain non-empty strings"),
        ("summary_null", "intent.summary must be a string"),
    ],
)
async def test_badly_shaped_replies_raise_dependency_error(server, shape, problem):
    async with HttpExtractor(server.url(f"shape-{shape}"), timeout=2, policy=LOOPBACK) as extractor:
        with pytest.raises(DependencyError) as caught:
            await extractor.extract("demo", None, "p")
    assert problem in str(caught.value)
    assert caught.value.metadata["failure"] == "malformed"


async def test_oversized_reply_raises_dependency_error(server):
    async with HttpExtractor(server.url("huge"), timeout=5, policy=LOOPBACK) as extractor:
        with pytest.raises(DependencyError, match="larger than"):
            await extractor.extract("demo", None, "p")


async def test_connection_refused_raises_dependency_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    async with HttpExtractor(f"http://127.0.0.1:{port}", timeout=2, policy=LOOPBACK) as extractor:
        with pytest.raises(DependencyError, match="request failed") as caught:
            await extractor.extract("demo", None, "p")
    assert caught.value.metadata["failure"] == "transport"


async def test_shared_client_is_not_closed(server):
    async with OutboundClient(LOOPBACK) as client:
        extractor = HttpExtractor(server.url("ok-shared") + "/", timeout=2, outbound=client)
        assert extractor.endpoint == server.url("ok-shared") + "/v1/extract"
        await extractor.extract("demo", None, "p")
        await extractor.aclose()
        await extractor.extract("demo", "other", "p")  # still usable: the extractor did not close it


async def test_extractor_on_a_refused_address_is_never_called(server):
    """Without an operator allowlist, loopback (where this test's extractor listens) is refused."""
    before = server.hits["ok-refused"]
    async with HttpExtractor(server.url("ok-refused"), timeout=2) as extractor:
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address") as caught:
            await extractor.extract("demo", None, "p")
    assert caught.value.metadata == {"dependency": "intent_extractor", "failure": "refused"}
    assert server.hits["ok-refused"] == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://x"},
        {"url": "localhost:8080"},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("inf")},
        {"timeout": True},
        {"cache_size": -1},
        {"cache_ttl": -1},
    ],
)
def test_constructor_validation(kwargs):
    args = {"url": "http://127.0.0.1:1", "timeout": 1.0, **kwargs}
    with pytest.raises(InvalidArgument):
        HttpExtractor(args.pop("url"), **args)
