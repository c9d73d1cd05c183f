"""Hostile bodies from tokenless clients beside legitimate traffic (issue 13 §2).

``run_hostile_load`` drives, through Envoy, ``hostile`` clients without a token that send large
JSON bodies (an object of ~80,000 keys, ~800 KB, and nesting 5,000 levels deep) next to ``legit``
clients making ordinary authorized ``tools/call`` requests, and reports the legitimate calls' success
rate and the check process's resident memory before (once ordinary calls have warmed it), at its peak
during, and after the load. Used by ``make bench`` (the report row) and, with a short duration, by
tests/integration/test_hostile_load.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def hostile_bodies() -> list[bytes]:
    keys = ",".join(f'"k{i}":0' for i in range(80_000))
    wide = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_invoice","arguments":{'
    deep = "[" * 5_000 + "]" * 5_000
    return [
        (wide + keys + "}}}").encode(),
        ('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_invoice","arguments":{"x":'
         + deep + "}}}").encode(),
    ]  # fmt: skip


@dataclass
class HostileResult:
    legit_sent: int
    legit_ok: int
    hostile_sent: int
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.legit_ok / self.legit_sent if self.legit_sent else 0.0

    def summary(self) -> str:
        return (
            f"hostile load ({self.seconds:.0f} s, {self.hostile_sent} tokenless hostile bodies): legitimate "
            f"success {100 * self.success_rate:.2f}% of {self.legit_sent} (target >= 99%); check process "
            f"RSS {self.rss_before_mb:.0f} MB before, {self.rss_peak_mb:.0f} MB peak, "
            f"{self.rss_after_mb:.0f} MB after"
        )


async def _run(
    url: str,
    token: str,
    legit_body: dict,
    pid: int,
    *,
    seconds: float,
    hostile: int,
    legit: int,
    warmup_calls: int,
) -> HostileResult:
    bodies = hostile_bodies()
    counts = {"legit": 0, "ok": 0, "hostile": 0}

    async def attacker(client: httpx.AsyncClient, index: int) -> None:
        i = index
        while time.monotonic() < stop:
            body = bodies[i % len(bodies)]
            i += 1
            with contextlib.suppress(httpx.HTTPError):
                await client.post(url, content=body, headers={"content-type": "application/json"})
            counts["hostile"] += 1

    headers = {
        "authorization": f"Bearer {token}",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
    }
    content = json.dumps(legit_body).encode()

    async def agent(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            counts["legit"] += 1
            try:
                response = await client.post(url, content=content, headers=headers)
            except httpx.HTTPError:
                continue
            if response.status_code == 200 and "error" not in response.json():
                counts["ok"] += 1

    async def warm(client: httpx.AsyncClient) -> None:
        for _ in range(warmup_calls // max(legit, 1)):
            with contextlib.suppress(httpx.HTTPError):
                await client.post(url, content=content, headers=headers)

    async def sample() -> None:
        nonlocal peak
        while time.monotonic() < stop:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.1)

    limits = httpx.Limits(max_connections=hostile + legit + 2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        # The baseline is taken after ordinary calls have warmed the check process (its caches, the
        # policy memo, gRPC's buffers: ~10 MB the first few dozen calls allocate once), so the
        # before/after difference measures what hostile bodies leave behind, not the warm-up.
        await asyncio.gather(*(warm(client) for _ in range(legit)))
        peak = before = rss_mb(pid)
        stop = time.monotonic() + seconds
        await asyncio.gather(
            *(attacker(client, i) for i in range(hostile)), *(agent(client) for _ in range(legit)), sample()
        )
    await asyncio.sleep(1.0)  # let the check process settle before the last reading
    return HostileResult(counts["legit"], counts["ok"], counts["hostile"], before, peak, rss_mb(pid), seconds)


def run_hostile_load(
    url: str,
    token: str,
    legit_body: dict,
    pid: int,
    *,
    seconds: float = 8.0,
    hostile: int = 4,
    legit: int = 4,
    warmup_calls: int = 60,
) -> HostileResult:
    """Run the mixed load against ``url`` (Envoy's /v1/mcp) and measure process ``pid``.

    Runs on its own thread with its own event loop, so it can be called from synchronous code and from
    inside a running loop alike.
    """
    result: list[HostileResult] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(
                asyncio.run(
                    _run(
                        url,
                        token,
                        legit_body,
                        pid,
                        seconds=seconds,
                        hostile=hostile,
                        legit=legit,
                        warmup_calls=warmup_calls,
                    )
                )
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="hostile-load")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
