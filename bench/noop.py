"""The no-op floor: the same grpc.aio + uvloop server setup as the check service, answering OK at once."""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
import uvloop
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from authz.server.app import grpc_server_options


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    _OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

    async def Check(self, request, context):
        return self._OK


async def serve(port: int, *, reuse_port: bool = False) -> None:
    server = grpc.aio.server(options=grpc_server_options(reuse_port=reuse_port))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    # `--reuse-port`: one of several no-op processes sharing the port, the floor for check workers.
    uvloop.run(serve(int(sys.argv[1]), reuse_port="--reuse-port" in sys.argv[2:]))
