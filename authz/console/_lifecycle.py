"""Console pages for the policy lifecycle (drafts, diff, dry-run, promote, rollback) and tokens (mint with
caveats, inspect, revoke). Like every console page they only call the admin API, as the signed-in
person: the admin service decides who may (promote and mint need admin, revoke needs operator)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from authz.console._admin import AdminError
from authz.console._sessions import Session

if TYPE_CHECKING:
    from authz.console._app import Console

#: Recent audited calls a dry-run replays against the candidate policy.
REPLAY_LAST = 200


def diff_lines(active: str, candidate: str) -> list[tuple[str, str]]:
    """A unified diff of the active policy and a candidate, as (kind, line): kind is add, del, hunk or
    same, for the template to mark up (no HTML is built here)."""
    out: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        active.splitlines(), candidate.splitlines(), "active", "candidate", lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        out.append((kind, line))
    return out


class Lifecycle:
    def __init__(self, console: Console):
        self.c = console

    async def _active(self, request: Request, session: Session, tenant: str) -> dict | None:
        try:
            answer = await self.c.call(
                request, session, "PolicyService", "GetActivePolicy", {"tenant": tenant}
            )
        except AdminError as exc:
            if exc.http_status == 404:
                return None
            raise
        return answer.get("policy")

    # -- policies ---------------------------------------------------------------------------------

    async def policies(self, request: Request, session: Session) -> Response:
        tenants, tenant = await self.c.tenant_choice(request, session)
        ctx: dict[str, Any] = {
            "tenants": tenants,
            "tenant": tenant,
            "active": None,
            "history": [],
            "drafts": [],
        }
        if tenant:
            ctx["active"] = await self._active(request, session, tenant)
            history = await self.c.call(
                request, session, "PolicyService", "ListPolicyHistory", {"tenant": tenant}
            )
            drafts = await self.c.call(request, session, "PolicyService", "ListDrafts", {"tenant": tenant})
            ctx["history"], ctx["drafts"] = history["versions"], drafts["drafts"]
        return self.c.render(
            "policies.html", request, session, notice=request.query_params.get("notice", ""), **ctx
        )

    async def draft(self, request: Request, session: Session, **extra: Any) -> Response:
        q = request.query_params
        tenant, name = extra.pop("tenant", q.get("tenant", "")), extra.pop("name", q.get("name", ""))
        draft = None
        if name:
            got = await self.c.call(
                request, session, "PolicyService", "GetDraft", {"tenant": tenant, "name": name}
            )
            draft = got["draft"]
        active = await self._active(request, session, tenant)
        source = draft["source"] if draft else (active or {}).get("source", "")
        return self.c.render(
            "policy_draft.html",
            request,
            session,
            tenant=tenant,
            name=name,
            draft=draft,
            active=active,
            source=source,
            diff=diff_lines((active or {}).get("source", ""), source) if draft else [],
            **({"dry_run": None, "validation": None} | extra),
        )

    async def save_draft(self, request: Request, session: Session) -> Response:
        form = await request.form()
        if (refused := self.c.csrf_refused(request, session, form)) is not None:
            return refused
        tenant, name = str(form.get("tenant", "")), str(form.get("name", "")).strip()
        source = str(form.get("source", "")).replace("\r\n", "\n")
        body = {"tenant": tenant, "name": name, "source": source}
        if form.get("expected_hash"):
            await self.c.call(
                request,
                session,
                "PolicyService",
                "UpdateDraft",
                body | {"expected_hash": str(form["expected_hash"])},
            )
        else:
            await self.c.call(request, session, "PolicyService", "CreateDraft", body)
        return RedirectResponse(
            f"/console/policies/draft?tenant={quote(tenant)}&name={quote(name)}", status_code=303
        )

    async def check_draft(self, request: Request, session: Session) -> Response:
        """Validate or dry-run a draft (no change is made; a POST because the admin API's are)."""
        form = await request.form()
        if (refused := self.c.csrf_refused(request, session, form)) is not None:
            return refused
        tenant, name = str(form.get("tenant", "")), str(form.get("name", ""))
        extra: dict[str, Any] = {}
        if form.get("action") == "validate":
            extra["validation"] = await self.c.call(
                request, session, "PolicyService", "ValidatePolicy", {"tenant": tenant, "draft": name}
            )
        else:
            extra["dry_run"] = await self.c.call(
                request,
                session,
                "PolicyService",
                "DryRunPolicy",
                {"tenant": tenant, "draft": name, "replay_last": REPLAY_LAST},
            )
        return await self.draft(request, session, tenant=tenant, name=name, **extra)

    async def promote(self, request: Request, session: Session) -> Response:
        form = await request.form()
        if (refused := self.c.csrf_refused(request, session, form)) is not None:
            return refused
        tenant = str(form.get("tenant", ""))
        if form.get("version"):
            answer = await self.c.call(
                request,
                session,
                "PolicyService",
                "RollbackPolicy",
                {"tenant": tenant, "version": int(form["version"])},
            )
            verb = "rolled back to"
        else:
            answer = await self.c.call(
                request,
                session,
                "PolicyService",
                "PromotePolicy",
                {"tenant": tenant, "draft": str(form.get("name", ""))},
            )
            verb = "promoted as"
        policy = answer["policy"]
        notice = f"{tenant}: {verb} version {policy['version']} ({policy['content_hash'][:12]})."
        return RedirectResponse(
            f"/console/policies?tenant={quote(tenant)}&notice={quote(notice)}", status_code=303
        )

    async def delete_draft(self, request: Request, session: Session) -> Response:
        form = await request.form()
        if (refused := self.c.csrf_refused(request, session, form)) is not None:
            return refused
        tenant, name = str(form.get("tenant", "")), str(form.get("name", ""))
        await self.c.call(request, session, "PolicyService", "DeleteDraft", {"tenant": tenant, "name": name})
        notice = f"Draft {name} deleted."
        return RedirectResponse(
            f"/console/policies?tenant={quote(tenant)}&notice={quote(notice)}", status_code=303
        )

    # -- tokens -----------------------------------------------------------------------------------

    async def tokens(self, request: Request, session: Session, **extra: Any) -> Response:
        tenants, tenant = await self.c.tenant_choice(request, session)
        tenant = extra.pop("tenant", tenant)
        revocations = []
        if tenant:
            answer = await self.c.call(
                request, session, "TokenService", "ListRevocations", {"tenant": tenant}
            )
            revocations = answer["revocations"]
        return self.c.render(
            "tokens.html",
            request,
            session,
            tenants=tenants,
            tenant=tenant,
            revocations=revocations,
            **({"minted": None, "inspected": None, "revoked": None} | extra),
        )

    async def token_action(self, request: Request, session: Session) -> Response:
        form = await request.form()
        if (refused := self.c.csrf_refused(request, session, form)) is not None:
            return refused
        action, tenant = str(form.get("action", "")), str(form.get("tenant", ""))
        text = str(form.get("token", "")).strip()
        if action == "mint":
            body: dict[str, Any] = {"tenant": tenant, "ttl_seconds": int(form.get("ttl_seconds") or 3600)}
            if form.get("agent"):
                body["agent"] = str(form["agent"]).strip()
            tools = [t.strip() for t in str(form.get("tools", "")).split(",") if t.strip()]
            if tools:
                body["tools"] = tools
            if form.get("max_calls"):
                body["max_calls"] = int(form["max_calls"])
            args = [line.strip() for line in str(form.get("args", "")).splitlines() if line.strip()]
            if args:
                body["args"] = args
            minted = await self.c.call(request, session, "TokenService", "MintToken", body)
            return await self.tokens(request, session, tenant=tenant, minted=minted)
        if action == "inspect":
            inspected = await self.c.call(request, session, "TokenService", "InspectToken", {"token": text})
            return await self.tokens(request, session, tenant=tenant, inspected=inspected)
        if action == "revoke":
            body = {
                "tenant": tenant,
                "reason": str(form.get("reason", ""))[:500],
                "family": bool(form.get("family")),
            }
            if text:
                body["token"] = text
            elif form.get("jti"):
                body["jti"] = str(form["jti"]).strip()
            revoked = await self.c.call(request, session, "TokenService", "RevokeToken", body)
            return await self.tokens(request, session, tenant=tenant, revoked=revoked["revocation"])
        return self.c.render(
            "error.html", request, session, status=400, title="Bad request", message="Unknown token action."
        )

    def routes(self) -> list[Route]:
        p = self.c.page
        return [
            Route("/console/policies", p(self.policies)),
            Route("/console/policies/draft", p(self.draft)),
            Route("/console/policies/draft/save", p(self.save_draft), methods=["POST"]),
            Route("/console/policies/draft/check", p(self.check_draft), methods=["POST"]),
            Route("/console/policies/draft/delete", p(self.delete_draft), methods=["POST"]),
            Route("/console/policies/promote", p(self.promote), methods=["POST"]),
            Route("/console/tokens", p(self.tokens)),
            Route("/console/tokens/action", p(self.token_action), methods=["POST"]),
        ]
