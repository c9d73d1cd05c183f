"""A value that must never be printed or logged."""

from __future__ import annotations

import hmac


class Secret:
    """Holds secret bytes; its repr and str are redacted so a log line or traceback cannot leak it."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes | str):
        if isinstance(value, str):
            value = value.encode()
        if not value:
            raise ValueError("a secret cannot be empty")
        self._value = value

    def reveal(self) -> bytes:
        """The secret bytes; call only where they are fed to a KDF, MAC or signature."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self):
        raise TypeError("secrets are not picklable")
