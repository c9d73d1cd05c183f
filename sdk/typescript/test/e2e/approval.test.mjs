// waitForApproval against the real stack: tests/e2e/test_sdk_typescript.py runs this file with a token
// for a fresh agent (TESSERA_E2E_APPROVAL_TOKEN) and approves the pending call while the SDK polls.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Gateway } from "../../dist/esm/index.js";

test("waitForApproval completes once an operator approves the call", async () => {
  const url = process.env.TESSERA_E2E_URL;
  const token = process.env.TESSERA_E2E_APPROVAL_TOKEN;
  assert.ok(url && token, "TESSERA_E2E_URL and TESSERA_E2E_APPROVAL_TOKEN must be set");
  const result = await new Gateway(url, token).toolCall(
    "transfer_funds",
    { amount: 25000, iban: "DE89370400440532013000" },
    { waitForApproval: 30 },
  );
  assert.equal(result.isError, false);
  assert.equal(result.structuredContent.amount, 25000);
  assert.ok(result.decisionId);
});
