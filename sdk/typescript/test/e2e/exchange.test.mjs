// exchangeToken against the real token endpoint (Envoy, the admin service, a real authorization server
// as the trusted issuer), and the token it returns used for real tool calls through the stack. Run by
// tests/e2e/test_sdk_typescript.py, which starts that stack and passes:
//   TESSERA_E2E_URL                    the gateway
//   TESSERA_E2E_SUBJECT_TOKEN          an access token of the issuer for agent-7 (tools read_invoice, list_invoices)
//   TESSERA_E2E_EXPIRED_SUBJECT_TOKEN  the same, expired
//   TESSERA_E2E_RETRY_AFTER            the Retry-After of the token route's rate limit (seconds)
// The tenant serves /v1/mcp and the named server billing. Without the variables every test here fails.
// The tests run in order: the last one uses up the rate limit of this address on the token route.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CapabilityError, Gateway, UnavailableError, exchangeToken } from "../../dist/esm/index.js";

const url = process.env.TESSERA_E2E_URL;
const subject = process.env.TESSERA_E2E_SUBJECT_TOKEN;
const expired = process.env.TESSERA_E2E_EXPIRED_SUBJECT_TOKEN;
const retryAfter = Number(process.env.TESSERA_E2E_RETRY_AFTER);
const READ = ["read_invoice", { invoice_id: "INV-1001" }];

function env() {
  assert.ok(url && subject && expired && retryAfter > 0, "run tests/e2e/test_sdk_typescript.py: it sets TESSERA_E2E_*");
}

async function refused(promise, error) {
  const err = await promise.catch((e) => e);
  assert.ok(err instanceof CapabilityError, `expected CapabilityError, got ${err?.name}: ${err}`);
  assert.equal(err.code, -32010);
  assert.equal(err.data.error, error);
  return err;
}

test("the exchanged token is accepted for its tools by a real call through the stack, and only for them", async () => {
  env();
  const capability = await exchangeToken(url, subject, { tools: ["list_invoices"] });
  assert.ok(!capability.startsWith("eyJ"), "a macaroon, not the JWT");
  const gw = new Gateway(url, capability);
  const listed = await gw.toolCall("list_invoices", {});
  assert.equal(listed.isError, false);
  assert.ok(listed.decisionId);
  const err = await gw.toolCall(...READ).catch((e) => e);
  assert.ok(err instanceof CapabilityError, String(err));
  assert.match(err.reason, /read_invoice/);
});

test("a widened exchange is refused: CapabilityError invalid_scope naming the tool", async () => {
  env();
  const err = await refused(exchangeToken(url, subject, { tools: ["list_invoices", "delete_invoice"] }), "invalid_scope");
  assert.match(err.reason, /delete_invoice/);
});

test("an expired subject token is refused: CapabilityError invalid_grant", async () => {
  env();
  await refused(exchangeToken(url, expired), "invalid_grant");
});

test("audience and resource bind the token to the servers they name; an unserved one is invalid_target", async () => {
  env();
  const mcp = `${url}/v1/mcp`;
  // bound to billing only: the main endpoint refuses it
  const billing = await exchangeToken(mcp, subject, { audience: "billing" });
  const err = await new Gateway(url, billing).toolCall(...READ).catch((e) => e);
  assert.ok(err instanceof CapabilityError, String(err));
  assert.match(err.reason, /server/);
  // bound to the main endpoint and billing: the main endpoint serves it
  const both = await exchangeToken(url, subject, { resource: [mcp, `${mcp}/billing`] });
  assert.equal((await new Gateway(url, both).toolCall(...READ)).isError, false);
  const unserved = await refused(exchangeToken(url, subject, { resource: [`${mcp}/billing`, `${mcp}/payroll`] }), "invalid_target");
  assert.match(unserved.reason, /payroll/);
});

test("beyond the token route's rate limit: UnavailableError with Envoy's Retry-After", async () => {
  env();
  let err;
  for (let attempt = 0; attempt < 50 && err === undefined; attempt++) {
    err = await exchangeToken(url, subject, { tools: ["list_invoices"] }).then(
      () => undefined,
      (e) => e,
    );
  }
  assert.ok(err instanceof UnavailableError, `expected UnavailableError, got ${err?.name}: ${err}`);
  assert.equal(err.code, -32018);
  assert.equal(err.data.error, "temporarily_unavailable");
  assert.equal(err.retryAfter, retryAfter);
  assert.equal(err.data.retry_after_ms, retryAfter * 1000);
});
