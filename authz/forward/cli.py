"""``tessera forward``: run the audit forwarders in their own process, inspect cursors, replay dead letters.

* ``tessera forward run [--config FILE] [--once]`` — drive every configured sink (the sinks file's and
  the tenants' ``ForwarderConfigService`` ones, followed without restart) until SIGTERM/SIGINT
  (``--once``: one pass, then exit). Any number of replicas may run it: per sink, one holds the lease.
* ``tessera forward status`` — per (sink, tenant): cursor, chain head, lag, last success and error, and
  the dead letters not yet replayed (JSON).
* ``tessera forward dead-letters [--tenant T] [--sink S] [--all]`` — list dead letters (JSON lines).
* ``tessera forward replay ID [--config FILE] [--request-only]`` — ask for a dead letter's replay (audited,
  as ``ReplayDeadLetter``) and resend it at once through its sink when this process can build it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from authz.errors import ConfigError
from authz.forward._config import build_sink, load_sink_specs
from authz.forward._driver import Forwarder, request_replay
from authz.forward._health import forwarder_health
from authz.forward._metrics import ForwarderMetrics
from authz.forward._sink import HttpClient
from authz.forward._supervisor import ForwarderSupervisor, reload_s_from_env
from authz.forward._tenant import TenantSecrets, sink_spec

log = logging.getLogger("tessera.forward")


def add_forward_command(
    sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    forward = sub.add_parser(
        "forward", help="audit fan-out: run forwarders, show cursors, replay dead letters"
    )
    fsub = forward.add_subparsers(dest="forward_command", required=True)

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="sinks file, YAML or JSON (TESSERA_FORWARD_CONFIG)")

    run = fsub.add_parser("run", help="drive every configured sink (one process; replicas share by lease)")
    common(run)
    config_arg(run)
    run.add_argument("--once", action="store_true", help="one pass over every tenant, then exit")
    run.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz, /readyz on this port")
    run.add_argument(
        "--nice",
        type=int,
        help="lower this process's CPU priority by this much (TESSERA_FORWARD_NICE, default 10; 0 keeps it)",
    )
    run.set_defaults(func=cmd_forward_run)

    status = fsub.add_parser("status", help="cursor, chain head, lag and errors per sink and tenant (JSON)")
    common(status)
    status.set_defaults(func=cmd_forward_status)

    dead = fsub.add_parser("dead-letters", help="list dead letters (JSON lines)")
    common(dead)
    dead.add_argument("--tenant")
    dead.add_argument("--sink")
    dead.add_argument("--all", action="store_true", help="include replayed ones")
    dead.set_defaults(func=cmd_forward_dead_letters)

    replay = fsub.add_parser("replay", help="resend one dead letter through its sink")
    common(replay)
    config_arg(replay)
    replay.add_argument("dead_letter_id", type=int)
    replay.add_argument(
        "--request-only",
        action="store_true",
        help="only record the request; the running forwarder resends it",
    )
    replay.set_defaults(func=cmd_forward_replay)


def _database_url(args: argparse.Namespace) -> str:
    from authz.cli import _config

    return _config(args).store.database_url


def _outbound(args: argparse.Namespace) -> Callable[[], HttpClient]:
    """HTTP sinks go through the one outbound client, under the operator's outbound rules."""

    def make() -> HttpClient:
        from authz.cli import _config
        from authz.outbound import OutboundClient, policy_from_config

        return OutboundClient(policy_from_config(_config(args)), timeout_s=10.0, purpose="audit forwarder")

    return make


def _policy(args: argparse.Namespace) -> Any:
    from authz.cli import _config
    from authz.outbound import policy_from_config

    return policy_from_config(_config(args))


def _specs(args: argparse.Namespace, *, required: bool = True):
    path = args.config or os.environ.get("TESSERA_FORWARD_CONFIG")
    if not path:
        if not required:
            return []
        raise ConfigError("no forwarder config: pass --config or set TESSERA_FORWARD_CONFIG")
    return load_sink_specs(path)


def _lower_priority(given: int | None) -> None:
    """The forwarder drains the chain in the background: on a host it shares with a check service it
    yields the CPU to decisions (at the cost of lag under saturation, never of a slower decision)."""
    raw = given if given is not None else os.environ.get("TESSERA_FORWARD_NICE", "10")
    try:
        steps = int(raw)
    except ValueError:
        raise ConfigError(f"TESSERA_FORWARD_NICE must be a whole number, got {raw!r}") from None
    if steps < 0:
        raise ConfigError("TESSERA_FORWARD_NICE cannot raise the priority (it must be 0 or more)")
    if steps:
        os.nice(steps)
    _idle_scheduling()


def _idle_scheduling() -> None:
    """``TESSERA_FORWARD_SCHED=idle``: Linux's SCHED_IDLE, stronger than any nice level: the forwarder runs
    only on CPU time nothing else on the host wants (a nice-19 process still gets a slice beside busy
    normal ones). Set before any thread starts, so every thread of the process inherits it."""
    raw = os.environ.get("TESSERA_FORWARD_SCHED", "normal").strip().lower()
    if raw not in ("normal", "idle"):
        raise ConfigError(f"TESSERA_FORWARD_SCHED must be normal or idle, got {raw!r}")
    if raw == "idle":
        if not hasattr(os, "SCHED_IDLE"):
            raise ConfigError("TESSERA_FORWARD_SCHED=idle needs Linux (SCHED_IDLE)")
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def cmd_forward_run(args: argparse.Namespace) -> int:
    from authz.storage import open_store

    _lower_priority(args.nice)
    specs = _specs(args, required=False)  # without a sinks file: the tenants' API-configured sinks only
    http = _outbound(args)
    policy = _policy(args)
    for spec in specs:  # a sinks-file error stops the process before any work
        asyncio.run(build_sink(spec, os.environ, http, policy).aclose())

    async def main() -> None:
        store = open_store(_database_url(args))
        supervisor = ForwarderSupervisor(
            store,
            http,
            file_specs=specs,
            policy=policy,
            secrets_dir=os.environ.get("TESSERA_FORWARD_SECRETS_DIR") or None,
            reload_s=reload_s_from_env(os.environ),
            drive=not args.once,
        )
        try:
            if args.once:
                await supervisor.reconcile()
                # All sinks at once, as the running loops do: they read the chain together, so each
                # event is read and prepared once for all of them (the shared cache).
                passes = [forwarder.pass_once() for forwarder in supervisor.forwarders]
                failed = [
                    r
                    for r in await asyncio.gather(*passes, return_exceptions=True)
                    if isinstance(r, Exception)
                ]
                if failed:
                    raise failed[0]
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("forwarding (sinks file: %s)", ", ".join(s.name for s in specs) or "none")
            tasks = [supervisor.run(stop)]
            if args.metrics_port is not None:
                tasks.append(_serve_metrics(store, lambda: supervisor.forwarders, args.metrics_port, stop))
            await asyncio.gather(*tasks)
        finally:
            await supervisor.stop_all()
            await store.close()

    asyncio.run(main())
    return 0


async def _serve_metrics(
    store: Any, forwarders: Callable[[], list[Forwarder]], port: int, stop: asyncio.Event
) -> None:
    """/metrics, /healthz and /readyz on ``port`` (all interfaces, like the services' metrics port)."""
    from authz.observability import new_registry, serve_http

    metrics = ForwarderMetrics(forwarders)
    await metrics.refresh(store)
    server = await serve_http("0.0.0.0", port, new_registry(metrics), lambda: metrics.refresh_errors == 0)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            await metrics.refresh(store)
    finally:
        server.close()
        await server.wait_closed()


async def forward_status(store: Any) -> list[dict[str, Any]]:
    """One row per stored cursor: how far behind the chain head it is, in events and in seconds."""
    rows = []
    for health in await forwarder_health(store):
        row = dataclasses.asdict(health.cursor)
        row |= {"head": health.head_seq, "lag_events": health.lag_events, "lag_seconds": health.lag_seconds}
        row |= {
            "dead_letters": health.dead_letters,
            "lease_holder": health.lease[0] if health.lease else None,
        }
        rows.append(row)
    return rows


def _with_store(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    from authz.storage import open_store

    async def main() -> Any:
        store = open_store(_database_url(args))
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def cmd_forward_status(args: argparse.Namespace) -> int:
    print(json.dumps(_with_store(args, forward_status), indent=2))
    return 0


def cmd_forward_dead_letters(args: argparse.Namespace) -> int:
    async def work(store: Any) -> list:
        return await store.list_dead_letters(args.tenant, args.sink, include_replayed=args.all)

    for dead in _with_store(args, work):
        print(json.dumps(dataclasses.asdict(dead)))
    return 0


def cmd_forward_replay(args: argparse.Namespace) -> int:
    """Record the replay request (the store method ReplayDeadLetter uses, audited the same way) and,
    unless ``--request-only``, resend it from this process at once when its sink is configured here."""
    specs = {spec.name: spec for spec in _specs(args, required=False)}

    async def work(store: Any) -> bool | None:
        dead = await request_replay(store, args.dead_letter_id, f"cli:{_user()}")
        if args.request_only:
            return None
        spec, secrets = specs.get(dead.sink), os.environ
        if spec is None:
            configs = {sink_spec(c).name: c for c in await store.list_sink_configs(dead.tenant)}
            if dead.sink in configs:
                spec = sink_spec(configs[dead.sink])
                secrets = TenantSecrets(dead.tenant, os.environ.get("TESSERA_FORWARD_SECRETS_DIR") or None)
        if spec is None:
            return None  # the forwarder running that sink resends it
        sink = build_sink(spec, secrets, _outbound(args), _policy(args))
        try:
            return await Forwarder(store, sink, spec.settings).replay(dead)
        finally:
            await sink.aclose()

    ok = _with_store(args, work)
    if ok is None:
        print("replay requested: the forwarder holding the sink's lease resends it", file=sys.stderr)
        return 0
    print("replayed" if ok else "replay failed (see `tessera forward status`)", file=sys.stderr)
    return 0 if ok else 1


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid())
