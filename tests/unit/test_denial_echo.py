"""A denial reason never echoes more than a bounded, escaped prefix of what the caller sent (real
pipeline, SQLite, macaroons, Rego)."""

from __future__ import annotations

import re

from authz.check import Check, Outcome
from authz.echo import ECHO_LIMIT, REASON_LIMIT, bounded_reason, echo
from tests.unit.test_pipeline import call, make_pipeline, token

HOSTILE = "\x1b[2J\u202eevil'\\\n" + "A" * 10_000
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
ECHO_POLICY = """package tessera
import rego.v1
decision := {"allow": false, "reason": sprintf("no %v for %v", [input.tool, input.arguments])}
"""


def assert_safe(reason: str, limit: int) -> None:
    assert len(reason) < limit, len(reason)
    assert not UNSAFE.search(reason), reason[:200]


def test_echo_quotes_a_bounded_escaped_prefix():
    assert echo("read_invoice") == "'read_invoice'"
    shown = echo(HOSTILE)
    assert shown.startswith("'\\x1b[2J\\u202eevil\\'\\\\\\x0a") and shown.endswith("...(+9948 chars)")
    assert_safe(shown, 4 * ECHO_LIMIT + 40)
    assert shown.isascii()
    assert bounded_reason("ok: fine") == "ok: fine"
    assert_safe(bounded_reason(HOSTILE), REASON_LIMIT + 60)


async def test_a_tool_name_outside_the_caveat_is_echoed_bounded(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    decision = await pipeline.check(call(token(tools=["read_invoice"]), tool=HOSTILE))
    assert decision.check is Check.CAPABILITY and "not allowed by caveat" in decision.reason
    assert_safe(decision.reason, 400)


async def test_an_unknown_approval_id_is_echoed_bounded(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    decision = await pipeline.check(call(token(), approval_id=HOSTILE))
    assert decision.outcome is Outcome.DENY and "unknown approval" in decision.reason
    assert_safe(decision.reason, 400)


async def test_a_policy_reason_that_interpolates_its_input_is_bounded(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=ECHO_POLICY)
    decision = await pipeline.check(call(token(), tool=HOSTILE, arguments={HOSTILE: 1}))
    assert decision.check is Check.POLICY and decision.reason.startswith("no ")
    assert_safe(decision.reason, REASON_LIMIT + 200)
