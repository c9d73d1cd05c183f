"""The audit forwarders inside the admin service (``TESSERA_ADMIN_FORWARDER=on``), two real ``tessera
serve-admin`` replicas on one database: a sink created through ``ForwarderConfigService`` is picked up
without a restart, exactly one replica holds its lease, and when that replica stops the other takes over
from the cursor. The receiver is a real HTTP server checking the webhook signature."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from authz.api.admin.v1 import forwarder_config_service_pb2 as fpb
from authz.api.admin.v1 import forwarder_config_service_pb2_grpc as fgrpc
from authz.api.admin.v1 import integration_service_pb2 as ipb
from authz.api.admin.v1 import integration_service_pb2_grpc as igrpc
from authz.api.admin.v1 import tenant_service_pb2 as tpb
from authz.api.admin.v1 import tenant_service_pb2_grpc as tgrpc
from authz.local.stack import AdminProcess
from tests.forward_receivers import Receiver
from tests.pg import free_port
from tests.unit.test_forward import SECRET, arrived, webhook_check

ROOT = "tsk_0123456789ab_root-secret-for-forwarder-tests-0000000000"
AUTH = (("authorization", f"Bearer {ROOT}"),)


def admin_replica(tmp_path: Path, name: str) -> AdminProcess:
    port = free_port()
    env = {
        "TESSERA_DATABASE_URL": f"sqlite:///{tmp_path / 'tessera.db'}",
        "TESSERA_MASTER_KEY": "00" * 32,
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_VAR_DIR": str(tmp_path / name),
        "TESSERA_ADMIN_PORT": str(port),
        "TESSERA_ADMIN_METRICS_PORT": str(free_port()),
        "TESSERA_BOOTSTRAP_ADMIN_KEY": ROOT,
        "TESSERA_ADMIN_FORWARDER": "on",
        "TESSERA_FORWARD_RELOAD_S": "0.2",
        "TESSERA_FORWARD_SECRETS_DIR": str(tmp_path / "secrets"),
        "TESSERA_OUTBOUND_ALLOW": "127.0.0.0/8",  # the receiver listens on loopback
    }
    return AdminProcess(port, env, tmp_path / f"{name}.log")


def wait(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_admin_replicas_forward_an_api_configured_sink_one_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "secrets" / "acme").mkdir(parents=True)
    (tmp_path / "secrets" / "acme" / "hook").write_bytes(SECRET)
    receiver = Receiver(webhook_check).start()
    one, two = admin_replica(tmp_path, "one"), admin_replica(tmp_path, "two")
    one.start()
    two.start()
    channels = [grpc.insecure_channel(f"127.0.0.1:{p.port}") for p in (one, two)]
    try:
        tenants = tgrpc.TenantServiceStub(channels[0])
        config = fgrpc.ForwarderConfigServiceStub(channels[1])  # configured through the other replica
        health = igrpc.IntegrationServiceStub(channels[0])
        tenants.CreateTenant(tpb.CreateTenantRequest(tenant="acme"), metadata=AUTH, timeout=10)
        options = struct_pb2.Struct()
        options.update({"url": receiver.url + "/in", "poll_interval_s": 0.1, "batch_size": 2})
        config.CreateSink(
            fpb.CreateSinkRequest(
                tenant="acme", sink=fpb.Sink(name="soc", kind="webhook", options=options, secret="hook")
            ),
            metadata=AUTH,
            timeout=10,
        )

        def caught_up() -> ipb.ForwarderHealth | None:
            rows = health.ForwarderHealth(
                ipb.ForwarderHealthRequest(tenant="acme", sink="acme/soc"), metadata=AUTH, timeout=10
            ).forwarders
            return rows[0] if rows and rows[0].lag_events == 0 and rows[0].cursor_seq > 0 else None

        wait(lambda: caught_up() is not None)
        row = caught_up()
        assert row is not None
        # tenant.create and sink.create: the chain's first events, each arrived
        assert arrived(receiver)["acme"] == list(range(1, row.head_seq + 1))
        holder_pid = int(row.lease_holder.split(":")[1])
        assert holder_pid in (one.proc.pid, two.proc.pid)

        # The holder stops: it releases the lease, the other replica takes over from the cursor.
        holder, other = (one, two) if holder_pid == one.proc.pid else (two, one)
        holder.stop()
        live = channels[1] if other is two else channels[0]
        tgrpc.TenantServiceStub(live).UpdateTenantSettings(
            tpb.UpdateTenantSettingsRequest(
                tenant="acme",
                settings=tpb.TenantSettings(require_prompt=True),
                update_mask={"paths": ["require_prompt"]},
            ),
            metadata=AUTH,
            timeout=10,
        )
        health = igrpc.IntegrationServiceStub(live)
        wait(lambda: caught_up() is not None and caught_up().head_seq > row.head_seq)
        after = caught_up()
        assert after is not None and int(after.lease_holder.split(":")[1]) == other.proc.pid
        assert arrived(receiver)["acme"] == list(range(1, after.head_seq + 1))  # nothing skipped
        assert receiver.refused == []
        assert SECRET.decode() not in (tmp_path / "one.log").read_text() + (tmp_path / "two.log").read_text()
    finally:
        for channel in channels:
            channel.close()
        one.stop()
        two.stop()
        receiver.stop()
