"""Token exchange from the agent's side: its IdP access token in, a Tessera capability token out.

``POST <gateway>/v1/oauth/token`` (RFC 8693 style, docs/mcp.md). The capability token that comes back
is a macaroon: hand it to :class:`Gateway`, or narrow it offline with :func:`attenuate` for sub-agents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ._errors import CAPABILITY, UNAVAILABLE, CapabilityError, GatewayError, UnavailableError
from ._protocol import _MCP_ENDPOINT, transport_error

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_PATH = "/v1/oauth/token"


def _targets(name: str, value: str | Sequence[str] | None) -> list[str]:
    """``resource`` / ``audience`` as the list of values to send (each repeats in the form)."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"{name} must be a non-empty string or a non-empty sequence of them (None: unbound)")
    return [v.strip() for v in values]


def _request(
    gateway_url: str,
    access_token: str,
    tools: Sequence[str] | None,
    resource: str | Sequence[str] | None = None,
    audience: str | Sequence[str] | None = None,
) -> tuple[str, dict[str, str | list[str]]]:
    if not isinstance(access_token, str) or not access_token.strip():
        raise ValueError("access_token must be the agent's access token from its authorization server")
    if not isinstance(gateway_url, str) or not gateway_url.strip():
        raise ValueError("the gateway URL must be a non-empty string, e.g. https://gw.example.com")
    # The gateway's root: a URL naming its MCP endpoint, or a named server's, posts to the same place.
    base = _MCP_ENDPOINT.sub("", gateway_url.strip().rstrip("/"))
    form: dict[str, str | list[str]] = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": access_token.strip(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    if tools is not None:
        if isinstance(tools, str) or not tools:
            raise ValueError("tools must be a non-empty sequence of tool names (None: all allowed)")
        # `scope` is space-separated (RFC 6749 §3.3): a name with whitespace in it would ask for others.
        if not all(isinstance(t, str) and t and not any(c.isspace() for c in t) for t in tools):
            raise ValueError("tools must be tool names: non-empty strings without whitespace")
        form["scope"] = " ".join(tools)
    # RFC 8693 §2.1: both may be given several times; the gateway binds the token to every MCP server
    # they name (and refuses the whole request, invalid_target, if one names a server it does not serve).
    for name, value in (("resource", resource), ("audience", audience)):
        values = _targets(name, value)
        if values:
            form[name] = values
    return base + TOKEN_PATH, form


def _result(url: str, response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if (
        response.status_code == 200
        and isinstance(body, Mapping)
        and isinstance(body.get("access_token"), str)
    ):
        return body["access_token"]
    # The gateway answers errors as RFC 6749 §5.2 says: {"error": <code>, "error_description": ...}.
    oauth_error = body.get("error") if isinstance(body, Mapping) else None
    oauth_error = oauth_error if isinstance(oauth_error, str) else None
    message = body.get("error_description") if isinstance(body, Mapping) else None
    data: dict[str, Any] = {
        "check": "capability",
        "reason": message if isinstance(message, str) else f"HTTP {response.status_code}",
        "error": oauth_error,
    }
    if response.status_code in (400, 401) and oauth_error:
        raise CapabilityError(CAPABILITY, f"token exchange refused ({oauth_error})", data)
    if response.status_code in (429, 503):  # rate limited, or the issuer's keys are unavailable
        retry_after = response.headers.get("retry-after", "")
        if retry_after.isdigit():
            data["retry_after_ms"] = int(retry_after) * 1000
        raise UnavailableError(UNAVAILABLE, "token exchange unavailable", {**data, "check": "unavailable"})
    raise GatewayError(
        f"token exchange at {url} failed", http_status=response.status_code, body=response.text[:2000]
    )


def exchange_token(
    gateway_url: str,
    access_token: str,
    *,
    tools: Sequence[str] | None = None,
    resource: str | Sequence[str] | None = None,
    audience: str | Sequence[str] | None = None,
    timeout: float = 10.0,
) -> str:
    """Trade ``access_token`` (a JWT from an issuer the gateway trusts) for a capability token, at most
    ``tools`` (None: everything the token's claims and the tenant allow).

    ``resource`` (absolute URIs, RFC 8707, e.g. ``https://gw.example.com/v1/mcp/billing``) and
    ``audience`` (server names such as ``billing``, or such URIs), each one value or several (RFC 8693
    §2.1), bind the token to the MCP servers they name; None leaves it unbound.

    Raises :class:`CapabilityError` when refused (``e.data["error"]`` is the OAuth error code, e.g.
    ``invalid_scope`` for tools beyond what is allowed, ``invalid_target`` for a resource or audience
    the gateway does not serve), :class:`UnavailableError` when the gateway cannot check the token now,
    :class:`GatewayError` when it cannot be reached."""
    url, form = _request(gateway_url, access_token, tools, resource, audience)
    try:
        response = httpx.post(url, data=form, timeout=timeout)
    except httpx.HTTPError as exc:
        raise transport_error(exc, url) from exc
    return _result(url, response)


async def aexchange_token(
    gateway_url: str,
    access_token: str,
    *,
    tools: Sequence[str] | None = None,
    resource: str | Sequence[str] | None = None,
    audience: str | Sequence[str] | None = None,
    timeout: float = 10.0,
) -> str:
    """The async twin of :func:`exchange_token`."""
    url, form = _request(gateway_url, access_token, tools, resource, audience)
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(url, data=form)
    except httpx.HTTPError as exc:
        raise transport_error(exc, url) from exc
    return _result(url, response)
