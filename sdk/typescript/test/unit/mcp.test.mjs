// The MCP SDK adapter with the real @modelcontextprotocol/sdk Client and StreamableHTTPClientTransport
// against a local node:http server that plays the gateway (a stand-in: it pins what the transport sends
// and how every Tessera code the gateway can answer is mapped; test/e2e/mcp.test.mjs runs the real stack).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import {
  ApprovalRequired,
  BudgetError,
  CapabilityError,
  GatewayError,
  IntentError,
  PolicyError,
  ProtocolError,
  ProvenanceError,
  UnavailableError,
  errorFromMcp,
  mcpEndpoint,
  mcpHeaders,
  tesseraMeta,
  tesseraTransportOptions,
  waitForApproval,
  withTesseraErrors,
} from "../../dist/esm/index.js";

let server;
let url;
const seen = [];
let answer = () => ({ result: { content: [{ type: "text", text: "ok" }] } });

before(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      if (req.method !== "POST") {
        res.writeHead(405).end();
        return;
      }
      const message = JSON.parse(body);
      seen.push({ path: req.url, headers: req.headers, message });
      if (message.id === undefined) {
        res.writeHead(202).end();
        return;
      }
      let reply;
      if (message.method === "initialize") {
        reply = {
          result: {
            protocolVersion: message.params.protocolVersion,
            capabilities: { tools: {} },
            serverInfo: { name: "stand-in gateway", version: "0" },
          },
        };
      } else {
        reply = answer(message);
      }
      const status = reply.status ?? 200;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", id: message.id, ...reply, status: undefined }));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${server.address().port}`;
});

after(() => server.close());

async function connect(token = "tok-1", inputs = {}) {
  const client = withTesseraErrors(new Client({ name: "unit", version: "1.0.0" }));
  await client.connect(new StreamableHTTPClientTransport(mcpEndpoint(`${url}/`), tesseraTransportOptions(token, inputs)));
  return client;
}

const denial = (code, data) => () => ({ error: { code, message: `denied ${code}`, data: { check: "x", reason: "because", decision_id: "dec-9", ...data } } });

test("mcpEndpoint, mcpHeaders and tesseraMeta", () => {
  assert.equal(mcpEndpoint("http://gw:8080/").href, "http://gw:8080/v1/mcp");
  assert.equal(mcpEndpoint("http://gw:8080/v1/mcp").href, "http://gw:8080/v1/mcp");
  // one of several tool servers behind the gateway keeps its own path
  assert.equal(mcpEndpoint("http://gw:8080/v1/mcp/billing").href, "http://gw:8080/v1/mcp/billing");
  assert.equal(mcpEndpoint("http://gw:8080/v1/mcp/billing/").href, "http://gw:8080/v1/mcp/billing");
  assert.deepEqual(mcpHeaders("Bearer t-1", { intentPrompt: "zahle 5 €", approvalId: "ap-1" }), {
    authorization: "Bearer t-1",
    "X-Intent-Prompt": "zahle%205%20%E2%82%AC",
    "X-Approval-Id": "ap-1",
  });
  assert.deepEqual(tesseraMeta({ intentPrompt: "p", approvalId: "a", provenance: [{ id: "m1" }] }, { other: 1 }), {
    other: 1,
    "tessera/intent-prompt": "p",
    "tessera/approval-id": "a",
    "tessera/provenance": [{ id: "m1" }],
  });
  assert.throws(() => mcpHeaders("to ken"), /whitespace/);
});

test("the transport sends the bearer token and headers on every request; _meta rides in params", async () => {
  seen.length = 0;
  answer = () => ({ result: { content: [{ type: "text", text: "ok" }] } });
  const client = await connect("tok-7", { intentPrompt: "show me INV-1" });
  const result = await client.callTool({ name: "read_invoice", arguments: { invoice_id: "INV-1" }, _meta: tesseraMeta({ approvalId: "ap-3" }) });
  await client.close();
  assert.equal(result.content[0].text, "ok");
  const methods = seen.map((s) => s.message.method);
  assert.deepEqual(methods, ["initialize", "notifications/initialized", "tools/call"]);
  for (const s of seen) {
    assert.equal(s.path, "/v1/mcp");
    assert.equal(s.headers.authorization, "Bearer tok-7");
    assert.equal(s.headers["x-intent-prompt"], "show%20me%20INV-1");
  }
  assert.deepEqual(seen[2].message.params, {
    name: "read_invoice",
    arguments: { invoice_id: "INV-1" },
    _meta: { "tessera/approval-id": "ap-3" },
  });
});

test("every Tessera code becomes its typed error with data, the McpError as cause", async () => {
  const client = await connect();
  const call = () => client.callTool({ name: "t", arguments: {} }).catch((e) => e);
  const cases = [
    [-32010, CapabilityError, {}],
    [-32011, IntentError, {}],
    [-32012, PolicyError, {}],
    [-32013, BudgetError, { scope: "agent:daily", limit: 10, resets_at: "2030-01-01T00:00:00Z" }],
    [-32014, ProvenanceError, { writer: "w-1" }],
    [-32018, UnavailableError, { retry_after_ms: 1500 }],
    [-32019, ApprovalRequired, { approval_id: "ap-7", expires_at: "2030-01-01T00:05:00Z" }],
  ];
  for (const [code, cls, data] of cases) {
    answer = denial(code, data);
    const err = await call();
    assert.ok(err instanceof cls, `${code}: got ${err?.name}: ${err}`);
    assert.equal(err.code, code);
    assert.equal(err.message, `denied ${code}`);
    assert.equal(err.reason, "because");
    assert.equal(err.decisionId, "dec-9");
    assert.ok(err.cause instanceof McpError);
    for (const [k, v] of Object.entries(data)) assert.deepEqual(err.data[k], v);
  }
  answer = denial(-32013, { scope: "agent:daily", limit: 10, resets_at: "2030-01-01T00:00:00Z" });
  assert.equal((await call()).resetsAt.toISOString(), "2030-01-01T00:00:00.000Z");
  answer = denial(-32018, { retry_after_ms: 1500 });
  assert.equal((await call()).retryAfter, 1.5);
  answer = denial(-32019, { approval_id: "ap-7" });
  assert.equal((await call()).approvalId, "ap-7");
  answer = denial(-32602, {});
  const other = await call();
  assert.ok(other instanceof ProtocolError && other.code === -32602);
  await client.close();
});

test("listTools rejects with typed errors too", async () => {
  answer = denial(-32010, {});
  const client = await connect();
  assert.ok((await client.listTools().catch((e) => e)) instanceof CapabilityError);
  await client.close();
});

test("a non-2xx answer is a GatewayError with the status and the JSON-RPC error it carried", async () => {
  answer = () => ({ status: 403, error: { code: -32012, message: "denied", data: { check: "policy" } } });
  const client = await connect();
  const err = await client.callTool({ name: "t", arguments: {} }).catch((e) => e);
  await client.close();
  assert.ok(err instanceof GatewayError, `${err?.name}: ${err}`);
  assert.equal(err.httpStatus, 403);
  assert.equal(err.code, -32012);
  assert.equal(err.check, "policy");
});

test("errorFromMcp: unreachable gateway, foreign errors, Tessera errors unchanged", async () => {
  const refused = await fetch("http://127.0.0.1:9/").catch((e) => e);
  const unreachable = errorFromMcp(refused);
  assert.ok(unreachable instanceof GatewayError && unreachable.code === null);
  const odd = errorFromMcp(new RangeError("boom"));
  assert.ok(odd instanceof ProtocolError && odd.code === null && /RangeError: boom/.test(odd.message));
  const typed = new PolicyError(-32012, "m");
  assert.equal(errorFromMcp(typed), typed);
});

test("waitForApproval repeats with the approval id until the call goes through", async () => {
  const ids = [];
  let n = 0;
  const result = await waitForApproval(async (approvalId) => {
    ids.push(approvalId);
    if (++n < 3) throw new ApprovalRequired(-32019, "needs approval", { approval_id: "ap-1" });
    return "done";
  }, 10);
  assert.equal(result, "done");
  assert.deepEqual(ids, [undefined, "ap-1", "ap-1"]);
  const err = await waitForApproval(async () => {
    throw new ApprovalRequired(-32019, "needs approval", { approval_id: "ap-2" });
  }, 0).catch((e) => e);
  assert.ok(err instanceof ApprovalRequired && err.approvalId === "ap-2");
  await assert.rejects(waitForApproval(async () => 1, -1), /seconds >= 0/);
});
