"""The OPA policy backend: a tenant's decisions come from an OPA server (the sidecar many meshes run).

A tenant opts in with ``policy_engine: {engine: opa, url: http://opa:8181, path: tessera/decision}``
(tenants file ``policy:`` mapping, see :mod:`authz.tenants`). Each policy evaluation then is
``POST {url}/v1/data/{path}`` with ``{"input": <the same input document the embedded engine gets>}``
through ``opa-python-client``; the ``result`` is read with the embedded engine's rules
(:func:`~authz.policy._result.result_from_engine`), so a missing result (undefined), a badly shaped
decision, an HTTP error, a connection failure or the timeout (``timeout_ms``, default 200) all deny.

Lifecycle: with ``push: true`` (the default) the admin API's policy lifecycle still applies: the
tenant's active version (promoted, rolled back, or from the tenants file) is pushed to OPA as policy
``tessera-<tenant>`` (``PUT /v1/policies/{id}``) before its first evaluation, so drafts, validation,
dry runs, promotion and rollback work as for embedded tenants (drafts are validated by the embedded
compiler). One OPA server then serves one tenant (the shipped policies all say ``package tessera``).
With ``push: false`` the policy is owned by OPA bundles: Tessera only queries ``path``, and promotions
in Tessera do not change what OPA decides (the audit still records the version Tessera holds).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authz.echo import echo
from authz.errors import DependencyError, InvalidArgument
from authz.outbound import OutboundPolicy, vet_host_sync
from authz.policy._engine import EngineResult
from authz.policy._result import PolicyResult, result_from_engine

ENGINES = ("embedded", "opa")
_PATH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class OpaSettings:
    """Where and how a tenant's decisions are asked of OPA (validated by :meth:`parse`)."""

    url: str
    path: str = "tessera/decision"
    timeout_ms: int = 200
    push: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> OpaSettings:
        """From a tenant's ``policy_engine`` mapping; InvalidArgument says what is wrong."""
        if not isinstance(raw, Mapping):
            raise InvalidArgument("policy_engine must be a mapping")
        unknown = sorted(set(raw) - {"engine", "url", "path", "timeout_ms", "push"})
        if unknown:
            raise InvalidArgument(f"policy_engine has unknown keys: {', '.join(unknown)}")
        if raw.get("engine") != "opa":
            raise InvalidArgument(f"policy_engine.engine must be 'opa', got {echo(raw.get('engine'))}")
        url = raw.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument("policy_engine.url must be an http(s) URL of the OPA server")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise InvalidArgument("policy_engine.url names the OPA server only (scheme, host, port)")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise InvalidArgument("policy_engine.url has an invalid port") from None
        path = raw.get("path", "tessera/decision")
        if not isinstance(path, str) or not _PATH_RE.fullmatch(path.strip("/")):
            raise InvalidArgument("policy_engine.path must look like 'tessera/decision'")
        timeout_ms = raw.get("timeout_ms", 200)
        if (
            isinstance(timeout_ms, bool)
            or not isinstance(timeout_ms, int)
            or not 1 <= timeout_ms <= _MAX_TIMEOUT_MS
        ):
            raise InvalidArgument(f"policy_engine.timeout_ms must be an integer from 1 to {_MAX_TIMEOUT_MS}")
        push = raw.get("push", True)
        if not isinstance(push, bool):
            raise InvalidArgument("policy_engine.push must be true or false")
        return cls(url.rstrip("/"), path.strip("/"), timeout_ms, push)

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": "opa",
            "url": self.url,
            "path": self.path,
            "timeout_ms": self.timeout_ms,
            "push": self.push,
        }


class PinnedResolver:
    """An aiohttp resolver that knows one name: ``host`` resolves to the vetted ``address``, anything
    else is refused (the OPA client only ever connects to its own server)."""

    def __init__(self, host: str, address: str):
        self.host = host
        self.address = address
        self.family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[dict[str, Any]]:
        if host != self.host:
            raise OSError(f"OPA server: {host} is not the vetted host {self.host}")
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": self.family,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


def _pinned_client_class(base: type) -> type:
    """``opa_client``'s AsyncOpaClient with its HTTPS connections pinned to a vetted address."""
    cached = _PINNED_CLASSES.get(base)
    if cached is not None:
        return cached

    class PinnedOpaClient(base):  # type: ignore[misc, valid-type]
        pinned_address: str | None = None

        async def _init_session(self) -> None:
            if self.pinned_address is None:
                await super()._init_session()
                return
            import aiohttp

            # What the library's own session has (default CA certificates, its headers and timeout),
            # with a resolver that only answers the vetted address.
            context = ssl.create_default_context()
            self._connector = aiohttp.TCPConnector(
                ssl=context, resolver=PinnedResolver(self.host, self.pinned_address)
            )
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=self._connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )

    _PINNED_CLASSES[base] = PinnedOpaClient
    return PinnedOpaClient


_PINNED_CLASSES: dict[type, type] = {}

#: How long a vetted OPA address is used before the server's name is resolved (and vetted) again: an
#: OPA pod that comes back at a new address (a headless Service, a new node) is reached within this.
REVET_AFTER_S = 30.0
#: After an undefined answer, the policy is pushed again at most this often: an OPA server that
#: restarted has lost what Tessera pushed, and answers every query "undefined" until it is back.
REPUSH_AFTER_UNDEFINED_S = 5.0


class OpaClients:
    """One ``opa_client.AsyncOpaClient`` per OPA server, shared by every tenant and policy version that
    use it; created on first use (inside the event loop), closed by :meth:`aclose`."""

    def __init__(self, outbound: OutboundPolicy | None = None) -> None:
        self._clients: dict[str, Any] = {}
        self._vetted_at: dict[str, float] = {}  # url -> when its address was last vetted (monotonic)
        self._retired: list[Any] = []  # clients replaced after a re-vet, closed by aclose()
        # The operator's outbound rules (authz.outbound): a tenant's OPA URL may not name loopback,
        # private or metadata addresses or Tessera's own ports unless TESSERA_OUTBOUND_ALLOW says so.
        self._outbound = outbound

    def get(self, url: str) -> Any:
        """The client of the OPA server at ``url``, created (and its name vetted) on first use."""
        client = self._clients.get(url)
        if client is None:
            client = self._build(url, self._vet(url) if self._outbound is not None else None)
        return client

    async def aget(self, url: str) -> Any:
        """:meth:`get` for the event loop: the name is resolved on a thread, so a slow DNS answer delays
        only this tenant's evaluation, not every check on the loop. With outbound rules the vetted
        address is pinned, and resolved and vetted again every :data:`REVET_AFTER_S`."""
        client = self._clients.get(url)
        if client is not None and (
            self._outbound is None or time.monotonic() - self._vetted_at.get(url, 0.0) < REVET_AFTER_S
        ):
            return client
        if self._outbound is None:
            return self._build(url, None)
        self._vetted_at[url] = time.monotonic()  # one re-vet at a time per server, not one per check
        try:
            address = await asyncio.to_thread(self._vet, url)
        except DependencyError:
            if client is None:
                raise
            # The name does not resolve now, or resolves to an address the rules refuse: the address
            # vetted before still serves (nothing unvetted is ever connected to).
            return client
        current = self._clients.get(url)
        if current is not None and getattr(current, "vetted_address", None) == address:
            return current
        if current is not None:
            self._retired.append(current)  # in-flight queries may still use it; closed by aclose()
        return self._build(url, address)

    def _vet(self, url: str) -> str:
        """Resolve and vet the server's name once (OutboundRefused / DependencyError): every connection
        then goes to this address, so a later DNS answer cannot move it (rebinding)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 8181)
        assert self._outbound is not None
        return vet_host_sync(self._outbound, parts.hostname or "", port, "OPA server")

    def _build(self, url: str, address: str | None) -> Any:
        from opa_client.opa_async import AsyncOpaClient  # the ``opa`` extra

        parts = urlsplit(url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 8181)
        host = parts.hostname or ""
        pinned: str | None = None
        if address is not None:
            # Over plain HTTP the client is simply pointed at the vetted address; over HTTPS the URL
            # keeps the name (SNI and the certificate are checked against it) and the connector's
            # resolver answers that name with the vetted address.
            if https:
                pinned = address
            else:
                host = address
        client = _pinned_client_class(AsyncOpaClient)(
            host=host,
            port=port,
            ssl=https,
            retries=0,  # one attempt: the check's deadline leaves no room to retry
            timeout=_MAX_TIMEOUT_MS / 1000,  # the per-call timeout is ours (asyncio.timeout)
        )
        client.pinned_address = pinned
        client.vetted_address = address
        self._clients[url] = client
        self._vetted_at.setdefault(url, time.monotonic())
        return client

    def policy(self, tenant: str, engine: Mapping[str, Any], version: Any) -> OpaPolicy:
        """The :class:`OpaPolicy` of a tenant's active ``version`` (a ``PolicyVersion``); the builder
        :class:`~authz.check.TenantDirectory` takes as ``remote_policy``."""
        settings = OpaSettings.parse(engine)
        return OpaPolicy(
            tenant,
            settings,
            self,
            source=version.source,
            version=version.version,
            content_hash=version.content_hash,
        )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        retired, self._retired = self._retired, []
        for client in [*clients.values(), *retired]:
            await client.close_connection()


class OpaPolicy:
    """One tenant's policy version evaluated by OPA. Same surface as
    :class:`~authz.policy.CompiledPolicy`, except that :meth:`evaluate` is a coroutine."""

    def __init__(
        self,
        tenant: str,
        settings: OpaSettings,
        clients: OpaClients,
        *,
        source: str,
        version: int,
        content_hash: str,
    ):
        self.tenant = tenant
        self.settings = settings
        self._clients = clients
        self._source = source
        self._version = version
        self._content_hash = content_hash
        self._pushed = not settings.push
        self._push_lock = asyncio.Lock()
        self._repushed_at = float("-inf")

    @property
    def version(self) -> int:
        return self._version

    @property
    def content_hash(self) -> str:
        return self._content_hash

    @property
    def source(self) -> str:
        return self._source

    @property
    def policy_id(self) -> str:
        return f"tessera-{self.tenant}"

    async def _session(self) -> Any:
        client = await self._clients.aget(self.settings.url)
        if client._session is None:
            await client._init_session()
        return client

    async def push(self) -> None:
        """``PUT /v1/policies/tessera-<tenant>`` with this version's source (once per version)."""
        async with self._push_lock:
            if self._pushed:
                return
            client = await self._session()
            await client.update_policy_from_string(self._source, self.policy_id, rego_compat=False)
            self._pushed = True

    async def evaluate(self, input: Mapping[str, Any]) -> PolicyResult:
        """Ask OPA for ``data.<path>``; never raises (every failure is a deny with ``error=True``)."""
        try:
            async with asyncio.timeout(self.settings.timeout_ms / 1000):
                if not self._pushed:
                    await self.push()
                client = await self._session()
                response = await client.query_rule(dict(input), self.settings.path)
                if self._lost_policy(response):
                    # OPA restarted and lost the pushed module: push it again and ask once more.
                    self._pushed = False
                    await self.push()
                    response = await client.query_rule(dict(input), self.settings.path)
        except TimeoutError:
            return PolicyResult.deny(f"OPA did not answer within {self.settings.timeout_ms} ms", error=True)
        except Exception as exc:
            if self.settings.push and isinstance(exc, OSError | _client_errors()):
                self._pushed = False  # the server may have restarted: push before the next query
            return PolicyResult.deny(f"OPA policy evaluation failed: {_describe(exc)}", error=True)
        if not isinstance(response, dict):
            return PolicyResult.deny("OPA answered something other than a JSON object", error=True)
        if "result" not in response:
            return result_from_engine(EngineResult("undefined"))
        return result_from_engine(EngineResult("value", (response["result"],)))

    def _lost_policy(self, response: Any) -> bool:
        """An undefined answer while Tessera pushes the policy, at most once per
        :data:`REPUSH_AFTER_UNDEFINED_S` (a policy may also be undefined for some inputs by design)."""
        if not self.settings.push or not isinstance(response, dict) or "result" in response:
            return False
        now = time.monotonic()
        if now - self._repushed_at < REPUSH_AFTER_UNDEFINED_S:
            return False
        self._repushed_at = now
        return True

    def __repr__(self) -> str:
        return f"OpaPolicy(tenant={self.tenant!r}, url={self.settings.url!r}, version={self._version})"


def _client_errors() -> type[BaseException]:
    import aiohttp  # with the ``opa`` extra, as opa_client is

    return aiohttp.ClientConnectionError


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
