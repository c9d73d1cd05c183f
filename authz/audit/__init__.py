"""The audit chain (ARCHITECTURE §9): every decision and admin mutation, hash-chained per tenant.

``hash = SHA-256(prev_hash || JCS(event))`` with a per-tenant sequence and head; events use OCSF API
Activity (class 6003) naming plus a ``tessera`` object and never hold argument values.

- :class:`ChainRecorder` (from :func:`make_recorder`) is the check path's
  :class:`~authz.check.DecisionRecorder`: group commit, returns only after the events are committed.
- :func:`verify_chain` walks a chain, compares the stored head and checks signed :class:`Checkpoint` s
  (:func:`create_checkpoint`), naming the first bad sequence number.
- :func:`export_events` streams NDJSON or CSV; :mod:`authz.audit.cli` holds ``tessera audit ...``.
- :func:`canonical_event`, :func:`chain_hash`, :func:`event_index` and :data:`GENESIS_HASH` (defined in
  the leaf module :mod:`authz.chain`) are what every :class:`~authz.storage.protocols.AuditStore`
  implementation uses to extend a chain.
"""

from authz.audit._aggregate import UnauthenticatedDenials
from authz.audit._checkpoint import Checkpoint, checkpoint_public_key, checkpoint_signing_key, sign_checkpoint
from authz.audit._events import (
    MAX_ARGUMENT_KEYS,
    admin_event,
    chain_tenant,
    event_from_decision,
    list_event,
)
from authz.audit._export import (
    CSV_COLUMNS,
    LineBuffer,
    csv_row,
    export_events,
    iter_audit_events,
    ndjson_line,
)
from authz.audit._recorder import (
    ChainRecorder,
    RecorderStats,
    append_admin_event,
    audited_mutation,
    make_recorder,
)
from authz.audit._sanitize import GATEWAY_TENANT, clean_text, json_safe
from authz.audit._verify import VerifyResult, create_checkpoint, sign_head, verify_chain
from authz.chain import GENESIS_HASH, canonical_event, chain_hash, event_index

__all__ = [
    "CSV_COLUMNS",
    "GATEWAY_TENANT",
    "GENESIS_HASH",
    "MAX_ARGUMENT_KEYS",
    "ChainRecorder",
    "Checkpoint",
    "LineBuffer",
    "RecorderStats",
    "UnauthenticatedDenials",
    "VerifyResult",
    "admin_event",
    "append_admin_event",
    "audited_mutation",
    "canonical_event",
    "chain_hash",
    "chain_tenant",
    "checkpoint_public_key",
    "checkpoint_signing_key",
    "clean_text",
    "create_checkpoint",
    "csv_row",
    "event_from_decision",
    "event_index",
    "export_events",
    "iter_audit_events",
    "json_safe",
    "list_event",
    "make_recorder",
    "ndjson_line",
    "sign_checkpoint",
    "sign_head",
    "verify_chain",
]
