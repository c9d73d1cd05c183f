"""``tessera memory-writer``: a writer's key made, shown and used from a shell; Tessera's own verifier
accepts what it signs against the public key it printed."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
from pathlib import Path

from authz.cli import main
from authz.provenance import WriterKeys, verify_entries
from authz.storage import RegisteredWriter


def _verify(public_key_b64: str, writer_id: str, entry: dict) -> str | None:
    record = RegisteredWriter("t", writer_id, base64.b64decode(public_key_b64), ("erp",), None, 0, "x", 0)
    return verify_entries(None, [entry], WriterKeys.build([record]), now=1.0).error


def test_keygen_writes_an_owner_only_key_and_prints_the_registration_body(tmp_path: Path, capsys):
    key = tmp_path / "writer.pem"
    assert main(["memory-writer", "keygen", "--out", str(key), "--writer-id", "erp-loader"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(base64.b64decode(report["public_key"])) == 32
    assert report["register"] == {
        "writer_id": "erp-loader",
        "public_key": report["public_key"],
        "sources": ["*"],
    }
    assert "PRIVATE" not in json.dumps(report)  # the private key is never printed
    # An existing key is never overwritten.
    before = key.read_bytes()
    assert main(["memory-writer", "keygen", "--out", str(key)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert key.read_bytes() == before
    assert main(["memory-writer", "public-key", str(key)]) == 0
    assert capsys.readouterr().out.strip() == report["public_key"]


def test_sign_prints_an_entry_tesseras_verifier_accepts(tmp_path: Path, capsys):
    key = tmp_path / "writer.pem"
    main(["memory-writer", "keygen", "--out", str(key)])
    public_key = json.loads(capsys.readouterr().out)["public_key"]
    content = tmp_path / "row.txt"
    content.write_text("Pay ACME to IBAN DE89 3704 0044 0532 0130 00")
    args = ["memory-writer", "sign", "--key", str(key), "--writer-id", "erp-loader", "--id", "inv-17"]
    assert main([*args, "--source", "erp", "--content", str(content), "--include-content"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["writer"] == "erp-loader" and entry["content"] == content.read_text()
    assert _verify(public_key, "erp-loader", entry) is None
    assert "does not match its hash" in _verify(public_key, "erp-loader", dict(entry, content="Pay MALLORY"))
    # The same entry under another writer's key does not verify.
    other = tmp_path / "other.pem"
    main(["memory-writer", "keygen", "--out", str(other)])
    other_public = json.loads(capsys.readouterr().out)["public_key"]
    assert _verify(other_public, "erp-loader", entry) is not None


def test_sign_reads_stdin_and_bad_inputs_get_clear_errors(tmp_path: Path):
    key = tmp_path / "writer.pem"
    cli = [sys.executable, "-m", "authz.cli", "memory-writer"]
    subprocess.run([*cli, "keygen", "--out", str(key)], check=True, capture_output=True, timeout=60)
    sign = [*cli, "sign", "--key", str(key), "--writer-id", "w", "--id", "e1", "--source", "erp"]
    done = subprocess.run([*sign, "--content", "-"], input=b"row", capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["content_sha256"]
    not_a_key = tmp_path / "nope.pem"
    not_a_key.write_text("not a key")
    bad = subprocess.run([*cli, "public-key", str(not_a_key)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "cannot read a private key" in bad.stderr
    missing = subprocess.run(
        [*sign, "--content", str(tmp_path / "absent")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr
