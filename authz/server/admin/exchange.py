"""``TokenExchangeService``: an IdP access token for a Tessera capability token (RFC 8693 style).

Public (no admin key; the access rule's scope is ``public``): the subject token is the credential.
The form is parsed here, the exchange itself is :class:`authz.oauth.TokenExchange`; every token issued
is audited in its tenant's chain, as the agent it was issued to.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from authz.api.admin.v1 import token_exchange_service_pb2 as pb
from authz.api.admin.v1 import token_exchange_service_pb2_grpc as pb_grpc
from authz.audit import append_admin_event
from authz.errors import FailedPrecondition, InvalidArgument
from authz.oauth import ACCESS_TOKEN_TYPE, REPEATABLE_PARAMETERS, TokenExchange, accept_access_tokens
from authz.outbound import OutboundClient, policy_from_config
from authz.server.admin._common import AdminRuntime

log = logging.getLogger("tessera.admin")

#: Where :func:`authz.server.admin.app.build_admin_runtime` puts the :class:`authz.oauth.TokenExchange`.
EXTRA = "token_exchange"
#: A token request is a few form fields and one JWT; anything much larger is not one.
MAX_FORM_BYTES = 16 * 1024
_FORM = "application/x-www-form-urlencoded"


async def enable_token_exchange(runtime: AdminRuntime, config: Any) -> None:
    """Turn the exchange on when the process trusts OAuth issuers (``config.oauth_issuers_file``): the
    same issuers file, JWKS rules and outbound client as the check service."""
    authenticator, jwks = accept_access_tokens(
        config.oauth_issuers_file,
        runtime.authenticator,
        outbound=OutboundClient(policy_from_config(config), timeout_s=5.0, purpose="OAuth JWKS"),
    )
    if jwks is None:
        return
    await jwks.refresh()
    runtime.extras["jwks"] = jwks
    runtime.extras[EXTRA] = TokenExchange(authenticator, runtime.keyring)


def _invalid_request(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_REQUEST", metadata={"error": "invalid_request"})


def parse_form(content_type: str, data: bytes) -> dict[str, str | tuple[str, ...]]:
    """The token request's parameters: each at most once (RFC 6749 §3.2), except ``resource`` and
    ``audience`` (:data:`~authz.oauth.REPEATABLE_PARAMETERS`, RFC 8693 §2.1), which come as a tuple of
    every value given."""
    if content_type.split(";", 1)[0].strip().lower() != _FORM:
        raise _invalid_request(f"the token request must be {_FORM}, not {content_type or 'empty'!r}")
    if len(data) > MAX_FORM_BYTES:
        raise _invalid_request(f"the token request is larger than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(data))
    except (UnicodeDecodeError, ValueError):
        raise _invalid_request("the token request is not a valid form") from None
    form: dict[str, str | tuple[str, ...]] = {}
    for name, value in pairs:
        if name in REPEATABLE_PARAMETERS:
            form[name] = (*form.get(name, ()), value)
        elif name in form:
            raise _invalid_request(f"parameter {name!r} is given more than once")
        else:
            form[name] = value
    return form


class TokenExchangeService(pb_grpc.TokenExchangeServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def ExchangeToken(self, request: pb.ExchangeTokenRequest, context) -> pb.ExchangeTokenResponse:
        exchange = self.rt.extras.get(EXTRA)
        if exchange is None:
            raise FailedPrecondition(
                "token exchange is off: no trusted OAuth issuers (TESSERA_OAUTH_ISSUERS_FILE)",
                reason="TOKEN_EXCHANGE_OFF",
                # RFC 6749 §5.2: this server supports no token-exchange grant.
                metadata={"error": "unsupported_grant_type"},
            )
        form = parse_form(request.form.content_type, request.form.data)
        now = datetime.fromtimestamp(self.rt.clock(), UTC)
        try:
            issued = exchange.exchange(form, now=now)
        except InvalidArgument as exc:
            log.info("token exchange refused: %s", exc)
            if exc.metadata.get("tenant"):  # the subject verified, so the tenant's chain records it
                await self._audit_refusal(exc)
            raise
        if await self.rt.store.get_tenant(issued.tenant) is None:
            raise InvalidArgument(
                f"the subject token's tenant {issued.tenant!r} does not exist",
                reason="INVALID_GRANT",
                metadata={"error": "invalid_grant"},
            )
        if await self.rt.store.is_revoked(issued.tenant, issued.jti, (issued.subject_token_id,)):
            raise InvalidArgument(
                "the subject token is revoked", reason="INVALID_GRANT", metadata={"error": "invalid_grant"}
            )
        if issued.actor is not None and await self.rt.store.is_revoked(
            issued.tenant, issued.actor["jti"], (issued.actor["token_id"],)
        ):
            raise InvalidArgument(
                "the actor token is revoked", reason="INVALID_GRANT", metadata={"error": "invalid_grant"}
            )
        if issued.max_exchanges is not None:
            await self._count(issued, now)
        # Recorded before the token is handed out: an exchange the chain does not show never happened.
        await append_admin_event(
            self.rt.store,
            issued.tenant,
            f"oauth:{issued.agent or '-'}@{issued.issuer}",
            "token.exchange",
            f"jti:{issued.jti}",
            {
                "token_id": issued.token_id,
                "agent": issued.agent,
                "issuer": issued.issuer,
                "subject_token_id": issued.subject_token_id,
                "caveats": list(issued.caveats),
                # RFC 8693: the servers the token was asked for ("" is /v1/mcp) and who acts.
                "servers": list(issued.servers) if issued.servers is not None else None,
                "act": issued.actor,
            },
        )
        return pb.ExchangeTokenResponse(
            access_token=issued.token,
            issued_token_type=ACCESS_TOKEN_TYPE,
            token_type="Bearer",
            expires_in=max(0, int((issued.expires - now).total_seconds())),
            scope=" ".join(issued.tools or ()),
        )

    async def _count(self, issued: Any, now: datetime) -> None:
        """One more exchange of the subject token's ``jti``, or ``invalid_grant`` (audited) when the
        issuer's ``max_exchanges_per_jti`` is reached."""
        # A JWT without exp cannot verify (exp is required); a day is a bound should that change.
        until = issued.subject_expires or now + timedelta(days=1)
        counted = await self.rt.store.count_exchange(
            issued.tenant,
            issued.jti,
            limit=issued.max_exchanges,
            expires_at=until.timestamp(),
            now=now.timestamp(),
        )
        if counted is None:
            refused = InvalidArgument(
                f"the subject token was already exchanged {issued.max_exchanges} times (the most its "
                "issuer's allowance permits per token)",
                reason="INVALID_GRANT",
                metadata={
                    "error": "invalid_grant",
                    "tenant": issued.tenant,
                    "agent": issued.agent or "",
                    "issuer": issued.issuer,
                },
            )
            await self._audit_refusal(refused)
            raise refused

    async def _audit_refusal(self, exc: InvalidArgument) -> None:
        meta = exc.metadata
        try:
            await append_admin_event(
                self.rt.store,
                meta["tenant"],
                f"oauth:{meta.get('agent') or '-'}@{meta.get('issuer', '-')}",
                "token.exchange.refused",
                f"issuer:{meta.get('issuer', '-')}",
                {"error": meta.get("error"), "reason": exc.message[:500]},
            )
        except Exception as audit_error:  # the caller is refused either way; say what was not recorded
            log.error("could not audit a refused token exchange: %s", audit_error)
