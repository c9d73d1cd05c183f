"""Persistent state behind Protocols (:mod:`authz.storage.protocols`), with SQLite and PostgreSQL."""

from __future__ import annotations

from authz.errors import ConfigError
from authz.storage.approvals import add_decision, approving_principals
from authz.storage.memory_writers import RegisteredWriter
from authz.storage.models import (
    AdminKey,
    Approval,
    ApprovalClaim,
    DeadLetter,
    ForwarderCursor,
    PolicyDraft,
    PolicyVersion,
    PruneResult,
    Reservation,
    ReserveResult,
    Revocation,
    SinkConfig,
    StoreVersions,
    TenantSettings,
)
from authz.storage.protocols import Store


def open_store(database_url: str) -> Store:
    """Open the store a URL names: ``sqlite:///relative/or/absolute.db``, ``sqlite:///:memory:``,
    or ``postgresql://...`` (needs the ``postgres`` extra)."""
    if database_url.startswith("sqlite:///"):
        from authz.storage.sqlite import SQLiteStore

        return SQLiteStore(database_url[len("sqlite:///") :])
    if database_url.startswith(("postgresql://", "postgres://")):
        try:
            from authz.storage.postgres import PostgresStore  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConfigError(f"PostgreSQL storage is not available: {exc}") from exc
        return PostgresStore(database_url)
    raise ConfigError("TESSERA_DATABASE_URL must start with sqlite:/// or postgresql://")


__all__ = [
    "AdminKey",
    "Approval",
    "ApprovalClaim",
    "DeadLetter",
    "ForwarderCursor",
    "PolicyDraft",
    "PolicyVersion",
    "PruneResult",
    "RegisteredWriter",
    "Reservation",
    "ReserveResult",
    "Revocation",
    "SinkConfig",
    "Store",
    "StoreVersions",
    "TenantSettings",
    "add_decision",
    "approving_principals",
    "open_store",
]
