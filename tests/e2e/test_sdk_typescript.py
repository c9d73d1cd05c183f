"""The TypeScript SDK (sdk/typescript) against the real stack, and its npm package.

Builds the SDK with npm (``npm ci && npm run build``), runs its Node unit tests under the installed Node
and under Node 18 (npm's ``node@18`` package), then its end-to-end tests (``node --test test/e2e/``:
the SDK's own client, and the official MCP SDK's client with the adapter) against the stack of
tests/e2e/conftest.py with the gateway URL and fresh tokens in the environment. Without node/npm these
tests fail rather than skip: ``.ci/run`` installs them, and a missing toolchain must not read as a
passing SDK.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.client import AsyncGateway, MemoryWriter, ProvenanceError
from authz.client._tokens import _integral_floats_as_ints
from authz.local.envoy_oauth import TokenRateLimit
from authz.local.stack import StackPorts, free_port
from authz.storage import open_store
from authz.storage.memory_writers import RegisteredWriter
from tests.e2e.conftest import unique_agent
from tests.integration.conftest import Gateway as Stack
from tests.integration.conftest import start_gateway
from tests.oauth_server import OAuthServer

# npm ci fetches the MCP SDK's dependency tree (the adapter's tests use the real SDK): on a loaded
# machine that alone can outlast the suite's default 120 s per test.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SDK = Path(__file__).parents[2] / "sdk" / "typescript"
READ = ("read_invoice", {"invoice_id": "INV-1001"})
# The oldest Node the package supports (package.json engines: >=18), from npm's `node` package, which
# installs the official binary for this platform; kept in the npm cache the server-everything tests use.
NODE_18 = "node@18.20.8"
#: The token exchange's stack: the agent its authorization server knows, and the token route's rate limit
#: (a burst of 10, then one every 30 s), which test/e2e/exchange.test.mjs uses up to see Envoy's 429.
EXCHANGE_AGENT = "agent-7"
EXCHANGE_RATE = TokenRateLimit(burst=10, window_s=300)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def built() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the TypeScript SDK tests (.ci/run installs them)")
    run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"], SDK)
    run(["npm", "run", "build"], SDK)
    return SDK


@pytest.fixture(scope="module")
def node18() -> str:
    cache = Path(os.environ.get("TESSERA_NPM_CACHE", Path.home() / ".cache" / "tessera-npm")) / "node18"
    binary = cache / "node_modules" / ".bin" / "node"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache), NODE_18], cache)
    assert run([str(binary), "--version"], cache).startswith("v18."), "the node@18 package gave another Node"
    return str(binary)


def unit_test_counts(node: str, sdk: Path) -> tuple[int, int]:
    out = run([node, "--test", "test/unit/"], sdk)
    passed, failed = (int(re.search(rf"^# {k} (\d+)$", out, re.M).group(1)) for k in ("pass", "fail"))
    assert failed == 0 and "# skipped 0" in out, out
    return passed, failed


def test_node_unit_tests_pass(built):
    passed, _ = unit_test_counts("node", built)
    assert passed >= 45


def test_node_unit_tests_pass_on_node_18(built, node18):
    """The same unit tests (the MCP SDK adapter's included) under Node 18, the oldest supported."""
    assert unit_test_counts(node18, built) == unit_test_counts("node", built)


def test_argument_numbers_are_written_as_the_python_sdk_writes_them(built):
    """pythonJson (attenuate's argument values) against the Python SDK on random doubles of every
    magnitude: ints where both SDKs agree a number is integral, Python's float repr otherwise."""
    rng = random.Random(20)
    values = [v for v in (struct.unpack("<d", rng.randbytes(8))[0] for _ in range(3000)) if math.isfinite(v)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(500)] + [
        float(rng.randint(-(2**60), 2**60)) for _ in range(200)
    ]
    values += [0.1, 1.0, -0.0, 1e-4, 1e-5, 1e15, 1e16, 2.0**53 - 1, 2.0**53, 5e-324, 1.7976931348623157e308]
    script = (
        "const { pythonJson } = await import('tessera-authz');"
        "const xs = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(xs.map(pythonJson)));"
    ).replace("require('node:fs')", "(await import('node:fs'))")
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=built,
        input=json.dumps(values),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    expected = [json.dumps(_integral_floats_as_ints(v)) for v in values]
    mismatches = [(v, w, e) for v, w, e in zip(values, written, expected, strict=True) if w != e]
    assert not mismatches, mismatches[:10]
    assert "1" in written and "0.1" in written and "1e-05" in written and "9007199254740992.0" in written


def test_the_sdk_against_the_real_stack(built, stack):
    env = {
        "TESSERA_E2E_URL": stack.url,
        "TESSERA_E2E_TOKEN": stack.token(),
        "TESSERA_E2E_BUDGET_TOKEN": stack.token(max_calls=1),
    }
    out = run(["node", "--test", "test/e2e/stack.test.mjs"], built, env=env)
    assert "# fail 0" in out and "# skipped 0" in out
    assert "# pass 8" in out, out


async def node_test_approving(
    node: str, test_file: str, cwd: Path, env: dict[str, str], approvals, agent
) -> str:
    """Run one Node test file while approving the call it leaves pending for ``agent``, once the SDK has
    polled it at least once; returns the runner's output after asserting it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        node,
        "--test",
        test_file,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        pending = await approvals.pending_for(agent, timeout=120)
        await asyncio.sleep(0.6)  # let the SDK poll at least once while the call is pending
        assert proc.returncode is None
        await approvals.decide(pending.approval_id, "approve")
        out = (await asyncio.wait_for(proc.communicate(), 120))[0].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out
    return out


async def test_wait_for_approval_completes_when_approved_while_the_sdk_polls(built, stack, approvals):
    agent = unique_agent()
    env = {"TESSERA_E2E_URL": stack.url, "TESSERA_E2E_APPROVAL_TOKEN": stack.token(agent=agent)}
    out = await node_test_approving("node", "test/e2e/approval.test.mjs", built, env, approvals, agent)
    assert "# pass 1" in out and "# fail 0" in out, out


@pytest.mark.parametrize("node", ["default", "18"])
async def test_the_official_mcp_sdk_client_through_tessera(built, stack, approvals, node, request):
    """@modelcontextprotocol/sdk's Client over its StreamableHTTPClientTransport, with the adapter, under
    the installed Node and under Node 18. The file's last test leaves a transfer pending and resumes it
    with waitForApproval once it is approved here."""
    binary = "node" if node == "default" else request.getfixturevalue("node18")
    agent = unique_agent()
    env = {
        "TESSERA_E2E_URL": stack.url,
        "TESSERA_E2E_TOKEN": stack.token(),
        "TESSERA_E2E_BUDGET_TOKEN": stack.token(max_calls=2),
        "TESSERA_E2E_APPROVAL_TOKEN": stack.token(agent=agent),
        "TESSERA_E2E_DEAD_URL": f"http://127.0.0.1:{free_port()}",
    }
    out = await node_test_approving(binary, "test/e2e/mcp.test.mjs", built, env, approvals, agent)
    assert "# fail 0" in out and "# skipped 0" in out and "# pass 6" in out, out


async def test_memory_writer_entries_signed_in_typescript_are_verified_by_tessera(built, stack):
    """TypeScript MemoryWriter entries through the real stack: a registered writer's entry passes, a
    planted, foreign-key, unregistered-writer or wrong-source entry is denied with -32014."""
    writer_id = f"ts-ingester-{uuid.uuid4().hex[:8]}"
    seed = os.urandom(32)
    probe_writer = MemoryWriter(seed, writer_id)  # the Python SDK, to see when Tessera has the writer
    now = time.time()
    store = open_store(f"sqlite:///{stack.stack.workdir}/tessera.db")
    try:
        await store.create_memory_writer(
            RegisteredWriter(
                tenant="demo",
                writer_id=writer_id,
                public_key=probe_writer.public_key,
                sources=("erp",),
                expires_at=None,
                created_at=now,
                created_by="e2e",
                updated_at=now,
            )
        )
    finally:
        await store.close()
    async with AsyncGateway(stack.url, stack.token()) as gw:
        deadline = time.monotonic() + 30
        while True:  # the check service reloads writers when the store's change counter moves
            try:
                await gw.tool_call(*READ, provenance=[probe_writer.sign("probe", "probe", "erp")])
                break
            except ProvenanceError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    env = {
        "TESSERA_E2E_URL": stack.url,
        "TESSERA_E2E_TOKEN": stack.token(),
        "TESSERA_E2E_WRITER_ID": writer_id,
        "TESSERA_E2E_WRITER_SEED_HEX": seed.hex(),
    }
    out = run(["node", "--test", "test/e2e/memory.test.mjs"], built, env=env)
    assert "# fail 0" in out and "# skipped 0" in out and "# pass 3" in out, out


def test_npm_pack_produces_an_installable_tarball(built, tmp_path):
    # --ignore-scripts: the fixture built dist/ already; prepack would only rebuild it
    packed = run(["npm", "pack", "--ignore-scripts", "--pack-destination", str(tmp_path)], built)
    name = packed.strip().splitlines()[-1]
    tarball = tmp_path / name
    assert tarball.is_file()
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "private": True}))
    run(["npm", "install", "--no-audit", "--no-fund", "--offline", str(tarball)], app)
    check = (
        "const esm = await import('tessera-authz'); const cjs = (await import('node:module'))"
        ".createRequire(import.meta.url)('tessera-authz');"
        "if (typeof esm.attenuate !== 'function' || typeof cjs.Gateway !== 'function') process.exit(1);"
        "const names = ['BudgetError', 'MemoryWriter', 'withTesseraErrors', 'tesseraTransportOptions',"
        " 'errorFromMcp', 'waitForApproval', 'pythonJson', 'exchangeToken'];"
        "const missing = names.filter((n) => typeof esm[n] !== 'function' || typeof cjs[n] !== 'function');"
        "console.log(missing.length ? `missing ${missing}` : 'ok');"
    )
    assert run(["node", "--input-type=module", "-e", check], app).strip() == "ok"
    # no runtime dependencies: the MCP SDK is an optional peer, so installing offline pulled in nothing
    installed = json.loads((app / "node_modules" / "tessera-authz" / "package.json").read_text())
    assert "dependencies" not in installed
    assert installed["peerDependenciesMeta"]["@modelcontextprotocol/sdk"] == {"optional": True}
    assert sorted(p.name for p in (app / "node_modules").iterdir() if not p.name.startswith(".")) == [
        "tessera-authz"
    ]
    files = json.loads(run(["npm", "pack", "--ignore-scripts", "--dry-run", "--json"], built))[0]["files"]
    paths = {f["path"] for f in files}
    assert {"dist/esm/index.js", "dist/cjs/index.js", "dist/esm/index.d.ts", "package.json"} <= paths
    assert not any(p.startswith(("src/", "test/", "node_modules/")) for p in paths)


@pytest.fixture(scope="module")
def exchange_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, OAuthServer]]:
    """A stack that trusts a real authorization server (oidc-provider-mock, tests/oauth_server.py) for
    token exchange, as tests/integration/test_oauth_token_endpoint.py sets one up: tenant demo serves
    /v1/mcp and the named server billing."""
    idp = OAuthServer(users=[(EXCHANGE_AGENT, {"tools": ["read_invoice", "list_invoices"]})])
    try:
        workdir = tmp_path_factory.mktemp("sdk-ts-exchange")
        ports = StackPorts.free()
        issuers = idp.write_issuers(
            workdir / "issuers.yaml",
            listen_port=ports.listen,
            exchange=["tools: [read_invoice, list_invoices]", "servers: [billing]"],
        )
        running, gw = start_gateway(
            workdir,
            ports=ports,
            env={"TESSERA_OAUTH_ISSUERS_FILE": str(issuers)},
            oauth_token_rate_limit=EXCHANGE_RATE,
        )
        try:
            yield gw, idp
        finally:
            running.stop()
    finally:
        idp.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # authlib's own internals, under the IdP
def test_exchange_token_against_the_real_token_endpoint(built, exchange_stack):
    """exchangeToken trades the real issuer's access token at the real endpoint; the token it returns is
    accepted by real tool calls through Envoy (within its tools and servers only), and refusals (widened
    scope, expired subject, unserved resource) and Envoy's rate limit reject with the right class."""
    gw, idp = exchange_stack
    resource = f"{gw.url}/v1/mcp"
    env = {
        "TESSERA_E2E_URL": gw.url,
        "TESSERA_E2E_SUBJECT_TOKEN": idp.issue(EXCHANGE_AGENT, resource=resource),
        "TESSERA_E2E_EXPIRED_SUBJECT_TOKEN": idp.issue(EXCHANGE_AGENT, resource=resource, lifetime_s=-60),
        "TESSERA_E2E_RETRY_AFTER": str(EXCHANGE_RATE.retry_after_s),
    }
    out = run(["node", "--test", "test/e2e/exchange.test.mjs"], built, env=env)
    assert "# fail 0" in out and "# skipped 0" in out and "# pass 5" in out, out
