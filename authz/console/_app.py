"""The console's web application (Starlette, Jinja2 templates, vendored htmx), served under ``/console``.

Security, in one place:
- every page needs a session (else: sign-in); the session's ID token is what the admin API sees, so
  the admin service decides what a person may see and do, and audits it like any admin call;
- every POST carries the session's CSRF token (a form field or ``X-CSRF-Token``) and, when the browser
  sends them, an ``Origin`` equal to the console's own and ``Sec-Fetch-Site: same-origin``: anything
  else is 403 before the admin API is called;
- cookies are HttpOnly, SameSite=Lax (the provider's redirect back is a cross-site navigation) and
  Secure; responses carry a strict Content-Security-Policy (scripts and styles from /console/static
  only, no inline code, no eval), frame-ancestors 'none', no-store and a same-origin referrer policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from authz.admin.keys import role_at_least
from authz.admin.oidc import OidcVerifier, principal_from_claims
from authz.console._admin import AdminClient, AdminError
from authz.console._lifecycle import Lifecycle
from authz.console._sessions import LOGIN_COOKIE, SESSION_COOKIE, Session, SessionStore
from authz.console._settings import ConsoleSettings
from authz.console._signin import SignIn
from authz.console._writers import MemoryWriters
from authz.errors import DependencyError, PermissionDenied, Unauthenticated

log = logging.getLogger("tessera.console")

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # Not no-referrer: with it Chromium sends ``Origin: null`` on the console's own form posts, which
    # the CSRF check could then not tell from a cross-site one.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}
DECISIONS = ("ALLOW", "DENY", "ESCALATE", "ADMIN")
#: Audit rows fetched per page (the tool filter applies to them; the admin API filters the rest).
AUDIT_PAGE = 100


def _when(value: str | None) -> str:
    """An RFC 3339 timestamp of the admin API, shown as UTC to the second."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _epoch(value: str | None) -> float:
    try:
        return datetime.fromisoformat((value or "").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _status(value: str) -> str:
    return value.removeprefix("APPROVAL_STATUS_").removeprefix("AUDIT_DECISION_").lower()


def safe_next(path: str) -> str:
    """Where to go after signing in: a console path, never another site (no open redirect)."""
    if not path.startswith("/console/") or "//" in path or "\\" in path or "://" in path:
        return "/console/approvals"
    return path


def _budget_summary(rules: list[dict]) -> str:
    """The most used budget counter of a tenant, e.g. ``"7 of 10 calls (agent bot), 2 rules"``."""
    if not rules:
        return "no budget rules"
    usages = [u for r in rules for u in r.get("usage", []) if u.get("limit")]
    counted = f"{len(rules)} rule{'s' if len(rules) != 1 else ''}"
    if not usages:
        return f"{counted}, nothing used yet"
    top = max(usages, key=lambda u: u["used"] / u["limit"])
    who = f" (agent {top['agent']})" if top.get("agent") else ""
    return f"{top['used']:g} of {top['limit']:g} {top['kind']}{who}, {counted}"


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template is HTML; nothing from the API is trusted markup
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["epoch"] = _epoch
    env.filters["status"] = _status
    return env


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (pages, fragments, static files, errors)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode().lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Console:
    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        admin: AdminClient | None = None,
        verifier: OidcVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.verifier = verifier or OidcVerifier(settings.oidc)
        self.admin = admin or AdminClient(settings.admin_address)
        self.sessions = SessionStore(settings.session_ttl_s, clock)
        self.signin = SignIn(settings, self.verifier)
        self.templates = _templates()
        self.clock = clock
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(settings.public_url))

    async def close(self) -> None:
        await self.admin.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def render(self, template: str, request: Request, session: Session | None, status: int = 200, **ctx: Any):
        principal = session.principal if session else None
        html = self.templates.get_template(template).render(
            user=principal,
            csrf=session.csrf if session else "",
            can_decide=bool(principal and role_at_least(principal.role, "operator")),
            is_admin=bool(principal and role_at_least(principal.role, "admin")),
            path=request.url.path,
            poll_ms=int(self.settings.poll_s * 1000),
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def _cookie(self, response: Response, name: str, value: str, path: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    @staticmethod
    def client_of(request: Request) -> str | None:
        """The browser's address as Envoy saw it (the last x-forwarded-for entry Envoy appended)."""
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.rsplit(",", 1)[-1].strip()
        return request.client.host if request.client else None

    def to_signin(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("hx-request"):
            # An htmx fragment: have the page itself go to the sign-in.
            return Response(status_code=401, headers={"hx-redirect": f"/console/login?next={quote(target)}"})
        return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)

    async def call(self, request: Request, session: Session, service: str, method: str, body: dict) -> dict:
        return await self.admin.call(service, method, body, session.id_token, self.client_of(request))

    def csrf_refused(self, request: Request, session: Session, form: Any) -> Response | None:
        """A 403 page unless the POST carries the session's CSRF token and (when sent) our Origin."""
        origin = request.headers.get("origin")
        site = request.headers.get("sec-fetch-site")
        presented = form.get("csrf") or request.headers.get("x-csrf-token")
        if (
            (origin is not None and origin != self.origin)
            or (site is not None and site not in ("same-origin", "none"))
            or not session.csrf_ok(presented)
        ):
            log.warning("console: refused a POST to %s without a valid CSRF token", request.url.path)
            return self.render(
                "error.html",
                request,
                session,
                status=403,
                title="Request refused",
                message="The form's security token is missing or wrong (CSRF protection). Reload the "
                "page and try again.",
            )
        return None

    def admin_error(self, request: Request, session: Session, exc: AdminError) -> Response:
        if exc.http_status == 401:  # the ID token expired or was refused: sign in again
            self.sessions.drop(request.cookies.get(SESSION_COOKIE))
            return self.to_signin(request)
        return self.render(
            "error.html",
            request,
            session,
            status=exc.http_status,
            title="The admin API refused",
            message=str(exc),
        )

    def page(self, handler: Callable[[Request, Session], Awaitable[Response]]):
        """A handler that needs a session; admin API refusals become error pages."""

        async def endpoint(request: Request) -> Response:
            session = self.session_of(request)
            if session is None:
                return self.to_signin(request)
            try:
                return await handler(request, session)
            except AdminError as exc:
                return self.admin_error(request, session, exc)

        return endpoint

    # -- sign-in ----------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        key, pending = self.sessions.begin_login(safe_next(request.query_params.get("next", "")))
        try:
            url = await self.signin.authorization_url(pending)
        except (DependencyError, ValueError) as exc:
            log.error("console: the OpenID provider is unreachable: %s", exc)
            return self.render(
                "error.html",
                request,
                None,
                status=503,
                title="Sign-in unavailable",
                message="The identity provider cannot be reached. Try again shortly.",
            )
        response = RedirectResponse(url, status_code=303)
        self._cookie(response, LOGIN_COOKIE, key, "/console/auth", 600)
        return response

    async def callback(self, request: Request) -> Response:
        pending = self.sessions.finish_login(request.cookies.get(LOGIN_COOKIE))
        params = request.query_params
        refused = None
        if pending is None or params.get("state") != pending.state:
            refused = "This sign-in was not started here or has expired."
        elif params.get("error"):
            refused = f"The identity provider refused the sign-in: {params.get('error')}"
        elif not params.get("code"):
            refused = "The identity provider sent no authorization code."
        if refused is None:
            try:
                id_token, claims = await self.signin.exchange(params["code"], pending)
                principal = principal_from_claims(self.settings.oidc, claims)
            except (Unauthenticated, PermissionDenied) as exc:
                refused = str(exc)
            except (DependencyError, ValueError) as exc:
                refused = f"The identity provider could not be reached: {exc}"
        if refused is not None:
            response = self.render(
                "error.html", request, None, status=403, title="Sign-in failed", message=refused
            )
            response.delete_cookie(LOGIN_COOKIE, path="/console/auth")
            return response
        sid, _ = self.sessions.create(id_token, principal, float(claims["exp"]))
        log.info("console: %s signed in (role %s)", principal.principal, principal.role)
        response = RedirectResponse(pending.next_path, status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/console/auth")
        self._cookie(response, SESSION_COOKIE, sid, "/console", int(self.settings.session_ttl_s))
        return response

    async def logout(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return RedirectResponse("/console/signed-out", status_code=303)
        refused = self.csrf_refused(request, session, await request.form())
        if refused is not None:
            return refused
        self.sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/console/signed-out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    async def signed_out(self, request: Request) -> Response:
        return self.render("signed_out.html", request, None)

    async def healthz(self, request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/console/approvals", status_code=303)

    # -- approvals --------------------------------------------------------------------------------

    async def _queue(self, request: Request, session: Session) -> dict[str, Any]:
        answer = await self.call(request, session, "ApprovalService", "ListApprovals", {})
        approvals = answer["approvals"]
        pending = [a for a in approvals if a["status"] == "APPROVAL_STATUS_PENDING"]
        history = [a for a in approvals if a["status"] != "APPROVAL_STATUS_PENDING"][:50]
        oldest: dict[str, str] = {}
        for a in pending:  # RFC 3339 UTC strings of one format: ordered as text
            oldest[a["tenant"]] = min(oldest.get(a["tenant"], a["created_at"]), a["created_at"])
        keys = await self._argument_keys(request, session, oldest)
        for a in pending:
            a["argument_keys"] = keys.get(a["decision_id"])
        return {"pending": pending, "history": history, "now": self.clock()}

    async def _argument_keys(
        self, request: Request, session: Session, oldest: dict[str, str]
    ) -> dict[str, list]:
        """The argument keys of each escalated call, from its audit event (approvals keep only the hash):
        the tenant's escalations since its oldest pending approval was created (a minute of slack)."""
        found: dict[str, list] = {}
        for tenant, created in sorted(oldest.items()):
            since = datetime.fromtimestamp(_epoch(created) - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            events = await self.call(
                request,
                session,
                "AuditService",
                "QueryAuditEvents",
                {"tenant": tenant, "decision": "AUDIT_DECISION_ESCALATE", "since": since, "page_size": 1000},
            )
            for e in events["events"]:
                t = (e.get("event") or {}).get("tessera") or {}
                if t.get("decision_id"):
                    found[t["decision_id"]] = t.get("argument_keys") or []
        return found

    async def approvals(self, request: Request, session: Session) -> Response:
        ctx = await self._queue(request, session)
        return self.render(
            "approvals.html", request, session, notice=request.query_params.get("notice", ""), **ctx
        )

    async def approvals_queue(self, request: Request, session: Session) -> Response:
        ctx = await self._queue(request, session)
        return self.render("_queue.html", request, session, **ctx)

    async def decide(self, request: Request, session: Session) -> Response:
        form = await request.form()
        refused = self.csrf_refused(request, session, form)
        if refused is not None:
            return refused
        verdict = {"approve": "VERDICT_APPROVE", "reject": "VERDICT_REJECT"}.get(str(form.get("verdict")))
        if verdict is None:
            return self.render(
                "error.html",
                request,
                session,
                status=400,
                title="Bad request",
                message="Choose approve or reject.",
            )
        answer = await self.call(
            request,
            session,
            "ApprovalService",
            "DecideApproval",
            {
                "tenant": str(form.get("tenant", "")),
                "approval_id": str(form.get("approval_id", "")),
                "verdict": verdict,
                "note": str(form.get("note", ""))[:1000],
            },
        )
        approval = answer["approval"]
        notice = f"Approval {approval['approval_id']} is now {_status(approval['status'])}."
        return RedirectResponse(f"/console/approvals?notice={quote(notice)}", status_code=303)

    # -- audit ------------------------------------------------------------------------------------

    async def _tenants(self, request: Request, session: Session) -> list[dict]:
        return (await self.call(request, session, "TenantService", "ListTenants", {}))["tenants"]

    async def tenant_choice(self, request: Request, session: Session) -> tuple[list[dict], str]:
        """The tenants the person sees, and the one a page shows: ``?tenant=``, else the first."""
        tenants = await self._tenants(request, session)
        wanted = request.query_params.get("tenant", "")
        return tenants, wanted or (tenants[0]["name"] if tenants else "")

    @staticmethod
    def _audit_filters(request: Request) -> dict[str, str]:
        q = request.query_params
        return {k: q.get(k, "").strip() for k in ("tenant", "agent", "tool", "decision", "since", "until")}

    @staticmethod
    def _audit_request(f: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"tenant": f["tenant"]}
        if f["agent"]:
            body["agent"] = f["agent"]
        if f["decision"].upper() in DECISIONS:
            body["decision"] = f"AUDIT_DECISION_{f['decision'].upper()}"
        for name in ("since", "until"):
            if f[name]:  # a datetime-local value: minutes, no zone (UTC)
                value = (
                    f[name]
                    if f[name].endswith("Z")
                    else f"{f[name]}:00Z"
                    if len(f[name]) == 16
                    else f"{f[name]}Z"
                )
                body[name] = value
        return body

    async def audit(self, request: Request, session: Session) -> Response:
        tenants = await self._tenants(request, session)
        f = self._audit_filters(request)
        if not f["tenant"] and tenants:
            f["tenant"] = tenants[0]["name"]
        events: list[dict] = []
        next_token = ""
        if f["tenant"]:
            body = self._audit_request(f) | {"page_size": AUDIT_PAGE}
            if request.query_params.get("page_token"):
                body["page_token"] = request.query_params["page_token"]
            answer = await self.call(request, session, "AuditService", "QueryAuditEvents", body)
            events = answer["events"]
            next_token = answer["next_page_token"]
            if f["tool"]:
                events = [
                    e
                    for e in events
                    if ((e.get("event") or {}).get("tessera") or {}).get("tool") == f["tool"]
                ]
        return self.render(
            "audit.html",
            request,
            session,
            tenants=tenants,
            filters=f,
            events=events,
            next_token=next_token,
            decisions=DECISIONS,
        )

    async def audit_event(self, request: Request, session: Session) -> Response:
        tenant = request.query_params.get("tenant", "")
        try:
            seq = int(request.query_params.get("seq", ""))
        except ValueError:
            return self.render(
                "error.html",
                request,
                session,
                status=400,
                title="Bad request",
                message="seq must be a number",
            )
        # Pages run in sequence order and the page token is the last sequence seen: seq-1 gives seq.
        answer = await self.call(
            request,
            session,
            "AuditService",
            "QueryAuditEvents",
            {"tenant": tenant, "page_size": 1, "page_token": str(max(seq - 1, 0))},
        )
        event = next((e for e in answer["events"] if int(e["seq"]) == seq), None)
        if event is None:
            return self.render(
                "error.html",
                request,
                session,
                status=404,
                title="Not found",
                message=f"no event {seq} in {tenant}",
            )
        return self.render("audit_event.html", request, session, event=event, tenant=tenant)

    async def audit_verify(self, request: Request, session: Session) -> Response:
        tenant = request.query_params.get("tenant", "")
        answer = await self.call(request, session, "AuditService", "VerifyAuditChain", {"tenant": tenant})
        checkpoints = await self.call(
            request, session, "AuditService", "ListAuditCheckpoints", {"tenant": tenant}
        )
        return self.render(
            "audit_verify.html",
            request,
            session,
            tenant=tenant,
            verification=answer,
            checkpoints=checkpoints["checkpoints"],
        )

    async def audit_checkpoint(self, request: Request, session: Session) -> Response:
        form = await request.form()
        if (refused := self.csrf_refused(request, session, form)) is not None:
            return refused
        tenant = str(form.get("tenant", ""))
        await self.call(request, session, "AuditService", "CreateAuditCheckpoint", {"tenant": tenant})
        return RedirectResponse(f"/console/audit/verify?tenant={quote(tenant)}", status_code=303)

    async def audit_export(self, request: Request, session: Session) -> Response:
        f = self._audit_filters(request)
        fmt = "csv" if request.query_params.get("format") == "csv" else "ndjson"
        body = self._audit_request(f) | {"format": f"EXPORT_FORMAT_{fmt.upper()}"}
        chunks = self.admin.stream_bytes(
            "AuditService", "ExportAuditEvents", body, session.id_token, self.client_of(request)
        )
        try:  # the first chunk (or the refusal) before the headers go out
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""

        async def rest():
            yield first
            async for chunk in chunks:
                yield chunk

        name = f"tessera-audit-{f['tenant'] or 'all'}.{fmt}"
        return StreamingResponse(
            rest(),
            media_type="text/csv" if fmt == "csv" else "application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    # -- tenants ----------------------------------------------------------------------------------

    async def tenants(self, request: Request, session: Session) -> Response:
        tenants = await self._tenants(request, session)
        for tenant in tenants:
            budgets = await self.call(
                request, session, "TenantService", "GetTenantBudgets", {"tenant": tenant["name"]}
            )
            tenant["budget"] = _budget_summary(budgets["rules"])
        return self.render("tenants.html", request, session, tenants=tenants)

    # -- the app ----------------------------------------------------------------------------------

    def app(self) -> Any:
        p = self.page
        routes = [
            Route("/console", self.home),
            Route("/console/healthz", self.healthz),
            Route("/console/", self.home),
            Route("/console/login", self.login),
            Route("/console/auth/callback", self.callback),
            Route("/console/logout", self.logout, methods=["POST"]),
            Route("/console/signed-out", self.signed_out),
            Route("/console/approvals", p(self.approvals)),
            Route("/console/approvals/queue", p(self.approvals_queue)),
            Route("/console/approvals/decide", p(self.decide), methods=["POST"]),
            Route("/console/audit", p(self.audit)),
            Route("/console/audit/event", p(self.audit_event)),
            Route("/console/audit/verify", p(self.audit_verify)),
            Route("/console/audit/export", p(self.audit_export)),
            Route("/console/audit/checkpoint", p(self.audit_checkpoint), methods=["POST"]),
            Route("/console/tenants", p(self.tenants)),
            *Lifecycle(self).routes(),
            *MemoryWriters(self).routes(),
            Mount("/console/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes)
        return SecurityHeaders(app)
