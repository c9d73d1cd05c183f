"""Runs one :class:`Forwarder` per configured sink and follows configuration changes without a restart.

The sinks come from two places (precedence: neither shadows the other, both run):

* the operator's sinks file (``TESSERA_FORWARD_CONFIG``), read once at start: names without ``/``,
  any tenants, secrets from the process environment;
* the tenants' sinks and notification routes in the store (``ForwarderConfigService``), re-read every
  ``reload_s``: named ``<tenant>/<name>``, each limited to its tenant, secrets by name from
  :class:`~authz.forward._tenant.TenantSecrets`.

A sink whose stored version changed is stopped (its lease released) and started again with the new
configuration; a deleted one is stopped; a new one is started. A sink that cannot be built (a secret
not provided yet, a bad option) is logged once per version, its error shows in ``ForwarderHealth``,
and it is tried again at every reload, so providing the secret is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authz.errors import ConfigError
from authz.forward._config import SinkSpec, build_sink
from authz.forward._driver import CursorBatcher, EventCache, Forwarder
from authz.forward._sink import HttpClient, Sink
from authz.forward._tenant import TenantSecrets, sink_spec
from authz.storage.protocols import Store

log = logging.getLogger("tessera.forward")

#: How long a stopping forwarder may finish its current request before it is cancelled (its cursor has
#: not moved for an unacknowledged batch, so the successor resends it).
STOP_GRACE_S = 2.0


@dataclass
class _Running:
    key: tuple[Any, ...]
    forwarder: Forwarder
    sink: Sink
    stop: asyncio.Event
    task: asyncio.Task[None] | None


class ForwarderSupervisor:
    """``run(stop)`` until ``stop`` is set; ``reconcile()`` once (tests). ``forwarders`` lists the
    running ones (metrics)."""

    def __init__(
        self,
        store: Store,
        make_http: Callable[[], HttpClient],
        *,
        file_specs: Sequence[SinkSpec] = (),
        policy: Any = None,
        env: Mapping[str, str] | None = None,
        secrets_dir: str | None = None,
        reload_s: float = 5.0,
        forwarder_factory: Callable[[Store, Sink, Any], Forwarder] | None = None,
        drive: bool = True,
    ):
        """``drive=False``: ``reconcile()`` builds the sinks' forwarders without running their loops
        (``tessera forward run --once`` calls each ``pass_once()`` itself; a loop beside it would send the
        same batches a second time)."""
        self.store = store
        self._make_http = make_http
        self._file_specs = list(file_specs)
        self._policy = policy
        self._env = os.environ if env is None else env
        self._secrets_dir = secrets_dir
        self.reload_s = reload_s
        self._drive = drive
        #: one read and decode of each event serves every sink of this process
        self.cache = EventCache()
        #: the cursor writes of every sink of this process in one transaction per cycle
        self.cursors = CursorBatcher(store, expected=lambda: len(self._running))
        self._factory = forwarder_factory or (
            lambda store, sink, settings: Forwarder(
                store, sink, settings, cache=self.cache, cursors=self.cursors
            )
        )
        self._running: dict[str, _Running] = {}
        self._failed: dict[str, tuple[Any, ...]] = {}

    @property
    def forwarders(self) -> list[Forwarder]:
        return [r.forwarder for r in self._running.values()]

    @property
    def sink_names(self) -> list[str]:
        return sorted(self._running)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception as exc:  # a store outage: keep the running sinks, try again
                    log.warning("forwarder configuration reload failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.reload_s)
        finally:
            await self.stop_all()

    async def reconcile(self) -> None:
        desired: dict[str, tuple[tuple[Any, ...], SinkSpec, Mapping[str, str]]] = {}
        for spec in self._file_specs:
            desired[spec.name] = (("file",), spec, self._env)
        for config in await self.store.list_sink_configs():
            spec = sink_spec(config)
            secrets = TenantSecrets(config.tenant, self._secrets_dir, self._env)
            desired[spec.name] = ((config.kind, config.version, config.updated_at), spec, secrets)
        for name in list(self._running):
            if name not in desired or desired[name][0] != self._running[name].key:
                await self._stop(name)
                log.info("sink %s: stopped (%s)", name, "changed" if name in desired else "removed")
        for name, (key, spec, secrets) in desired.items():
            if name not in self._running:
                await self._start(name, key, spec, secrets)

    async def _start(
        self, name: str, key: tuple[Any, ...], spec: SinkSpec, secrets: Mapping[str, str]
    ) -> None:
        try:
            sink = build_sink(spec, secrets, self._make_http, self._policy)
        except ConfigError as exc:
            if self._failed.get(name) != key:
                self._failed[name] = key
                log.error("sink %s: not started: %s", name, exc.message)
                for tenant in spec.settings.tenants or ():
                    await self.store.record_forwarder_error(
                        tenant, name, f"not started: {exc.message}", time.time()
                    )
            return
        self._failed.pop(name, None)
        forwarder = self._factory(self.store, sink, spec.settings)
        stop = asyncio.Event()
        task = asyncio.create_task(forwarder.run(stop), name=f"forward:{name}") if self._drive else None
        self._running[name] = _Running(key, forwarder, sink, stop, task)
        log.info("sink %s: started (%s)", name, spec.kind)

    async def _stop(self, name: str) -> None:
        running = self._running.pop(name)
        running.stop.set()
        if running.task is not None:
            done, _ = await asyncio.wait({running.task}, timeout=STOP_GRACE_S)
            if not done:
                running.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running.task
        else:  # not driven (--once): its lease goes now rather than after the TTL
            with contextlib.suppress(Exception):
                await running.forwarder.store.release_forwarder_lease(
                    running.sink.name, running.forwarder.holder
                )
        with contextlib.suppress(Exception):
            await running.sink.aclose()

    async def stop_all(self) -> None:
        for name in list(self._running):
            await self._stop(name)


def reload_s_from_env(env: Mapping[str, str]) -> float:
    """``TESSERA_FORWARD_RELOAD_S``: how often the tenants' sink configuration is re-read (default 5)."""
    raw = env.get("TESSERA_FORWARD_RELOAD_S") or "5"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"TESSERA_FORWARD_RELOAD_S must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError("TESSERA_FORWARD_RELOAD_S must be positive")
    return value


def supervisor_from_config(
    store: Store, config: Any, env: Mapping[str, str] | None = None, config_path: str | None = None
) -> ForwarderSupervisor:
    """The supervisor a process runs from its configuration: the sinks file (``config_path`` or
    ``TESSERA_FORWARD_CONFIG``, optional), ``TESSERA_FORWARD_SECRETS_DIR``, ``TESSERA_FORWARD_RELOAD_S``,
    HTTP through the outbound rules of ``config`` (:class:`authz.config.TesseraConfig`). A sinks-file
    error raises ConfigError here, before any work."""
    from authz.forward._config import load_sink_specs
    from authz.outbound import OutboundClient, policy_from_config

    env = os.environ if env is None else env
    policy = policy_from_config(config)
    path = config_path or env.get("TESSERA_FORWARD_CONFIG")
    specs = load_sink_specs(path) if path else []

    def make_http() -> HttpClient:
        return OutboundClient(policy, timeout_s=10.0, purpose="audit forwarder")

    return ForwarderSupervisor(
        store,
        make_http,
        file_specs=specs,
        policy=policy,
        env=env,
        secrets_dir=env.get("TESSERA_FORWARD_SECRETS_DIR") or None,
        reload_s=reload_s_from_env(env),
    )
