"""``TokenService``: mint, attenuate, inspect, revoke, list revocations (ARCHITECTURE §3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from authz.api.admin.v1 import token_service_pb2 as pb
from authz.api.admin.v1 import token_service_pb2_grpc as pb_grpc
from authz.errors import InvalidArgument
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.access import in_scope
from authz.server.admin.auth import principal
from authz.storage import Revocation
from authz.token import TokenRejection, attenuate, inspect, mint

MAX_REASON = 1000


class TokenService(pb_grpc.TokenServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def MintToken(self, request: pb.MintTokenRequest, context) -> pb.MintTokenResponse:
        await self.rt.require_tenant(request.tenant)
        now = datetime.fromtimestamp(self.rt.clock(), UTC)
        if request.ttl_seconds and request.HasField("expires_at"):
            raise InvalidArgument("give expires_at or ttl_seconds, not both")
        if request.ttl_seconds < 0:
            raise InvalidArgument("ttl_seconds must be positive")
        expires = convert.datetime_of(request, "expires_at")
        if request.ttl_seconds:
            expires = now + timedelta(seconds=request.ttl_seconds)
        max_cost: Decimal | None = None
        if request.max_cost:
            try:
                max_cost = Decimal(request.max_cost)
            except InvalidOperation:
                raise InvalidArgument(
                    f"max_cost must be a decimal number, not {request.max_cost!r}"
                ) from None
        token = mint(
            self.rt.keyring,
            tenant=request.tenant,
            agent=request.agent or None,
            tools=list(request.tools) or None,
            expires=expires,
            not_before=convert.datetime_of(request, "not_before"),
            max_calls=request.max_calls if request.HasField("max_calls") else None,
            max_cost=max_cost,
            args=list(request.args),
            prompt_sha256=request.prompt_sha256 or None,
            extra_caveats=list(request.caveats),
            jti=request.jti or None,
        )
        info = inspect(token)
        await self.rt.audit(
            request.tenant,
            "token.mint",
            f"jti:{info.jti}",
            {"token_id": info.token_id, "kid": info.kid, "agent": info.agent, "caveats": list(info.caveats)},
        )
        return pb.MintTokenResponse(
            token=token,
            tenant=info.tenant,
            kid=info.kid,
            jti=info.jti,
            token_id=info.token_id,
            caveats=list(info.caveats),
            expires_at=convert.timestamp_of(info.expires),
        )

    async def AttenuateToken(self, request: pb.AttenuateTokenRequest, context) -> pb.AttenuateTokenResponse:
        if not request.caveats:
            raise InvalidArgument("attenuation needs at least one caveat", metadata={"field": "caveats"})
        token = attenuate(request.token, list(request.caveats))
        info = inspect(token)
        return pb.AttenuateTokenResponse(token=token, token_id=info.token_id, caveats=list(info.caveats))

    async def InspectToken(self, request: pb.InspectTokenRequest, context) -> pb.InspectTokenResponse:
        info = inspect(request.token)
        authenticated = self.rt.authenticator.authenticate(request.token)
        rejection = authenticated.reason if isinstance(authenticated, TokenRejection) else ""
        ancestors = () if rejection else authenticated.ancestor_ids
        revoked = await self.rt.store.is_revoked(info.tenant, info.jti, (*ancestors, info.token_id))
        return pb.InspectTokenResponse(
            version=info.version,
            tenant=info.tenant,
            kid=info.kid,
            jti=info.jti,
            token_id=info.token_id,
            caveats=list(info.caveats),
            agent=info.agent or "",
            tools=sorted(info.tools or ()),
            tools_restricted=info.tools is not None,
            expires_at=convert.timestamp_of(info.expires),
            not_before=convert.timestamp_of(info.not_before),
            problems=list(info.problems),
            signature_valid=not rejection,
            rejection=rejection,
            revoked=revoked,
        )

    async def RevokeToken(self, request: pb.RevokeTokenRequest, context) -> pb.RevokeTokenResponse:
        given = [f for f in ("jti", "token_id", "token") if getattr(request, f)]
        if len(given) != 1:
            raise InvalidArgument("give exactly one of jti, token_id and token")
        if len(request.reason) > MAX_REASON:
            raise InvalidArgument(f"reason is limited to {MAX_REASON} characters")
        tenant = request.tenant
        if request.token:
            info = inspect(request.token)
            if tenant and tenant != info.tenant:
                raise InvalidArgument(f"the token belongs to tenant {info.tenant!r}, not {tenant!r}")
            tenant = info.tenant
            kind, value = ("jti", info.jti) if request.family else ("token_id", info.token_id)
        elif request.jti:
            kind, value = "jti", request.jti
        else:
            kind, value = "token_id", request.token_id
        if request.family and not request.token:
            raise InvalidArgument("family applies to a token given in full")
        await self.rt.require_tenant(tenant)
        record = Revocation(
            tenant,
            kind,
            value,
            request.reason or "revoked by an operator",
            self.rt.clock(),
            principal().identity,
        )
        await self.rt.audited(
            lambda: self.rt.store.revoke(record),
            tenant,
            "token.revoke",
            f"{kind}:{value}",
            {"reason": record.reason},
        )
        stored = next(
            (r for r in await self.rt.store.list_revocations(tenant) if (r.kind, r.value) == (kind, value)),
            record,
        )
        return pb.RevokeTokenResponse(revocation=convert.revocation(stored))

    async def ListRevocations(
        self, request: pb.ListRevocationsRequest, context
    ) -> pb.ListRevocationsResponse:
        caller = principal()
        if request.tenant:
            revocations = await self.rt.store.list_revocations(request.tenant)
        elif caller.all_tenants:
            revocations = await self.rt.store.list_revocations()
        else:
            revocations = await self.rt.store.list_revocations(caller.tenant)
        allowed = set(in_scope(caller, sorted({r.tenant for r in revocations})))
        return pb.ListRevocationsResponse(
            revocations=[convert.revocation(r) for r in revocations if r.tenant in allowed]
        )
