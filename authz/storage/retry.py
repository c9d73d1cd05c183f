"""Backoff shared by both stores' approval-webhook outboxes."""

from __future__ import annotations

#: Longest wait between two delivery attempts of one notification.
MAX_RETRY_S = 300.0


def retry_delay(retry_s: float, attempts: int) -> float:
    """Backoff before the next attempt after ``attempts`` earlier ones (shared with PostgreSQL)."""
    return min(retry_s * 2 ** min(attempts, 16), MAX_RETRY_S)
