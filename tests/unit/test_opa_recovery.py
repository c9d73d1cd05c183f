"""Tessera keeps deciding through OPA when the OPA server restarts or moves.

- An OPA server that restarted has lost the module Tessera pushed and answers every query "undefined":
  Tessera pushes it again (at most every ``REPUSH_AFTER_UNDEFINED_S``) and asks once more.
- With outbound rules the vetted address is pinned (DNS rebinding); it is resolved and vetted again every
  ``REVET_AFTER_S``, so an OPA pod that comes back at a new address is reached. A failed lookup keeps the
  address vetted before.

The OPA servers are ``tests.opa_standin.OpaStandIn`` (a STAND-IN for OPA, see its module); a restart is
the stand-in forgetting its pushed modules, as a restarted OPA does. DNS is a STAND-IN: the name
``opa.tessera.test`` is answered by a wrapped ``socket.getaddrinfo``.
"""

from __future__ import annotations

import socket

import pytest

from authz.outbound import OutboundPolicy
from authz.policy import OpaClients, policy_hash
from authz.policy import _opa as opa_module
from authz.storage import PolicyVersion
from tests.opa_standin import OpaStandIn

NAME = "opa.tessera.test"
ALLOW_ALL = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true, "reason": "ok"}\n'
# Undefined for every input but {"tool": "read_invoice"}.
ONLY_READ = """package tessera

import rego.v1

decision := {"allow": true, "reason": "ok"} if input.tool == "read_invoice"
"""
LOOPBACK = OutboundPolicy.build(["127.0.0.0/8"])


def _policy(clients: OpaClients, url: str, source: str = ALLOW_ALL):
    version = PolicyVersion("demo", 1, source, policy_hash(source), 0.0, "test", True)
    return clients.policy("demo", {"engine": "opa", "url": url, "timeout_ms": 3000}, version)


def _puts(opa: OpaStandIn) -> int:
    return sum(1 for method, _ in opa.requests if method == "PUT")


async def test_an_opa_server_that_restarted_gets_the_policy_pushed_again():
    clients = OpaClients()
    try:
        with OpaStandIn() as opa:
            policy = _policy(clients, opa.url)
            assert (await policy.evaluate({"tool": "read_invoice"})).outcome == "allow"
            opa.policies.clear()  # the restart: OPA keeps pushed modules in memory only
            result = await policy.evaluate({"tool": "read_invoice"})
            assert result.outcome == "allow", result
            assert _puts(opa) == 2
    finally:
        await clients.aclose()


async def test_an_undefined_decision_pushes_again_at_most_once_per_interval():
    clients = OpaClients()
    try:
        with OpaStandIn() as opa:
            policy = _policy(clients, opa.url, ONLY_READ)
            for _ in range(5):  # undefined by design: a deny each time, and one extra push in all
                result = await policy.evaluate({"tool": "delete_invoice"})
                assert result.outcome == "deny" and "undefined" in result.reason, result
            assert _puts(opa) == 2
            assert (await policy.evaluate({"tool": "read_invoice"})).outcome == "allow"
    finally:
        await clients.aclose()


@pytest.fixture
def moving_dns(monkeypatch):
    """``opa.tessera.test`` answers with ``answers[0]`` (a list the test changes; an exception is raised)."""
    real = socket.getaddrinfo
    answers: list[object] = ["127.0.0.1"]
    lookups: list[object] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        lookups.append(answers[0])
        if isinstance(answers[0], BaseException):
            raise answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[0], int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, lookups


async def test_an_opa_server_that_moved_is_found_once_its_name_is_vetted_again(monkeypatch, moving_dns):
    answers, lookups = moving_dns
    clients = OpaClients(LOOPBACK)
    try:
        with OpaStandIn() as first:
            url = f"http://{NAME}:{first.port}"
            policy = _policy(clients, url)
            assert (await policy.evaluate({"tool": "read_invoice"})).outcome == "allow"
        # The first server is gone; the name now points at a new one (another loopback address).
        with OpaStandIn(host="127.0.0.2", port=first.port) as second:
            answers[0] = "127.0.0.2"
            refused = await policy.evaluate({"tool": "read_invoice"})
            assert refused.outcome == "deny" and refused.error  # still pinned: within REVET_AFTER_S
            assert lookups == ["127.0.0.1"]
            monkeypatch.setattr(opa_module, "REVET_AFTER_S", 0.0)
            result = await policy.evaluate({"tool": "read_invoice"})
            assert result.outcome == "allow", result
            assert lookups[-1] == "127.0.0.2"
            assert _puts(second) == 1  # the new server got the policy before the query
    finally:
        await clients.aclose()


async def test_a_failed_lookup_keeps_the_address_vetted_before(monkeypatch, moving_dns):
    answers, lookups = moving_dns
    clients = OpaClients(LOOPBACK)
    try:
        with OpaStandIn() as opa:
            policy = _policy(clients, f"http://{NAME}:{opa.port}")
            assert (await policy.evaluate({"tool": "read_invoice"})).outcome == "allow"
            monkeypatch.setattr(opa_module, "REVET_AFTER_S", 0.0)
            answers[0] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            assert (await policy.evaluate({"tool": "read_invoice"})).outcome == "allow"
            answers[0] = "169.254.169.254"  # now a metadata address the rules refuse: not followed
            assert (await policy.evaluate({"tool": "read_invoice"})).outcome == "allow"
            assert len(lookups) == 3 and len([m for m, _ in opa.requests if m == "POST"]) == 3
    finally:
        await clients.aclose()
