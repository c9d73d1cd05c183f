"""Operator notifications as sinks: Slack and Microsoft Teams incoming webhooks, PagerDuty Events v2.

A notifier is a sink with a filter (:class:`NotifyRule`): it reads the same chain through the same driver
(cursor, retries, dead letters, lease), posts one message per matching event (escalations waiting for
approval, denials of chosen checks, codes or tools, outage markers) and acknowledges the batch once
every matching event was accepted; events that do not match are acknowledged without a request.
Messages link to the approval or the event through ``link_template``. A batch resent after a failure may
repeat messages already posted to Slack or Teams; PagerDuty deduplicates by ``dedup_key`` (the chain hash).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz.forward._event import ForwardEvent
from authz.forward._sink import Ack, HttpClient, Outcome, classify_http
from authz.secrets import Secret


@dataclass(frozen=True, slots=True)
class NotifyRule:
    """Which events notify. Each non-empty field must match (``decisions``: allow, deny, escalate,
    admin, outage; ``checks``: capability, intent, ...; ``codes``: JSON-RPC codes; ``tools``). The
    default notifies escalations (a human must approve) and outages."""

    decisions: tuple[str, ...] = ("escalate", "outage")
    checks: tuple[str, ...] = ()
    codes: tuple[int, ...] = ()
    tools: tuple[str, ...] = ()

    def matches(self, event: ForwardEvent) -> bool:
        t = event.event.get("tessera") or {}
        return (
            (not self.decisions or t.get("decision") in self.decisions)
            and (not self.checks or t.get("check") in self.checks)
            and (not self.codes or t.get("code") in self.codes)
            and (not self.tools or t.get("tool") in self.tools)
        )


def _summary(event: ForwardEvent) -> str:
    t = event.event.get("tessera") or {}
    decision = t.get("decision")
    who = t.get("agent") or t.get("actor") or "unknown"
    if decision == "escalate":
        head = f"Approval needed: {who} wants to call {t.get('tool')} in {event.tenant}"
    elif decision == "deny":
        target = t.get("tool") or t.get("rpc_method")
        head = f"Denied ({t.get('check')}): {who} calling {target} in {event.tenant}"
    else:
        head = f"{decision} in {event.tenant}: {event.event.get('message', '')}"
    reason = t.get("reason")
    return (head + (f": {reason}" if reason and decision != "outage" else ""))[:1000]


def _link(template: str | None, event: ForwardEvent) -> str | None:
    if not template:
        return None
    t = event.event.get("tessera") or {}
    return template.format(
        tenant=event.tenant,
        seq=event.seq,
        hash=event.hash,
        approval_id=t.get("approval_id") or "",
        decision_id=t.get("decision_id") or "",
    )


class _Notifier:
    """The shared part: filter the batch, post each match, stop at the first failure."""

    name: str
    rule: NotifyRule
    link_template: str | None
    _http: HttpClient
    vendor: str

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        for event in batch:
            if not self.rule.matches(event):
                continue
            url, body, headers = self.request(event)
            response = await self._http.request("POST", url, content=body, headers=headers)
            outcome = classify_http(response, f"{self.vendor} {self.name}")
            if not isinstance(outcome, Ack):
                return outcome
        return Ack()

    def request(self, event: ForwardEvent) -> tuple[str, bytes, dict[str, str]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class SlackSink(_Notifier):
    """Slack incoming webhook (the URL is the secret): ``{"text", "blocks"}``; Slack answers 200 ``ok``,
    400 ``invalid_payload``, 403/404/410 for a revoked hook or archived channel (dead letter), 429 with
    ``Retry-After`` and 5xx (retried)."""

    vendor = "Slack"

    def __init__(
        self,
        name: str,
        url: Secret,
        http: HttpClient,
        *,
        rule: NotifyRule | None = None,
        link_template: str | None = None,
    ):
        self.name, self._url, self._http = name, url, http
        self.rule = rule or NotifyRule()
        self.link_template = link_template

    def request(self, event: ForwardEvent) -> tuple[str, bytes, dict[str, str]]:
        text = _summary(event)
        link = _link(self.link_template, event)
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        if link:
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open in Tessera>"}]}
            )
        body = _json({"text": text + (f" {link}" if link else ""), "blocks": blocks})
        return self._url.reveal().decode(), body, {"content-type": "application/json"}


class TeamsSink(_Notifier):
    """Microsoft Teams incoming webhook (Workflows; the URL is the secret): a message with one Adaptive
    Card attachment. Teams answers 200/202; 429 and 5xx are retried, other 4xx dead-lettered."""

    vendor = "Teams"

    def __init__(
        self,
        name: str,
        url: Secret,
        http: HttpClient,
        *,
        rule: NotifyRule | None = None,
        link_template: str | None = None,
    ):
        self.name, self._url, self._http = name, url, http
        self.rule = rule or NotifyRule()
        self.link_template = link_template

    def request(self, event: ForwardEvent) -> tuple[str, bytes, dict[str, str]]:
        link = _link(self.link_template, event)
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "TextBlock", "text": _summary(event), "wrap": True}],
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
    _SEVERITY = {"outage": "critical", "escalate": "warning", "deny": "error"}

    def __init__(
        self,
        name: str,
        routing_key: Secret,
        http: HttpClient,
        *,
        url: str = "https://events.pagerduty.com",
        rule: NotifyRule | None = None,
        link_template: str | None = None,
    ):
        self.name, self._key, self._http = name, routing_key, http
        self.endpoint = url.rstrip("/") + "/v2/enqueue"
        self.rule = rule or NotifyRule()
        self.link_template = link_template

    def request(self, event: ForwardEvent) -> tuple[str, bytes, dict[str, str]]:
        t = event.event.get("tessera") or {}
        payload = {
            "routing_key": self._key.reveal().decode(),
            "event_action": "trigger",
            "dedup_key": event.hash,
            "payload": {
                "summary": _summary(event)[:1024],
                "source": f"tessera/{event.tenant}",
                "severity": self._SEVERITY.get(str(t.get("decision")), "info"),
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
        link = _link(self.link_template, event)
        if link:
            payload["links"] = [{"href": link, "text": "Open in Tessera"}]
        return self.endpoint, _json(payload), {"content-type": "application/json"}
