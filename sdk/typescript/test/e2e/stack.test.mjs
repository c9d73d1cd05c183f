// The TypeScript SDK against the real stack (Envoy, check service, demo MCP server). Run by
// tests/e2e/test_sdk_typescript.py, which starts the stack and passes its URL and fresh tokens:
//   TESSERA_E2E_URL, TESSERA_E2E_TOKEN (agent-1, 1 h), TESSERA_E2E_BUDGET_TOKEN (max_calls = 1).
// Without them every test here fails: this file is never a silent pass.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ApprovalRequired,
  BudgetError,
  CapabilityError,
  Gateway,
  PolicyError,
  attenuate,
  inspect,
} from "../../dist/esm/index.js";

const url = process.env.TESSERA_E2E_URL;
const token = process.env.TESSERA_E2E_TOKEN;
const budgetToken = process.env.TESSERA_E2E_BUDGET_TOKEN;
const READ = ["read_invoice", { invoice_id: "INV-1001" }];

function gateway(t = token) {
  assert.ok(url && t, "TESSERA_E2E_URL and the tokens must be set (run tests/e2e/test_sdk_typescript.py)");
  return new Gateway(url, t);
}

function assertDenial(err, cls, code, check) {
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.name}: ${err}`);
  assert.equal(err.code, code);
  assert.equal(err.check, check);
  assert.ok(err.reason && err.decisionId && err.message);
}

test("an allowed call returns the tool's content and the decision id", async () => {
  const result = await gateway().toolCall(...READ, { intentPrompt: "show me invoice INV-1001" });
  assert.equal(result.isError, false);
  assert.match(result.text, /INV-1001/);
  assert.ok(result.decisionId);
});

test("a policy denial is a PolicyError", async () => {
  const err = await gateway().toolCall("delete_invoice", { invoice_id: "INV-1001" }).catch((e) => e);
  assertDenial(err, PolicyError, -32012, "policy");
  assert.match(err.reason, /delete_invoice/);
});

test("an exhausted max_calls is a BudgetError with its scope and limit", async () => {
  const gw = gateway(budgetToken);
  await gw.toolCall(...READ);
  const err = await gw.toolCall(...READ).catch((e) => e);
  assertDenial(err, BudgetError, -32013, "budget");
  assert.equal(err.scope, "token:max_calls");
  assert.equal(err.limit, 1);
});

test("a forged token is a CapabilityError", async () => {
  const err = await gateway(`${token.slice(0, -4)}AAAA`).toolCall(...READ).catch((e) => e);
  assertDenial(err, CapabilityError, -32010, "capability");
});

test("a large transfer needs approval: ApprovalRequired with its id", async () => {
  const err = await gateway()
    .toolCall("transfer_funds", { amount: 25000, iban: "DE89370400440532013000" })
    .catch((e) => e);
  assertDenial(err, ApprovalRequired, -32019, "approval");
  assert.ok(err.approvalId);
});

test("a token attenuated offline in TypeScript is honoured and enforced by the gateway", async () => {
  const child = attenuate(token, { tools: ["read_invoice"], args: ["invoice_id in INV-1001,INV-1002"], expires: 300 });
  assert.deepEqual([...inspect(child).tools], ["read_invoice"]);
  const sub = gateway().withToken(child);
  assert.equal((await sub.toolCall("read_invoice", { invoice_id: "INV-1002" })).isError, false);
  let err = await sub.toolCall("read_invoice", { invoice_id: "INV-1003" }).catch((e) => e);
  assertDenial(err, CapabilityError, -32010, "capability");
  err = await sub.toolCall("list_invoices", {}).catch((e) => e);
  assertDenial(err, CapabilityError, -32010, "capability");
});

test("/v1/tool-call: an allowed call returns the upstream's answer, a denial its typed error", async () => {
  const gw = gateway();
  const answer = await gw.httpToolCall(...READ);
  assert.match(JSON.stringify(answer), /INV-1001/);
  const err = await gw.httpToolCall("delete_invoice", { invoice_id: "INV-1001" }).catch((e) => e);
  assertDenial(err, PolicyError, -32012, "policy");
});

test("listTools returns the demo server's tools", async () => {
  const names = (await gateway().listTools()).map((t) => t.name);
  assert.ok(names.includes("read_invoice"));
});
