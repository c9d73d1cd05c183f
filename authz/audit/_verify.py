"""Chain verification: walk a tenant's events from genesis, compare the head, check checkpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from authz.audit._checkpoint import Checkpoint, checkpoint_public_key, sign_checkpoint
from authz.chain import GENESIS_HASH, chain_hash, event_index
from authz.errors import FailedPrecondition, InvalidArgument
from authz.storage.protocols import AuditRecord, AuditStore

_BATCH = 2000
_REORDER_LOOKAHEAD = 10_000


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify_chain`.

    ``head_seq`` is the stored head (None when there is no head row); ``chain_seq``/``chain_hash`` the
    last event verified (0 and the genesis hash for an empty chain). On failure ``problem`` says what is
    wrong and ``first_bad_seq`` names the first sequence number that does not verify (None when the
    problem is not at one event, e.g. a bad checkpoint signature or a missing head row).
    """

    tenant: str
    ok: bool
    events_checked: int
    head_seq: int | None
    chain_seq: int
    chain_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    checkpoints_checked: int = 0

    def summary(self) -> str:
        if self.ok:
            return (
                f"tenant {self.tenant}: OK, {self.events_checked} events, head seq {self.head_seq or 0}"
                + (f", {self.checkpoints_checked} checkpoints" if self.checkpoints_checked else "")
            )
        where = f" at seq {self.first_bad_seq}" if self.first_bad_seq is not None else ""
        return f"tenant {self.tenant}: FAILED{where}: {self.problem}"


class _Bad(Exception):
    def __init__(self, seq: int | None, problem: str):
        self.seq = seq
        self.problem = problem


async def _close(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _short(digest: str) -> str:
    return digest[:16] + "…"


async def verify_chain(
    store: AuditStore,
    tenant: str,
    *,
    checkpoint: Checkpoint | str | bytes | Mapping[str, Any] | None = None,
    public_key: bytes | None = None,
    stored_checkpoints: bool = True,
) -> VerifyResult:
    """Verify one tenant's chain.

    Checks, in order, stopping at the first problem: every event from seq 1 is present (no gaps), links
    to its predecessor (``prev_hash``) and hashes to its stored hash; its JSON belongs to this tenant and
    matches the row's index columns; the chain ends exactly at the stored head (seq and hash), which
    detects truncation; then ``checkpoint`` (an exported checkpoint or :class:`Checkpoint`) and, with
    ``stored_checkpoints``, every checkpoint kept in the store: a valid signature (under ``public_key``
    when given, which should be :func:`checkpoint_public_key` of the tenant's seed), and the chain still
    holding that seq with that hash.

    Events appended while verifying (seq past the head read at the start) are not examined.
    """
    pins: list[tuple[str, Checkpoint]] = []
    if checkpoint is not None:
        exported = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.from_export(checkpoint)
        if exported.tenant != tenant:
            raise InvalidArgument(f"the checkpoint is for tenant {exported.tenant!r}, not {tenant!r}")
        pins.append(("exported checkpoint", exported))
    if stored_checkpoints:
        for record in await store.list_checkpoints(tenant):
            try:
                pins.append((f"stored checkpoint seq {record.seq}", Checkpoint.from_record(record)))
            except InvalidArgument as exc:
                return VerifyResult(
                    tenant,
                    False,
                    0,
                    None,
                    0,
                    GENESIS_HASH,
                    None,
                    f"stored checkpoint seq {record.seq}: {exc}",
                )
    wanted = {cp.seq for _, cp in pins}
    seen: dict[int, str] = {}

    head = await store.audit_head(tenant)  # read first: later appends must not look like a broken head
    bound = head[0] if head is not None else None
    expected, prev, count = 1, GENESIS_HASH, 0

    def result(bad: int | None = None, problem: str | None = None, checked: int = 0) -> VerifyResult:
        return VerifyResult(
            tenant=tenant,
            ok=problem is None,
            events_checked=count,
            head_seq=head[0] if head is not None else None,
            chain_seq=expected - 1,
            chain_hash=prev,
            first_bad_seq=bad,
            problem=problem,
            checkpoints_checked=checked,
        )

    events = store.iter_events(tenant, batch=_BATCH)
    try:
        async for record in events:
            if bound is not None and record.seq > bound:
                break
            await _check_record(store, tenant, record, expected, prev)
            if record.seq in wanted:
                seen[record.seq] = record.hash
            prev, expected, count = record.hash, expected + 1, count + 1
    except _Bad as bad:
        return result(bad.seq, bad.problem)
    finally:
        await _close(events)

    last = expected - 1
    if head is None:
        if count:
            return result(None, f"no head row, but the chain has {count} events (head deleted)")
    elif head[0] > last:
        return result(
            last + 1, f"head says seq {head[0]}/hash {_short(head[1])} but chain ends at {last} (truncated)"
        )
    elif head[1] != prev:
        return result(
            last, f"head hash {_short(head[1])} is not the hash of seq {last} (head or event rewritten)"
        )

    for name, cp in pins:
        if not cp.signature_valid(public_key):
            signer = "signature invalid" if public_key is None or cp.public_key == public_key else "wrong key"
            return result(None, f"{name}: {signer} (forged or altered checkpoint)")
        if cp.seq > last:
            return result(
                last + 1,
                f"checkpoint seq {cp.seq} not found: chain ends at {last} (events deleted, head rewritten)",
            )
        if seen.get(cp.seq) != cp.hash:
            return result(
                cp.seq,
                f"checkpoint seq {cp.seq} hash differs "
                f"(events at or before seq {cp.seq} deleted or rewritten)",
            )
    return result(checked=len(pins))


async def _check_record(
    store: AuditStore, tenant: str, record: AuditRecord, expected: int, prev: str
) -> None:
    seq = record.seq
    if seq != expected:
        if seq > expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
            raise _Bad(expected, f"sequence gap after {expected - 1}: {missing} missing (event deleted)")
        raise _Bad(seq, f"seq {seq} appears again after seq {expected - 1} (reordered)")
    own = chain_hash(record.prev_hash, record.event.encode()) if _is_hex32(record.prev_hash) else None
    if own != record.hash:
        raise _Bad(seq, f"hash mismatch at seq {seq} (event modified)")
    if record.prev_hash != prev:
        # The row is intact but does not follow its predecessor: find where its true successor went.
        moved = await _find_successor(store, tenant, prev, after=seq)
        if moved is not None:
            raise _Bad(
                seq,
                f"seq {seq} does not follow seq {seq - 1}; the event that does is at seq {moved} (reordered)",
            )
        raise _Bad(
            seq,
            f"seq {seq} does not link to seq {seq - 1} (seq {seq - 1} rewritten with a recomputed hash, "
            "or events deleted and the rest renumbered)",
        )
    try:
        event = json.loads(record.event)
        owner = event["metadata"]["tenant_uid"]
        index = event_index(event)
    except (ValueError, KeyError, TypeError) as exc:
        raise _Bad(seq, f"event at seq {seq} is not a Tessera audit event ({exc!r})") from None
    if owner != tenant:
        raise _Bad(seq, f"event at seq {seq} belongs to tenant {owner!r} (moved between chains)")
    if index != (record.time_ms, record.decision, record.agent):
        raise _Bad(seq, f"index columns at seq {seq} differ from its event (row edited)")


async def _find_successor(store: AuditStore, tenant: str, prev: str, *, after: int) -> int | None:
    events = store.iter_events(tenant, after_seq=after, batch=_BATCH)
    try:
        scanned = 0
        async for record in events:
            if record.prev_hash == prev:
                return record.seq
            scanned += 1
            if scanned >= _REORDER_LOOKAHEAD:
                break
    finally:
        await _close(events)
    return None


def _is_hex32(value: str) -> bool:
    try:
        return len(bytes.fromhex(value)) == 32
    except (ValueError, TypeError):
        return False


async def create_checkpoint(
    store: AuditStore, tenant: str, seed: bytes, *, verify: bool = True
) -> Checkpoint:
    """Sign the tenant's current head, store the checkpoint and return it (call ``.export()``).

    With ``verify`` (the default) the chain is verified first and the checkpoint pins the head that was
    verified; a chain that does not verify is never signed (FailedPrecondition), nor is an empty one.
    """
    checkpoint = await sign_head(store, tenant, seed, verify=verify)
    await store.put_checkpoint(checkpoint.to_record())
    return checkpoint


async def sign_head(store: AuditStore, tenant: str, seed: bytes, *, verify: bool = True) -> Checkpoint:
    """The checkpoint :func:`create_checkpoint` stores, not stored: the verification (a read of the whole
    chain) stays outside the transaction that stores the checkpoint with its audit event."""
    if verify:
        result = await verify_chain(store, tenant, public_key=checkpoint_public_key(seed))
        if not result.ok:
            raise FailedPrecondition(f"tenant {tenant!r}: the audit chain does not verify: {result.problem}")
        if result.chain_seq == 0:
            raise FailedPrecondition(f"tenant {tenant!r} has no audit events to checkpoint")
        seq, digest = result.chain_seq, result.chain_hash
    else:
        head = await store.audit_head(tenant)
        if head is None:
            raise FailedPrecondition(f"tenant {tenant!r} has no audit events to checkpoint")
        seq, digest = head
    return sign_checkpoint(tenant, seq, digest, seed)
