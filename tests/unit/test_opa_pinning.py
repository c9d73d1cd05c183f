"""An HTTPS OPA server is reached at the address Tessera vetted, not at whatever its name resolves to
later (DNS rebinding), while its certificate is still checked against the name.

The OPA server is the TLS-serving ``tests.opa_standin.OpaStandIn`` (a STAND-IN for OPA, see its module).
DNS is a STAND-IN too: the name ``opa.tessera.test`` exists nowhere, so ``socket.getaddrinfo`` is wrapped
to answer it with 127.0.0.1 at the first lookup (what the vetting sees) and with an address nothing
listens on afterwards (the rebinding answer); every other name resolves as usual."""

from __future__ import annotations

import socket
import threading

import pytest

from authz.outbound import OutboundPolicy
from authz.policy import OpaClients, policy_hash
from authz.storage import PolicyVersion
from tests.opa_standin import OpaStandIn
from tests.tls import self_signed

NAME = "opa.tessera.test"
ALLOW_ALL = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true, "reason": "ok"}\n'
POLICY = OutboundPolicy.build(["127.0.0.1", "192.0.2.0/24"])


@pytest.fixture
def rebinding_dns(monkeypatch):
    """``opa.tessera.test`` resolves to 127.0.0.1 once, then to 192.0.2.1 (TEST-NET-1: nothing answers)."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        address = "127.0.0.1" if not lookups else "192.0.2.1"
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


async def _evaluate(clients: OpaClients, url: str):
    version = PolicyVersion("demo", 1, ALLOW_ALL, policy_hash(ALLOW_ALL), 0.0, "test", True)
    policy = clients.policy("demo", {"engine": "opa", "url": url, "timeout_ms": 3000}, version)
    try:
        return await policy.evaluate({"tool": "read_invoice", "arguments": {}})
    finally:
        await clients.aclose()


async def test_https_opa_connects_to_the_vetted_address_after_the_name_rebinds(
    tmp_path, monkeypatch, rebinding_dns
):
    cert, key = self_signed(tmp_path, NAME)
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # trust the server's self-signed certificate
    with OpaStandIn(tls=(cert, key)) as opa:
        result = await _evaluate(OpaClients(POLICY), f"https://{NAME}:{opa.port}")
        assert result.outcome == "allow", result
        assert opa.requests, "the OPA server was never reached"
    # Vetting looked the name up once; the connection did not look it up again (or it would have gone to
    # the rebinding answer and failed).
    assert rebinding_dns == ["127.0.0.1"]


async def test_the_certificate_is_still_checked_against_the_name(tmp_path, monkeypatch, rebinding_dns):
    cert, key = self_signed(tmp_path, "someone-else.test")
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    with OpaStandIn(tls=(cert, key)) as opa:
        result = await _evaluate(OpaClients(POLICY), f"https://{NAME}:{opa.port}")
    assert result.outcome == "deny" and result.error, result
    assert not opa.policies  # nothing was pushed over a connection whose certificate names another host


async def test_the_name_is_resolved_off_the_event_loop(tmp_path, monkeypatch):
    """The first evaluation vets the OPA server's name on a worker thread: a slow DNS answer delays that
    tenant's evaluation only, never the loop every other check runs on."""
    real = socket.getaddrinfo
    threads: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host == NAME:
            threads.append(threading.current_thread().name)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with OpaStandIn() as opa:
        result = await _evaluate(OpaClients(POLICY), f"http://{NAME}:{opa.port}")
    assert result.outcome == "allow", result
    assert len(threads) == 1 and threads[0] != threading.main_thread().name
