"""``tessera call``: argument parsing, output and exit codes (against a scripted gateway)."""

from __future__ import annotations

import argparse
import json

import httpx
import pytest

from authz.client import Gateway, cli


def reply_with(payload: dict | None = None, error: dict | None = None, status: int = 200):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        rid = json.loads(request.content)["id"]
        body = {"jsonrpc": "2.0", "id": rid}
        body.update({"error": error} if error else {"result": payload})
        return httpx.Response(status, json=body, headers={"x-tessera-decision-id": "dec-1"})

    return handler, seen


@pytest.fixture
def gateway_with(monkeypatch):
    def install(handler):
        client = httpx.Client(transport=httpx.MockTransport(handler))
        monkeypatch.setattr(cli, "Gateway", lambda url, token, timeout: Gateway(url, token, client=client))

    return install


def test_key_value_values_are_json_when_they_parse():
    assert cli._key_value("amount=5000") == ("amount", 5000)
    assert cli._key_value("iban=DE89 3704") == ("iban", "DE89 3704")
    assert cli._key_value("flag=true") == ("flag", True)
    assert cli._key_value('memo="123"') == ("memo", "123")
    assert cli._key_value("expr=a=b") == ("expr", "a=b")
    assert cli._key_value("empty=") == ("empty", "")
    with pytest.raises(argparse.ArgumentTypeError):
        cli._key_value("novalue")


def test_add_call_command_fits_a_tessera_parser():
    parser = argparse.ArgumentParser(prog="tessera")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_call_command(sub)
    args = parser.parse_args(
        [
            "call",
            "transfer_funds",
            "--arg",
            "amount=5",
            "-a",
            "iban=DE89",
            "--prompt",
            "pay",
            "--wait",
            "30",
            "--url",
            "http://gw:8080",
            "--token",
            "tok",
            "--json",
        ]
    )
    assert args.func is cli.run_call
    assert (args.tool, args.arg_pairs, args.prompt, args.wait) == (
        "transfer_funds",
        [("amount", 5), ("iban", "DE89")],
        "pay",
        30.0,
    )


def test_success_prints_the_content(gateway_with, capsys):
    handler, seen = reply_with(
        {
            "content": [
                {"type": "text", "text": "INV-1001: 1250 EUR"},
                {"type": "image", "data": "AA==", "mimeType": "image/png"},
            ]
        }
    )
    gateway_with(handler)
    code = cli.main(
        ["call", "read_invoice", "--arg", "invoice_id=INV-1001", "--token", "tok", "--prompt", "zeig"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[0] == "INV-1001: 1250 EUR"
    assert json.loads(out.splitlines()[1])["type"] == "image"
    assert "decision dec-1" in err
    body = json.loads(seen[0].content)
    assert body["params"] == {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}}
    assert seen[0].headers["x-intent-prompt"] == "zeig"


def test_args_json_and_arg_merge(gateway_with, monkeypatch, capsys):
    handler, seen = reply_with({"content": []})
    gateway_with(handler)
    monkeypatch.setenv("TESSERA_TOKEN", "env-token")
    code = cli.main(["call", "t", "--args", '{"a": 1, "b": [1, 2]}', "--arg", "a=2", "--json"])
    assert code == 0
    assert json.loads(seen[0].content)["params"]["arguments"] == {"a": 2, "b": [1, 2]}
    assert seen[0].headers["authorization"] == "Bearer env-token"
    assert json.loads(capsys.readouterr().out)["decision_id"] == "dec-1"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        ({"code": -32012, "message": "denied by policy", "data": {"reason": "no"}}, 200, 3),
        ({"code": -32010, "message": "capability check failed"}, 200, 3),
        ({"code": -32602, "message": "invalid params"}, 200, 3),
        (
            {
                "code": -32019,
                "message": "approval required",
                "data": {"approval_id": "ap-7", "expires_at": "2030-01-01T00:00:00Z"},
            },
            200,
            4,
        ),
        ({"code": -32018, "message": "authorization unavailable"}, 200, 5),
        ({"code": -32010, "message": "capability check failed"}, 403, 5),
    ],
)
def test_denials_map_to_exit_codes(gateway_with, capsys, error, status, code):
    handler, _ = reply_with(error=error, status=status)
    gateway_with(handler)
    assert cli.main(["call", "t", "--token", "tok"]) == code
    err = capsys.readouterr().err
    assert err.startswith("tessera call: ")
    if code == 4:
        assert "--approval-id ap-7" in err


def test_tool_error_exits_1(gateway_with, capsys):
    handler, _ = reply_with({"content": [{"type": "text", "text": "no invoice"}], "isError": True})
    gateway_with(handler)
    assert cli.main(["call", "read_invoice", "--token", "tok"]) == 1
    assert "no invoice" in capsys.readouterr().out


def test_json_error_output(gateway_with, capsys):
    handler, _ = reply_with(error={"code": -32012, "message": "denied by policy", "data": {"reason": "no"}})
    gateway_with(handler)
    assert cli.main(["call", "t", "--token", "tok", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["error"]["code"] == -32012


def test_usage_errors_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("TESSERA_TOKEN", raising=False)
    assert cli.main(["call", "t"]) == 2
    assert "no token" in capsys.readouterr().err
    assert cli.main(["call", "t", "--token", "tok", "--args", "[1]"]) == 2
    assert cli.main(["call", "t", "--token", "tok", "--args", "{nope"]) == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["call", "t", "--arg", "novalue"])
    assert info.value.code == 2


def test_unreachable_gateway_exits_5(capsys):
    assert cli.main(["call", "t", "--token", "tok", "--url", "http://127.0.0.1:1", "--timeout", "1"]) == 5
    assert "GatewayError" in capsys.readouterr().err
