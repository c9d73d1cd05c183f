"""The forwarder supervisor follows the tenants' API-configured sinks without a restart: a new sink
starts, a changed one restarts with its new configuration, a deleted one stops and releases its lease, a
sink whose secret is not provided yet reports it and starts once it is. Real SQLite store, real webhook
receivers on 127.0.0.1 (through the outbound client, loopback allowlisted as an operator would)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from authz.forward import ForwarderSupervisor
from authz.forward._tenant import TenantSecrets, validate_sink_spec
from authz.outbound import OutboundClient, OutboundPolicy
from authz.storage import SinkConfig
from authz.storage.sqlite import SQLiteStore
from tests.forward_receivers import Receiver
from tests.unit.test_forward import SECRET, append, arrived, webhook_check

FAST = {"batch_size": 2, "poll_interval_s": 0.05, "backoff_base_s": 0.01, "backoff_cap_s": 0.05}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tessera.db")
    yield s
    await s.close()


async def eventually(condition: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def webhook(tenant: str, name: str, url: str, version_now: float, secret: str = "hook-key") -> SinkConfig:
    spec = validate_sink_spec("webhook", {"url": url, **FAST}, secret, route=False)
    return SinkConfig(tenant, name, "webhook", spec, 1, version_now, version_now)


async def test_sinks_configured_per_tenant_start_change_and_stop_without_a_restart(
    store, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    secrets = tmp_path / "secrets"
    (secrets / "acme").mkdir(parents=True)
    (secrets / "acme" / "hook-key").write_bytes(SECRET + b"\n")  # an operator's file, newline and all
    await append(store, "acme", 5)
    await append(store, "globex", 3)
    first, second = Receiver(webhook_check).start(), Receiver(webhook_check).start()
    http = OutboundClient(OutboundPolicy.build(["127.0.0.1"]), timeout_s=2.0, purpose="audit forwarder")
    supervisor = ForwarderSupervisor(store, lambda: http, secrets_dir=str(secrets), env={}, reload_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        await store.create_sink_config(webhook("acme", "soc", first.url, time.time()))
        await eventually(lambda: arrived(first).get("acme") == [1, 2, 3, 4, 5])
        assert "globex" not in arrived(first)  # an API sink receives its own tenant's chain only
        assert supervisor.sink_names == ["acme/soc"]
        # the receiver answers before the forwarder records the acknowledgement: wait for the cursor too
        cursor = {}

        async def at_head() -> bool:
            cursor["seq"] = (await store.get_forwarder_cursor("acme", "acme/soc")).seq
            return cursor["seq"] == 5

        deadline = time.monotonic() + 15
        while not await at_head():
            assert time.monotonic() < deadline, cursor
            await asyncio.sleep(0.05)

        # Pointed elsewhere: the running forwarder is replaced; new events go to the new receiver only.
        spec = validate_sink_spec("webhook", {"url": second.url, **FAST}, "hook-key", route=False)
        await store.update_sink_config("acme", "soc", spec, time.time())
        await eventually(
            lambda: supervisor._running.get("acme/soc") and supervisor._running["acme/soc"].key[1] == 2
        )
        before = len(first.accepted)
        await append(store, "acme", 3)
        await eventually(lambda: arrived(second).get("acme") == [6, 7, 8])
        assert len(first.accepted) == before

        # Deleted: stopped, its lease released at once (a successor need not wait for it to expire).
        await store.delete_sink_config("acme", "soc")
        await eventually(lambda: supervisor.sink_names == [])
        deadline = time.monotonic() + 15
        while await store.forwarder_lease("acme/soc") is not None:  # released as its task ends
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await append(store, "acme", 1)
        await asyncio.sleep(0.3)
        assert arrived(second)["acme"] == [6, 7, 8]
    finally:
        stop.set()
        await task
        first.stop()
        second.stop()
        await http.aclose()
    assert SECRET.decode() not in caplog.text


async def test_a_sink_whose_secret_is_missing_says_so_and_starts_once_it_is_provided(store, tmp_path: Path):
    await append(store, "globex", 2)
    receiver = Receiver(webhook_check).start()
    env: dict[str, str] = {}
    http = OutboundClient(OutboundPolicy.build(["127.0.0.1"]), timeout_s=2.0, purpose="audit forwarder")
    supervisor = ForwarderSupervisor(store, lambda: http, env=env, reload_s=0.1)
    try:
        await store.create_sink_config(webhook("globex", "soc", receiver.url, time.time(), secret="soc.key"))
        await supervisor.reconcile()
        assert supervisor.sink_names == []
        cursor = await store.get_forwarder_cursor("globex", "globex/soc")
        assert cursor.seq == 0 and "not started" in cursor.last_error and "soc.key" in cursor.last_error
        # The variable of that tenant and name (another tenant's or a plain name would not do).
        env["TESSERA_FORWARD_SECRET_ACME__SOC_KEY"] = "wrong tenant"
        env["soc.key"] = "not a tenant secret"
        await supervisor.reconcile()
        assert supervisor.sink_names == []
        env["TESSERA_FORWARD_SECRET_GLOBEX__SOC_KEY"] = SECRET.decode()
        await supervisor.reconcile()
        assert supervisor.sink_names == ["globex/soc"]
        await supervisor.forwarders[0].pass_once()
        assert arrived(receiver) == {"globex": [1, 2]} and receiver.refused == []
    finally:
        await supervisor.stop_all()
        receiver.stop()
        await http.aclose()


def test_tenant_secrets_are_looked_up_per_tenant_and_never_enumerated(tmp_path: Path):
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "k").write_text("from-file\n")
    secrets = TenantSecrets("acme", str(tmp_path), {"TESSERA_FORWARD_SECRET_ACME__K": "from-env"})
    assert secrets["k"] == "from-file"  # the file wins
    assert TenantSecrets("acme", None, {"TESSERA_FORWARD_SECRET_ACME__K": "from-env"}).get("k") == "from-env"
    assert TenantSecrets("globex", str(tmp_path), {}).get("k") is None
    assert TenantSecrets("acme", str(tmp_path), {}).get("../acme/k") is None  # not a secret name
    assert list(secrets) == [] and len(secrets) == 0
