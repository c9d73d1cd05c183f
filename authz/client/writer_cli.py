"""``tessera memory-writer keygen|public-key|sign``: a memory writer's key and signatures from a shell.

A memory writer (a RAG ingester, a vector-store loader) signs each entry it stores with its own Ed25519
key; a tenant admin registers the **public** key with Tessera (``MemoryWriterService``,
docs/provenance-and-receipts.md). These commands run on the writer's side and use only the agent SDK:
no master key, no database, no network. The private key is written once, owner-readable only, and never
printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._memory import MemoryWriter

EXIT_OK = 0
EXIT_USAGE = 2


def add_memory_writer_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``memory-writer`` to a ``tessera`` argparse subparsers object; handlers are ``args.func``."""
    parser = subparsers.add_parser(
        "memory-writer",
        help="a memory writer's Ed25519 key and signed entries (writer side, offline)",
        description="Create a memory writer's key, show the public key to register, sign entries.",
    )
    sub = parser.add_subparsers(dest="writer_command", required=True)
    keygen = sub.add_parser("keygen", help="create a private key file (PKCS#8 PEM, mode 0600)")
    keygen.add_argument("--out", required=True, type=Path, help="where to write the private key")
    keygen.add_argument("--writer-id", help="print the registration body for this writer id")
    keygen.set_defaults(func=cmd_keygen)
    public = sub.add_parser("public-key", help="print the base64 public key of a private key file")
    public.add_argument("key", type=Path)
    public.set_defaults(func=cmd_public_key)
    sign = sub.add_parser("sign", help="print one signed memory entry (JSON) for content read from a file")
    sign.add_argument("--key", required=True, type=Path, help="the writer's private key file")
    sign.add_argument("--writer-id", required=True)
    sign.add_argument("--id", required=True, dest="entry_id", help="the entry's id")
    sign.add_argument("--source", required=True, help="where the content came from, e.g. erp")
    sign.add_argument("--content", required=True, help="a file holding the content, or - for stdin")
    sign.add_argument("--include-content", action="store_true", help="carry the content in the entry")
    sign.set_defaults(func=cmd_sign)
    return parser


def _fail(message: str) -> int:
    print(f"tessera memory-writer: {message}", file=sys.stderr)
    return EXIT_USAGE


def _encoded_public_key(writer: MemoryWriter) -> str:
    # Standard base64 of the raw 32 bytes: what the admin API's `bytes public_key` takes in JSON.
    return base64.b64encode(writer.public_key).decode()


def _writer(path: Path, writer_id: str = "-") -> MemoryWriter:
    return MemoryWriter(path.read_bytes(), writer_id)


def cmd_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        # O_EXCL: an existing key is never overwritten (its entries would stop verifying once rotated).
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _fail(f"{args.out} exists; refusing to overwrite a key")
    except OSError as exc:
        return _fail(f"cannot create {args.out}: {exc.strerror}")
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_key = _encoded_public_key(MemoryWriter(key, args.writer_id or "-"))
    report: dict[str, Any] = {"private_key_file": str(args.out), "public_key": public_key}
    if args.writer_id:
        report["register"] = {"writer_id": args.writer_id, "public_key": public_key, "sources": ["*"]}
    print(json.dumps(report, indent=2))
    return EXIT_OK


def cmd_public_key(args: argparse.Namespace) -> int:
    try:
        writer = _writer(args.key)
    except (OSError, TypeError, ValueError) as exc:
        return _fail(f"cannot read a private key from {args.key}: {exc}")
    print(_encoded_public_key(writer))
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        writer = _writer(args.key, args.writer_id)
    except (OSError, TypeError, ValueError) as exc:
        return _fail(f"cannot read a private key from {args.key}: {exc}")
    try:
        content = sys.stdin.buffer.read() if args.content == "-" else Path(args.content).read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {args.content}: {exc.strerror}")
    if args.include_content:
        try:
            content.decode()
        except UnicodeDecodeError:
            return _fail("--include-content needs UTF-8 content")
    entry = writer.sign(args.entry_id, content, args.source, include_content=args.include_content)
    print(json.dumps(entry))
    return EXIT_OK
