"""Pinning a botocore client (boto3, extra ``s3``) to vetted addresses.

botocore opens its own connections by name: vetting the endpoint's name before a call and then letting
botocore connect would let a DNS answer that changes in between (rebinding) reach an address the vetting
refused. :func:`pin_botocore_client` closes that gap through botocore's public event system: a
``before-send`` handler takes every prepared (already signed) request, resolves and vets its host
(:func:`~authz.outbound.vet_host_sync`), and sends it itself over a connection to the vetted address.
The request keeps its name where it matters: the ``Host`` header (which SigV4 signed), TLS SNI, and the
certificate check. botocore then reads the answer as if it had sent the request.
"""

from __future__ import annotations

import ipaddress
import threading
import weakref
from typing import Any
from urllib.parse import urlsplit

from authz.outbound._client import vet_host_sync
from authz.outbound._policy import OutboundPolicy

_DEFAULT_PORTS = {"http": 80, "https": 443}


class PinnedBotocoreSender:
    """Sends botocore's prepared requests to vetted addresses only (see the module docstring).

    Every request is vetted afresh (one resolution), so a refused answer refuses the request before any
    connection, and a later answer can move a new connection only to another vetted address. Pools are
    kept per (scheme, name, port, address) for keep-alive; one whose address is no longer the vetted one
    is closed. Proxies are not used (a proxy would resolve the name itself). Errors are botocore's own
    exception types, so callers handle them as they would botocore's; a refusal raises
    :class:`authz.errors.OutboundRefused` (a failed resolution :class:`authz.errors.DependencyError`).
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        purpose: str,
        verify: bool | str = True,
        connect_timeout: float = 10.0,
        read_timeout: float = 10.0,
        max_pool_connections: int = 10,
    ):
        from botocore.httpsession import get_cert_path

        self.policy = policy
        self.purpose = purpose
        # botocore's own default trust store (its bundled CA file) when verify is True; a path is a
        # CA bundle, False turns verification off as it would in botocore.
        self._ca_certs: str | None = get_cert_path(verify) if verify is not False else None
        self._verify = verify is not False
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._maxsize = max_pool_connections
        self._pools: dict[tuple[str, str, int, str], Any] = {}
        self._lock = threading.Lock()

    def _pool(self, scheme: str, host: str, port: int, address: str) -> Any:
        import urllib3

        key = (scheme, host, port, address)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                return pool
            for old in [k for k in self._pools if k[:3] == key[:3]]:
                self._pools.pop(old).close()  # the name now resolves elsewhere: drop the old address
            timeout = urllib3.Timeout(connect=self._connect_timeout, read=self._read_timeout)
            common = {"port": port, "timeout": timeout, "maxsize": self._maxsize, "retries": False}
            if scheme == "https":
                # Connect to the address, but SNI and the certificate check use the name.
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    server_hostname=host,
                    cert_reqs="CERT_REQUIRED" if self._verify else "CERT_NONE",
                    ca_certs=self._ca_certs,
                    assert_hostname=host if self._verify else False,
                    **common,
                )
            else:
                pool = urllib3.HTTPConnectionPool(address, **common)
            self._pools[key] = pool
            return pool

    def send(self, request: Any) -> Any:
        """Send one ``AWSPreparedRequest``; an ``AWSResponse``, or a botocore exception."""
        import urllib3.exceptions as u3
        from botocore import exceptions as bc
        from botocore.awsrequest import AWSResponse

        parts = urlsplit(request.url)
        scheme, host = parts.scheme, parts.hostname or ""
        if scheme not in _DEFAULT_PORTS or not host:
            raise bc.HTTPClientError(error=ValueError(f"{self.purpose}: cannot send to {request.url!r}"))
        port = parts.port or _DEFAULT_PORTS[scheme]
        address = vet_host_sync(self.policy, host, port, self.purpose)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "expect")}
        # What SigV4 signed as ``host``: the name, with the port unless it is the scheme's default.
        # (No Expect: 100-continue: this connection sends the body at once, which RFC 9110 allows.)
        name = f"[{host}]" if _is_v6(host) else host
        headers["Host"] = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            response = self._pool(scheme, host, port, address).urlopen(
                method=request.method,
                url=target,
                body=request.body,
                headers=headers,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                chunked=str(headers.get("Transfer-Encoding", "")).lower() == "chunked",
                enforce_content_length=False,
            )
            answer = AWSResponse(request.url, response.status, response.headers, response)
            if not request.stream_output:
                answer.content  # noqa: B018 - read the whole body now, as botocore does
            return answer
        except u3.SSLError as exc:
            raise bc.SSLError(endpoint_url=request.url, error=exc) from None
        except u3.ConnectTimeoutError as exc:
            raise bc.ConnectTimeoutError(endpoint_url=request.url, error=exc) from None
        except u3.NewConnectionError as exc:
            raise bc.EndpointConnectionError(endpoint_url=request.url, error=exc) from None
        except u3.ReadTimeoutError as exc:
            raise bc.ReadTimeoutError(endpoint_url=request.url, error=exc) from None
        except u3.ProtocolError as exc:
            raise bc.ConnectionClosedError(error=exc, request=request, endpoint_url=request.url) from None
        except (u3.HTTPError, OSError) as exc:
            raise bc.HTTPClientError(error=exc) from None

    def __call__(self, request: Any, **_: Any) -> Any:
        return self.send(request)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


def _is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def pin_botocore_client(
    client: Any,
    policy: OutboundPolicy,
    *,
    purpose: str,
    verify: bool | str = True,
    connect_timeout: float = 10.0,
    read_timeout: float = 10.0,
) -> PinnedBotocoreSender:
    """Make every request of ``client`` (a boto3/botocore client) go through a
    :class:`PinnedBotocoreSender` under ``policy``; its pools close with the client's garbage collection
    or :meth:`PinnedBotocoreSender.close`. ``verify`` must be what the client was built with."""
    sender = PinnedBotocoreSender(
        policy,
        purpose=purpose,
        verify=verify,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=client.meta.config.max_pool_connections,
    )
    # ``before-send`` is emitted for every request the client sends; the first handler answer that is
    # not None is used as the response and botocore's own HTTP session is never asked.
    client.meta.events.register_first(
        f"before-send.{client.meta.service_model.service_id.hyphenize()}", sender
    )
    weakref.finalize(client, sender.close)
    return sender
