"""Failed admin authentications through Envoy's transcoder lock out the client that made them, not
every REST caller: the admin service counts the address Envoy appended to ``x-forwarded-for``.

Two clients on one machine are told apart by their loopback source addresses (127.0.0.2 guesses keys,
127.0.0.1 is the operator); Envoy sees each, the admin service sees only Envoy.
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.admin_support import ENV, ROOT_KEY, AdminGateway
from tests.integration.conftest import start_gateway

pytestmark = pytest.mark.integration

#: A guess under a key id of its own: a guess under the operator's key id would lock that key id (the
#: limiter's other scope, tested in tests/unit/test_admin_auth_limits.py).
WRONG_KEY = "tsk_0123456789ab_guessed-secret-000000000000000000000000"


@pytest.fixture(scope="module")
def lockout_gateway(tmp_path_factory: pytest.TempPathFactory):
    env = {**ENV, "TESSERA_ADMIN_AUTH_MAX_FAILURES": "3", "TESSERA_ADMIN_AUTH_LOCKOUT_S": "600"}
    stack, gateway = start_gateway(tmp_path_factory.mktemp("lockout-stack"), env=env)
    try:
        yield AdminGateway(stack, gateway)
    finally:
        stack.stop()


def _list_tenants(gw: AdminGateway, key: str, source: str, **headers: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get(gw.url + "/v1/admin/tenants", headers={"authorization": f"Bearer {key}", **headers})


def test_a_guessing_client_is_locked_out_and_the_operator_is_not(lockout_gateway: AdminGateway) -> None:
    gw = lockout_gateway
    # The guesser spoofs an x-forwarded-for of the operator's address: Envoy appends the real one, and
    # only that last entry counts.
    spoofed = {"x-forwarded-for": "127.0.0.1"}
    for _ in range(3):
        assert _list_tenants(gw, WRONG_KEY, "127.0.0.2", **spoofed).status_code == 401
    locked = _list_tenants(gw, ROOT_KEY, "127.0.0.2")  # even the right key, from the locked address
    assert locked.status_code == 429, locked.text
    assert _list_tenants(gw, ROOT_KEY, "127.0.0.1").status_code == 200  # the operator still works
