"""The token endpoint's rate limit (``POST /v1/oauth/token``) in the rendered Envoy config.

The endpoint is public (the subject token is the credential), so Envoy limits it per client address
with a token bucket (``local_ratelimit`` on the ``oauth_token`` route; one bucket per address): a burst
of ``burst`` requests, then one more every ``window_s / burst`` seconds. Beyond it Envoy answers 429
with ``Retry-After`` (the refill interval, whole seconds) and an RFC 6749 style body, without reaching
the admin service. ``TESSERA_OAUTH_TOKEN_RATE_LIMIT`` (``BURST/WINDOWs``, default ``60/60s``) sets it
for ``tessera run`` and ``tessera envoy-config`` (flag ``--oauth-token-rate-limit``; the chart's
``oauth.tokenRateLimit``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.errors import ConfigError

ENV = "TESSERA_OAUTH_TOKEN_RATE_LIMIT"
ROUTE = "oauth_token"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*s\s*")
#: Envoy refuses a refill interval under 50 ms.
_MIN_INTERVAL_MS = 50


@dataclass(frozen=True, slots=True)
class TokenRateLimit:
    """``burst`` token requests per client address, refilled evenly over ``window_s`` seconds."""

    burst: int = 60
    window_s: int = 60

    def __post_init__(self) -> None:
        for name in ("burst", "window_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"token rate limit: {name} must be a positive int, got {value!r}")
        if self.interval_ms < _MIN_INTERVAL_MS:
            raise ConfigError(
                f"token rate limit {self.burst}/{self.window_s}s refills faster than every "
                f"{_MIN_INTERVAL_MS} ms; use a longer window",
                reason="ENVOY_CONFIG_VALUE",
            )

    @property
    def interval_ms(self) -> int:
        """Milliseconds between two refilled tokens."""
        return self.window_s * 1000 // self.burst

    @property
    def retry_after_s(self) -> int:
        """The Retry-After of a refused request: when the next token is there at the latest."""
        return max(1, math.ceil(self.interval_ms / 1000))

    @classmethod
    def parse(cls, spec: str) -> TokenRateLimit:
        """``BURST/WINDOWs``, e.g. ``60/60s``."""
        match = _SPEC.fullmatch(spec or "")
        if match is None:
            raise ConfigError(
                f"{ENV}: expected BURST/WINDOWs (e.g. 60/60s), got {spec!r}", reason="ENVOY_CONFIG_VALUE"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TokenRateLimit:
        spec = env.get(ENV, "").strip()
        return cls.parse(spec) if spec else cls()


def set_token_rate_limit(vhost: dict[str, Any], limit: TokenRateLimit) -> None:
    """Write ``limit`` into the ``oauth_token`` route of ``vhost`` (no such route: nothing to do)."""
    for route in vhost.get("routes", ()):
        if route.get("name") != ROUTE:
            continue
        config = route["typed_per_filter_config"][RATE_LIMIT_FILTER]
        bucket = {
            "max_tokens": limit.burst,
            "tokens_per_fill": 1,
            "fill_interval": f"{limit.interval_ms // 1000}.{limit.interval_ms % 1000:03d}s",
        }
        config["token_bucket"] = dict(bucket)
        for descriptor in config["descriptors"]:
            descriptor["token_bucket"] = dict(bucket)
        for header in config["response_headers_to_add"]:
            if header["header"]["key"] == "retry-after":
                header["header"]["value"] = str(limit.retry_after_s)
