"""``ForwarderConfigService`` on the real admin gRPC service (SQLite store): a tenant's sinks and
notification routes are validated (kinds, options, settings, secret names, URLs under the outbound rules),
stored per tenant, audited with the change in one transaction, and never carry a secret's value;
ReplayDeadLetter records an audited replay request."""

from __future__ import annotations

import json

import grpc
from google.protobuf import struct_pb2

from authz.api.admin.v1 import admin_key_service_pb2 as keys_pb
from authz.api.admin.v1 import forwarder_config_service_pb2 as pb
from authz.api.admin.v1 import forwarder_config_service_pb2_grpc as pb_grpc
from tests.unit.test_admin_service import ROOT, admin, admin_events, auth, failure  # noqa: F401

PUBLIC = "https://93.184.216.34/tessera"  # an IP literal: vetted without DNS, never connected to


def struct(**values) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def stub(admin) -> pb_grpc.ForwarderConfigServiceStub:  # noqa: F811
    return pb_grpc.ForwarderConfigServiceStub(admin.channel)


async def test_a_sink_is_created_read_updated_and_deleted_each_change_audited(admin) -> None:  # noqa: F811
    api = stub(admin)
    sink = pb.Sink(
        name="soc", kind="splunk", options=struct(url=PUBLIC, index="security", batch_size=50), secret="hec"
    )
    created = (await api.CreateSink(pb.CreateSinkRequest(tenant="acme", sink=sink), metadata=auth(ROOT))).sink
    assert (created.name, created.kind, created.secret, created.version) == ("soc", "splunk", "hec", 1)
    assert created.forwarder_sink == "acme/soc" and created.HasField("created_at")
    assert dict(created.options) == {"url": PUBLIC, "index": "security", "batch_size": 50}

    got = (await api.GetSink(pb.GetSinkRequest(tenant="acme", name="soc"), metadata=auth(ROOT))).sink
    assert got == created
    listed = await api.ListSinks(pb.ListSinksRequest(tenant="acme"), metadata=auth(ROOT))
    assert [s.name for s in listed.sinks] == ["soc"]
    assert (await api.ListSinks(pb.ListSinksRequest(tenant="globex"), metadata=auth(ROOT))).sinks == []

    update = pb.UpdateSinkRequest(
        tenant="acme",
        name="soc",
        sink=pb.Sink(options=struct(url=PUBLIC), secret="hec-2"),
        expected_version=1,
    )
    updated = (await api.UpdateSink(update, metadata=auth(ROOT))).sink
    assert (updated.version, updated.secret, dict(updated.options)) == (2, "hec-2", {"url": PUBLIC})
    code, status = await failure(api.UpdateSink(update, metadata=auth(ROOT)))  # version 1 is gone
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "version 2" in status.message
    code, status = await failure(
        api.UpdateSink(
            pb.UpdateSinkRequest(tenant="acme", name="soc", sink=pb.Sink(kind="datadog")), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "kind of 'soc' is splunk" in status.message

    await api.DeleteSink(pb.DeleteSinkRequest(tenant="acme", name="soc"), metadata=auth(ROOT))
    code, _ = await failure(api.GetSink(pb.GetSinkRequest(tenant="acme", name="soc"), metadata=auth(ROOT)))
    assert code is grpc.StatusCode.NOT_FOUND
    code, _ = await failure(
        api.DeleteSink(pb.DeleteSinkRequest(tenant="acme", name="soc"), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.NOT_FOUND

    events = [e for e in await admin_events(admin.store, "acme") if e["target"] == "sink:soc"]
    assert [e["action"] for e in events] == ["sink.create", "sink.update", "sink.delete"]
    assert events[0]["details"] == {
        "kind": "splunk",
        "options": {"url": PUBLIC, "index": "security", "batch_size": 50},
        "secret": "hec",
    }
    assert events[1]["details"]["version"] == 2 and all("(key " in e["actor"] for e in events)


async def test_bad_sinks_are_refused_with_the_field_and_why(admin) -> None:  # noqa: F811
    api = stub(admin)

    async def refused(sink: pb.Sink, tenant: str = "acme") -> tuple[grpc.StatusCode, str, str, dict]:
        code, status = await failure(
            api.CreateSink(pb.CreateSinkRequest(tenant=tenant, sink=sink), metadata=auth(ROOT))
        )
        from authz.server.status import error_info

        info = error_info(status)
        return code, status.message, info.reason if info else "", dict(info.metadata) if info else {}

    code, message, reason, meta = await refused(pb.Sink(name="x", kind="kafka", secret="s"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and reason == "FORWARDER_CONFIG_INVALID"
    assert "unknown sink kind 'kafka'" in message and meta["field"] == "kind"
    _, message, _, _ = await refused(pb.Sink(name="x", kind="file", options=struct(path="/etc/passwd")))
    assert "file sinks are configured in the sinks file" in message
    _, message, _, meta = await refused(pb.Sink(name="x", kind="slack", secret="s"))  # a route kind
    assert "unknown sink kind 'slack'" in message
    _, message, _, meta = await refused(
        pb.Sink(
            name="x", kind="webhook", options=struct(url=PUBLIC, secret_env="TESSERA_MASTER_KEY"), secret="s"
        )
    )
    assert "unknown option(s) secret_env" in message and meta["field"] == "options"
    _, message, _, meta = await refused(pb.Sink(name="x", kind="webhook", secret="s"))
    assert "option 'url' is required" in message and meta["field"] == "options.url"
    _, message, _, meta = await refused(
        pb.Sink(name="x", kind="webhook", options=struct(url=PUBLIC, batch_size=0), secret="s")
    )
    assert "batch_size" in message
    _, message, _, meta = await refused(
        pb.Sink(
            name="x", kind="webhook", options=struct(url=PUBLIC), secret="https://hooks.example/T0/B0/xyz"
        )
    )
    assert meta["field"] == "secret" and "not a value" in message
    _, message, _, meta = await refused(pb.Sink(name="x", kind="webhook", options=struct(url=PUBLIC)))
    assert meta["field"] == "secret" and "required" in message
    _, message, _, meta = await refused(
        pb.Sink(name="x", kind="webhook", options=struct(url="ftp://93.184.216.34/x"), secret="s")
    )
    assert meta["field"] == "options.url" and "http or https" in message
    code, _, _, meta = await refused(
        pb.Sink(name="Bad Name", kind="webhook", options=struct(url=PUBLIC), secret="s")
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and meta["field"] == "name"
    code, _, _, _ = await refused(
        pb.Sink(name="x", kind="webhook", options=struct(url=PUBLIC), secret="s"), "nope"
    )
    assert code is grpc.StatusCode.NOT_FOUND

    # The outbound rules: the admin service (default policy) refuses loopback and metadata addresses,
    # and the refused attempt is audited with why.
    code, message, reason, meta = await refused(
        pb.Sink(
            name="inside", kind="webhook", options=struct(url="http://169.254.169.254/latest"), secret="s"
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and reason == "OUTBOUND_REFUSED"
    assert meta["field"] == "options.url"
    refusal = [e for e in await admin_events(admin.store, "acme") if e["action"] == "sink.create.refused"]
    assert refusal[-1]["target"] == "sink:inside"
    assert refusal[-1]["details"]["options.url"] == "http://169.254.169.254/latest"
    assert (await admin.store.list_sink_configs("acme")) == []

    await api.CreateSink(
        pb.CreateSinkRequest(
            tenant="acme", sink=pb.Sink(name="dup", kind="datadog", options=struct(url=PUBLIC), secret="k")
        ),
        metadata=auth(ROOT),
    )
    code, _ = await failure(
        api.CreateSink(
            pb.CreateSinkRequest(
                tenant="acme",
                sink=pb.Sink(name="dup", kind="webhook", options=struct(url=PUBLIC), secret="k"),
            ),
            metadata=auth(ROOT),
        )
    )
    assert code is grpc.StatusCode.ALREADY_EXISTS
    await api.DeleteSink(pb.DeleteSinkRequest(tenant="acme", name="dup"), metadata=auth(ROOT))


async def test_notification_routes_keep_their_match_rate_and_links(admin) -> None:  # noqa: F811
    api = stub(admin)
    route = pb.NotificationRoute(
        name="oncall",
        kind="pagerduty",
        secret="pd-routing-key",
        match=pb.NotificationMatch(decisions=["deny"], codes=[-32010], tools=["transfer_funds"]),
        rate=pb.RateRule(more_than=5, minutes=10),
        link_template="https://console.example.com/{tenant}/events/{seq}",
        approval_link_template="https://console.example.com/{tenant}/approvals/{approval_id}",
        options=struct(url=PUBLIC),
    )
    created = (
        await api.CreateNotificationRoute(
            pb.CreateNotificationRouteRequest(tenant="globex", route=route), metadata=auth(ROOT)
        )
    ).route
    assert created.match == route.match and created.rate == route.rate
    assert created.approval_link_template == route.approval_link_template
    assert created.forwarder_sink == "globex/oncall" and created.version == 1
    got = await api.GetNotificationRoute(
        pb.GetNotificationRouteRequest(tenant="globex", name="oncall"), metadata=auth(ROOT)
    )
    assert got.route == created
    # Sinks and routes share one namespace per tenant but are read through their own RPCs.
    code, _ = await failure(
        api.GetSink(pb.GetSinkRequest(tenant="globex", name="oncall"), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.NOT_FOUND
    assert (await api.ListSinks(pb.ListSinksRequest(tenant="globex"), metadata=auth(ROOT))).sinks == []

    updated = (
        await api.UpdateNotificationRoute(
            pb.UpdateNotificationRouteRequest(
                tenant="globex",
                name="oncall",
                route=pb.NotificationRoute(
                    secret="pd-routing-key", match=pb.NotificationMatch(actions=["approval.expired"])
                ),
            ),
            metadata=auth(ROOT),
        )
    ).route
    assert updated.version == 2 and list(updated.match.actions) == ["approval.expired"]
    assert not updated.HasField("rate") and updated.link_template == ""

    for bad, field in (
        (pb.NotificationRoute(name="r", kind="splunk", secret="s"), "kind"),
        (
            pb.NotificationRoute(
                name="r", kind="slack", secret="s", rate=pb.RateRule(more_than=0, minutes=5)
            ),
            "rate",
        ),
        (
            pb.NotificationRoute(
                name="r", kind="slack", secret="s", match=pb.NotificationMatch(decisions=["maybe"])
            ),
            "match",
        ),
        (
            pb.NotificationRoute(name="r", kind="teams", secret="s", link_template="https://x/{secret}"),
            "link_template",
        ),
    ):
        code, status = await failure(
            api.CreateNotificationRoute(
                pb.CreateNotificationRouteRequest(tenant="globex", route=bad), metadata=auth(ROOT)
            )
        )
        from authz.server.status import error_info

        assert code is grpc.StatusCode.INVALID_ARGUMENT and error_info(status).metadata["field"] == field, (
            status
        )
    listed = await api.ListNotificationRoutes(
        pb.ListNotificationRoutesRequest(tenant="globex"), metadata=auth(ROOT)
    )
    assert [r.name for r in listed.routes] == ["oncall"]
    actions = [
        e["action"]
        for e in await admin_events(admin.store, "globex")
        if e["target"] == "notification_route:oncall"
    ]
    assert actions == ["notification_route.create", "notification_route.update"]


async def test_replay_dead_letter_records_an_audited_request_within_the_tenant(admin) -> None:  # noqa: F811
    store, api = admin.store, stub(admin)
    now = admin.runtime.clock()
    assert await store.acquire_forwarder_lease("acme/soc", "host:1:abc", now, 30)
    dead = await store.dead_letter_batch("acme", "acme/soc", "host:1:abc", 1, 3, "HTTP 400", 1, now)

    operator = await admin.new_key(keys_pb.ROLE_OPERATOR, "acme", "acme-operator")
    answer = await api.ReplayDeadLetter(
        pb.ReplayDeadLetterRequest(tenant="acme", id=dead.id), metadata=auth(operator)
    )
    assert (answer.sink, answer.from_seq, answer.to_seq) == ("acme/soc", 1, 3)
    assert answer.HasField("replay_requested_at")
    (stored,) = [d for d in await store.list_dead_letters() if d.id == dead.id]
    assert stored.replay_requested_at is not None and stored.replayed_at is None
    (event,) = [e for e in await admin_events(store, "acme") if e["action"] == "dead_letter.replay"]
    assert event["target"] == f"dead_letter:{dead.id}" and event["details"]["sink"] == "acme/soc"

    viewer = await admin.new_key(keys_pb.ROLE_VIEWER, "acme", "acme-viewer")
    code, _ = await failure(
        api.ReplayDeadLetter(pb.ReplayDeadLetterRequest(tenant="acme", id=dead.id), metadata=auth(viewer))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    # Another tenant's admin names its own tenant: the dead letter is not found there.
    other = await admin.new_key(keys_pb.ROLE_ADMIN, "globex", "globex-admin")
    code, status = await failure(
        api.ReplayDeadLetter(pb.ReplayDeadLetterRequest(tenant="globex", id=dead.id), metadata=auth(other))
    )
    assert code is grpc.StatusCode.NOT_FOUND and "of tenant 'globex'" in status.message
    await store.mark_dead_letter_replayed(dead.id, now + 1)
    code, _ = await failure(
        api.ReplayDeadLetter(pb.ReplayDeadLetterRequest(tenant="acme", id=dead.id), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert json.dumps(event).count("HTTP 400") == 0  # the request names the batch, not the sink's answer
