"""Console page for a tenant's memory writers (docs/provenance-and-receipts.md): the registered writers
with their key fingerprints, sources, expiry and state, and register, rotate and disable. Like every
console page it only calls the admin API (``MemoryWriterService``) as the signed-in person: listing needs
the viewer role, changes need admin, and each change is audited by the admin service."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from authz.console._sessions import Session

if TYPE_CHECKING:
    from authz.console._app import Console

SERVICE = "MemoryWriterService"


def key_fingerprint(encoded: str) -> str:
    """The SHA-256 prefix of a public key (as the admin API returns it, base64), the form the audit
    events record as ``key_sha256``, so a key seen here can be matched to its register or rotate event."""
    if not encoded:
        return ""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "?"
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_key(text: str) -> str:
    """The key as the form gave it, checked to be base64 (standard or URL-safe) before it goes out; the
    admin API decides whether it is a valid Ed25519 key."""
    text = text.strip()
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "the public key is not base64 (tessera memory-writer public-key FILE prints it)"
        ) from None
    return base64.b64encode(raw).decode()


def _sources(text: str) -> list[str]:
    return [s.strip() for s in text.replace("\r", "").replace(",", "\n").split("\n") if s.strip()]


def _expires_at(text: str) -> str | None:
    """A date or RFC 3339 time from the form, as the admin API's Timestamp JSON; None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expiry {text!r} is not a date or an RFC 3339 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class MemoryWriters:
    def __init__(self, console: Console):
        self.c = console

    async def page(self, request: Request, session: Session, **extra: Any) -> Response:
        tenants, shown = await self.c.tenant_choice(request, session)
        tenant = extra.pop("tenant", None) or shown
        writers: list[dict] = []
        if tenant:
            answer = await self.c.call(request, session, SERVICE, "ListMemoryWriters", {"tenant": tenant})
            writers = answer["writers"]
            for writer in writers:
                writer["fingerprint"] = key_fingerprint(writer.get("public_key", ""))
                writer["previous_fingerprint"] = key_fingerprint(writer.get("previous_public_key", ""))
        return self.c.render(
            "memory_writers.html",
            request,
            session,
            status=extra.pop("status", 200),
            tenants=tenants,
            tenant=tenant,
            writers=writers,
            notice=request.query_params.get("notice", ""),
            **({"form_error": ""} | extra),
        )

    async def action(self, request: Request, session: Session) -> Response:
        form = await request.form()
        if (refused := self.c.csrf_refused(request, session, form)) is not None:
            return refused
        action, tenant = str(form.get("action", "")), str(form.get("tenant", ""))
        writer_id = str(form.get("writer_id", "")).strip()
        body: dict[str, Any] = {"tenant": tenant, "writer_id": writer_id}
        try:
            if action == "register":
                body["public_key"] = _public_key(str(form.get("public_key", "")))
                body["sources"] = _sources(str(form.get("sources", "")))
                if (expires := _expires_at(str(form.get("expires_at", "")))) is not None:
                    body["expires_at"] = expires
                await self.c.call(request, session, SERVICE, "RegisterMemoryWriter", body)
                notice = f"Registered memory writer {writer_id}."
            elif action == "rotate":
                body |= {
                    "public_key": _public_key(str(form.get("public_key", ""))),
                    "previous_key_grace_s": int(form.get("previous_key_grace_s") or 0),
                }
                await self.c.call(request, session, SERVICE, "RotateMemoryWriter", body)
                notice = f"Rotated the key of memory writer {writer_id}."
            elif action == "disable":
                await self.c.call(request, session, SERVICE, "DisableMemoryWriter", body)
                notice = f"Disabled memory writer {writer_id}."
            else:
                raise ValueError("unknown memory writer action")
        except ValueError as exc:
            # A malformed form field (a key that is not base64, a bad date or number): say which, change
            # nothing. The admin API's own refusals become error pages through Console.page.
            return await self.page(request, session, tenant=tenant, status=400, form_error=str(exc))
        return RedirectResponse(
            f"/console/memory-writers?tenant={quote(tenant)}&notice={quote(notice)}", status_code=303
        )

    def routes(self) -> list[Route]:
        p = self.c.page
        return [
            Route("/console/memory-writers", p(self.page)),
            Route("/console/memory-writers/action", p(self.action), methods=["POST"]),
        ]
