"""``MemoryWriterService``: register, list, disable, rotate a tenant's memory writers (ARCHITECTURE §8)."""

from __future__ import annotations

import hashlib
import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authz.api.admin.v1 import memory_writer_service_pb2 as pb
from authz.api.admin.v1 import memory_writer_service_pb2_grpc as pb_grpc
from authz.errors import InvalidArgument
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.auth import principal
from authz.storage import RegisteredWriter

#: Writer ids: what entries carry in ``writer`` and the audit event names (no space, no quote).
_WRITER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
MAX_SOURCES = 64
MAX_SOURCE_CHARS = 256
MAX_GRACE_S = 30 * 86400


def writer_message(w: RegisteredWriter) -> pb.MemoryWriter:
    return pb.MemoryWriter(
        tenant=w.tenant,
        writer_id=w.writer_id,
        public_key=w.public_key,
        sources=list(w.sources),
        expires_at=convert.timestamp(w.expires_at),
        created_at=convert.timestamp(w.created_at),
        created_by=w.created_by,
        updated_at=convert.timestamp(w.updated_at),
        disabled=w.disabled,
        disabled_at=convert.timestamp(w.disabled_at),
        disabled_by=w.disabled_by or "",
        previous_public_key=w.previous_public_key or b"",
        previous_key_until=convert.timestamp(w.previous_until),
    )


def _writer_id(value: str) -> str:
    if not _WRITER_ID.fullmatch(value or ""):
        raise InvalidArgument(
            "writer_id must be 1-64 characters: letters, digits, '.', '_', ':', '-'",
            metadata={"field": "writer_id"},
        )
    return value


def _public_key(value: bytes, field: str = "public_key") -> bytes:
    try:
        Ed25519PublicKey.from_public_bytes(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} must be a raw 32-byte Ed25519 public key", metadata={"field": field}
        ) from None
    return bytes(value)


def _sources(values: list[str]) -> tuple[str, ...]:
    sources = tuple(dict.fromkeys(values))
    if not sources or len(sources) > MAX_SOURCES:
        raise InvalidArgument(f"give 1-{MAX_SOURCES} allowed sources", metadata={"field": "sources"})
    for source in sources:
        if not source or len(source) > MAX_SOURCE_CHARS or not source.isprintable():
            raise InvalidArgument(
                f"a source must be 1-{MAX_SOURCE_CHARS} printable characters", metadata={"field": "sources"}
            )
        if "*" in source[:-1]:
            raise InvalidArgument("'*' may only end a source (a prefix)", metadata={"field": "sources"})
    return sources


def _fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class MemoryWriterService(pb_grpc.MemoryWriterServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def RegisterMemoryWriter(self, request: pb.RegisterMemoryWriterRequest, context):
        await self.rt.require_tenant(request.tenant)
        now = self.rt.clock()
        expires = convert.epoch(request.expires_at, request.HasField("expires_at"))
        if expires is not None and expires <= now:
            raise InvalidArgument("expires_at must be in the future", metadata={"field": "expires_at"})
        writer = RegisteredWriter(
            tenant=request.tenant,
            writer_id=_writer_id(request.writer_id),
            public_key=_public_key(request.public_key),
            sources=_sources(list(request.sources)),
            expires_at=expires,
            created_at=now,
            created_by=principal().identity,
            updated_at=now,
        )
        await self.rt.audited(
            lambda: self.rt.store.create_memory_writer(writer),
            writer.tenant,
            "memory_writer.register",
            f"memory_writer:{writer.writer_id}",
            {
                "sources": list(writer.sources),
                "expires_at": expires,
                "key_sha256": _fingerprint(writer.public_key),
            },
        )
        return pb.RegisterMemoryWriterResponse(writer=writer_message(writer))

    async def ListMemoryWriters(self, request: pb.ListMemoryWritersRequest, context):
        await self.rt.require_tenant(request.tenant)
        writers = await self.rt.store.list_memory_writers(request.tenant)
        return pb.ListMemoryWritersResponse(writers=[writer_message(w) for w in writers])

    async def DisableMemoryWriter(self, request: pb.DisableMemoryWriterRequest, context):
        await self.rt.require_tenant(request.tenant)
        writer_id = _writer_id(request.writer_id)
        now = self.rt.clock()
        writer = await self.rt.audited(
            lambda: self.rt.store.disable_memory_writer(request.tenant, writer_id, principal().identity, now),
            request.tenant,
            "memory_writer.disable",
            f"memory_writer:{writer_id}",
            {},
        )
        return pb.DisableMemoryWriterResponse(writer=writer_message(writer))

    async def RotateMemoryWriter(self, request: pb.RotateMemoryWriterRequest, context):
        await self.rt.require_tenant(request.tenant)
        writer_id = _writer_id(request.writer_id)
        key = _public_key(request.public_key)
        if request.previous_key_grace_s > MAX_GRACE_S:
            raise InvalidArgument(
                f"previous_key_grace_s must be at most {MAX_GRACE_S}",
                metadata={"field": "previous_key_grace_s"},
            )
        now = self.rt.clock()
        until = now + request.previous_key_grace_s if request.previous_key_grace_s else None
        writer = await self.rt.audited(
            lambda: self.rt.store.rotate_memory_writer(request.tenant, writer_id, key, until, now),
            request.tenant,
            "memory_writer.rotate",
            f"memory_writer:{writer_id}",
            {"key_sha256": _fingerprint(key), "previous_key_until": until},
        )
        return pb.RotateMemoryWriterResponse(writer=writer_message(writer))
