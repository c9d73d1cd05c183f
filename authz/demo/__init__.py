"""Tessera's demo upstream: an MCP tool server over an in-memory invoice book.

Run it with ``python -m authz.demo --host 127.0.0.1 --port 9000`` (or ``$TESSERA_DEMO_PORT``). It serves
the same four tools (``read_invoice``, ``list_invoices``, ``transfer_funds``, ``delete_invoice``) over MCP
streamable HTTP at ``/mcp`` and as plain JSON at ``POST /v1/tool-call``, and records the headers of the
requests it receives at ``GET /_demo/requests`` so tests can see what the gateway forwarded. Needs the
``demo`` extra (``mcp``, ``starlette``, ``uvicorn``).
"""

from authz.demo._app import (
    DEFAULT_PORT,
    MCP_PATH,
    PORT_ENV,
    RequestRecorder,
    build_app,
    build_mcp_server,
    main,
)
from authz.demo._book import (
    DeletionReceipt,
    InvalidToolArgument,
    Invoice,
    InvoiceBook,
    InvoiceList,
    InvoiceNotFound,
    TransferReceipt,
    normalize_iban,
)

__all__ = [
    "DEFAULT_PORT",
    "MCP_PATH",
    "PORT_ENV",
    "DeletionReceipt",
    "InvalidToolArgument",
    "Invoice",
    "InvoiceBook",
    "InvoiceList",
    "InvoiceNotFound",
    "RequestRecorder",
    "TransferReceipt",
    "build_app",
    "build_mcp_server",
    "main",
    "normalize_iban",
]
