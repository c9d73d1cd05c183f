"""The ``tessera forward`` sinks file: kinds, per-sink settings, secrets named by environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.errors import ConfigError
from authz.forward import NdjsonFileSink, WebhookSink
from authz.forward._config import build_sink, load_sink_specs
from authz.forward._notify import NotifyRule, PagerDutySink, SlackSink
from authz.forward._s3 import S3Sink
from authz.forward._vendors import DatadogLogsSink, SentinelSink, SplunkHecSink


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forward.yaml"
    path.write_text(text)
    return path


SINKS = """
sinks:
  - {name: file, type: file, path: /tmp/x.ndjson, keep: 2, batch_size: 50, tenants: [acme]}
  - {name: hook, type: webhook, url: "https://siem.example.com/in", secret_env: HOOK_KEY, backoff_cap_s: 5}
  - {name: splunk, type: splunk, url: "https://hec.example.com:8088", secret_env: HEC, index: security}
  - {name: dd, type: datadog, url: "https://http-intake.logs.datadoghq.eu", secret_env: DD, tags: [env:prod]}
  - {name: s3, type: s3, bucket: audit, region: eu-west-1, prefix: t/, access_key_env: AK, secret_env: SK}
  - {name: pd, type: pagerduty, secret_env: PD, notify: {decisions: [deny], tools: [transfer_funds]}}
  - {name: chat, type: slack, secret_env: SLACK_URL, link_template: "https://c.example.com/{approval_id}"}
  - name: sentinel
    type: sentinel
    endpoint: https://dce-1.westeurope-1.ingest.monitor.azure.com
    dcr_id: dcr-0123
    stream: Custom-TesseraAudit
    directory_id: dir-1
    client_id: app-1
    secret_env: AZ
"""


def test_every_kind_builds_with_its_settings_and_secret_from_the_environment(tmp_path: Path):
    specs = load_sink_specs(write(tmp_path, SINKS))
    env = {
        "HOOK_KEY": "k1",
        "HEC": "k2",
        "DD": "k3",
        "AZ": "k4",
        "AK": "ak",
        "SK": "sk",
        "PD": "k5",
        "SLACK_URL": "https://hooks.slack.com/x",
    }
    sinks = [build_sink(spec, env, lambda: object()) for spec in specs]  # type: ignore[arg-type,return-value]
    assert [type(s) for s in sinks] == [
        NdjsonFileSink,
        WebhookSink,
        SplunkHecSink,
        DatadogLogsSink,
        S3Sink,
        PagerDutySink,
        SlackSink,
        SentinelSink,
    ]
    # a given rule replaces the default whole (no system actions unless named)
    assert sinks[5].rule == NotifyRule(decisions=("deny",), tools=("transfer_funds",), actions=())
    assert specs[0].settings.batch_size == 50 and specs[0].settings.tenants == ("acme",)
    assert specs[1].settings.backoff_cap_s == 5 and specs[1].settings.tenants is None
    assert "k1" not in repr(specs[1]) and "k1" not in repr(vars(sinks[1]))  # the secret stays redacted


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("sinks: []", "non-empty 'sinks'"),
        ("sinks: [{name: a, type: kafka}]", "type must be one of"),
        ("sinks: [{name: 'Bad Name', type: file, path: x}]", "must match"),
        ("sinks: [{name: a, type: file, path: x}, {name: a, type: file, path: y}]", "appears twice"),
        ("sinks: [{name: a, type: file, path: x, colour: red}]", "unknown keys ['colour']"),
        ("sinks: [{name: a, type: file, path: x, batch_size: 0}]", "at least 1"),
        ("sinks: [{name: a, type: webhook, url: 'https://x', secret: inline}]", "unknown keys ['secret']"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, text: str, error: str):
    with pytest.raises(ConfigError, match=None) as info:
        load_sink_specs(write(tmp_path, text))
    assert error in str(info.value)


def test_a_missing_secret_variable_is_a_config_error(tmp_path: Path):
    (spec,) = load_sink_specs(
        write(tmp_path, "sinks: [{name: a, type: webhook, url: 'https://x', secret_env: NOPE}]")
    )
    with pytest.raises(ConfigError, match="NOPE is not set"):
        build_sink(spec, {}, lambda: object())  # type: ignore[arg-type,return-value]
