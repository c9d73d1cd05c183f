"""authz.outbound: the rules for URLs admins and tenant files set, and the one client that obeys them.

Real HTTP servers on 127.0.0.1 (stdlib ThreadingHTTPServer). Name resolution is injected where a test
needs a name to resolve to chosen addresses (``Resolver``, a stand-in for DNS: no DNS server runs here).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest

from authz.config import load
from authz.errors import ConfigError, DependencyError, InvalidArgument, OutboundRefused
from authz.outbound import OutboundClient, OutboundPolicy, pinned_request_hook, policy_from_config
from authz.policy import OpaClients
from tests.opa_standin import OpaStandIn
from tests.tls import self_signed

STRICT = OutboundPolicy()
LOOPBACK = OutboundPolicy.build(["127.0.0.0/8", "::1"], refused_ports=[9901])


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("168.63.129.16", "metadata"),  # a public-looking address, still metadata
        ("100.100.100.200", "metadata"),
    ],
)
def test_non_public_and_metadata_addresses_are_refused(address, kind):
    why = STRICT.refusal(address, 443)
    assert why is not None and kind in why


def test_public_addresses_pass():
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert STRICT.refusal(address, 443) is None


def test_the_operator_allowlist():
    policy = OutboundPolicy.build(
        ["127.0.0.0/8", "10.0.0.0/8", "127.0.0.1:9901", "169.254.0.0/16"], refused_ports=[9191, 9901]
    )
    assert policy.refusal("127.0.0.5", 8099) is None
    assert policy.refusal("10.2.3.4", 443) is None
    assert policy.refusal("192.168.0.1", 443) is not None
    # Own ports stay refused on an allowed network unless an entry names the port.
    assert "own ports" in policy.refusal("127.0.0.5", 9191)
    assert "own ports" in policy.refusal("10.2.3.4", 9191)
    assert policy.refusal("127.0.0.1", 9901) is None
    assert "own ports" in policy.refusal("127.0.0.2", 9901)
    # Metadata needs the exact address, a wider network is not enough.
    assert "metadata" in policy.refusal("169.254.169.254", 80)
    assert OutboundPolicy.build(["169.254.169.254/32"]).refusal("169.254.169.254", 80) is None


def test_policy_from_process_configuration():
    env = {"TESSERA_MASTER_KEY": "k" * 32, "TESSERA_OUTBOUND_ALLOW": "127.0.0.0/8, [::1]:8099"}
    config = load(env | {"TESSERA_ADMIN_PORT": "9300"})
    policy = policy_from_config(config)
    assert policy.refusal("127.0.0.1", 8099) is None and policy.refusal("::1", 8099) is None
    for own in (9191, 9300, 9464, 8080, 9901):
        assert "own ports" in policy.refusal("127.0.0.1", own)
    assert policy_from_config(load({"TESSERA_MASTER_KEY": "k" * 32})).refusal("127.0.0.1", 8099)
    with pytest.raises(ConfigError, match="not-an-address"):
        load(env | {"TESSERA_OUTBOUND_ALLOW": "not-an-address"})


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers per path."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                receiver.requests.append(
                    (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                if self.path.startswith("/redirect"):
                    self.send_response(307)
                    self.send_header("location", self.path.partition("?to=")[2])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if self.path == "/slow":
                    time.sleep(1.0)
                body = b"x" * 200_000 if self.path == "/big" else b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the client hanging up on /slow is what the timeout test wants

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def test_refused_before_any_connection(receiver):
    async with OutboundClient(STRICT) as client:
        with pytest.raises(OutboundRefused, match="loopback") as caught:
            await client.post(receiver.url(), content=b"{}")
    assert caught.value.reason == "OUTBOUND_REFUSED"
    assert receiver.requests == []


async def test_allowed_by_the_operator_allowlist(receiver):
    async with OutboundClient(LOOPBACK) as client:
        response = await client.post(receiver.url(), content=b"{}")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert response.address == "127.0.0.1" and len(receiver.requests) == 1


async def test_a_name_is_resolved_once_and_the_vetted_address_is_the_one_connected(receiver):
    answers = [["127.0.0.1"], ["169.254.169.254"]]  # a rebinding name: vetted answer, then metadata
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers.pop(0)

    async with OutboundClient(LOOPBACK, resolver=resolver) as client:
        response = await client.post(receiver.url(host="hooks.example"), content=b"{}")
    assert asked == ["hooks.example"]
    assert response.address == "127.0.0.1"
    (_, _, headers) = receiver.requests[0]
    assert headers["host"] == f"hooks.example:{receiver.port}"  # the name, not the address


async def test_a_name_with_one_refused_address_is_refused(receiver):
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "10.0.0.7"]

    async with OutboundClient(LOOPBACK, resolver=resolver) as client:
        with pytest.raises(OutboundRefused, match=r"10\.0\.0\.7 is a private address"):
            await client.post(receiver.url(host="hooks.example"), content=b"{}")
    assert receiver.requests == []


async def test_redirects_are_vetted_like_the_first_url(receiver):
    async with OutboundClient(LOOPBACK) as client:
        ok = await client.post(receiver.url(f"/redirect?to={receiver.url('/final')}"), content=b"{}")
        assert ok.status_code == 200 and ok.url.endswith("/final")
        for target in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9901/quitquitquit"):
            with pytest.raises(OutboundRefused):
                await client.post(receiver.url(f"/redirect?to={target}"), content=b"{}")
    assert [path for _, path, _ in receiver.requests if not path.startswith("/redirect")] == ["/final"]


async def test_time_and_answer_size_are_bounded(receiver):
    async with OutboundClient(LOOPBACK, timeout_s=0.3, max_response_bytes=100_000) as client:
        started = time.monotonic()
        with pytest.raises(DependencyError, match=r"did not answer within 0\.3s"):
            await client.request("GET", receiver.url("/slow"))
        assert time.monotonic() - started < 0.9
        with pytest.raises(DependencyError, match="larger than 100000 bytes"):
            await client.request("GET", receiver.url("/big"))


async def test_urls_that_are_not_http_are_refused():
    async with OutboundClient(LOOPBACK) as client:
        for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "http://user:pw@127.0.0.1/"):
            with pytest.raises(InvalidArgument):
                await client.post(url)


def test_a_tenants_opa_server_is_vetted_and_pinned_to_the_vetted_address():
    """The OPA URL a tenants file sets goes through the same rules; the client is pointed at the
    address that was vetted (plain HTTP), not at the name."""
    with pytest.raises(OutboundRefused, match=r"OPA server at 127\.0\.0\.1:8181 refused"):
        OpaClients(STRICT).get("http://127.0.0.1:8181")
    with pytest.raises(OutboundRefused, match="cloud metadata address"):
        OpaClients(LOOPBACK).get("http://169.254.169.254:8181")
    with pytest.raises(OutboundRefused, match="own ports"):
        OpaClients(LOOPBACK).get("http://127.0.0.1:9901")
    client = OpaClients(LOOPBACK).get("http://localhost:8181")
    assert client.host in ("127.0.0.1", "::1") and client.root_url.startswith(f"http://{client.host}")


async def test_an_opa_tenant_on_a_refused_address_is_denied_with_the_reason():
    version = SimpleNamespace(source="package tessera\n", version=1, content_hash="h")
    policy = OpaClients(STRICT).policy("acme", {"engine": "opa", "url": "http://10.0.0.5:8181"}, version)
    result = await policy.evaluate({"tool": "x"})
    assert result.outcome == "deny" and "10.0.0.5 is a private address" in result.reason


# -- pinned_request_hook: an httpx client another library drives (the mcp SDK's) --------------------------


@pytest.fixture
def rebinding_name(monkeypatch) -> list[str]:
    """``pinned.tessera.test`` resolves (socket.getaddrinfo, a STAND-IN for DNS) to 192.0.2.1 (TEST-NET-1:
    nothing answers), the answer a rebinding name would give after the vetting; counts the lookups."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "pinned.tessera.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.mark.parametrize("tls", [False, True])
async def test_a_pinned_httpx_client_connects_to_the_vetted_address_and_keeps_the_name(
    tmp_path, rebinding_name, tls
):
    import ssl

    import httpx2

    cert, key = self_signed(tmp_path, "pinned.tessera.test")
    with OpaStandIn(tls=(cert, key) if tls else None) as server:  # any HTTP(S) server on 127.0.0.1
        url = httpx.URL(f"{'https' if tls else 'http'}://pinned.tessera.test:{server.port}/health")
        hook = pinned_request_hook(url, "127.0.0.1")  # what OutboundClient.vet returned for the name
        context = ssl.create_default_context(cafile=cert)
        async with httpx2.AsyncClient(
            verify=context, trust_env=False, event_hooks={"request": [hook]}
        ) as http:
            assert (await http.get(str(url))).status_code == 200
            with pytest.raises(OutboundRefused, match="not the vetted"):
                await http.get(f"http://other.tessera.test:{server.port}/health")
    assert server.requests == [("GET", "/health")]
    assert rebinding_name == []  # the name was never resolved at connect time


async def test_a_pinned_httpx_client_still_checks_the_certificate_against_the_name(tmp_path, rebinding_name):
    import ssl

    import httpx2

    cert, key = self_signed(tmp_path, "someone-else.test")
    with OpaStandIn(tls=(cert, key)) as server:
        url = httpx.URL(f"https://pinned.tessera.test:{server.port}/health")
        context = ssl.create_default_context(cafile=cert)
        hooks = {"request": [pinned_request_hook(url, "127.0.0.1")]}
        async with httpx2.AsyncClient(verify=context, trust_env=False, event_hooks=hooks) as http:
            with pytest.raises(httpx2.ConnectError, match="certificate"):
                await http.get(str(url))
    assert server.requests == []
