"""Console sessions: a random id in an HttpOnly cookie, the ID token and CSRF token kept server-side.

The browser never holds the ID token (the credential the console presents to the admin API), only an
unguessable session id. Sessions live in the console process: one console replica, or sticky sessions
in front of several; a restart signs everyone out (they sign in again through the provider).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from authz.admin.keys import Principal

SESSION_COOKIE = "tessera_console"
LOGIN_COOKIE = "tessera_console_login"
#: Sessions kept at most; the oldest goes first (a flood of sign-ins cannot grow memory without bound).
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id_token: str
    principal: Principal
    expires_at: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf.encode(), presented.encode())


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """One sign-in in flight: what the callback must find again (state, PKCE verifier, nonce)."""

    state: str
    verifier: str
    nonce: str
    started_at: float
    #: Where to go after signing in (a path under /console only).
    next_path: str = "/console/approvals"


class SessionStore:
    def __init__(self, ttl_s: float, clock=time.time, max_sessions: int = MAX_SESSIONS):
        self._ttl_s = ttl_s
        self._clock = clock
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._logins: OrderedDict[str, PendingLogin] = OrderedDict()

    def create(self, id_token: str, principal: Principal, token_expires_at: float) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(id_token, principal, min(self._clock() + self._ttl_s, token_expires_at))
        self._sessions[sid] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        session = self._sessions.get(sid) if sid else None
        if session is None:
            return None
        if self._clock() >= session.expires_at:
            del self._sessions[sid]
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def begin_login(self, next_path: str) -> tuple[str, PendingLogin]:
        """A new sign-in: its cookie value and the state/verifier/nonce it carries (valid 10 minutes)."""
        key = secrets.token_urlsafe(32)
        login = PendingLogin(
            state=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            nonce=secrets.token_urlsafe(24),
            started_at=self._clock(),
            next_path=next_path,
        )
        self._logins[key] = login
        while len(self._logins) > self._max:
            self._logins.popitem(last=False)
        return key, login

    def finish_login(self, key: str | None) -> PendingLogin | None:
        """The sign-in a callback belongs to, once (a replayed callback finds nothing)."""
        login = self._logins.pop(key, None) if key else None
        if login is None or self._clock() - login.started_at > 600:
            return None
        return login
