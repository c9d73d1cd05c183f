"""Fail closed: a dead, frozen or slow check path never lets a call through to the upstream."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from authz.local.stack import free_port
from tests.integration.conftest import Gateway, rpc_error, start_gateway

READ = ("read_invoice", {"invoice_id": "INV-1001"})


class SlowExtractor:
    """A real HTTP intent extractor that answers after ``delay`` seconds."""

    def __init__(self, delay: float):
        self.delay = delay
        self.port = free_port()

        async def extract(request):
            await asyncio.sleep(self.delay)
            return JSONResponse(
                {
                    "intent": {
                        "summary": "read",
                        "allowed_tools": ["read_invoice"],
                        "forbidden_tools": [],
                        "confidence": 0.9,
                        "rationale": "slow",
                    }
                }
            )

        config = uvicorn.Config(
            Starlette(routes=[Route("/v1/extract", extract, methods=["POST"])]),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> SlowExtractor:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def fresh_gateway(tmp_path) -> Iterator[Gateway]:
    stack, gw = start_gateway(tmp_path, check_timeout_ms=300)
    try:
        yield gw
    finally:
        stack.stop()


def test_check_service_down_means_503_and_nothing_forwarded(fresh_gateway: Gateway):
    gw = fresh_gateway
    assert gw.call(*READ, token=gw.token()).status_code == 200
    gw.clear_upstream()
    gw.stack.checks[0].kill()
    response = gw.call(*READ, token=gw.token())
    assert response.status_code == 503
    assert gw.tool_call(*READ, token=gw.token()).status_code == 503
    assert gw.upstream_requests() == []


def test_frozen_check_service_times_out_and_nothing_is_forwarded(fresh_gateway: Gateway):
    gw = fresh_gateway
    gw.clear_upstream()
    pid = gw.stack.checks[0].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = gw.call(*READ, token=gw.token())
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert response.status_code == 503
    assert elapsed < 5
    assert gw.upstream_requests() == []


def test_slow_dependency_past_the_deadline_denies_with_unavailable(tmp_path):
    with SlowExtractor(delay=2.0) as extractor:
        stack, gw = start_gateway(
            tmp_path,
            check_timeout_ms=3000,
            env={
                "TESSERA_INTENT_URL": f"http://127.0.0.1:{extractor.port}",
                "TESSERA_INTENT_TIMEOUT_S": "10",
                "TESSERA_DEADLINE_MS": "300",  # Tessera's own deadline passes long before Envoy's
            },
        )
        try:
            gw.clear_upstream()
            response = gw.call(
                *READ, token=gw.token(), headers={"x-intent-prompt": quote("show invoice INV-1001")}
            )
            error = rpc_error(response)
            assert error["code"] == -32018
            assert "deadline" in error["data"]["reason"] and "intent" in error["data"]["reason"]
            assert error["data"]["retry_after_ms"] > 0
            assert gw.upstream_requests("/mcp") == []
        finally:
            stack.stop()
