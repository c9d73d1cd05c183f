"""A JSON-RPC batch is charged all or nothing: when any element is denied, no element's budget is
consumed (real ext_authz servicer, real Pipeline, SQLite store, macaroons, the shipped demo policy)."""

from __future__ import annotations

import json

from authz.audit import ChainRecorder
from authz.check import Check, Outcome
from authz.server.check_service import AuthorizationService
from tests.unit.test_check_service import Context
from tests.unit.test_pipeline import call, make_pipeline, token
from tests.unit.test_wire import request, rpc


def read(id_: int) -> bytes:
    return rpc(params={"name": "read_invoice", "arguments": {"invoice_id": f"INV-{id_}"}}, id_=id_)


async def answer(service, body: bytes, bearer: str):
    reply = await service.Check(request(body, headers={"Authorization": f"Bearer {bearer}"}), Context(5.0))
    return reply.status.code == 0, reply


async def allowed_singles(service, bearer: str, attempts: int) -> int:
    return sum([(await answer(service, read(100 + i), bearer))[0] for i in range(attempts)])


async def test_a_denied_element_leaves_the_allowed_elements_uncharged(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)
    service = AuthorizationService(pipeline, ChainRecorder(store), deadline_cap_s=5.0)
    bearer = token(tools=["read_invoice"], max_calls=3)
    denied = rpc(params={"name": "transfer_funds", "arguments": {"amount": 1}}, id_=9)
    ok, reply = await answer(service, b"[" + read(1) + b"," + read(2) + b"," + denied + b"]", bearer)
    assert not ok
    replies = json.loads(reply.denied_response.body)
    assert [r["id"] for r in replies] == [1, 2, 9] and {r["error"]["code"] for r in replies} == {-32010}
    # All three of the token's calls are still there.
    assert await allowed_singles(service, bearer, 4) == 3
    events = [json.loads(r.event)["tessera"] async for r in store.iter_events("demo")]
    # The elements that passed are recorded as denied with the batch (nothing reached the upstream).
    assert [(e["decision"], e["reason"][:34]) for e in events[:2]] == [
        ("deny", "batch denied: message 3 was denied"),
        ("deny", "batch denied: message 3 was denied"),
    ]


async def test_a_batch_over_a_shared_budget_is_denied_whole_and_charges_nothing(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)
    service = AuthorizationService(pipeline, ChainRecorder(store), deadline_cap_s=5.0)
    bearer = token(max_calls=2)
    ok, reply = await answer(service, b"[" + read(1) + b"," + read(2) + b"," + read(3) + b"]", bearer)
    assert not ok
    assert {r["error"]["code"] for r in json.loads(reply.denied_response.body)} == {-32013}
    assert await allowed_singles(service, bearer, 3) == 2
    ok, _ = await answer(service, b"[" + read(4) + b"," + read(5) + b"]", token(max_calls=2))
    assert ok


async def test_check_batch_attributes_the_exhausted_counter_to_an_element(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    bearer = token(max_calls=1)
    decisions = await pipeline.check_batch([call(bearer), call(bearer)])
    assert [d.outcome for d in decisions] == [Outcome.DENY, Outcome.DENY]
    assert decisions[1].check is Check.BUDGET and decisions[1].data["scope"]
    assert decisions[0].data["batch_denied_by"] == decisions[1].decision_id
    assert (await pipeline.check(call(bearer))).outcome is Outcome.ALLOW


async def test_a_denial_early_in_a_batch_names_itself_not_the_deadline(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    bearer = token(tools=["read_invoice"], max_calls=5)
    batch = [call(bearer), call(bearer, tool="transfer_funds"), call(bearer), call(bearer)]
    decisions = await pipeline.check_batch(batch)
    assert len(decisions) == 2  # the rest of the batch was not checked
    assert decisions[1].check is Check.CAPABILITY
    assert decisions[0].check is Check.CAPABILITY and decisions[0].reason.startswith(
        "batch denied: message 2"
    )
    assert (await pipeline.check(call(bearer))).outcome is Outcome.ALLOW
