"""``MemoryWriterService`` and ``ReceiptKeyService`` on the real admin gRPC service: validation, the
audit of every change, scope, and the public JWK Set."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from authz.api.admin.v1 import admin_key_service_pb2 as keys_pb
from authz.api.admin.v1 import memory_writer_service_pb2 as pb
from authz.api.admin.v1 import memory_writer_service_pb2_grpc as pb_grpc
from authz.api.admin.v1 import receipt_key_service_pb2 as rk_pb
from authz.api.admin.v1 import receipt_key_service_pb2_grpc as rk_grpc
from authz.receipts import derived_keys
from authz.receipts._format import b64u
from tests.unit.test_admin_service import ROOT, admin, admin_events, auth, failure  # noqa: F401

KEY = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")  # the vectors' key
OTHER = bytes(range(32))


def ts(epoch: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromSeconds(int(epoch))
    return stamp


async def test_register_list_rotate_disable_each_audited(admin) -> None:  # noqa: F811
    stub = pb_grpc.MemoryWriterServiceStub(admin.channel)
    expires = ts(admin.runtime.clock() + 3600)
    made = await stub.RegisterMemoryWriter(
        pb.RegisterMemoryWriterRequest(
            tenant="acme", writer_id="rag-ingester", public_key=KEY, sources=["erp", "erp", "s3://d/*"],
            expires_at=expires,
        ),
        metadata=auth(ROOT),
    )  # fmt: skip
    writer = made.writer
    assert (writer.writer_id, writer.public_key, list(writer.sources)) == (
        "rag-ingester",
        KEY,
        ["erp", "s3://d/*"],
    )
    assert writer.expires_at.seconds == expires.seconds and not writer.disabled and writer.created_by
    listed = await stub.ListMemoryWriters(pb.ListMemoryWritersRequest(tenant="acme"), metadata=auth(ROOT))
    assert [w.writer_id for w in listed.writers] == ["rag-ingester"]
    rotated = await stub.RotateMemoryWriter(
        pb.RotateMemoryWriterRequest(
            tenant="acme", writer_id="rag-ingester", public_key=OTHER, previous_key_grace_s=60
        ),
        metadata=auth(ROOT),
    )
    assert rotated.writer.public_key == OTHER and rotated.writer.previous_public_key == KEY
    assert rotated.writer.HasField("previous_key_until")
    disabled = await stub.DisableMemoryWriter(
        pb.DisableMemoryWriterRequest(tenant="acme", writer_id="rag-ingester"), metadata=auth(ROOT)
    )
    assert disabled.writer.disabled and disabled.writer.disabled_by
    events = await admin_events(admin.store, "acme")
    actions = [e["action"] for e in events if e.get("target") == "memory_writer:rag-ingester"]
    assert actions == ["memory_writer.register", "memory_writer.rotate", "memory_writer.disable"]
    assert all(KEY.hex() not in str(e) and b64u(KEY) not in str(e) for e in events)  # only a fingerprint

    code, _ = await failure(
        stub.RotateMemoryWriter(
            pb.RotateMemoryWriterRequest(tenant="acme", writer_id="rag-ingester", public_key=KEY),
            metadata=auth(ROOT),
        )
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    code, _ = await failure(
        stub.RegisterMemoryWriter(
            pb.RegisterMemoryWriterRequest(
                tenant="acme", writer_id="rag-ingester", public_key=KEY, sources=["x"]
            ),
            metadata=auth(ROOT),
        )
    )
    assert code is grpc.StatusCode.ALREADY_EXISTS  # ids are never reused


async def test_bad_registrations_are_refused_with_the_field(admin) -> None:  # noqa: F811
    stub = pb_grpc.MemoryWriterServiceStub(admin.channel)
    good = dict(tenant="acme", writer_id="w1", public_key=KEY, sources=["erp"])
    bad = [
        ({"writer_id": "has space"}, "writer_id"),
        ({"writer_id": ""}, "writer_id"),
        ({"public_key": b"short"}, "public_key"),
        ({"sources": []}, "sources"),
        ({"sources": ["a*b"]}, "sources"),
        ({"sources": ["bad\nline"]}, "sources"),
        ({"expires_at": ts(1)}, "expires_at"),
    ]
    for change, field in bad:
        code, status = await failure(
            stub.RegisterMemoryWriter(pb.RegisterMemoryWriterRequest(**(good | change)), metadata=auth(ROOT))
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT, change
        assert field in str(status), (change, status)
    code, _ = await failure(
        stub.RegisterMemoryWriter(
            pb.RegisterMemoryWriterRequest(**(good | {"tenant": "nope"})), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.NOT_FOUND
    code, _ = await failure(
        stub.RotateMemoryWriter(
            pb.RotateMemoryWriterRequest(
                tenant="acme", writer_id="w1", public_key=KEY, previous_key_grace_s=10**8
            ),
            metadata=auth(ROOT),
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_viewer_lists_but_does_not_register_and_other_tenants_are_out_of_scope(admin) -> None:  # noqa: F811
    stub = pb_grpc.MemoryWriterServiceStub(admin.channel)
    viewer = await admin.new_key(keys_pb.ROLE_VIEWER, "acme", "acme-writers-viewer")
    await stub.ListMemoryWriters(pb.ListMemoryWritersRequest(tenant="acme"), metadata=auth(viewer))
    request = pb.RegisterMemoryWriterRequest(tenant="acme", writer_id="v1", public_key=KEY, sources=["erp"])
    code, _ = await failure(stub.RegisterMemoryWriter(request, metadata=auth(viewer)))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    code, _ = await failure(
        stub.ListMemoryWriters(pb.ListMemoryWritersRequest(tenant="globex"), metadata=auth(viewer))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED


async def test_receipt_keys_are_public_and_match_the_check_services_signing_key(admin) -> None:  # noqa: F811
    stub = rk_grpc.ReceiptKeyServiceStub(admin.channel)
    for metadata in ((), auth("tsk_000000000000_wrong")):  # no key, or a wrong one: still answered
        answer = await stub.GetReceiptKeys(rk_pb.GetReceiptKeysRequest(), metadata=metadata)
        (jwk,) = answer.keys
        expected = derived_keys(["r1"], admin.keyring.derive_subkey)[0].jwk()
        assert {f.name: v for f, v in jwk.ListFields()} == expected
