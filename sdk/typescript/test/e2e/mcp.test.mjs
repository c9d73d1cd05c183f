// The official TypeScript MCP SDK (@modelcontextprotocol/sdk: Client + StreamableHTTPClientTransport)
// through the real stack with this SDK's adapter. Run by tests/e2e/test_sdk_typescript.py, which starts
// the stack (Envoy, check service, demo MCP server) and passes:
//   TESSERA_E2E_URL, TESSERA_E2E_TOKEN (agent-1, 1 h), TESSERA_E2E_BUDGET_TOKEN (max_calls = 2),
//   TESSERA_E2E_APPROVAL_TOKEN (a fresh agent; the Python side approves its pending transfer),
//   TESSERA_E2E_DEAD_URL (a port nothing listens on).
// Without them every test here fails: this file is never a silent pass.
import assert from "node:assert/strict";
import { test } from "node:test";
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
  mcpEndpoint,
  tesseraMeta,
  tesseraTransportOptions,
  waitForApproval,
  withTesseraErrors,
} from "../../dist/esm/index.js";

const env = process.env;
const READ = { name: "read_invoice", arguments: { invoice_id: "INV-1001" } };
const BIG = { amount: 25000, iban: "DE89370400440532013000" };

async function connect(token, inputs = {}, url = env.TESSERA_E2E_URL) {
  assert.ok(url && token, "the TESSERA_E2E_* variables must be set (run tests/e2e/test_sdk_typescript.py)");
  const client = withTesseraErrors(new Client({ name: "tessera-ts-e2e", version: "1.0.0" }));
  await client.connect(new StreamableHTTPClientTransport(mcpEndpoint(url), tesseraTransportOptions(token, inputs)));
  return client;
}

function assertDenial(err, cls, code, check) {
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.name}: ${err}`);
  assert.equal(err.code, code);
  assert.equal(err.check, check);
  assert.ok(err.reason && err.decisionId && err.message);
  assert.ok(!err.message.startsWith("MCP error"), err.message);
  assert.ok(err.cause instanceof McpError, "the MCP SDK's own error stays reachable as cause");
}

test("the MCP SDK client lists and calls tools through Tessera with the bearer token", async () => {
  const client = await connect(env.TESSERA_E2E_TOKEN);
  try {
    const names = (await client.listTools()).tools.map((t) => t.name);
    assert.ok(names.includes("read_invoice"), names.join(","));
    const result = await client.callTool({ ...READ, _meta: tesseraMeta({ intentPrompt: "show me invoice INV-1001" }) });
    assert.equal(result.isError ?? false, false);
    assert.equal(result.structuredContent.invoice_id, "INV-1001");
  } finally {
    await client.close();
  }
});

test("denials reject with Tessera's typed errors, data intact", async () => {
  const client = await connect(env.TESSERA_E2E_BUDGET_TOKEN);
  try {
    let err = await client.callTool({ name: "delete_invoice", arguments: { invoice_id: "INV-1001" } }).catch((e) => e);
    assertDenial(err, PolicyError, -32012, "policy");
    assert.match(err.reason, /delete_invoice/);

    err = await client
      .callTool({
        name: "transfer_funds",
        arguments: { amount: 5, iban: BIG.iban },
        _meta: tesseraMeta({ intentPrompt: "show me invoice INV-1001" }),
      })
      .catch((e) => e);
    assertDenial(err, IntentError, -32011, "intent");

    await client.callTool(READ);
    await client.callTool(READ);
    err = await client.callTool(READ).catch((e) => e);
    assertDenial(err, BudgetError, -32013, "budget");
    assert.equal(err.scope, "token:max_calls");
    assert.equal(err.limit, 2);
    assert.equal(err.data.limit, 2);
  } finally {
    await client.close();
  }
});

test("an intent prompt in the transport's headers holds for the whole connection", async () => {
  const client = await connect(env.TESSERA_E2E_TOKEN, { intentPrompt: "zeige mir die Rechnung, show me invoice" });
  try {
    assert.equal((await client.callTool(READ)).isError ?? false, false);
    const err = await client.callTool({ name: "transfer_funds", arguments: { amount: 10, iban: BIG.iban } }).catch((e) => e);
    assertDenial(err, IntentError, -32011, "intent");
  } finally {
    await client.close();
  }
});

test("a forged token fails at connect with a CapabilityError", async () => {
  const forged = `${env.TESSERA_E2E_TOKEN.slice(0, -4)}AAAA`;
  const err = await connect(forged).catch((e) => e);
  assertDenial(err, CapabilityError, -32010, "capability");
});

test("an unreachable gateway is a GatewayError", async () => {
  const err = await connect(env.TESSERA_E2E_TOKEN, {}, env.TESSERA_E2E_DEAD_URL).catch((e) => e);
  assert.ok(err instanceof GatewayError, `expected GatewayError, got ${err?.name}: ${err}`);
  assert.equal(err.code, null);
});

test("ApprovalRequired carries approval_id; waitForApproval resumes the call once a human approves", async () => {
  const client = await connect(env.TESSERA_E2E_APPROVAL_TOKEN);
  try {
    const err = await client.callTool({ name: "transfer_funds", arguments: BIG }).catch((e) => e);
    assertDenial(err, ApprovalRequired, -32019, "approval");
    assert.ok(err.approvalId);
    assert.equal(err.data.approval_id, err.approvalId);
    // tests/e2e/test_sdk_typescript.py approves the pending call while this polls
    const result = await waitForApproval(
      (approvalId) => client.callTool({ name: "transfer_funds", arguments: BIG, _meta: tesseraMeta({ approvalId }) }),
      30,
      err.approvalId,
    );
    assert.equal(result.structuredContent.status, "executed");
    assert.equal(result.structuredContent.amount, 25000);
  } finally {
    await client.close();
  }
});
