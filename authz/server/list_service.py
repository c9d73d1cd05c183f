"""Wires list filtering into the check service process: the filter and the ext_proc servicer.

Kept apart from :mod:`authz.server.app` so the check service's builder only gains two calls.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from authz.check.listing import ListFilter
from authz.server.ext_proc import ListProcessor

LIST_SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


def list_filter_for(runtime: Any) -> ListFilter:
    """The list filter over the runtime's token authenticator and tenant snapshot."""
    return ListFilter(authenticator=runtime.pipeline.authenticator, directory=runtime.directory)


def add_list_processor(listing: ListFilter, server: grpc.aio.Server, *, recorder: Any = None) -> None:
    """Serve ``ExternalProcessor`` on the check port (Envoy's ``tessera_list`` cluster); ``recorder``
    (the check service's audit recorder) gets one event per list answer."""
    processor = ListProcessor(listing, recorder=recorder)
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(processor, server)
