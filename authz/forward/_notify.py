"""Operator notifications as sinks: Slack and Microsoft Teams incoming webhooks, PagerDuty Events v2.

A notifier is a sink with a filter (:class:`NotifyRule`): it reads the same chain through the same driver
(cursor, retries, dead letters, lease), posts one message per matching event (escalations waiting for
approval, denials of chosen checks, codes or tools, outage markers, and the system events Tessera writes
to the chain: ``approval.expired``, ``audit.verify_failed``, ``forwarder.dead_letter``) and acknowledges
the batch once every matching event was accepted; events that do not match are acknowledged without a
request. With a :class:`RateRule` it posts instead when more than N matching events fall within M
minutes (counted on the events' own times, once per event even when a batch is resent).
Messages link to the approval or the event through ``link_template`` / ``approval_link_template``. A
batch resent after a failure may repeat messages already posted to Slack or Teams; PagerDuty
deduplicates by ``dedup_key`` (the chain hash).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz.forward._event import ForwardEvent
from authz.forward._sink import Ack, HttpClient, Outcome, Retry, classify_http
from authz.secrets import Secret

#: The system events Tessera writes to a tenant's chain that an operator wants to hear about.
SYSTEM_ACTIONS = ("approval.expired", "audit.verify_failed", "forwarder.dead_letter")


@dataclass(frozen=True, slots=True)
class NotifyRule:
    """Which events notify. Each non-empty field of the first four must match (``decisions``: allow,
    deny, escalate, admin, outage; ``checks``: capability, intent, ...; ``codes``: JSON-RPC codes;
    ``tools``); an admin or system event also matches when its action is one of ``actions``. The default
    notifies escalations (a human must approve), outages and the :data:`SYSTEM_ACTIONS`."""

    decisions: tuple[str, ...] = ("escalate", "outage")
    checks: tuple[str, ...] = ()
    codes: tuple[int, ...] = ()
    tools: tuple[str, ...] = ()
    actions: tuple[str, ...] = SYSTEM_ACTIONS

    def matches(self, event: ForwardEvent) -> bool:
        decision = event.decision  # the index column: the events a rule excludes are never decoded
        if self.decisions and decision not in self.decisions and not (self.actions and decision == "admin"):
            return False
        t = event.event.get("tessera") or {}
        if self.actions and t.get("decision") == "admin" and t.get("action") in self.actions:
            return True
        if not (self.decisions or self.checks or self.codes or self.tools):
            return False  # only actions were asked for
        return (
            (not self.decisions or t.get("decision") in self.decisions)
            and (not self.checks or t.get("check") in self.checks)
            and (not self.codes or t.get("code") in self.codes)
            and (not self.tools or t.get("tool") in self.tools)
        )


@dataclass(frozen=True, slots=True)
class RateRule:
    """Post when more than ``more_than`` matching events fall within ``minutes``; once posted, the rule
    re-arms when the count within the window is back at ``more_than`` or below."""

    more_than: int
    minutes: int

    def __post_init__(self) -> None:
        if self.more_than < 1 or self.minutes < 1:
            raise ValueError("rate: more_than and minutes must be at least 1")


class _RateWindow:
    """Per tenant: the times of the matching events within the window, whether the alert is armed, and
    the last seq counted (a resent batch counts nothing twice)."""

    def __init__(self) -> None:
        self.times: deque[int] = deque()
        self.armed = True
        self.counted_upto = 0


def _system_summary(event: ForwardEvent, t: dict[str, Any]) -> str | None:
    details = t.get("details") or {}
    action = t.get("action")
    if action == "approval.expired":
        return (
            f"Approval timed out in {event.tenant}: {details.get('agent') or 'an agent'} calling "
            f"{details.get('tool')} was never decided (approval {details.get('approval_id')})"
        )
    if action == "audit.verify_failed":
        return (
            f"Audit chain verification FAILED for {event.tenant}: {details.get('error') or t.get('reason')}"
        )
    if action == "forwarder.dead_letter":
        return (
            f"Forwarder {details.get('sink')} gave up on events "
            f"{details.get('from_seq')}..{details.get('to_seq')} of {event.tenant} "
            f"(dead letter {details.get('dead_letter_id')}): {details.get('reason')}"
        )
    return None


def _summary(event: ForwardEvent) -> str:
    t = event.event.get("tessera") or {}
    decision = t.get("decision")
    who = t.get("agent") or t.get("actor") or "unknown"
    system = _system_summary(event, t) if decision == "admin" else None
    if system is not None:
        return system[:1000]
    if decision == "escalate":
        head = f"Approval needed: {who} wants to call {t.get('tool')} in {event.tenant}"
    elif decision == "deny":
        target = t.get("tool") or t.get("rpc_method")
        head = f"Denied ({t.get('check')}): {who} calling {target} in {event.tenant}"
    else:
        head = f"{decision} in {event.tenant}: {event.event.get('message', '')}"
    reason = t.get("reason")
    return (head + (f": {reason}" if reason and decision != "outage" else ""))[:1000]


def _approval_id(event: ForwardEvent) -> str:
    t = event.event.get("tessera") or {}
    return str(t.get("approval_id") or (t.get("details") or {}).get("approval_id") or "")


def _link(template: str | None, event: ForwardEvent, approval_template: str | None = None) -> str | None:
    """The message's link: ``approval_template`` for an event about an approval (when set), else
    ``template``."""
    approval_id = _approval_id(event)
    if approval_id and approval_template:
        template = approval_template
    if not template:
        return None
    t = event.event.get("tessera") or {}
    return template.format(
        tenant=event.tenant,
        seq=event.seq,
        hash=event.hash,
        approval_id=approval_id,
        decision_id=t.get("decision_id") or "",
    )


class _Notifier:
    """The shared part: filter the batch, post each match (or each rate crossing), stop at the first
    failure."""

    name: str
    rule: NotifyRule
    link_template: str | None
    approval_link_template: str | None = None
    rate: RateRule | None = None
    _http: HttpClient
    vendor: str

    def _configure(
        self,
        rule: NotifyRule | None,
        link_template: str | None,
        approval_link_template: str | None,
        rate: RateRule | None,
    ) -> None:
        self.rule = rule or NotifyRule()
        self.link_template = link_template
        self.approval_link_template = approval_link_template
        self.rate = rate
        self._windows: dict[str, _RateWindow] = {}

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        for event in batch:
            # (not a dead letter of this very notifier: posting it here would fail the same way)
            if not self._counts(event):
                continue
            if self.rate is None:
                outcome = await self._post(event, _summary(event), event.hash)
            else:
                outcome = await self._count(event)
            if not isinstance(outcome, Ack):
                return outcome
        return Ack()

    def window_ms(self) -> int | None:
        """How far back a rate rule counts (the forwarder primes the window with it after a start)."""
        return self.rate.minutes * 60_000 if self.rate is not None else None

    def prime(self, tenant: str, events: Sequence[ForwardEvent], upto: int) -> None:
        """Rebuild the tenant's rate window from the events already delivered (up to the cursor
        ``upto``), so a restart in the middle of a burst neither misses its alert nor repeats it."""
        if self.rate is None or not events:
            return
        window = self._windows.setdefault(tenant, _RateWindow())
        horizon = events[-1].time_ms - self.rate.minutes * 60_000
        window.times = deque(e.time_ms for e in events if e.time_ms > horizon and self._counts(e))
        window.counted_upto = upto
        window.armed = len(window.times) <= self.rate.more_than

    def _counts(self, event: ForwardEvent) -> bool:
        if not self.rule.matches(event):
            return False
        own = ((event.event.get("tessera") or {}).get("details") or {}).get("sink") == self.name
        return not own

    async def _count(self, event: ForwardEvent) -> Outcome:
        assert self.rate is not None
        window = self._windows.setdefault(event.tenant, _RateWindow())
        if event.seq <= window.counted_upto:
            return Ack()  # counted in an earlier attempt of this batch
        window.times.append(event.time_ms)
        horizon = event.time_ms - self.rate.minutes * 60_000
        while window.times and window.times[0] <= horizon:
            window.times.popleft()
        count = len(window.times)
        if count > self.rate.more_than and window.armed:
            text = (
                f"Rate alert in {event.tenant}: {count} events matching {self._rule_text()} within "
                f"{self.rate.minutes} min (more than {self.rate.more_than}); latest: {_summary(event)}"
            )[:1000]
            outcome = await self._post(event, text, f"rate:{self.name}:{event.hash}")
            if not isinstance(outcome, Ack):
                window.times.pop()  # counted again when the batch is resent
                return outcome
            window.armed = False
        elif count <= self.rate.more_than:
            window.armed = True
        window.counted_upto = event.seq
        return Ack()

    def _rule_text(self) -> str:
        r = self.rule
        parts = [
            f"{label} {'/'.join(map(str, values))}"
            for label, values in (
                ("decision", r.decisions),
                ("check", r.checks),
                ("code", r.codes),
                ("tool", r.tools),
                ("action", r.actions),
            )
            if values
        ]
        return ", ".join(parts) or "any"

    #: The URL is the secret (Slack, Teams incoming webhooks): never in an error, a log or an event.
    secret_url = False

    async def _post(self, event: ForwardEvent, summary: str, dedup_key: str) -> Outcome:
        link = _link(self.link_template, event, self.approval_link_template)
        url, body, headers = self.request(event, summary, link, dedup_key)
        try:
            response = await self._http.request("POST", url, content=body, headers=headers)
        except Exception as exc:  # the outbound client names the URL in its errors: redact it
            text = str(exc)
            if self.secret_url:
                text = text.replace(url, "<webhook URL>")
            return Retry(f"{self.vendor} {self.name}: {type(exc).__name__}: {text}")
        return classify_http(response, f"{self.vendor} {self.name}")

    def request(
        self, event: ForwardEvent, summary: str, link: str | None, dedup_key: str
    ) -> tuple[str, bytes, dict[str, str]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _IncomingWebhook(_Notifier):
    """A chat incoming webhook whose URL is the credential (Slack, Teams)."""

    secret_url = True

    def __init__(
        self,
        name: str,
        url: Secret,
        http: HttpClient,
        *,
        rule: NotifyRule | None = None,
        link_template: str | None = None,
        approval_link_template: str | None = None,
        rate: RateRule | None = None,
    ):
        self.name, self._url, self._http = name, url, http
        self._configure(rule, link_template, approval_link_template, rate)


class SlackSink(_IncomingWebhook):
    """Slack incoming webhook (the URL is the secret): ``{"text", "blocks"}``; Slack answers 200 ``ok``,
    400 ``invalid_payload``, 403/404/410 for a revoked hook or archived channel (dead letter), 429 with
    ``Retry-After`` and 5xx (retried)."""

    vendor = "Slack"

    def request(
        self, event: ForwardEvent, summary: str, link: str | None, dedup_key: str
    ) -> tuple[str, bytes, dict[str, str]]:
        text = summary
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        if link:
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open in Tessera>"}]}
            )
        body = _json({"text": text + (f" {link}" if link else ""), "blocks": blocks})
        return self._url.reveal().decode(), body, {"content-type": "application/json"}


class TeamsSink(_IncomingWebhook):
    """Microsoft Teams incoming webhook (Workflows; the URL is the secret): a message with one Adaptive
    Card attachment. Teams answers 200/202; 429 and 5xx are retried, other 4xx dead-lettered."""

    vendor = "Teams"

    def request(
        self, event: ForwardEvent, summary: str, link: str | None, dedup_key: str
    ) -> tuple[str, bytes, dict[str, str]]:
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "TextBlock", "text": summary, "wrap": True}],
        }
        if link:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Tessera", "url": link}]
        message = {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }
        return self._url.reveal().decode(), _json(message), {"content-type": "application/json"}


class PagerDutySink(_Notifier):
    """PagerDuty Events API v2 ``POST {url}/v2/enqueue``: ``trigger`` with the integration's routing key,
    ``dedup_key`` = the event's chain hash (so a resend never opens a second incident). PagerDuty answers
    202; 429 and 5xx retried; 400 (invalid event) dead-lettered."""

    vendor = "PagerDuty"
    _SEVERITY = {
        "outage": "critical",
        "escalate": "warning",
        "deny": "error",
        "audit.verify_failed": "critical",
        "forwarder.dead_letter": "error",
        "approval.expired": "warning",
    }

    def __init__(
        self,
        name: str,
        routing_key: Secret,
        http: HttpClient,
        *,
        url: str = "https://events.pagerduty.com",
        rule: NotifyRule | None = None,
        link_template: str | None = None,
        approval_link_template: str | None = None,
        rate: RateRule | None = None,
    ):
        self.name, self._key, self._http = name, routing_key, http
        self.endpoint = url.rstrip("/") + "/v2/enqueue"
        self._configure(rule, link_template, approval_link_template, rate)

    def request(
        self, event: ForwardEvent, summary: str, link: str | None, dedup_key: str
    ) -> tuple[str, bytes, dict[str, str]]:
        t = event.event.get("tessera") or {}
        payload = {
            "routing_key": self._key.reveal().decode(),
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": summary[:1024],
                "source": f"tessera/{event.tenant}",
                "severity": self._SEVERITY.get(
                    str(t.get("action") or t.get("decision")),
                    self._SEVERITY.get(str(t.get("decision")), "info"),
                ),
                "timestamp": datetime.fromtimestamp(event.time_ms / 1000, UTC).isoformat(),
                "component": str(t.get("tool") or t.get("decision") or "tessera"),
                "group": event.tenant,
                "class": str(t.get("check") or t.get("decision") or ""),
                "custom_details": {
                    k: t.get(k)
                    for k in (
                        "decision",
                        "check",
                        "code",
                        "reason",
                        "agent",
                        "tool",
                        "approval_id",
                        "decision_id",
                    )
                },
            },
        }
        if link:
            payload["links"] = [{"href": link, "text": "Open in Tessera"}]
        return self.endpoint, _json(payload), {"content-type": "application/json"}
