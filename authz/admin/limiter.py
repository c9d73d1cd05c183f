"""Rate limiting of failed admin authentication, per source address and per key id.

Admin keys carry 256 random bits, so guessing one is hopeless; what the limiter stops is a client
hammering the admin API with bad keys, and the audit chain filling with its failures. After
``max_failures`` failed attempts within ``window_s``:

- from one **source**, every attempt from that source is refused for ``lockout_s`` before any key is
  looked up or compared;
- naming one **key id** (key ids are not secret), further failures with that key id are refused for
  ``lockout_s`` without an audit event each, while the key's real holder still gets in: a correct key
  is never locked out by someone else's guesses.

State is bounded (``max_tracked`` entries, the oldest forgotten first) and in memory: each admin replica
limits on its own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    failures: int
    window_end: float
    locked_until: float = 0.0


class AuthFailureLimiter:
    def __init__(
        self,
        *,
        max_failures: int = 10,
        window_s: float = 60.0,
        lockout_s: float = 60.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._max_tracked = max_tracked
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    @staticmethod
    def _keys(source: str | None, key_id: str | None) -> list[tuple[str, str]]:
        keys = [("source", source or "unknown")]
        if key_id:
            keys.append(("key_id", key_id))
        return keys

    def locked(self, source: str | None, key_id: str | None = None) -> float:
        """Seconds until an attempt from ``source`` (naming ``key_id``, when given) is allowed again
        (0: allowed now)."""
        now = self._clock()
        wait = 0.0
        for key in self._keys(source, key_id):
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until > now:
                wait = max(wait, entry.locked_until - now)
        return wait

    def failed(self, source: str | None, key_id: str | None) -> list[str]:
        """Count one failed attempt; the scopes (``source``, ``key_id``) this attempt locked."""
        now = self._clock()
        tripped = []
        for key in self._keys(source, key_id):
            entry = self._entries.get(key)
            if entry is None or entry.window_end <= now:
                entry = _Entry(0, now + self.window_s)
                self._entries[key] = entry
            self._entries.move_to_end(key)
            entry.failures += 1
            if entry.failures >= self.max_failures and entry.locked_until <= now:
                entry.locked_until = now + self.lockout_s
                entry.failures = 0
                entry.window_end = entry.locked_until + self.window_s
                tripped.append(key[0])
        while len(self._entries) > self._max_tracked:
            self._entries.popitem(last=False)
        return tripped
