import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ApprovalRequired,
  BudgetError,
  CapabilityError,
  IntentError,
  PolicyError,
  ProtocolError,
  ProvenanceError,
  TesseraError,
  UnavailableError,
  errorFromRpc,
} from "../../dist/esm/index.js";

test("one class per check code", () => {
  const table = [
    [-32010, CapabilityError],
    [-32011, IntentError],
    [-32012, PolicyError],
    [-32013, BudgetError],
    [-32014, ProvenanceError],
    [-32018, UnavailableError],
    [-32019, ApprovalRequired],
    [-32602, ProtocolError],
  ];
  for (const [code, cls] of table) {
    const err = errorFromRpc({ code, message: "denied", data: { check: "x", reason: "why", decision_id: "d1" } });
    assert.ok(err instanceof cls, `${code} -> ${cls.name}`);
    assert.ok(err instanceof TesseraError && err instanceof Error);
    assert.equal(err.code, code);
    assert.equal(err.name, cls.name);
    assert.equal(err.reason, "why");
    assert.equal(err.decisionId, "d1");
  }
});

test("budget, unavailable and approval data are lifted out", () => {
  const budget = errorFromRpc({
    code: -32013,
    message: "budget",
    data: { scope: "token:max_calls", limit: 1, resets_at: "2030-01-01T00:00:00Z" },
  });
  assert.equal(budget.scope, "token:max_calls");
  assert.equal(budget.limit, 1);
  assert.equal(budget.resetsAt.toISOString(), "2030-01-01T00:00:00.000Z");
  const unavailable = errorFromRpc({ code: -32018, message: "down", data: { retry_after_ms: 1500 } });
  assert.equal(unavailable.retryAfter, 1.5);
  const fromHeader = errorFromRpc({ code: -32018, message: "down" }, { retryAfter: 3 });
  assert.equal(fromHeader.retryAfter, 3);
  const approval = errorFromRpc({
    code: -32019,
    message: "approval required",
    data: { approval_id: "ap-1", expires_at: 1893456000 },
  });
  assert.equal(approval.approvalId, "ap-1");
  assert.equal(approval.expiresAt.toISOString(), "2030-01-01T00:00:00.000Z");
  assert.equal(approval.resumeHeader, "X-Approval-Id");
});

test("malformed error objects become protocol errors without a code", () => {
  for (const bad of [null, "boom", { message: "no code" }, { code: "1" }, { code: 1.5 }]) {
    const err = errorFromRpc(bad);
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, null);
  }
  assert.deepEqual(errorFromRpc({ code: -32012, message: "m", data: 7 }).data, { value: 7 });
});

test("toString names code, check and decision", () => {
  const err = errorFromRpc({ code: -32012, message: "denied", data: { check: "policy", reason: "no", decision_id: "d" } });
  assert.equal(String(err), "PolicyError: denied: no (-32012, policy, decision d)");
});
