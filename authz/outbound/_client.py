"""The outbound HTTP client: resolve once, vet, connect to the vetted address, bounded."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from authz.errors import DependencyError, InvalidArgument, OutboundRefused
from authz.outbound._policy import OutboundPolicy

Resolver = Callable[[str, int], Awaitable[list[str]]]

_REDIRECTS = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the event loop's getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def vet_host_sync(policy: OutboundPolicy, host: str, port: int, purpose: str) -> str:
    """Resolve ``host`` once (blocking getaddrinfo), vet every address, return the first: for clients
    Tessera does not drive itself (e.g. the OPA client), which are then pointed at that address.
    OutboundRefused, or DependencyError when the name does not resolve."""
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DependencyError(
                f"{purpose}: cannot resolve {host}: {exc}", metadata={"failure": "dns"}
            ) from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        why = policy.refusal(address, port)
        if why is not None:
            raise OutboundRefused(
                f"{purpose} at {host}:{port} refused: {why}",
                metadata={"host": host, "address": address, "port": str(port)},
            )
    return addresses[0]


def pinned_request_hook(url: httpx.URL, address: str) -> Callable[[Any], Awaitable[None]]:
    """An ``httpx`` / ``httpx2`` request event hook for a client Tessera does not drive request by
    request (the ``mcp`` SDK's streamable HTTP client): every request goes to ``address``, the address
    :meth:`OutboundClient.vet` vetted for ``url``'s host, instead of the name being resolved again at
    connect time (DNS rebinding). ``Host`` (set when the request was built), TLS SNI and the certificate
    check keep the name. A request for any other host or port is refused
    (:class:`authz.errors.OutboundRefused`): it was never vetted."""
    host, scheme = url.host, url.scheme
    port = url.port or _DEFAULT_PORTS.get(scheme)

    async def pin(request: Any) -> None:
        target = request.url
        if (target.scheme, target.host, target.port or _DEFAULT_PORTS.get(target.scheme)) != (
            scheme,
            host,
            port,
        ):
            raise OutboundRefused(
                f"{target.scheme}://{target.host}:{target.port} is not the vetted {scheme}://{host}:{port}",
                metadata={"host": str(target.host)},
            )
        request.url = target.copy_with(host=address)
        if scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}

    return pin


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """A complete answer: status, headers, at most ``max_response_bytes`` of body, and where it came from."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str  # the URL as given (after redirects), not the address it was sent to
    address: str  # the vetted IP address actually connected to

    def json(self) -> Any:
        import json

        return json.loads(self.content)


def _split(url: str) -> tuple[httpx.URL, str, int]:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidArgument(f"{url!r} is not a URL") from None
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise InvalidArgument(f"outbound URLs must be http or https with a host, not {url!r}")
    if parsed.userinfo:
        raise InvalidArgument("outbound URLs may not carry credentials in the URL")
    return parsed, parsed.host, parsed.port or _DEFAULT_PORTS[parsed.scheme]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Loading the CA bundle costs tens of ms of CPU per context: every outbound client of a process
    (the forwarder builds one per sink) shares one verifying context."""
    return httpx.create_ssl_context(trust_env=False)


class OutboundClient:
    """One HTTP client for every URL an admin or a tenant file can set (approval webhooks, intent
    extractor, and later forwarders, OPA and notifications).

    Per request: the host is resolved **once**, every address it resolves to must pass the
    :class:`OutboundPolicy` (one refused address refuses the request), and the connection goes to the
    first vetted address itself (``Host`` and TLS SNI keep the name, so certificates are still checked
    against it): a DNS answer that changes between the check and the connection (rebinding) cannot
    redirect the request. Redirects are followed only up to ``max_redirects`` and each target is vetted
    the same way. The whole exchange, resolution included, is bounded by ``timeout_s``; a body larger
    than ``max_response_bytes`` fails. Proxy environment variables are ignored (a proxy would resolve
    the name itself).

    A refusal raises :class:`authz.errors.OutboundRefused` (before any connection); a transport failure,
    timeout or oversized answer raises :class:`authz.errors.DependencyError`. ``resolver`` is for tests.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout_s: float = 5.0,
        max_response_bytes: int = 1024 * 1024,
        max_redirects: int = 3,
        resolver: Resolver = system_resolver,
        purpose: str = "outbound request",
    ):
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self._resolve = resolver
        self._purpose = purpose
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, trust_env=False, verify=_tls_context()
        )

    async def vet(self, url: str) -> tuple[httpx.URL, str, str]:
        """Resolve and vet ``url``: ``(parsed URL, host name, address to connect to)``.

        Also usable alone to check a URL when an admin sets it (the API error then carries the reason).
        """
        parsed, host, port = _split(url)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                raise DependencyError(
                    f"{self._purpose}: cannot resolve {host}: {exc}", metadata={"failure": "dns"}
                ) from None
            if not addresses:
                raise DependencyError(f"{self._purpose}: {host} has no address", metadata={"failure": "dns"})
        for address in addresses:
            why = self.policy.refusal(address, port)
            if why is not None:
                raise OutboundRefused(
                    f"{self._purpose} to {host}:{port} refused: {why}",
                    metadata={"host": host, "address": address, "port": str(port)},
                )
        return parsed, host, addresses[0]

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> OutboundResponse:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(method, url, content, json, dict(headers or {}))
        except TimeoutError:
            raise DependencyError(
                f"{self._purpose} to {url} did not answer within {self.timeout_s:g}s",
                metadata={"failure": "timeout"},
            ) from None

    async def post(self, url: str, **kw: Any) -> OutboundResponse:
        return await self.request("POST", url, **kw)

    async def _exchange(
        self, method: str, url: str, content: bytes | None, json: Any, headers: dict[str, str]
    ) -> OutboundResponse:
        for _ in range(self.max_redirects + 1):
            parsed, host, address = await self.vet(url)
            target = parsed.copy_with(host=address)
            sent = dict(headers)
            sent["host"] = parsed.netloc.decode("ascii")
            extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
            request = self._client.build_request(
                method, target, content=content, json=json, headers=sent, extensions=extensions
            )
            try:
                response = await self._client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        location = parsed.join(response.headers["location"])
                        url = str(location)
                        if response.status_code not in (307, 308):
                            method, content, json = "GET", None, None
                        continue
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_response_bytes:
                            raise DependencyError(
                                f"{self._purpose}: answer larger than {self.max_response_bytes} bytes",
                                metadata={"failure": "too_large"},
                            )
                    return OutboundResponse(response.status_code, response.headers, bytes(body), url, address)
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                detail = str(exc) or type(exc).__name__
                raise DependencyError(
                    f"{self._purpose} to {url} failed: {detail}", metadata={"failure": "transport"}
                ) from None
        raise DependencyError(
            f"{self._purpose}: more than {self.max_redirects} redirects", metadata={"failure": "redirects"}
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OutboundClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
