"""What a JSON-RPC batch needs from ``reserve`` (authz.check.Pipeline.check_batch charges every element
in one call), on both stores: counters named by several elements add up, several approvals are consumed
together, and when anything fails nothing is charged and no approval is consumed."""

from __future__ import annotations

from authz.storage import ApprovalClaim, Reservation, Store

from .test_storage_conformance import NOW, approval


def calls(key: str, limit: float) -> Reservation:
    return Reservation(key, 0, 1, limit, "token:max_calls")


async def approve(store: Store, approval_id: str) -> ApprovalClaim:
    await store.create_approval(approval(approval_id))
    await store.record_approval_decision("acme", approval_id, "alice", "approve", "", NOW + 1)
    return ApprovalClaim("acme", approval_id, NOW + 2)


async def test_a_shared_counter_is_charged_once_per_element_or_not_at_all(store: Store):
    batch = [calls("token:t", 3), calls("agent:a", 10), calls("token:t", 3), calls("token:t", 3)]
    assert (await store.reserve(batch)).ok
    assert await store.usage("token:t", 0) == 3 and await store.usage("agent:a", 0) == 1
    again = await store.reserve([calls("agent:a", 10), calls("token:t", 3)])
    assert not again.ok and again.exhausted.key == "token:t"
    assert await store.usage("agent:a", 0) == 1  # the batch's other counter was not charged


async def test_several_approvals_are_consumed_together_or_not_at_all(store: Store):
    first, second = await approve(store, "ap-1"), await approve(store, "ap-2")
    await store.consume_approval("acme", "ap-2", NOW + 2)  # the second was used already
    result = await store.reserve([calls("token:t", 5)], consume=[first, second])
    assert not result.ok and result.approval_unavailable
    assert (await store.get_approval("acme", "ap-1")).status == "approved"
    assert await store.usage("token:t", 0) == 0
    third = await approve(store, "ap-3")
    assert (await store.reserve([calls("token:t", 5)], consume=[first, third])).ok
    assert {(await store.get_approval("acme", a)).status for a in ("ap-1", "ap-3")} == {"consumed"}
