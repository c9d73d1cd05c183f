"""Shared by the admin integration tests: one running stack, and clients for its admin API.

``admin_gateway`` (session scope) is the whole local stack (Envoy, check service, admin service, demo
MCP server) started once for every ``test_admin*`` module, with a known bootstrap admin key. A test
module loads this file as a plugin (``pytest_plugins = ["tests.integration.admin_support"]``), so the
fixture is registered once and the stack starts once per session.

:class:`AdminGateway` calls any admin RPC by name with a JSON request over gRPC (directly to the admin
port) or over REST through Envoy, building the REST call (verb, path, query, body) from the method's
``google.api.http`` binding, so the same case runs on both transports.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import status_pb2
from grpc_status import rpc_status

import authz.server.admin.app  # noqa: F401  (imports every admin proto module into the pool)
from authz.local.stack import Stack
from tests.integration.conftest import Gateway, start_gateway

PACKAGE = "authz.api.admin.v1"
ROOT_KEY = f"tsk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
ENV = {
    "TESSERA_BOOTSTRAP_ADMIN_KEY": ROOT_KEY,
    "TESSERA_WEBHOOK_POLL_S": "0.2",
    "TESSERA_WEBHOOK_RETRY_S": "0.5",
    "TESSERA_POLL_INTERVAL_S": "0.2",
    # The access matrix presents a wrong key once per RPC from one address: the lockout has its own
    # tests (tests/unit/test_admin_auth_limits.py, tests/integration/test_admin_auth_lockout.py).
    "TESSERA_ADMIN_AUTH_MAX_FAILURES": "1000",
}


@dataclass
class Result:
    """One call's outcome: gRPC code and HTTP status (REST only), the response message or error."""

    code: grpc.StatusCode
    http: int | None = None
    message: Any = None  # the response message when OK
    status: status_pb2.Status | None = None  # the google.rpc.Status when not OK
    raw: Any = None  # REST: the decoded JSON (or text) body

    @property
    def reason(self) -> str | None:
        if self.status is None:
            return None
        from authz.server.status import error_info

        info = error_info(self.status)
        return info.reason if info else None


def method_descriptor(name: str):
    """``Service/Method`` → its MethodDescriptor."""
    service, method = name.split("/")
    return descriptor_pool.Default().FindServiceByName(f"{PACKAGE}.{service}").methods_by_name[method]


def message_class(descriptor):
    return message_factory.GetMessageClass(descriptor)


@dataclass
class AdminGateway:
    stack: Stack
    gateway: Gateway
    root: str = ROOT_KEY
    keys: dict[str, str] = field(default_factory=dict)
    _channel: grpc.Channel | None = None

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def db_path(self) -> Path:
        return self.stack.workdir / "tessera.db"

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.stack.admin_address)
        return self._channel

    # -- gRPC ------------------------------------------------------------------------------------------
    def grpc(self, name: str, request: dict | None = None, key: str | None = ROOT_KEY) -> Result:
        method = method_descriptor(name)
        req_cls, resp_cls = message_class(method.input_type), message_class(method.output_type)
        message = json_format.ParseDict(request or {}, req_cls())
        path = f"/{method.containing_service.full_name}/{method.name}"
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        try:
            if method.server_streaming:
                call = self.channel().unary_stream(
                    path,
                    request_serializer=req_cls.SerializeToString,
                    response_deserializer=resp_cls.FromString,
                )
                answer = list(call(message, metadata=metadata, timeout=30))
            else:
                call = self.channel().unary_unary(
                    path,
                    request_serializer=req_cls.SerializeToString,
                    response_deserializer=resp_cls.FromString,
                )
                answer = call(message, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            details = next(
                (v for k, v in exc.trailing_metadata() or () if k == rpc_status.GRPC_DETAILS_METADATA_KEY),
                None,
            )
            return Result(exc.code(), status=status_pb2.Status.FromString(details) if details else None)
        return Result(grpc.StatusCode.OK, message=answer)

    # -- REST through Envoy ----------------------------------------------------------------------------
    def rest_request(self, name: str, request: dict | None) -> tuple[str, str, dict[str, Any], Any]:
        """(verb, path, query, body) of the method's first binding whose path fields the request fills."""
        method = method_descriptor(name)
        message = json_format.ParseDict(request or {}, message_class(method.input_type)())
        data = json_format.MessageToDict(message, preserving_proto_field_name=True)
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        for binding in (rule, *rule.additional_bindings):
            verb = binding.WhichOneof("pattern")
            template = getattr(binding, verb)
            fields = re.findall(r"\{(\w+)\}", template)
            if all(data.get(f) for f in fields):
                break
        else:  # nothing fits: use the first binding with empty path fields (the server then refuses)
            binding = rule
            verb = binding.WhichOneof("pattern")
            template = getattr(binding, verb)
            fields = re.findall(r"\{(\w+)\}", template)
        path = template
        for f in fields:
            path = path.replace("{" + f + "}", quote(str(data.pop(f, "")), safe=""))
        body: Any = None
        if binding.body == "*":
            body, data = data, {}
        elif binding.body:
            body = data.pop(binding.body, {})
        query: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                for sub, inner in value.items():
                    query[f"{key}.{sub}"] = inner
            else:
                query[key] = value
        return verb.upper(), path, query, body

    def rest(self, name: str, request: dict | None = None, key: str | None = ROOT_KEY) -> Result:
        verb, path, query, body = self.rest_request(name, request)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        response = httpx.request(
            verb,
            self.url + path,
            params=query,
            json=body if body is not None else None,
            headers=headers,
            timeout=30,
        )
        method = method_descriptor(name)
        content_type = response.headers.get("content-type", "")
        if response.status_code == 200 and method.server_streaming:
            return Result(grpc.StatusCode.OK, http=200, raw=response.text, message=content_type)
        try:
            raw = response.json()
        except ValueError:
            return Result(grpc.StatusCode.UNKNOWN, http=response.status_code, raw=response.text)
        if response.status_code == 200:
            message = json_format.ParseDict(raw, message_class(method.output_type)())
            return Result(grpc.StatusCode.OK, http=200, message=message, raw=raw)
        status = json_format.ParseDict(raw, status_pb2.Status(), ignore_unknown_fields=True)
        return Result(_code(status.code), http=response.status_code, status=status, raw=raw)

    def call(
        self, transport: str, name: str, request: dict | None = None, key: str | None = ROOT_KEY
    ) -> Result:
        return (self.grpc if transport == "grpc" else self.rest)(name, request, key)

    def ok(self, name: str, request: dict | None = None, key: str | None = ROOT_KEY) -> Any:
        """Call over gRPC and return the response, failing the test on an error."""
        result = self.grpc(name, request, key)
        assert result.code is grpc.StatusCode.OK, (name, result.code, result.status)
        return result.message

    def new_key(self, role: str, tenant: str = "", name: str = "test") -> str:
        answer = self.ok(
            "AdminKeyService/CreateAdminKey",
            # each name its own principal (the person the key belongs to)
            {"name": name, "role": f"ROLE_{role.upper()}", "tenant": tenant, "principal": name},
        )
        return answer.secret


def _code(value: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == value)


@pytest.fixture(scope="session")
def admin_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminGateway]:
    stack, gateway = start_gateway(tmp_path_factory.mktemp("admin-stack"), env=dict(ENV))
    admin = AdminGateway(stack, gateway)
    try:
        assert stack.admin_key == ROOT_KEY
        yield admin
    finally:
        if admin._channel is not None:
            admin._channel.close()
        stack.stop()
