"""The token endpoint's rate limit as rendered into Envoy's config (authz.local.envoy_oauth); the
behaviour through real Envoy is tests/integration/test_oauth_token_endpoint.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from authz.errors import ConfigError
from authz.local.envoy_config import render_envoy_config
from authz.local.envoy_oauth import TokenRateLimit

BASE = dict(
    listen_port=18080, admin_port=19901, check_endpoints=[("127.0.0.1", 19191)], upstream=("127.0.0.1", 19000)
)


def _token_route(**kwargs) -> dict:
    doc = yaml.safe_load(render_envoy_config(**BASE, **kwargs))
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    return next(r for r in routes if r["name"] == "oauth_token")


def test_the_limit_becomes_a_per_address_bucket_and_retry_after():
    config = _token_route(oauth_token_rate_limit=TokenRateLimit.parse("5/60s"))["typed_per_filter_config"][
        "envoy.filters.http.local_ratelimit"
    ]
    bucket = {"max_tokens": 5, "tokens_per_fill": 1, "fill_interval": "12.000s"}
    assert config["token_bucket"] == bucket
    assert config["descriptors"] == [{"entries": [{"key": "remote_address"}], "token_bucket": bucket}]
    assert config["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    assert config["response_headers_to_add"][0]["header"] == {"key": "retry-after", "value": "12"}


def test_the_default_is_sixty_a_minute():
    config = _token_route()["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    assert config["token_bucket"] == {"max_tokens": 60, "tokens_per_fill": 1, "fill_interval": "1.000s"}
    assert TokenRateLimit.from_env({}) == TokenRateLimit(60, 60)
    assert TokenRateLimit.from_env({"TESSERA_OAUTH_TOKEN_RATE_LIMIT": "10/5s"}) == TokenRateLimit(10, 5)


@pytest.mark.parametrize("spec", ["", "60", "60/60", "0/60s", "60/0s", "-1/60s", "1000/1s", "a/bs"])
def test_bad_limits_are_refused(spec):
    with pytest.raises(ConfigError):
        TokenRateLimit.parse(spec)


def _cli_bucket(tmp_path, *args: str, env: dict[str, str] | None = None) -> dict:
    out = tmp_path / "envoy.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "authz.cli", "envoy-config", "--mode", "sidecar", *args, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(out.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = next(r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r["name"] == "oauth_token")
    return route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]["token_bucket"]


def test_envoy_config_takes_the_flag_else_the_environment(tmp_path):
    env = {"TESSERA_OAUTH_TOKEN_RATE_LIMIT": "10/20s"}
    assert _cli_bucket(tmp_path, env=env)["max_tokens"] == 10
    assert _cli_bucket(tmp_path, "--oauth-token-rate-limit", "7/70s", env=env)["fill_interval"] == "10.000s"
