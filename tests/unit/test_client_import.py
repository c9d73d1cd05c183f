"""``authz.client`` is light: importing it pulls in no server module, gRPC, Rego or database driver."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

FORBIDDEN_ROOTS = (
    "grpc",
    "regopy",
    "psycopg",
    "psycopg_pool",
    "google",
    "envoy",
    "yaml",
    "rfc8785",
    "cryptography",
    "mcp",
    "mcp_types",
    "httpx2",
    "langchain_core",
    "uvicorn",
    "starlette",
)


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )


def test_import_loads_no_server_module_or_heavy_dependency():
    proc = run(
        """
        import json, sys
        import authz.client
        from authz.client import Gateway, AsyncGateway, attenuate, inspect, mcp_errors, tessera_meta
        print(json.dumps(sorted(sys.modules)))
        """
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout)
    ours = [m for m in modules if m == "authz" or m.startswith("authz.")]
    assert all(m == "authz" or m.startswith("authz.client") for m in ours), ours
    assert "authz.client.langchain" not in ours and "authz.client.cli" not in ours
    heavy = [m for m in modules if m.split(".")[0] in FORBIDDEN_ROOTS]
    assert heavy == [], heavy


def _token() -> str:
    from pymacaroons import Macaroon
    from pymacaroons.macaroon import MACAROON_V2
    from pymacaroons.serializers.binary_serializer import BinarySerializer

    ident = json.dumps({"v": 1, "tenant": "demo", "kid": "k1", "jti": "abc"})
    macaroon = Macaroon(location="tessera", identifier=ident, key="any key", version=MACAROON_V2)
    macaroon.add_first_party_caveat("tenant = demo")
    return base64.urlsafe_b64encode(BinarySerializer().serialize_raw(macaroon)).decode().rstrip("=")


def test_import_works_with_the_heavy_dependencies_uninstalled():
    # Simulate an agent's environment that has only httpx and pymacaroons: importing anything of the
    # server side (or gRPC, regopy, psycopg...) fails.
    roots = [
        "grpc",
        "regopy",
        "psycopg",
        "psycopg_pool",
        "google",
        "envoy",
        "mcp",
        "mcp_types",
        "httpx2",
        "cryptography",
        "yaml",
        "rfc8785",
    ]
    proc = run(
        f"""
        import sys
        from importlib.abc import MetaPathFinder

        BLOCKED = {roots!r}
        SERVER = ("authz.check", "authz.server", "authz.storage", "authz.token", "authz.policy",
                  "authz.intent", "authz.audit", "authz.provenance", "authz.errors", "authz.config")

        class Block(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED or name.startswith(SERVER):
                    raise ImportError(f"blocked: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        import authz.client as c
        token = {_token()!r}
        info = c.inspect(c.attenuate(token, tools=["read_invoice"], max_calls=1))
        assert info.tenant == "demo" and info.tools == frozenset({{"read_invoice"}}), info
        with c.Gateway("http://127.0.0.1:1", "t", timeout=0.5) as gw:
            try:
                gw.tool_call("read_invoice", {{}})
            except c.GatewayError:
                pass
        with c.mcp_errors():
            pass
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
