"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, server scenarios) run
against the reference server ``@modelcontextprotocol/server-everything`` twice: directly, and through
Envoy and Tessera. Each scenario must end the same both ways: the gateway adds no failure and hides none.

The suite's own reference server (``everything-server`` in its repository) is not published to npm, so the
npm reference server stands in as the server under test; the scenarios it fails for want of the suite's
fixture tools (``test_simple_text``...) fail the same way through Tessera, and the test says so.

Versions are pinned; the suite needs Node >= 22, which the ``node`` npm package provides (installed with
the suite into the npm cache). The suite connects as a plain MCP client; Tessera needs a capability token,
so a preload module gives the suite's HTTP client (undici's global dispatcher, which Node's ``fetch`` uses
too) an ``Authorization`` header, the way a configured MCP client sends one. Skipped only without npm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.local.stack import StackPorts, spawn, stop_process
from tests.e2e.test_server_everything import ALLOW_ALL, _server_everything, wait_http_any
from tests.integration.conftest import Gateway, start_gateway

CONFORMANCE = "@modelcontextprotocol/conformance@0.1.16"
NODE = "node@22.23.3"

# Sets a global undici dispatcher that adds the bearer token to every request the suite sends (its MCP
# client uses fetch, its DNS-rebinding scenario undici.request; both go through the global dispatcher).
TOKEN_PRELOAD = """
import { createRequire } from 'node:module';
const require = createRequire(process.env.TESSERA_CONFORMANCE_ENTRY);
const { Agent, setGlobalDispatcher } = require('undici');
const bearer = `Bearer ${process.env.TESSERA_CONFORMANCE_TOKEN}`;
function withToken(headers) {
  if (Array.isArray(headers)) {
    const flat = headers.flat();
    for (let i = 0; i < flat.length; i += 2) {
      if (String(flat[i]).toLowerCase() === 'authorization') return headers;
    }
    return [...flat, 'authorization', bearer];
  }
  const out = { ...(headers || {}) };
  if (!Object.keys(out).some((k) => k.toLowerCase() === 'authorization')) out.authorization = bearer;
  return out;
}
setGlobalDispatcher(new Agent().compose((dispatch) => (opts, handler) =>
  dispatch({ ...opts, headers: withToken(opts.headers) }, handler)));
"""


def _suite() -> tuple[str, Path]:
    """(node >= 22, the suite's entry point), installed once into the npm cache."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (CI installs it): the conformance suite runs on Node from npm")
    cache = Path(os.environ.get("TESSERA_NPM_CACHE", Path.home() / ".cache" / "tessera-npm")) / "conformance"
    entry = cache / "node_modules/@modelcontextprotocol/conformance/dist/index.js"
    node = cache / "node_modules/.bin/node"
    if not entry.exists() or not node.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--silent", "--prefix", str(cache), CONFORMANCE, NODE], check=True, timeout=600
        )
    return str(node), entry


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Gateway]]:
    """(the reference server's own URL, the gateway in front of it)."""
    entry = _server_everything()
    workdir = tmp_path_factory.mktemp("conformance")
    (workdir / "allow.rego").write_text(ALLOW_ALL)
    tenants = workdir / "tenants.yaml"
    tenants.write_text(
        f'tenants:\n  conf:\n    intent:\n      mode: "off"\n    policy: {workdir / "allow.rego"}\n'
    )
    ports = StackPorts.free()
    server = spawn(
        [shutil.which("node") or "node", str(entry), "streamableHttp"],
        env={"PORT": str(ports.upstream)},
        log=workdir / "server-everything.log",
    )
    try:
        direct = f"http://127.0.0.1:{ports.upstream}/mcp"
        wait_http_any(direct, server)
        stack, gw = start_gateway(
            workdir, ports=ports, start_upstream=False, env={"TESSERA_TENANTS_FILE": str(tenants)}
        )
        try:
            yield direct, gw
        finally:
            stack.stop()
    finally:
        stop_process(server)


def _run_suite(node: str, entry: Path, url: str, out: Path, token: str | None) -> dict[str, tuple[str, ...]]:
    """Run every active server scenario; return, per scenario, the status of each of its checks."""
    env = {**os.environ, "TESSERA_CONFORMANCE_ENTRY": str(entry)}
    if token is not None:
        preload = out.parent / "tessera-token.mjs"
        preload.write_text(TOKEN_PRELOAD)
        env.update(NODE_OPTIONS=f"--import {preload.as_uri()}", TESSERA_CONFORMANCE_TOKEN=token)
    proc = subprocess.run(
        [node, str(entry), "server", "--url", url, "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    results: dict[str, tuple[str, ...]] = {}
    for checks in sorted(out.glob("server-*/checks.json")):
        # results/server-<scenario>-<ISO timestamp with dashes>/checks.json
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z?$", "", checks.parent.name.removeprefix("server-"))
        assert scenario not in results, checks
        results[scenario] = tuple(sorted(f"{c['id']}={c['status']}" for c in json.loads(checks.read_text())))
    assert results, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results


def test_the_conformance_suite_scores_the_same_through_tessera_as_direct(reference, tmp_path):
    node, entry = _suite()
    direct_url, gateway = reference
    direct = _run_suite(node, entry, direct_url, tmp_path / "direct", None)
    through = _run_suite(node, entry, f"{gateway.url}/v1/mcp", tmp_path / "tessera", gateway.token("conf"))
    assert set(through) == set(direct)
    differing = {name: (direct[name], through[name]) for name in direct if direct[name] != through[name]}
    assert differing == {}
    # The suite did run for real: the reference server passes the scenarios it has fixtures for.
    passed = {
        name for name, checks in direct.items() if all(c.endswith(("=SUCCESS", "=INFO")) for c in checks)
    }
    assert {"server-initialize", "ping", "tools-list", "resources-list", "prompts-list"} <= passed, direct
