"""``tessera call`` against the real stack, run as a separate process like a shell user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def tessera_call(stack, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"TESSERA_URL": stack.url, "TESSERA_TOKEN": token or stack.token()}
    return subprocess.run(
        [sys.executable, "-m", "authz.client.cli", "call", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_call_prints_the_result(stack):
    proc = tessera_call(
        stack, "read_invoice", "--arg", "invoice_id=INV-1001", "--prompt", "show me invoice INV-1001"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["customer"] == "ACME GmbH"
    assert "decision " in proc.stderr


def test_call_json_output(stack):
    proc = tessera_call(stack, "list_invoices", "--arg", "status=open", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["structured_content"]["count"] == 2 and doc["decision_id"]


def test_call_denied_exits_3(stack):
    proc = tessera_call(stack, "delete_invoice", "--arg", "invoice_id=INV-1001")
    assert proc.returncode == 3
    assert "PolicyError" in proc.stderr and "retained for audit" in proc.stderr


def test_call_needing_approval_exits_4_with_the_approval_id(stack):
    proc = tessera_call(
        stack, "transfer_funds", "--arg", "amount=25000", "--arg", "iban=DE89370400440532013000"
    )
    assert proc.returncode == 4
    assert "ApprovalRequired" in proc.stderr and "--approval-id " in proc.stderr


def test_call_with_a_bad_token_exits_3(stack):
    proc = tessera_call(stack, "read_invoice", "--arg", "invoice_id=INV-1001", token="bogus")
    assert proc.returncode == 3 and "CapabilityError" in proc.stderr
