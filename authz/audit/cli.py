"""``tessera audit verify|export|checkpoint``.

:func:`add_audit_commands` registers the commands on the top-level ``argparse`` subparsers. Each command
sets ``func`` on the parsed namespace: ``sys.exit(args.func(args))`` runs it. Exit codes: 0 ok, 1 when
verification fails (or the store fails), 2 for usage errors (argparse's own errors also exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from authz.audit._checkpoint import Checkpoint, checkpoint_public_key
from authz.audit._export import DECISIONS, FORMATS, export_events
from authz.audit._verify import create_checkpoint, verify_chain
from authz.errors import FailedPrecondition, InvalidArgument, NotFound, TesseraError

#: The purpose string of the checkpoint signing key: ``keyring.derive_subkey(CHECKPOINT_KEY_PURPOSE, t)``.
CHECKPOINT_KEY_PURPOSE = "audit-checkpoint"

OpenRuntime = Callable[..., Any]
"""Returns ``(config, store, keyring)``, or an awaitable of it; called with the parsed namespace when it
accepts an argument. ``keyring`` needs ``derive_subkey(purpose, tenant) -> bytes`` (may be None for
``verify``/``export``, which then trust the key embedded in a checkpoint)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_time(text: str) -> datetime:
    """RFC 3339 / ISO 8601 (``2025-01-31T12:00:00Z``, ``2025-01-31``; no zone means UTC) or unix seconds."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time or unix seconds: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def add_audit_commands(subparsers: Any, open_runtime: OpenRuntime) -> argparse.ArgumentParser:
    """Register ``audit verify``, ``audit export`` and ``audit checkpoint``; returns the ``audit`` parser."""
    audit = subparsers.add_parser("audit", help="verify, export and checkpoint the audit chain")
    commands = audit.add_subparsers(dest="audit_command", metavar="{verify,export,checkpoint}", required=True)

    verify = commands.add_parser(
        "verify",
        help="walk the chains, compare heads and checkpoints; name the first bad sequence number",
    )
    verify.add_argument("--tenant", help="verify one tenant (default: every tenant with events)")
    verify.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="an exported checkpoint (from `audit checkpoint`) the chain must still contain",
    )
    verify.set_defaults(func=_runner(open_runtime, _verify))

    export = commands.add_parser("export", help="stream events as NDJSON or CSV")
    export.add_argument("--format", choices=FORMATS, default="ndjson")
    export.add_argument("--tenant", help="one tenant (default: all, tenant by tenant in sequence order)")
    export.add_argument("--since", type=parse_time, help="inclusive; RFC 3339 or unix seconds")
    export.add_argument("--until", type=parse_time, help="exclusive; RFC 3339 or unix seconds")
    export.add_argument("--agent")
    export.add_argument("--decision", choices=DECISIONS)
    export.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")
    export.set_defaults(func=_runner(open_runtime, _export))

    checkpoint = commands.add_parser(
        "checkpoint", help="verify a tenant's chain, sign its head (Ed25519), store and print the checkpoint"
    )
    checkpoint.add_argument("--tenant", required=True)
    checkpoint.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")
    checkpoint.set_defaults(func=_runner(open_runtime, _checkpoint))
    return audit


def _runner(
    open_runtime: OpenRuntime, command: Callable[[argparse.Namespace, Any, Any], Awaitable[int]]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(_with_runtime(open_runtime, command, args))
        except (InvalidArgument, FailedPrecondition, NotFound) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except TesseraError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except BrokenPipeError:
            return EXIT_FAILED

    return run


async def _with_runtime(open_runtime: OpenRuntime, command: Any, args: argparse.Namespace) -> int:
    try:
        takes_args = bool(inspect.signature(open_runtime).parameters)
    except (TypeError, ValueError):
        takes_args = False
    runtime = open_runtime(args) if takes_args else open_runtime()
    if inspect.isawaitable(runtime):
        runtime = await runtime
    _config, store, keyring = runtime
    try:
        return await command(args, store, keyring)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            closed = close()
            if inspect.isawaitable(closed):
                await closed


def _public_key(keyring: Any, tenant: str) -> bytes | None:
    if keyring is None:
        return None
    return checkpoint_public_key(keyring.derive_subkey(CHECKPOINT_KEY_PURPOSE, tenant))


async def _verify(args: argparse.Namespace, store: Any, keyring: Any) -> int:
    exported: Checkpoint | None = None
    if args.checkpoint is not None:
        try:
            text = args.checkpoint.read_text()
        except OSError as exc:
            raise InvalidArgument(f"cannot read {args.checkpoint}: {exc.strerror}") from None
        exported = Checkpoint.from_export(text)
        if args.tenant is not None and args.tenant != exported.tenant:
            raise InvalidArgument(f"--tenant {args.tenant} but the checkpoint is for {exported.tenant}")
    tenant = exported.tenant if exported is not None else args.tenant
    tenants = [tenant] if tenant is not None else await store.audit_tenants()
    if not tenants:
        print("no audit events")
        return EXIT_OK
    failed = False
    for name in tenants:
        result = await verify_chain(
            store,
            name,
            checkpoint=exported if name == tenant else None,
            public_key=_public_key(keyring, name),
        )
        print(result.summary())
        failed = failed or not result.ok
    return EXIT_FAILED if failed else EXIT_OK


async def _export(args: argparse.Namespace, store: Any, keyring: Any) -> int:
    with ExitStack() as stack:
        out: TextIO = sys.stdout
        if args.output is not None:
            try:
                out = stack.enter_context(args.output.open("w", encoding="utf-8", newline=""))
            except OSError as exc:
                raise InvalidArgument(f"cannot write {args.output}: {exc.strerror}") from None
        count = await export_events(
            store,
            out,
            format=args.format,
            tenant=args.tenant,
            since=args.since,
            until=args.until,
            agent=args.agent,
            decision=args.decision,
        )
        out.flush()
    print(f"exported {count} events", file=sys.stderr)
    return EXIT_OK


async def _checkpoint(args: argparse.Namespace, store: Any, keyring: Any) -> int:
    if keyring is None:
        raise InvalidArgument("creating a checkpoint needs the master key")
    checkpoint = await create_checkpoint(
        store, args.tenant, keyring.derive_subkey(CHECKPOINT_KEY_PURPOSE, args.tenant)
    )
    text = checkpoint.export()
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text)
        except OSError as exc:
            print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            print(text, end="")  # the checkpoint is stored and signed; do not lose the copy
            return EXIT_FAILED
    print(
        f"checkpoint: tenant {checkpoint.tenant} seq {checkpoint.seq} hash {checkpoint.hash}"
        + (f" written to {args.output}" if args.output is not None else ""),
        file=sys.stderr,
    )
    return EXIT_OK
