"""``IntegrationService`` on the real admin gRPC service: forwarder health (cursor, head, lag, errors,
dead letters, lease) and dead letters, narrowed to the caller's tenant scope."""

from __future__ import annotations

import grpc

from authz.api.admin.v1 import admin_key_service_pb2 as keys_pb
from authz.api.admin.v1 import integration_service_pb2 as pb
from authz.api.admin.v1 import integration_service_pb2_grpc as pb_grpc
from authz.audit import admin_event
from authz.storage import TenantSettings
from tests.unit.test_admin_service import ROOT, admin, auth, failure  # noqa: F401  (admin is a fixture)


async def test_forwarder_health_and_dead_letters_are_reported_within_the_key_scope(admin) -> None:  # noqa: F811
    store = admin.store
    await store.put_tenant("globex", TenantSettings())
    before = {t: (await store.audit_head(t) or (0, ""))[0] for t in ("acme", "globex")}
    await store.append_events(
        [
            (t, admin_event(t, "alice", "tenant.update", "x", time_ms=1_000))
            for t in ("acme", "globex")
            for _ in range(3)
        ]
    )
    now = admin.runtime.clock()
    assert await store.acquire_forwarder_lease("splunk", "host:1:abc", now, 30)
    await store.advance_forwarder_cursor("acme", "splunk", "host:1:abc", before["acme"] + 1, now)
    await store.dead_letter_batch(
        "globex", "splunk", "host:1:abc", 1, before["globex"] + 3, "HTTP 400", 1, now
    )
    await store.record_forwarder_error("acme", "splunk", "HTTP 503", now)

    stub = pb_grpc.IntegrationServiceStub(admin.channel)
    health = await stub.ForwarderHealth(pb.ForwarderHealthRequest(), metadata=auth(ROOT))
    rows = {(r.sink, r.tenant): r for r in health.forwarders}
    acme = rows[("splunk", "acme")]
    assert (acme.cursor_seq, acme.head_seq, acme.lag_events) == (before["acme"] + 1, before["acme"] + 3, 2)
    assert acme.lag_seconds > 0 and acme.last_error == "HTTP 503" and acme.lease_holder == "host:1:abc"
    assert acme.HasField("last_success_at") and acme.HasField("lease_expires_at")
    globex = rows[("splunk", "globex")]
    assert (globex.lag_events, globex.dead_letters, globex.last_error) == (0, 1, "HTTP 400")

    dead = await stub.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=auth(ROOT))
    assert [(d.tenant, d.sink, d.from_seq, d.reason) for d in dead.dead_letters] == [
        ("globex", "splunk", 1, "HTTP 400")
    ]

    viewer = await admin.new_key(keys_pb.ROLE_VIEWER, "acme", "acme-viewer")
    scoped = await stub.ForwarderHealth(pb.ForwarderHealthRequest(), metadata=auth(viewer))
    assert [(r.sink, r.tenant) for r in scoped.forwarders] == [("splunk", "acme")]
    assert (await stub.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=auth(viewer))).dead_letters == []
    code, _ = await failure(
        stub.ForwarderHealth(pb.ForwarderHealthRequest(tenant="globex"), metadata=auth(viewer))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
