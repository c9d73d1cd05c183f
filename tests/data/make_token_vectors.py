"""Write tests/data/token_vectors.json: attenuation cases both SDKs must reproduce byte for byte.

Each case is a root token (built here with pymacaroons under a fixed key and identifier, so the file is
reproducible), the attenuation options in a JSON form both languages read, and the Python SDK's
``attenuate()`` output. tests/unit/test_token_vectors.py checks the Python side still produces it;
sdk/typescript/test/vectors.test.mjs checks the TypeScript SDK does. Run from the repository root:

    .venv/bin/python tests/data/make_token_vectors.py
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pymacaroons import Macaroon

from authz.client import attenuate

OUT = Path(__file__).with_name("token_vectors.json")
KEY = bytes(range(32))


def root(tenant: str, jti: str, caveats: tuple[str, ...] = (), location: str = "tessera") -> str:
    ident = json.dumps({"v": 1, "tenant": tenant, "kid": "k1", "jti": jti}, separators=(",", ":"))
    macaroon = Macaroon(location=location, identifier=ident, key=KEY, version=2)
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    return macaroon.serialize().rstrip("=")


def without_location_field(token: str) -> str:
    """The token as a V2 writer that omits an empty location writes it (pymacaroons always writes one)."""
    data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert data[:3] == b"\x02\x01\x00", "expected an empty location field first"
    return base64.urlsafe_b64encode(data[:1] + data[3:]).decode().rstrip("=")


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("tools only", root("demo", "j1"), {"tools": ["read_invoice"]}),
    ("two tools", root("demo", "j2", ("agent = agent-1",)), {"tools": ["read_invoice", "transfer_funds"]}),
    ("expiry whole second", root("demo", "j3"), {"expires": "2030-01-02T03:04:05+00:00"}),
    ("expiry with milliseconds", root("demo", "j4"), {"expires": "2030-01-02T03:04:05.250000+00:00"}),
    (
        "not before and expires",
        root("demo", "j5"),
        {"not_before": "2029-12-31T23:00:00+00:00", "expires": "2030-01-01T00:00:00+00:00"},
    ),
    ("max calls and cost", root("demo", "j6"), {"max_calls": 3, "max_cost": "12.5"}),
    ("integer cost", root("demo", "j7"), {"max_cost": 100}),
    ("prompt binding (non-ASCII)", root("demo", "j8"), {"prompt": "zeig mir Rechnung INV-1001 — bitte"}),
    ("agent binding", root("demo", "j9"), {"agent": "sub-agent-7"}),
    ("arg strings", root("demo", "j10"), {"args": ["amount <= 1000", "arg:currency in EUR,USD"]}),
    ("arg values", root("demo", "j11"), {"args": {"invoice_id": "INV-1001", "n": 5, "ok": True, "x": None}}),
    ("non-ASCII arg value", root("demo", "j12"), {"args": {"payee": "Müller & Söhne"}}),
    ("raw caveats", root("demo", "j13"), {"caveats": ["tenant = demo", "max_calls = 10"]}),
    (
        "everything",
        root("acme", "j14", ("tools = a,b,c", "max_calls = 100")),
        {
            "agent": "agent-9",
            "tools": ["a", "b"],
            "not_before": "2029-06-01T00:00:00+00:00",
            "expires": "2029-06-01T01:00:00.001000+00:00",
            "max_calls": 5,
            "max_cost": "0.000001",
            "prompt": "pay the rent",
            "args": ["amount < 2000"],
            "caveats": ['arg:iban = "DE89370400440532013000"'],
        },
    ),
    ("no location", root("demo", "j15", location=""), {"tools": ["read_invoice"]}),
    ("no location field", without_location_field(root("demo", "j17", location="")), {"max_calls": 2}),
    ("long caveat (2-byte varint)", root("demo", "j16"), {"args": {"note": "x" * 300}}),
    # A JavaScript number cannot tell 1.0 from 1: both SDKs write integral floats as ints, and every
    # other float as Python's repr (shortest digits, exponent outside 1e-4..1e16).
    (
        "float arg values",
        root("demo", "j18"),
        {"args": {"rate": 0.1, "whole": 1.0, "zero": -0.0, "tiny": 1e-07, "small": 0.0001, "third": 1 / 3}},
    ),
    (
        "large and nested float values",
        root("demo", "j19"),
        {"args": {"big": 1e16, "limits": [2.5, 3.0, -1e-05], "range": {"max": 1.5e300, "min": 2.0**53}}},
    ),
    ("float constraints as strings", root("demo", "j20"), {"args": ["amount <= 1000.5", "rate > 1e-3"]}),
]


def python_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """The JSON options as the Python SDK's keyword arguments (times as aware datetimes)."""
    kwargs = dict(options)
    for name in ("expires", "not_before"):
        if name in kwargs:
            kwargs[name] = datetime.fromisoformat(kwargs[name])
    return kwargs


def build() -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "token": token,
            "options": options,
            "expected": attenuate(token, **python_kwargs(options)),
        }
        for name, token, options in CASES
    ]


if __name__ == "__main__":
    OUT.write_text(json.dumps({"cases": build()}, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT}")
